"""The default bake works as a service: its own test suite passes, it refuses an unsafe
production configuration naming the setting, and with its development .env it serves HTTPS."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import under_ci

# Everything that installs the bake into the shared venv runs on one xdist worker.
pytestmark = pytest.mark.xdist_group("installed-bake")

VENV = Path(sys.prefix)


@pytest.fixture(scope="session")
def installed_bake(default_bake: Path) -> Iterator[Path]:
    """The default bake installed (editable, no deps) into the shared venv, as `make install`
    would into its own."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "install", "--no-deps", "-e", str(default_bake)], check=True)
    yield default_bake
    subprocess.run([*pip, "uninstall", "--yes", "secure-service"], check=False)


def service_env(**changes: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}"}
    env.update(changes)
    return env


def test_baked_make_test_passes(installed_bake: Path) -> None:
    result = subprocess.run(
        ["make", "test", f"VENV={VENV}"], cwd=installed_bake, env=service_env(),
        capture_output=True, text=True, check=False, timeout=1500,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1:] if result.stdout else []
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert summary, result.stdout
    assert " passed" in summary[0], summary
    if under_ci():
        assert " skipped" not in summary[0], f"nothing may be skipped under CI: {summary[0]}"


def start_gunicorn(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV / "bin" / "gunicorn"), "-c", "gunicorn.conf.py", *args],
        cwd=project, env=service_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"JWT_ISSUER": ""}, "JWT_ISSUER"),
        ({"JWT_PUBLIC_KEY_FILE": ""}, "JWT_JWKS_URL"),
        ({"JWT_ALGORITHMS": "HS256"}, "JWT_ALGORITHMS"),
        ({"FLASK_DEBUG": "1"}, "FLASK_DEBUG"),
        ({"JWT_JWKS_URL": "http://idp.example/jwks", "JWT_PUBLIC_KEY_FILE": ""}, "JWT_JWKS_URL"),
        ({"REPLAY_STORE_URL": "memory://", "WEB_CONCURRENCY": "2"}, "REPLAY_STORE_URL"),
    ],
    ids=["missing-issuer", "missing-key", "hs256", "debug", "http-jwks", "memory-store"],
)
def test_production_start_refuses_unsafe_settings(
    installed_bake: Path, changes: dict[str, str], setting: str
) -> None:
    process = start_gunicorn(installed_bake, APP_ENV="production", **changes)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode != 0
    lines = [line for line in stderr.splitlines() if setting in line]
    assert lines, stderr
    assert lines[0].startswith(f"configuration error: {setting}: "), stderr
    assert "Traceback" not in stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def get_json(url: str, ca_file: Path, deadline: float) -> dict[str, object]:
    context = ssl.create_default_context(cafile=str(ca_file))
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310
                body: dict[str, object] = json.load(response)
                return body
        except (OSError, ValueError) as error:
            last_error = error
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last_error}")


def test_development_env_serves_healthz_over_https(installed_bake: Path) -> None:
    port = free_port()
    process = start_gunicorn(
        installed_bake,
        "--bind", f"127.0.0.1:{port}",
        "--certfile", "certs/server.pem",
        "--keyfile", "certs/server-key.pem",
        WEB_CONCURRENCY="1",
    )  # fmt: skip
    try:
        body = get_json(
            f"https://localhost:{port}/healthz",
            installed_bake / "certs" / "ca.pem",
            deadline=time.monotonic() + 30,
        )
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert body == {"status": "ok"}
