"""scripts/acme writes where another local user cannot redirect it.

certbot (often run as root, from a timer) writes the HTTP-01 challenge under ACME_WEBROOT, and
the script writes the ACME account (ACME_STATE_DIR) and the TLS key. The native stack's default
webroot lies inside its runtime directory, whose /tmp name is predictable: a user who made that
directory first, with `acme` a symlink to a directory of root's, had root's certbot write there.
devstack refuses such a directory; acme must too, for each path it writes under.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from test_acme import acme, settings_env
from test_devstack import NOBODY, require_root

FAKE_CERTBOT = """#!/bin/sh
# Writes the challenge where certbot's webroot plugin puts it, then fails like a challenge.
while [ $# -gt 0 ]; do
    case "$1" in --webroot-path) webroot=$2; shift ;; esac
    shift
done
mkdir -p "$webroot/.well-known/acme-challenge"
echo token.keyauth > "$webroot/.well-known/acme-challenge/token"
echo "Certbot failed to authenticate some domains" >&2
exit 1
"""


def fake_certbot(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake-certbot"
    script.write_text(FAKE_CERTBOT)
    script.chmod(0o755)
    return [str(script)]


def run_certbot_with_webroot(tmp_path: Path, webroot: Path) -> None:
    settings = acme.load_settings(
        settings_env(tmp_path, ACME_DOMAINS="api.example.org", ACME_WEBROOT=str(webroot))
    )
    command = [*fake_certbot(tmp_path), "--webroot-path", str(settings.webroot)]
    acme.run_certbot(settings, command)


def victim(tmp_path: Path) -> Path:
    target = tmp_path / "victim"
    target.mkdir(mode=0o700)
    return target


def test_webroot_in_a_directory_everyone_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone may swap `acme` for a symlink
    target = victim(tmp_path)
    (shared / "acme").symlink_to(target)
    with pytest.raises(acme.AcmeError, match=r"^ACME_WEBROOT: "):
        run_certbot_with_webroot(tmp_path, shared / "acme")
    assert list(target.iterdir()) == []


def test_webroot_under_another_users_directory_is_refused(tmp_path: Path) -> None:
    require_root()
    run_dir = tmp_path / "run"  # as devstack's predictable /tmp/<name>-<hash>, made first
    run_dir.mkdir(mode=0o755)
    target = victim(tmp_path)
    (run_dir / "acme").symlink_to(target)
    os.chown(run_dir, NOBODY, NOBODY)
    os.lchown(run_dir / "acme", NOBODY, NOBODY)
    with pytest.raises(acme.AcmeError, match=f"^ACME_WEBROOT: .*uid {NOBODY}"):
        run_certbot_with_webroot(tmp_path, run_dir / "acme")
    assert list(target.iterdir()) == []


def test_webroot_of_this_user_is_used(tmp_path: Path) -> None:
    # A private directory, under /tmp's sticky bit: certbot's own failure is what is reported.
    with pytest.raises(acme.AcmeError, match=r"^certbot failed: Certbot failed"):
        run_certbot_with_webroot(tmp_path, tmp_path / "run" / "acme")
    assert (tmp_path / "run" / "acme" / ".well-known" / "acme-challenge" / "token").is_file()


def test_state_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    require_root()
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(acme.AcmeError, match=r"^ACME_STATE_DIR: "), acme.state_lock(state):
        pass
    # Not taken over: still the other user's, with the mode they gave it, and no lock file.
    assert state.stat().st_uid == NOBODY
    assert stat.S_IMODE(state.stat().st_mode) == 0o755
    assert not (state / "lock").exists()


def test_key_is_never_written_into_a_directory_others_may_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    env = settings_env(tmp_path, ACME_DOMAINS="api.example.org")
    env["TLS_KEY_FILE"] = str(shared / "server-key.pem")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert acme.main(["placeholder"]) == 1
    assert capsys.readouterr().err.startswith("acme: TLS_KEY_FILE: ")
    assert list(shared.iterdir()) == []
