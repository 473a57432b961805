"""The template's own Python (hooks and these tests) is ruff and mypy clean."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import TEMPLATE


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "--no-cache", "hooks", "tests"],
        ["ruff", "format", "--check", "--no-cache", "hooks", "tests"],
        ["mypy", "--no-incremental"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_template_code_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=TEMPLATE, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
