"""The template repository's own CI configuration follows the hygiene it bakes into services:
Dependabot with a cooldown, a workflow that runs .ci/run with pinned actions and read-only
permissions, and zizmor clean (offline) at medium severity and above."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import TEMPLATE

VENV = Path(sys.prefix)
DEPENDABOT = ".github/dependabot.yml"
WORKFLOW = ".github/workflows/ci.yml"


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=TEMPLATE, capture_output=True, text=True, check=False, timeout=300
    )


def test_dependabot_updates_template_tooling_and_actions_after_a_cooldown() -> None:
    result = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                  "vendor.dependabot", DEPENDABOT])  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    updates = yaml.safe_load((TEMPLATE / DEPENDABOT).read_text())["updates"]
    directories = {update["package-ecosystem"]: update["directory"] for update in updates}
    assert directories == {"pip": "/", "npm": "/tools/observatory", "github-actions": "/"}
    assert (TEMPLATE / "requirements-dev.txt").is_file()
    assert (TEMPLATE / "tools/observatory/package-lock.json").is_file()
    for update in updates:
        assert update["cooldown"]["default-days"] >= 7


def test_workflow_runs_ci_run_with_pinned_actions_and_full_history() -> None:
    result = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                  "vendor.github-workflows", WORKFLOW])  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    workflow = yaml.safe_load((TEMPLATE / WORKFLOW).read_text())
    assert workflow["permissions"] == {"contents": "read"}
    for job in workflow["jobs"].values():
        assert job["timeout-minutes"] <= 60
        steps = job["steps"]
        for step in steps:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step
        checkout = next(
            step for step in steps if step.get("uses", "").startswith("actions/checkout")
        )
        assert checkout["with"]["persist-credentials"] is False
        # The update tests bake an older commit of this repository: a shallow clone has none.
        assert checkout["with"]["fetch-depth"] == 0
    assert any(step.get("run") == "bash .ci/run" for job in workflow["jobs"].values()
               for step in job["steps"])  # fmt: skip


def test_zizmor_finds_nothing_offline() -> None:
    # Named inputs, so that each of them is audited (a directory is searched instead).
    command = [str(VENV / "bin/zizmor"), "--offline", "--min-severity", "medium"]
    result = run([*command, WORKFLOW, DEPENDABOT])
    assert result.returncode == 0, result.stdout + result.stderr
