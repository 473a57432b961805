"""The compose files' security and certificate wiring, read as data (no docker needed), and the
certificate watcher that makes the nginx container reload, run with a stand-in nginx."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from certificates import self_signed
from stack import PROJECT_ROOT, require_tool

NGINX_DIR = PROJECT_ROOT / "deploy" / "nginx"
WATCHER = NGINX_DIR / "40-reload-on-certificate-change.sh"
NGINX_CAPABILITIES = {"CHOWN", "NET_BIND_SERVICE", "SETGID", "SETUID"}
REDIS_PASSWORD = "${REDIS_PASSWORD:?"


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = YAML(typ="safe").load((PROJECT_ROOT / name).read_text())
    return document


def merged_services(*names: str) -> dict[str, dict[str, Any]]:
    """Services of several compose files as `docker compose -f ... -f ...` merges them, for
    the keys these tests read (mappings merge, cap_add joins, volumes replace by target)."""
    services: dict[str, dict[str, Any]] = {}
    for name in names:
        for service_name, service in load(name)["services"].items():
            merged = services.setdefault(service_name, {})
            for key, value in service.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                elif key == "cap_add":
                    merged[key] = [*merged.get(key, []), *value]
                elif key == "volumes" and key in merged:
                    targets = {volume.split(":")[1] for volume in value}
                    kept = [v for v in merged[key] if v.split(":")[1] not in targets]
                    merged[key] = kept + value
                else:
                    merged[key] = value
    return services


@pytest.fixture(scope="module")
def production() -> dict[str, dict[str, Any]]:
    return merged_services("compose.yaml", "compose.prod.yaml")


def test_every_service_drops_all_capabilities_and_privilege_escalation(
    production: dict[str, dict[str, Any]],
) -> None:
    for name, service in production.items():
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_nginx_keeps_only_what_its_master_needs_and_a_read_only_root(
    production: dict[str, dict[str, Any]],
) -> None:
    nginx = production["nginx"]
    assert set(nginx["cap_add"]) == NGINX_CAPABILITIES
    assert nginx["read_only"] is True
    # Rendered templates, buffers and the pid file, in memory.
    assert {"/etc/nginx/conf.d", "/var/cache/nginx", "/run"} <= set(nginx["tmpfs"])
    assert "/run/nginx.pid" in " ".join(nginx["healthcheck"]["test"])
    # Development adds one capability: reading the developer's own 0600 key.
    development = merged_services("compose.yaml", "compose.override.yaml")["nginx"]
    assert set(development["cap_add"]) - NGINX_CAPABILITIES == {"DAC_READ_SEARCH"}


def test_redis_requires_a_password_that_the_app_carries(
    production: dict[str, dict[str, Any]],
) -> None:
    redis, app = production["redis"], production["app"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1].startswith(REDIS_PASSWORD)
    assert redis["environment"]["REDISCLI_AUTH"].startswith(REDIS_PASSWORD)
    # redis-cli exits 0 on a NOAUTH error: only PONG counts.
    assert "grep -q PONG" in redis["healthcheck"]["test"][-1]
    assert app["environment"]["REPLAY_STORE_URL"].startswith("redis://:" + REDIS_PASSWORD)
    assert app["environment"]["REPLAY_STORE_URL"].endswith("@redis:6379/0")
    assert "ports" not in redis


def test_acme_shares_the_webroot_and_certificates_with_nginx(
    production: dict[str, dict[str, Any]],
) -> None:
    nginx, acme, acme_init = production["nginx"], production["acme"], production["acme-init"]
    nginx_env, acme_env = nginx["environment"], acme["environment"]
    for setting in ("TLS_CERT_FILE", "TLS_KEY_FILE", "ACME_WEBROOT"):
        assert acme_env[setting] == nginx_env[setting], setting
    # Written by acme, read-only for nginx, in shared volumes.
    assert "tls-certificates:/etc/nginx/certs" in acme["volumes"]
    assert "tls-certificates:/etc/nginx/certs:ro" in nginx["volumes"]
    assert "acme-webroot:/var/www/acme" in acme["volumes"]
    assert "acme-webroot:/var/www/acme:ro" in nginx["volumes"]
    assert {"tls-certificates", "acme-state"} <= set(load("compose.prod.yaml")["volumes"])
    assert "acme-state:" + acme_env["ACME_STATE_DIR"] in acme["volumes"]
    # nginx starts on the placeholder, acme issues through the running nginx, and nginx
    # reloads by itself (its watcher) when the certificate changes.
    assert acme_init["command"] == ["placeholder"]
    assert nginx["depends_on"]["acme-init"]["condition"] == "service_completed_successfully"
    assert acme["depends_on"]["nginx"]["condition"] == "service_healthy"
    assert "scripts/acme renew" in acme["command"][0]
    assert acme_env["ACME_RELOAD_COMMAND"] == "none"
    watcher = f"./{WATCHER.relative_to(PROJECT_ROOT)}:/docker-entrypoint.d/{WATCHER.name}:ro"
    assert watcher in nginx["volumes"]
    assert WATCHER.stat().st_mode & 0o111, "the nginx image only runs executable scripts"


# --- the certificate watcher in the nginx container ------------------------------------------

STAND_IN_NGINX = """#!/bin/sh
echo "nginx $*" >> "$CALLS"
if [ "$1" = "-t" ] && [ -e "$REFUSE" ]; then exit 1; fi
exit 0
"""
STAND_IN_ENVSUBST = """#!/bin/sh
echo "render ocsp=$NGINX_OCSP_STAPLING" >> "$CALLS"
"""


@pytest.fixture
def busybox_path(tmp_path: Path) -> str:
    busybox = require_tool("busybox", "busybox")
    applets = tmp_path / "busybox"
    applets.mkdir()
    subprocess.run([busybox, "--install", "-s", str(applets)], check=True)
    return str(applets)


@pytest.fixture
def watcher_dir(tmp_path: Path) -> Path:
    """An entrypoint directory like the image's: the watcher, the real derive script, and
    a stand-in for the image's 20-envsubst-on-templates.sh."""
    entrypoint = tmp_path / "docker-entrypoint.d"
    entrypoint.mkdir()
    shutil.copy(WATCHER, entrypoint)
    shutil.copy(NGINX_DIR / "10-derive-settings.envsh", entrypoint)
    (entrypoint / "20-envsubst-on-templates.sh").write_text(STAND_IN_ENVSUBST)
    (entrypoint / "20-envsubst-on-templates.sh").chmod(0o755)
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    (stand_ins / "nginx").write_text(STAND_IN_NGINX)
    (stand_ins / "nginx").chmod(0o755)
    return entrypoint


