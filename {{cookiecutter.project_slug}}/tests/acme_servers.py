"""ACME servers for the certificate tests: Pebble, Let's Encrypt's test CA, and a stub that
answers every new order with a rate limit (Pebble enforces none).

Pebble validates HTTP-01 challenges on the port it is told (the stack's HTTP_PORT) and
resolves names through pebble-challtestsrv, which answers every A query with 127.0.0.1: the
test domain reaches the local nginx without /etc/hosts or real DNS. Both listen on loopback,
on free ports, and are stopped by the tests that started them.

pebble, pebble-challtestsrv and certbot are required: under CI=true their absence fails the
tests; elsewhere the tests skip, saying why.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack import free_port, make_mozilla_test_certificates, require_tool

STARTUP_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Pebble:
    directory_url: str
    management_url: str
    # Trust for Pebble's own HTTPS (what ACME_CA_FILE points at), not for what it issues.
    ca_file: Path

    def root_certificate_pem(self) -> bytes:
        """The root Pebble signs with, from its management interface (new at every start)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(  # noqa: S310 (a loopback https URL made above)
            f"{self.management_url}/roots/0", context=context, timeout=10
        ) as answer:
            body: bytes = answer.read()
        return body


@contextmanager
def running_pebble(directory: Path, http_port: int) -> Iterator[Pebble]:
    """Pebble with its HTTP-01 validation sent to 127.0.0.1:http_port."""
    pebble = require_tool("pebble", "pebble")
    challtestsrv = require_tool("pebble-challtestsrv", "pebble")
    directory.mkdir(parents=True, exist_ok=True)
    tls = make_mozilla_test_certificates(directory / "tls", ("localhost",))
    dns_port, challtestsrv_port = free_port(), free_port()
    acme_port, management_port, tls_alpn_port = free_port(), free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(tls.cert_file),
            "privateKey": str(tls.key_file),
            "httpPort": http_port,
            "tlsPort": tls_alpn_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (directory / "pebble.json").write_text(json.dumps(config), encoding="utf-8")
    env = {
        **os.environ,
        # No random sleeps before validating, no nonce rejected on purpose, and a new
        # authorization (so a new HTTP-01 challenge) for every order.
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    # Every listener on loopback, the management one included (empty would mean port 80).
    dns_command = [
        challtestsrv,
        "-dns01", f"127.0.0.1:{dns_port}",
        "-management", f"127.0.0.1:{challtestsrv_port}",
        "-http01", "", "-https01", "", "-tlsalpn01", "",
        "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
    ]  # fmt: skip
    pebble_command = [
        pebble,
        "-config", str(directory / "pebble.json"),
        "-dnsserver", f"127.0.0.1:{dns_port}",
        "-strict=false",
    ]  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with open(directory / "challtestsrv.log", "wb") as log:
            processes.append(subprocess.Popen(dns_command, stdout=log, stderr=subprocess.STDOUT))
        with open(directory / "pebble.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    pebble_command, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        server = Pebble(
            directory_url=f"https://localhost:{acme_port}/dir",
            management_url=f"https://localhost:{management_port}",
            ca_file=tls.ca_file,
        )
        wait_for_directory(server.directory_url, server.ca_file, directory / "pebble.log")
        yield server
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_directory(url: str, ca_file: Path, log: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"Pebble did not answer at {url}:\n{log.read_text(errors='replace')[-2000:]}")


# --- a CA that is always rate limited ---------------------------------------------------------

RATE_LIMIT_DETAIL = (
    "too many certificates (5) already issued for this exact set of identifiers in the last "
    "168h0m0s, retry after 2031-01-01 00:00:00 UTC"
)


class _RateLimitedAcme(http.server.BaseHTTPRequestHandler):
    """Just enough of RFC 8555 for a client to register, then a rateLimited problem
    (section 6.7, 429 with Retry-After) for its new order. Signatures are not checked."""

    server_version = "stub-acme"

    def base_url(self) -> str:
        return f"https://{self.headers['Host']}"

    def answer(self, status: int, body: dict[str, object] | None = None, **headers: str) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Replay-Nonce", secrets.token_urlsafe(16))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if body is not None:
            kind = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.answer(200)

    def do_GET(self) -> None:
        if self.path == "/dir":
            base = self.base_url()
            self.answer(
                200,
                {
                    "newNonce": f"{base}/nonce",
                    "newAccount": f"{base}/account",
                    "newOrder": f"{base}/order",
                    "revokeCert": f"{base}/revoke",
                    "keyChange": f"{base}/key-change",
                },
            )
        elif self.path == "/nonce":
            self.answer(204)
        else:
            self.answer(404, {"type": "urn:ietf:params:acme:error:malformed", "status": 404})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/account":
            self.answer(
                201, {"status": "valid", "contact": []}, Location=f"{self.base_url()}/account/1"
            )
        elif self.path == "/order":
            problem = {
                "type": "urn:ietf:params:acme:error:rateLimited",
                "detail": RATE_LIMIT_DETAIL,
                "status": 429,
            }
            self.answer(429, problem, Retry_After="3600")
        else:
            self.answer(404, {"type": "urn:ietf:params:acme:error:malformed", "status": 404})

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows the test's own output."""


@dataclass(frozen=True)
class StubAcme:
    directory_url: str
    ca_file: Path


@contextmanager
def rate_limited_acme(directory: Path) -> Iterator[StubAcme]:
    tls = make_mozilla_test_certificates(directory, ("localhost",))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _RateLimitedAcme)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield StubAcme(f"https://localhost:{port}/dir", tls.ca_file)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
