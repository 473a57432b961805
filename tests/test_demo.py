"""`make demo` bakes the defaults and serves them through nginx over HTTPS."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEMPLATE, require_tool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def demo(tmp_path: Path, mkcert_caroot: Path) -> Iterator[tuple[Path, int]]:
    require_tool("nginx")
    demo_dir = tmp_path / "demo"
    https_port, http_port = free_port(), free_port()
    env = {**os.environ, "HTTPS_PORT": str(https_port), "HTTP_PORT": str(http_port)}
    make = ["make", "-C", str(TEMPLATE), f"DEMO_DIR={demo_dir}"]
    started = subprocess.run(
        [*make, "demo"], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield demo_dir / "secure-service", https_port
    finally:
        subprocess.run([*make, "demo-stop"], env=env, capture_output=True, check=False, timeout=120)


def test_make_demo_serves_healthz_over_https_trusted_by_the_bake_ca(
    demo: tuple[Path, int],
) -> None:
    project, https_port = demo
    context = ssl.create_default_context(cafile=str(project / "certs" / "ca.pem"))
    url = f"https://localhost:{https_port}/healthz"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        assert response.status == 200
        assert json.load(response) == {"status": "ok"}
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
