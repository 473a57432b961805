"""Bake every supported option value once, refuse unsupported answers, lint every bake."""

from __future__ import annotations

import fnmatch
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BAKED_TEMPLATE_DIR, TEMPLATE, Bakery, bake_cli, read_answers, require_tool

# One option changed at a time (not the full product of options) keeps CI minutes flat.
SUPPORTED = [
    pytest.param({}, id="defaults"),
    pytest.param({"python_version": "3.13"}, id="python-3.13"),
    pytest.param({"python_version": "3.11"}, id="python-3.11"),
    pytest.param({"tls_profile": "modern"}, id="tls-modern"),
    pytest.param({"ci": "gitlab"}, id="ci-gitlab"),
    pytest.param({"ci": "none"}, id="ci-none"),
    pytest.param(
        {"project_name": "Payments Ledger API", "domain_name": "ledger.payments.example.org"},
        id="custom-names",
    ),
]

UNSUPPORTED = [
    pytest.param({"project_slug": "Bad Slug"}, "project_slug", id="slug-with-space"),
    pytest.param({"package_name": "class"}, "package_name", id="package-keyword"),
    pytest.param({"package_name": "jwt"}, "package_name", id="package-shadows-pyjwt"),
    pytest.param({"package_name": "logging"}, "package_name", id="package-shadows-stdlib"),
    pytest.param({"package_name": "secrets"}, "package_name", id="package-shadows-secrets"),
    pytest.param({"package_name": "my-service"}, "package_name", id="package-not-identifier"),
    pytest.param({"domain_name": "api_example.com"}, "domain_name", id="domain-underscore"),
    pytest.param({"domain_name": "https://api.example.com"}, "domain_name", id="domain-url"),
    pytest.param({"author_email": "nobody"}, "author_email", id="email-malformed"),
    pytest.param(
        {"description": 'x"""\nimport os\n"""'}, "description", id="description-injection"
    ),
    # Choices are refused by cookiecutter itself, before the hook, with the variable's name.
    pytest.param({"tls_profile": "old"}, "tls_profile", id="tls-profile-unknown"),
]

UNRENDERED = re.compile(r"\{\{\s*cookiecutter\.|\{%|\{#|cookiecutter\.(project|package)_")
# The modules a user copies alone into another app are copied into the bake verbatim too.
STANDALONE_MODULES = {
    "apikeys.py",
    "bearer.py",
    "dpop.py",
    "redaction.py",
    "transport.py",
    "webhooks.py",
}


# Tool caches never exist in a clean clone of the template, only in a working tree.
CACHE_DIRS = {".git", ".ruff_cache", ".mypy_cache", ".pytest_cache", "__pycache__"}


def baked_files(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and not CACHE_DIRS & set(p.parts)]


