"""A service baked from an older commit of this template takes the current one with
`cruft update`: cleanly when it is untouched, keeping a local change when it has one, and never
touching the per-checkout secrets that the template's cruft skip list protects.

The current template is HEAD of this repository, which is what cruft clones; the working tree,
with whatever is not committed yet, plays no part. The older commit is the one that introduced
the skip list, so every later commit must be able to update from it. What changed in between
does not matter: the updated service must equal a fresh bake of HEAD, whatever the difference."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEMPLATE, require_tool, under_ci

pytestmark = pytest.mark.xdist_group("update")

BAKED_PYPROJECT = "{{cookiecutter.project_slug}}/pyproject.toml"
# What the bake makes per checkout; the baked pyproject.toml tells cruft to skip them.
SKIPPED = (".env", "certs", "keys", "var")
SECRETS = (".env", "keys/dev_jwt_private.pem", "certs/server-key.pem")
LOCAL_CHANGE = "# Local change: the update keeps this line.\n"
# Files where that line is a comment (Markdown would take it as a heading, which is fine too).
COMMENTED = {".py", ".toml", ".yml", ".yaml", ".md", ".conf", ".template", ".envsh"}
COMMENTED_NAMES = {"Makefile", ".gitignore", ".dockerignore"}
OLD_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? ", re.MULTILINE)
# A change this many lines away from the template's own changes cannot overlap them.
MARGIN = 5

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "template-test@example.com",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "template-test@example.com",
}


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip


def must(command: list[str], cwd: Path) -> str:
    result = run(command, cwd)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def git(project: Path, *args: str) -> str:
    return must([require_tool("git"), "-c", "commit.gpgsign=false", *args], project)


def cruft(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "cruft", *args], cwd)


def commit_all(project: Path, message: str) -> None:
    if not (project / ".git").exists():
        git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)


def files(project: Path) -> dict[str, tuple[bytes, bool]]:
    """Content and executable bit of every file, except git's own and what cruft skips."""
    found = {}
    for path in project.rglob("*"):
        relative = path.relative_to(project)
        if relative.parts[0] in {".git", *SKIPPED} or not path.is_file():
            continue
        found[relative.as_posix()] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return found


def differences(project: Path, expected: Path) -> list[str]:
    have, want = files(project), files(expected)
    return sorted(name for name in have.keys() | want.keys() if have.get(name) != want.get(name))


def template_changes(project: Path, expected: Path) -> list[str]:
    """Differences beyond cruft's own record (which names the commit checked out)."""
    return [name for name in differences(project, expected) if name != ".cruft.json"]


def secrets_of(project: Path) -> dict[str, tuple[bytes, int]]:
    return {
        name: ((project / name).read_bytes(), stat.S_IMODE((project / name).stat().st_mode))
        for name in SECRETS
    }


