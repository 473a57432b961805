"""`make demo` bakes the defaults, serves them through nginx over HTTPS and ends with a call
that a newcomer can paste: an authenticated request with a freshly minted dev token."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TEMPLATE, require_tool

# One demo serves both tests: keep them on one xdist worker (make test runs --dist loadgroup).
pytestmark = pytest.mark.xdist_group("demo")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Demo:
    project: Path
    https_port: int
    output: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, mkcert_caroot: Path) -> Iterator[Demo]:
    require_tool("nginx")
    demo_dir = tmp_path_factory.mktemp("demo")
    https_port, http_port = free_port(), free_port()
    env = {**os.environ, "HTTPS_PORT": str(https_port), "HTTP_PORT": str(http_port)}
    make = ["make", "-C", str(TEMPLATE), f"DEMO_DIR={demo_dir}"]
    started = subprocess.run(
        [*make, "demo"], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield Demo(demo_dir / "secure-service", https_port, started.stdout)
    finally:
        subprocess.run([*make, "demo-stop"], env=env, capture_output=True, check=False, timeout=120)


def test_make_demo_serves_healthz_over_https_trusted_by_the_bake_ca(demo: Demo) -> None:
    context = ssl.create_default_context(cafile=str(demo.project / "certs" / "ca.pem"))
    url = f"https://localhost:{demo.https_port}/healthz"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        assert response.status == 200
        assert json.load(response) == {"status": "ok"}
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_make_demo_ends_with_an_authenticated_call_that_works(demo: Demo) -> None:
    (line,) = [line for line in demo.output.splitlines() if line.startswith("curl ")]
    # Exactly: curl --cacert <the bake's CA> -H "Authorization: Bearer <token>" <url>
    curl, cacert_flag, cacert, header_flag, header, url = shlex.split(line)
    assert (curl, cacert_flag, header_flag) == ("curl", "--cacert", "-H")
    assert Path(cacert) == demo.project / "certs" / "ca.pem"
    assert url == f"https://localhost:{demo.https_port}/api/v1/items"
    assert header.startswith("Authorization: Bearer ")
    context = ssl.create_default_context(cafile=cacert)

    def call(method: str, body: dict[str, str] | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPSConnection("localhost", demo.https_port, context=context)
        headers = {"Authorization": header.removeprefix("Authorization: ")}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        try:
            connection.request(method, "/api/v1/items", data, headers)
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read())
        finally:
            connection.close()

    assert call("GET") == (200, {"items": []})
    # The token carries both scopes the quickstart promises: it may create an item too.
    status, item = call("POST", {"name": "first"})
    assert (status, item["created_by"]) == (201, "demo")