@pytest.mark.parametrize("answers", SUPPORTED)
def test_bake_succeeds(bakery: Bakery, answers: dict[str, str]) -> None:
    project = bakery(**answers)
    assert project.is_dir()
    recorded = read_answers(project)
    for key, value in answers.items():
        assert recorded[key] == value
    assert "_output_dir" not in recorded, "local paths of the baker's machine must not leak"


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file (a NUL byte, or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@pytest.mark.parametrize("answers", SUPPORTED)
def test_no_unrendered_template_syntax(bakery: Bakery, answers: dict[str, str]) -> None:
    project = bakery(**answers)
    leftovers = []
    scanned = 0
    for path in baked_files(project):
        text = text_of(path)
        if text is None:
            continue
        scanned += 1
        for number, line in enumerate(text.splitlines(), 1):
            if UNRENDERED.search(line):
                leftovers.append(f"{path.relative_to(project)}:{number}: {line.strip()}")
    assert leftovers == []
    # Every text file is read, whatever its name: dotfiles, scripts without a suffix, .envsh.
    assert text_of(project / "deploy/nginx/10-derive-settings.envsh") is not None
    assert scanned > 50
    assert not any("{{" in part or "}}" in part for p in baked_files(project) for part in p.parts)


def copied_verbatim(project: Path) -> list[tuple[Path, Path]]:
    """(template file, baked file) for every path cookiecutter.json copies without rendering."""
    patterns = json.loads((TEMPLATE / "cookiecutter.json").read_text())["_copy_without_render"]
    package = read_answers(project)["package_name"]
    pairs = []
    for source in BAKED_TEMPLATE_DIR.rglob("*"):
        relative = source.relative_to(BAKED_TEMPLATE_DIR).as_posix()
        if source.is_file() and any(fnmatch.fnmatch(relative, p) for p in patterns):
            baked = relative.replace("{{cookiecutter.package_name}}", package)
            pairs.append((source, project / baked))
    return pairs


def test_standalone_modules_are_baked_byte_for_byte(bakery: Bakery) -> None:
    project = bakery(project_name="Payments Ledger API")
    pairs = copied_verbatim(project)
    assert {source.name for source, _ in pairs} >= STANDALONE_MODULES
    for source, baked in pairs:
        assert baked.read_bytes() == source.read_bytes(), baked
        assert UNRENDERED.search(source.read_text()) is None, f"{source} needs rendering"


@pytest.mark.parametrize("answers", SUPPORTED)
def test_secrets_are_private_and_ignored(bakery: Bakery, answers: dict[str, str]) -> None:
    project = bakery(**answers)
    for secret in (".env", "keys/dev_jwt_private.pem", "certs/server-key.pem", "var/api-keys.json"):
        assert stat.S_IMODE((project / secret).stat().st_mode) == 0o600, secret
    git = require_tool("git")
    subprocess.run([git, "init", "-q", str(project)], check=True)
    ignored = subprocess.run(
        [git, "-C", str(project), "check-ignore", ".env", "keys/dev_jwt_private.pem",
         "keys/dev_jwt_public.pem", "certs/server-key.pem", "certs/server.pem", "certs/ca.pem",
         "var/api-keys.json"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    assert len(ignored) == 7, ignored
    assert not (project / "pyproject.toml").read_text().count("whsec_")


def test_two_bakes_share_no_secret(bakery: Bakery, tmp_path: Path) -> None:
    first = bakery()
    second = bakery(project_name="Second Service")
    for secret in (".env", "keys/dev_jwt_private.pem", "certs/server-key.pem"):
        assert (first / secret).read_bytes() != (second / secret).read_bytes(), secret


@pytest.mark.parametrize(
    ("answers", "present", "absent"),
    [
        ({"ci": "github"}, ".github/workflows/ci.yml", ".gitlab-ci.yml"),
        ({"ci": "gitlab"}, ".gitlab-ci.yml", ".github"),
        ({"ci": "none"}, None, ".github"),
    ],
    ids=["github", "gitlab", "none"],
)
def test_ci_files_follow_the_option(
    bakery: Bakery, answers: dict[str, str], present: str | None, absent: str
) -> None:
    project = bakery(**answers)
    if present:
        assert (project / present).is_file()
    assert not (project / absent).exists()
    if answers["ci"] == "none":
        assert not (project / ".gitlab-ci.yml").exists()


@pytest.mark.parametrize(
    ("tls_profile", "protocols"),
    [("intermediate", "ssl_protocols TLSv1.2 TLSv1.3;"), ("modern", "ssl_protocols TLSv1.3;")],
)
def test_nginx_uses_only_the_chosen_tls_profile(
    bakery: Bakery, tls_profile: str, protocols: str
) -> None:
    project = bakery(tls_profile=tls_profile)
    templates = project / "deploy/nginx/templates"
    snippets = sorted(p.name for p in (templates / "snippets").glob("tls-*"))
    assert snippets == [f"tls-{tls_profile}.conf.template"]
    assert protocols in (templates / "snippets" / snippets[0]).read_text()
    site = (templates / "default.conf.template").read_text()
    assert f"snippets/tls-{tls_profile}.conf;" in site


@pytest.mark.parametrize(
    ("answers", "workflow", "schema"),
    [
        ({"ci": "github"}, ".github/workflows/ci.yml", "vendor.github-workflows"),
        ({"ci": "gitlab"}, ".gitlab-ci.yml", "vendor.gitlab-ci"),
    ],
    ids=["github", "gitlab"],
)
def test_ci_workflow_is_valid(
    bakery: Bakery, answers: dict[str, str], workflow: str, schema: str
) -> None:
    project = bakery(**answers)
    text = (project / workflow).read_text()
    # The service's own CI runs its lint and tests, with the real stack's system packages.
    for needed in ("make lint", "make test", "make bootstrap", "nginx", "redis-server"):
        assert needed in text, needed
    if answers["ci"] == "github":
        # Workflow hygiene: least privilege, actions pinned by commit, no stored credentials.
        assert "permissions:\n  contents: read" in text
        uses = re.findall(r"uses: (\S+)", text)
        assert uses
        assert all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action) for action in uses), uses
        assert "persist-credentials: false" in text
        assert "timeout-minutes:" in text
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, workflow],
        cwd=project, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("answers", SUPPORTED)
def test_python_version_is_stated_once_and_derived(bakery: Bakery, answers: dict[str, str]) -> None:
    project = bakery(**answers)
    version = read_answers(project)["python_version"]
    assert 'requires-python = ">=3.11"' in (project / "pyproject.toml").read_text()
    dockerfile = project / "Dockerfile"
    if dockerfile.exists():
        assert f"python:{version}" in dockerfile.read_text()
    for workflow in (project / ".github/workflows/ci.yml", project / ".gitlab-ci.yml"):
        if workflow.exists():
            assert version in workflow.read_text()


@pytest.mark.parametrize(("answers", "variable"), UNSUPPORTED)
def test_unsupported_answers_fail_before_anything_is_written(
    tmp_path: Path, answers: dict[str, str], variable: str
) -> None:
    result = bake_cli(tmp_path, **answers)
    assert result.returncode != 0
    assert variable in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be written for a refused bake"


@pytest.mark.parametrize("answers", SUPPORTED)
def test_baked_code_passes_ruff_and_mypy(bakery: Bakery, answers: dict[str, str]) -> None:
    project = bakery(**answers)
    for command in (
        ["ruff", "check", "--no-cache", "."],
        ["ruff", "format", "--check", "--no-cache", "."],
        ["mypy", "--cache-dir", str(project / ".mypy_cache")],
    ):
        result = subprocess.run(
            [sys.executable, "-m", *command], cwd=project, capture_output=True, text=True,
            check=False, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
