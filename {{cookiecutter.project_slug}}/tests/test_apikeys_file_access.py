"""`api-keys revoke` must leave the key file readable by whoever the running service reads it
as. The running workers re-read API_KEYS_FILE when it changes, and keep their last good set
when it turns unreadable: a revocation that rewrote the file as the operator's own 0600 file
(say `sudo flask api-keys revoke` next to a service running as another user, reading the file
through its group) left the revoked key working, while the command said it was refused."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from flask import Flask

from {{ cookiecutter.package_name }}.apikeys import (
    KeyRecord,
    key_digest,
    key_prefix,
    new_key,
    write_key_file,
)

NOBODY = 65534


def require_root() -> None:
    """Handing a file to another user's group needs root; CI runs as root and must not skip."""
    if os.geteuid() == 0:
        return
    reason = "needs root to give a file to another group"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + ", and CI=true makes it mandatory")
    pytest.skip(reason)


def key_file_with_two_keys(path: Path, prefix: str) -> str:
    now = int(time.time())
    records = []
    for name in ("kept", "revoked"):
        key_id, key = new_key(prefix)
        scopes = frozenset({"items:read"})
        records.append(KeyRecord(key_id, name, scopes, now, None, key_digest(key)))
    write_key_file(path, records)
    return records[1].key_id


@pytest.fixture
def keys_app(make_app: object, tmp_path: Path) -> tuple[Flask, Path, str]:
    path = tmp_path / "api-keys.json"
    prefix = key_prefix("{{ cookiecutter.package_name }}")
    revoked = key_file_with_two_keys(path, prefix)
    app = make_app(API_KEYS_FILE=str(path))  # type: ignore[operator]
    return app, path, revoked


def revoke(app: Flask, key_id: str) -> None:
    result = app.test_cli_runner().invoke(args=["api-keys", "revoke", key_id])
    assert result.exit_code == 0, result.output


def test_a_group_readable_key_file_stays_group_readable(
    keys_app: tuple[Flask, Path, str],
) -> None:
    app, path, revoked = keys_app
    path.chmod(0o640)
    revoke(app, revoked)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("before", [0o644, 0o755])
def test_nothing_but_owner_and_group_bits_are_kept(
    keys_app: tuple[Flask, Path, str], before: int
) -> None:
    app, path, revoked = keys_app
    path.chmod(before)  # other users' bits, and any execute bit, are not carried over
    revoke(app, revoked)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_the_service_user_still_reads_the_file_after_a_revocation_by_root(
    make_app: object,
) -> None:
    require_root()
    # A directory the service user can pass through (pytest's own are root's alone).
    directory = Path(tempfile.mkdtemp(prefix="api-keys-", dir="/tmp"))
    try:
        directory.chmod(0o711)
        path = directory / "api-keys.json"
        revoked = key_file_with_two_keys(path, key_prefix("{{ cookiecutter.package_name }}"))
        app = make_app(API_KEYS_FILE=str(path))  # type: ignore[operator]
        # The service runs as another user and reads the file through its group.
        os.chown(path, 0, NOBODY)
        path.chmod(0o640)
        revoke(app, revoked)
        read_as_service = subprocess.run(
            ["/bin/cat", str(path)],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            capture_output=True,
            text=True,
            check=False,
        )
        owner = (path.stat().st_uid, path.stat().st_gid)
    finally:
        shutil.rmtree(directory)
    assert read_as_service.returncode == 0, read_as_service.stderr
    assert revoked not in read_as_service.stdout
    assert owner == (0, NOBODY)


def written_key_ids(path: Path) -> list[str]:
    return [key["id"] for key in json.loads(path.read_text())["keys"]]


def one_record(name: str) -> KeyRecord:
    key_id, key = new_key(key_prefix("{{ cookiecutter.package_name }}"))
    now = int(time.time())
    return KeyRecord(key_id, name, frozenset({"items:read"}), now, None, key_digest(key))


def test_a_writer_that_may_not_give_the_file_away_keeps_it_as_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run as root, fchown always succeeds; here it answers what it answers every other user
    # for a file it may not give to the old file's owner or group: the write still happens.
    path = tmp_path / "api-keys.json"
    write_key_file(path, [one_record("old")])
    path.chmod(0o640)
    refused: list[tuple[int, int, int]] = []

    def not_root(descriptor: int, uid: int, gid: int) -> None:
        refused.append((descriptor, uid, gid))
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(f"{write_key_file.__module__}.os.fchown", not_root)
    record = one_record("new")
    write_key_file(path, [record])
    assert [(uid, gid) for _, uid, gid in refused] == [(path.stat().st_uid, path.stat().st_gid)]
    assert written_key_ids(path) == [record.key_id]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_non_root_writer_replaces_a_file_another_user_owns() -> None:
    # The real thing: a forked child that is no longer root rewrites root's group-readable file
    # in a directory it owns. fchown fails with EPERM; the file becomes the writer's own.
    require_root()
    # In /tmp: the user must reach the directory (pytest's own are root's alone).
    directory = Path(tempfile.mkdtemp(prefix="api-keys-", dir="/tmp"))
    try:
        os.chown(directory, NOBODY, NOBODY)
        path = directory / "api-keys.json"
        write_key_file(path, [one_record("old")])
        path.chmod(0o640)
        record = one_record("new")
        errors = directory / "child-error"
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit status only
            status = 1
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                write_key_file(path, [record])
                status = 0
            except BaseException as error:  # noqa: BLE001 - handed to the parent as text
                errors.write_text(repr(error))
            finally:
                os._exit(status)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, errors.read_text()
        assert written_key_ids(path) == [record.key_id]
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o640)
        assert sorted(p.name for p in directory.iterdir()) == [path.name]
    finally:
        shutil.rmtree(directory)


def test_a_temporary_that_vanishes_mid_write_fails_the_command_and_keeps_the_file(
    keys_app: tuple[Flask, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Say a cleaner removes the hidden temporary while it is being written: its rename cannot
    # happen, the command reports the error it met (not the failed cleanup of a file already
    # gone), and the key file stays as it was.
    app, path, revoked = keys_app
    before = path.read_bytes()
    real_fsync = os.fsync

    def vanishing(descriptor: int) -> None:
        for leftover in path.parent.glob(f".{path.name}.*"):
            leftover.unlink()
        real_fsync(descriptor)

    monkeypatch.setattr(f"{write_key_file.__module__}.os.fsync", vanishing)
    result = app.test_cli_runner().invoke(args=["api-keys", "revoke", revoked])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot write {path} (No such file or directory); nothing changed\n"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
