"""The default bake works as a service: its own test suite passes, it refuses an unsafe
production configuration naming the setting, and with its development .env it serves HTTPS."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import Bakery, under_ci
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

VENV = Path(sys.prefix)
PYTEST_SUMMARY = re.compile(r"\b\d+ passed\b.* in [\d.]+s")


def service_env(project: Path, **changes: str) -> dict[str, str]:
    """The shared venv first on PATH and the bake's src/ importable. The bake is not
    installed into the shared venv: pytest-xdist workers share it, so one worker's install
    or uninstall would pull the package from under another's tests."""
    env = {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}"}
    env["PYTHONPATH"] = str(project / "src")
    env.update(changes)
    return env


def test_baked_make_test_passes(default_bake: Path) -> None:
    result = subprocess.run(
        ["make", "test", f"VENV={VENV}"], cwd=default_bake, env=service_env(default_bake),
        capture_output=True, text=True, check=False, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    # pytest's closing line, e.g. "612 passed, 2 warnings in 60.1s" (make adds lines after it).
    summary = [line for line in result.stdout.splitlines() if PYTEST_SUMMARY.search(line)]
    assert summary, result.stdout[-3000:]
    if under_ci():
        assert "skipped" not in summary[-1], f"nothing may be skipped under CI: {summary[-1]}"


def test_modern_tls_profile_passes_the_transport_stack_tests(bakery: Bakery) -> None:
    """The TLS-specific stack tests (protocol versions, ALPN, sslyze's Mozilla check for the
    chosen profile) again for the modern bake; the default bake runs them in its make test."""
    project = bakery(tls_profile="modern")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_stack_transport.py", "tests/test_transport.py"],
        cwd=project, env=service_env(project), capture_output=True, text=True, check=False,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = [line for line in result.stdout.splitlines() if PYTEST_SUMMARY.search(line)]
    assert summary, result.stdout[-3000:]
    if under_ci():
        assert "skipped" not in summary[-1], f"nothing may be skipped under CI: {summary[-1]}"


def start_gunicorn(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV / "bin" / "gunicorn"), "-c", "gunicorn.conf.py", *args],
        cwd=project, env=service_env(project, **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def production_public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A public key whose private half is nowhere on this host, as a real provider's is."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("provider") / "provider_public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"JWT_ISSUER": ""}, "JWT_ISSUER"),
        ({"JWT_PUBLIC_KEY_FILE": ""}, "JWT_JWKS_URL"),
        ({"JWT_ALGORITHMS": "HS256"}, "JWT_ALGORITHMS"),
        ({"FLASK_DEBUG": "1"}, "FLASK_DEBUG"),
        ({"JWT_JWKS_URL": "http://idp.example/jwks", "JWT_PUBLIC_KEY_FILE": ""}, "JWT_JWKS_URL"),
        ({"REPLAY_STORE_URL": "memory://", "WEB_CONCURRENCY": "2"}, "REPLAY_STORE_URL"),
        ({"JWT_ISSUER": "https://dev-issuer.localhost/"}, "JWT_ISSUER"),
        ({"JWT_ISSUER": "https://localhost./"}, "JWT_ISSUER"),
        ({"WEBHOOK_SECRET": "whsec_" + "!" * 32}, "WEBHOOK_SECRET"),
        ({"GITHUB_WEBHOOK_SECRET": "a"}, "GITHUB_WEBHOOK_SECRET"),
        ({"WEBHOOK_TOLERANCE_SECONDS": "999999999"}, "WEBHOOK_TOLERANCE_SECONDS"),
        ({"HSTS_MAX_AGE": "0"}, "HSTS_MAX_AGE"),
        # The bake's .env fills in its dev key, whose private half sits in keys/.
        ({"JWT_PUBLIC_KEY_FILE": "keys/dev_jwt_public.pem"}, "JWT_PUBLIC_KEY_FILE"),
    ],
    ids=[
        "missing-issuer",
        "missing-key",
        "hs256",
        "debug",
        "http-jwks",
        "memory-store",
        "dev-issuer",
        "loopback-issuer-trailing-dot",
        "webhook-secret-not-base64",
        "weak-github-secret",
        "tolerance-of-years",
        "hsts-off",
        "dev-key",
    ],
)
def test_production_start_refuses_unsafe_settings(
    default_bake: Path, production_public_key: Path, changes: dict[str, str], setting: str
) -> None:
    # The bake's .env stays in place (a real environment variable wins over it), with the
    # issuer and key a production deployment would have; each case then breaks one setting.
    production = {
        "APP_ENV": "production",
        "JWT_ISSUER": "https://issuer.example.com/",
        "JWT_PUBLIC_KEY_FILE": str(production_public_key),
        # Should a case start after all, it must not take a port someone else uses.
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
    }
    process = start_gunicorn(default_bake, **{**production, **changes})
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


def test_development_env_serves_healthz_over_https(default_bake: Path) -> None:
    port = free_port()
    process = start_gunicorn(
        default_bake,
        "--bind", f"127.0.0.1:{port}",
        "--certfile", "certs/server.pem",
        "--keyfile", "certs/server-key.pem",
        WEB_CONCURRENCY="1",
    )  # fmt: skip
    try:
        body = get_json(
            f"https://localhost:{port}/healthz",
            default_bake / "certs" / "ca.pem",
            deadline=time.monotonic() + 30,
        )
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert body == {"status": "ok"}
