"""Bake helpers shared by the template tests.

Each option set is baked once per test session and reused (bakes are ~1 s, but linting and
running them is not), mirroring cookiecutter-django's generation tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parent.parent
BAKED_TEMPLATE_DIR = TEMPLATE / "{{cookiecutter.project_slug}}"


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """Path of a tool the test needs: under CI its absence fails the test, elsewhere skips it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def bake(output_dir: Path, **extra_context: str) -> Path:
    """Bake the template with the cookiecutter API, as `cookiecutter --no-input` does."""
    project = cookiecutter(
        str(TEMPLATE), no_input=True, extra_context=extra_context, output_dir=str(output_dir)
    )
    return Path(project)


def bake_cli(output_dir: Path, **extra_context: str) -> subprocess.CompletedProcess[str]:
    """Bake through the command line, to see exactly what a user sees on failure."""
    answers = [f"{key}={value}" for key, value in extra_context.items()]
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(output_dir), str(TEMPLATE),
         *answers],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


class Bakery:
    """Bakes each distinct option set once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.baked: dict[tuple[tuple[str, str], ...], Path] = {}

    def __call__(self, **extra_context: str) -> Path:
        key = tuple(sorted(extra_context.items()))
        if key not in self.baked:
            output = self.root / f"bake{len(self.baked)}"
            self.baked[key] = bake(output, **extra_context)
        return self.baked[key]


@pytest.fixture(scope="session")
def mkcert_caroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep mkcert's CA for test bakes away from the developer's own CA."""
    caroot = tmp_path_factory.mktemp("caroot")
    previous = os.environ.get("CAROOT")
    os.environ["CAROOT"] = str(caroot)
    yield caroot
    if previous is None:
        os.environ.pop("CAROOT", None)
    else:
        os.environ["CAROOT"] = previous


@pytest.fixture(scope="session")
def bakery(tmp_path_factory: pytest.TempPathFactory, mkcert_caroot: Path) -> Bakery:
    return Bakery(tmp_path_factory.mktemp("bakes"))


@pytest.fixture(scope="session")
def default_bake(bakery: Bakery) -> Path:
    return bakery()


def read_answers(project: Path) -> dict[str, Any]:
    answers: dict[str, Any] = json.loads((project / ".cookiecutter.json").read_text())
    return answers