@pytest.fixture(scope="module")
def old_commit() -> str:
    """The commit that introduced the cruft skip list in the baked pyproject.toml."""
    git = require_tool("git")
    shallow = run([git, "rev-parse", "--is-shallow-repository"], TEMPLATE)
    log = run([git, "log", "--format=%H", "--reverse", "-S", "[tool.cruft]", "--",
               BAKED_PYPROJECT], TEMPLATE)  # fmt: skip
    commits = log.stdout.split()
    if shallow.stdout.strip() != "false" or log.returncode != 0 or not commits:
        message = (
            "the update tests need this repository's full history, to bake the commit that "
            f"introduced [tool.cruft] in {BAKED_PYPROJECT}; git says shallow="
            f"{shallow.stdout.strip() or '?'} {shallow.stderr.strip()} {log.stderr.strip()}"
        )
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)
    head = run([git, "rev-parse", "HEAD"], TEMPLATE).stdout.strip()
    if commits[0] == head:
        pytest.fail("HEAD itself introduced the cruft skip list: there is no older commit yet")
    return commits[0]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, mkcert_caroot: Path) -> Path:
    """A bake of HEAD with cruft, to compare updated services with."""
    output = tmp_path_factory.mktemp("fresh")
    result = cruft(output, "create", "--no-input", str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr
    return output / "secure-service"


def update(project: Path) -> None:
    """`cruft update` as the baked README says, with "y" given up front (--skip-apply-ask)."""
    before = secrets_of(project)
    result = cruft(project, "update", "--skip-apply-ask")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "reject" not in output.lower(), output
    assert "conflict" not in output.lower(), output
    assert list(project.rglob("*.rej")) == []
    assert git(project, "diff", "--name-only", "--diff-filter=U") == ""
    # The per-checkout secrets were neither regenerated nor rewritten with a looser mode.
    assert secrets_of(project) == before
    assert all(mode == 0o600 for _, mode in before.values())


def test_cruft_create_bake_updates_to_head_like_a_fresh_bake(
    tmp_path: Path, mkcert_caroot: Path, old_commit: str, fresh: Path
) -> None:
    result = cruft(tmp_path, "create", "--no-input", "--checkout", old_commit, str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr
    project = tmp_path / "secure-service"
    commit_all(project, "Bake from the older template")
    assert template_changes(project, fresh), (
        f"the bakes of {old_commit} and HEAD are identical, so this test would prove nothing"
    )
    assert cruft(project, "check").returncode == 1, "cruft check must see the newer template"

    update(project)

    assert differences(project, fresh) == []
    assert cruft(project, "check").returncode == 0


def quiet_end(old: Path, new: Path) -> str | None:
    """Where a line can go in `old` far from every change git's diff makes to reach `new`:
    "start", "end", or None when the changes come close to both ends."""
    diff = run(
        [require_tool("git"), "diff", "--no-index", "-U0", "--", str(old), str(new)], old.parent
    ).stdout
    touched = []  # old-side line numbers each hunk touches (an insertion touches both neighbours)
    for start, length in OLD_HUNK.findall(diff):
        first, count = int(start), int(length or "1")  # git omits a count of 1
        last = first + count - 1 if count else first + 1
        touched += [first, last]
    if not touched or min(touched) > MARGIN:
        return "start"
    if max(touched) <= len(old.read_text().splitlines()) - MARGIN:
        return "end"
    return None


def place_local_change(project: Path, fresh: Path) -> tuple[str, str]:
    """Change one file of the old bake where the template's update cannot overlap it,
    preferring a file the update also changes: keeping both is what a three-way merge is for.
    Returns the file and the text it must have after the update."""
    candidates = []
    for name in sorted(files(project)):
        path = Path(name)
        if path.suffix not in COMMENTED and path.name not in COMMENTED_NAMES:
            continue
        if not (fresh / name).is_file():
            continue
        changed = (project / name).read_bytes() != (fresh / name).read_bytes()
        where = quiet_end(project / name, fresh / name)
        if where:
            candidates.append((not changed, name, where))
    assert candidates, "no file to change"
    _, name, where = min(candidates)
    old_text, fresh_text = (project / name).read_text(), (fresh / name).read_text()
    if where == "start":
        (project / name).write_text(LOCAL_CHANGE + old_text)
        return name, LOCAL_CHANGE + fresh_text
    (project / name).write_text(old_text + LOCAL_CHANGE)
    return name, fresh_text + LOCAL_CHANGE


def test_linked_cookiecutter_bake_keeps_a_local_change_through_the_update(
    tmp_path: Path, mkcert_caroot: Path, old_commit: str, fresh: Path
) -> None:
    # Plain cookiecutter from a checkout of the older commit, then linked as the README says.
    checkout = tmp_path / "template"
    git(tmp_path, "clone", "-q", str(TEMPLATE), str(checkout))
    git(checkout, "checkout", "-q", "--detach", old_commit)
    must([sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path / "bake"),
          str(checkout)], tmp_path)  # fmt: skip
    project = tmp_path / "bake" / "secure-service"
    answers = (project / ".cookiecutter.json").read_text()
    assert json.loads(answers)["project_slug"] == "secure-service"
    link = ["link", "--no-input", "--checkout", old_commit, "--extra-context", answers]
    readme = (fresh / "README.md").read_text()
    assert (
        'cruft link --no-input --checkout <commit> --extra-context "$(cat .cookiecutter.json)"'
        in readme
    )
    result = cruft(project, *link, str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((project / ".cruft.json").read_text())["commit"] == old_commit
    commit_all(project, "Bake from the older template and link it")
    assert template_changes(project, fresh), "nothing to update: this test would prove nothing"

    changed, expected = place_local_change(project, fresh)
    commit_all(project, "A change of our own")

    update(project)

    assert differences(project, fresh) == [changed]
    assert (project / changed).read_text() == expected
