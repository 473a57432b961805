"""The CI a bake generates keeps its dependencies and actions current and checked: Dependabot
(GitHub) or Renovate (GitLab) with a waiting period for new releases, pip-audit --strict,
zizmor on the workflows, hadolint on the Dockerfile, and a pinned pre-commit configuration.

Every tool here runs offline: the schemas are the ones check-jsonschema vendors, zizmor runs
with --offline and hadolint comes as a binary inside its wheel."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Bakery, require_tool

VENV = Path(sys.prefix)
FULL_SHA = re.compile(r"[0-9a-f]{40}")

# What each Dependabot ecosystem is called in Renovate: both must cover the same ground.
RENOVATE_MANAGERS = {
    "pip": "pep621",
    "github-actions": "gitlabci",  # the CI definition's own dependencies: actions or images
    "docker": "dockerfile",
    "docker-compose": "docker-compose",
    "pre-commit": "pre-commit",
}
REQUIRED_ECOSYSTEMS = {"pip", "github-actions", "docker"}
MINIMUM_DAYS = 7


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip


def check_schema(project: Path, schema: str, path: str) -> None:
    result = run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, path], project
    )
    assert result.returncode == 0, result.stdout + result.stderr


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def days(age: str) -> int:
    """Renovate's "7 days" / "1 week" style durations, in whole days."""
    match = re.fullmatch(r"(\d+) (day|days|week|weeks)", age)
    assert match, f"unexpected duration {age!r}"
    return int(match[1]) * (7 if match[2].startswith("week") else 1)


def make_recipe(project: Path, target: str) -> list[str]:
    """The commands `make <target>` runs in the bake, expanded for the template's venv."""
    result = run(["make", "-n", target, f"VENV={VENV}"], project)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def recipe_line(project: Path, target: str, tool: str) -> str:
    lines = [line for line in make_recipe(project, target) if tool in line]
    assert len(lines) == 1, (target, tool, lines)
    return lines[0]


def test_dependabot_updates_every_ecosystem_after_a_cooldown(bakery: Bakery) -> None:
    project = bakery(ci="github")
    check_schema(project, "vendor.dependabot", ".github/dependabot.yml")
    updates = load_yaml(project / ".github/dependabot.yml")["updates"]
    ecosystems = {update["package-ecosystem"] for update in updates}
    assert ecosystems >= REQUIRED_ECOSYSTEMS
    assert ecosystems <= set(RENOVATE_MANAGERS), "an ecosystem Renovate would not cover"
    for update in updates:
        assert update["directory"] == "/"
        assert update["cooldown"]["default-days"] >= MINIMUM_DAYS, update["package-ecosystem"]


def test_renovate_covers_what_dependabot_does_after_a_minimum_age(bakery: Bakery) -> None:
    project = bakery(ci="gitlab")
    check_schema(project, "vendor.renovate", ".gitlab/renovate.json")
    config = json.loads((project / ".gitlab/renovate.json").read_text())
    # The schema accepts unknown keys, so a misspelt option would pass it silently.
    schema = files("check_jsonschema") / "builtin_schemas/vendor/renovate.json"
    known = set(json.loads(schema.read_text())["properties"])
    assert set(config) - {"$schema"} <= known
    assert set(config["enabledManagers"]) == set(RENOVATE_MANAGERS.values())
    # Renovate's pre-commit manager is off unless enabled by name.
    assert config["pre-commit"]["enabled"] is True
    assert days(config["minimumReleaseAge"]) >= MINIMUM_DAYS
    # "strict": no branch at all until the release is old enough (not a pending status check).
    assert config["internalChecksFilter"] == "strict"


@pytest.mark.parametrize(
    ("ci", "config_file"),
    [("github", ".github/workflows/ci.yml"), ("gitlab", ".gitlab-ci.yml")],
)
def test_ci_runs_lint_with_hadolint_and_a_strict_audit(
    bakery: Bakery, ci: str, config_file: str
) -> None:
    project = bakery(ci=ci)
    config = load_yaml(project / config_file)
    job = config["jobs"]["test"] if ci == "github" else config["test"]
    if ci == "github":
        commands = [step["run"] for step in job["steps"] if "run" in step]
    else:
        commands = job["script"]
    for target in ("make lint", "make test", "make audit"):
        assert target in commands, target
    audit = shlex.split(recipe_line(project, "audit", "pip_audit"))
    assert audit[1:] == ["-m", "pip_audit", "--strict", "--skip-editable"], audit
    assert shlex.split(recipe_line(project, "lint", "hadolint"))[1:] == ["Dockerfile"]


