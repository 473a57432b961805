"""`api-keys revoke` must leave the key file readable by whoever the running service reads it
as. The running workers re-read API_KEYS_FILE when it changes, and keep their last good set
when it turns unreadable: a revocation that rewrote the file as the operator's own 0600 file
(say `sudo flask api-keys revoke` next to a service running as another user, reading the file
through its group) left the revoked key working, while the command said it was refused."""

from __future__ import annotations

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