def wait_for(path: Path, text: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.1)
    pytest.fail(f"{text!r} never appeared in {path}: {content!r}")


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Process groups the test started; each is stopped, by its id, at the end."""
    groups: list[int] = []
    yield groups
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)


@pytest.mark.parametrize("shell", ["sh", "busybox"])
def test_watcher_reloads_nginx_once_the_new_certificate_passes_its_test(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    watcher_dir: Path,
    started: list[int],
    shell: str,
) -> None:
    tools = request.getfixturevalue("busybox_path") if shell == "busybox" else "/usr/bin:/bin"
    certs = tmp_path / "certs"
    cert_file, key_file = self_signed(("api.example.test",)).write(certs)
    calls, refuse = tmp_path / "calls", tmp_path / "refuse"
    env = {
        "PATH": f"{tmp_path / 'bin'}:{tools}",
        "CALLS": str(calls),
        "REFUSE": str(refuse),
        "TLS_CERT_FILE": str(cert_file),
        "TLS_KEY_FILE": str(key_file),
        "TLS_TRUSTED_CERT_FILE": str(cert_file),
        "RATE_LIMIT_PER_SECOND": "20",
        "RATE_LIMIT_BURST": "40",
        "HSTS_MAX_AGE": "63072000",
        "HTTPS_PORT": "443",
        "UPSTREAM_SERVER": "app:8000",
        "NGINX_CERT_CHECK_SECONDS": "1",
    }
    script = watcher_dir / WATCHER.name
    process = subprocess.Popen(["sh", str(script)], env=env, start_new_session=True)
    started.append(process.pid)
    # Like the image's entrypoint, which runs it and goes on to start nginx.
    assert process.wait(timeout=10) == 0
    time.sleep(2.5)
    assert not calls.exists(), "nothing changed, nothing may be reloaded"

    # A renewed certificate that nginx refuses (say, its key not yet in place): never loaded.
    refuse.touch()
    renewed = self_signed(("api.example.test",), ocsp_url="http://ocsp.example.test/")
    renewed.write(certs)
    wait_for(calls, "nginx -t -q")
    assert "nginx -s reload" not in calls.read_text()

    # Accepted at a later check: rendered again (OCSP follows the new certificate), reloaded.
    refuse.unlink()
    log = wait_for(calls, "nginx -s reload")
    assert "render ocsp=on" in log
    reloads = log.count("nginx -s reload")
    time.sleep(2.5)
    assert calls.read_text().count("nginx -s reload") == reloads, "reloaded once per change"


def test_watcher_refuses_a_bad_interval(watcher_dir: Path) -> None:
    result = subprocess.run(
        ["sh", str(watcher_dir / WATCHER.name)],
        env={"PATH": "/usr/bin:/bin", "NGINX_CERT_CHECK_SECONDS": "soon"},
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "configuration error: NGINX_CERT_CHECK_SECONDS: must be a positive integer, got 'soon'"
    )


def test_watcher_is_posix_sh() -> None:
    checker = require_tool("shellcheck", "shellcheck")
    result = subprocess.run(
        [checker, "-s", "sh", str(WATCHER), str(NGINX_DIR / "10-derive-settings.envsh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