def test_audit_command_is_accepted_by_pip_audit(bakery: Bakery) -> None:
    """The bake's exact pip-audit command, with --dry-run: it collects, without the network."""
    project = bakery(ci="github")
    command = [*shlex.split(recipe_line(project, "audit", "pip_audit")), "--dry-run"]
    result = run(command, project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_github_workflows_pass_zizmor_offline(bakery: Bakery) -> None:
    """The bake's own zizmor command, offline: the workflow, Dependabot and pre-commit files."""
    project = bakery(ci="github")
    command = recipe_line(project, "audit", "zizmor")
    result = run(["sh", "-c", command], project, ZIZMOR_OFFLINE="true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout, result.stdout


def test_hadolint_runs_offline_and_finds_problems(bakery: Bakery, tmp_path: Path) -> None:
    project = bakery()
    command = shlex.split(recipe_line(project, "lint", "hadolint"))
    result = run(command, project)
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN pip install flask\n")
    result = run(command, tmp_path)
    assert result.returncode != 0
    assert "DL3007" in result.stdout, result.stdout  # "latest" is not a version


def test_pre_commit_runs_pinned_ruff_mypy_and_a_private_key_check(bakery: Bakery) -> None:
    project = bakery()
    result = run([str(VENV / "bin/pre-commit"), "validate-config", ".pre-commit-config.yaml"],
                 project)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = (project / ".pre-commit-config.yaml").read_text()
    repos = load_yaml(project / ".pre-commit-config.yaml")["repos"]
    hooks = {hook["id"]: repo for repo in repos for hook in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "mypy", "detect-private-key"} <= set(hooks)
    for repo in repos:
        if repo["repo"] == "local":
            continue
        # Pinned by commit, the tag beside it as `pre-commit autoupdate --freeze` writes it.
        assert FULL_SHA.fullmatch(repo["rev"]), repo
        assert re.search(rf"rev: {repo['rev']}  # frozen: v[\d.]+\n", text), repo["repo"]
    # mypy --strict needs the service's own dependencies: the hook runs the venv's mypy,
    # at the Makefile's default venv.
    mypy = next(hook for hook in hooks["mypy"]["hooks"] if hook["id"] == "mypy")
    assert mypy["entry"] == ".venv/bin/mypy"
    assert "VENV ?= .venv" in (project / "Makefile").read_text()
    assert ".venv/bin/pre-commit install" in (project / "README.md").read_text()


def test_nothing_a_user_commits_trips_the_private_key_check(bakery: Bakery) -> None:
    """A first commit of the bake passes detect-private-key, because the bake's own keys are
    git-ignored, not because the check is blind: it does flag those keys."""
    project = bakery()
    git = require_tool("git")
    detect = str(VENV / "bin/detect-private-key")
    subprocess.run([git, "init", "-q", str(project)], check=True)
    # What `git add -A` would stage, without touching the index of the shared bake.
    listed = run([git, "ls-files", "-z", "--others", "--exclude-standard"], project).stdout
    committable = [name for name in listed.split("\0") if name]
    assert "pyproject.toml" in committable
    assert not any(name.startswith(("keys/", "certs/")) for name in committable)
    # The files pre-commit would hand the hook: its own exclude pattern applies.
    config = load_yaml(project / ".pre-commit-config.yaml")
    hook = next(
        hook
        for repo in config["repos"]
        for hook in repo["hooks"]
        if hook["id"] == "detect-private-key"
    )
    checked = [name for name in committable if not re.search(hook.get("exclude", "^$"), name)]
    assert len(checked) >= len(committable) - 1, "exclude only what must be excluded"
    result = run([detect, *checked], project)
    assert result.returncode == 0, result.stdout
    result = run([detect, "keys/dev_jwt_private.pem", "certs/server-key.pem"], project)
    assert result.returncode == 1, result.stdout
