"""Requests no well-behaved client sends, through the real stack (nginx over TLS, gunicorn, app).

Written byte for byte on a raw TLS socket, since HTTP clients normalise what they send. Three
promises hold whatever a client sends:

- every error it can see is RFC 9457 problem+json with the request id and the API's security
  headers, whichever layer refused the request (nginx, gunicorn or the app), and never quotes
  the request line or a header back;
- a secret anywhere in the request target (an encoded "?", a ";" parameter, a whole segment)
  is as absent from every log as one in the query string;
- every line of every log is valid UTF-8, and every access and gunicorn line valid JSON, even
  after raw bytes from 0x80 up, control bytes, quotes and backslashes in the path, the query and
  the headers.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import stack
from {{ cookiecutter.package_name }}.transport import SECURITY_HEADERS

pytestmark = pytest.mark.stack

REQUEST_ID = re.compile(r"[0-9a-f]{32}")
LOG_WAIT_SECONDS = 10.0
# A JWT's shape (header {"alg":"RS256","typ":"at+jwt"}); its signature part is the secret.
JWT_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCJ9"


def raw_https(service: stack.LiveStack, request: bytes) -> stack.Response:
    """One request exactly as written over TLS; the connection is closed after the answer."""
    with (
        socket.create_connection(("127.0.0.1", service.https_port), timeout=10) as raw,
        service.ssl_context().wrap_socket(raw, server_hostname=service.server_name) as tls,
    ):
        tls.sendall(request)
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [
        (name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in lines)
    ]
    if any(name.lower() == "transfer-encoding" for name, _ in headers):
        body = dechunk(body)
    return stack.Response(int(status_line.split()[1]), headers, body)


def dechunk(body: bytes) -> bytes:
    whole = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        whole, body = whole + body[:size], body[size + 2 :]
    return whole


def request(
    service: stack.LiveStack, target: bytes, *headers: bytes, method: bytes = b"GET"
) -> bytes:
    host = service.host_header().encode()
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host, *headers]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


# --- every error a client can see is a problem ------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    name: str
    status: int
    build: Callable[[stack.LiveStack, str], bytes]  # (stack, a secret to place) -> request


REFUSALS = [
    # gunicorn refuses these itself: nginx passes on what it cannot judge.
    Refusal(
        "control byte in a header",
        400,
        lambda s, secret: request(
            s, f"/api/v1/me?access_token={secret}".encode(), b"X-Note: a\x01" + secret.encode()
        ),
    ),
    Refusal(
        "120 headers",
        431,
        lambda s, secret: request(
            s,
            f"/api/v1/me?access_token={secret}".encode(),
            *(f"X-Filler-{n}: {secret}".encode() for n in range(120)),
        ),
    ),
    # nginx refuses these before gunicorn sees them.
    Refusal(
        "request line of 5 KB",
        414,
        lambda s, secret: request(s, f"/api/v1/me?access_token={secret}&p={'a' * 5000}".encode()),
    ),
    Refusal(
        "request line of 4000 bytes exactly",
        414,
        lambda s, secret: request(
            s, b"/healthz?t=" + secret.encode() + b"a" * (4000 - 24 - len(secret))
        ),
    ),
    Refusal(
        "unknown transfer coding",
        501,
        lambda s, secret: request(
            s,
            f"/webhooks/events?token={secret}".encode(),
            b"Transfer-Encoding: gzip",
            method=b"POST",
        ),
    ),
    Refusal(
        "HTTP version 3.0 on an HTTP/1 connection",
        505,
        lambda s, secret: request(s, f"/healthz?token={secret}".encode()).replace(
            b"HTTP/1.1", b"HTTP/3.0", 1
        ),
    ),
    Refusal(
        "header of 9 KB",
        400,
        lambda s, secret: request(s, b"/healthz", b"X-Big: " + secret.encode() * 400),
    ),
    Refusal(
        "raw 0x80 in the method",
        400,
        lambda s, secret: request(s, f"/healthz?token={secret}".encode(), method=b"G\x80T"),
    ),
    Refusal(
        "bad chunk size",
        400,
        lambda s, secret: (
            request(
                s,
                f"/webhooks/events?token={secret}".encode(),
                b"Transfer-Encoding: chunked",
                method=b"POST",
            )
            + b"zz\r\n"
        ),
    ),
    Refusal(
        "two Host headers",
        400,
        lambda s, secret: request(
            s, f"/healthz?token={secret}".encode(), s.host_header().encode().join([b"Host: ", b""])
        ),
    ),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda refusal: refusal.name)
def test_every_refusal_is_a_problem_with_the_security_headers(
    live_stack: stack.LiveStack, refusal: Refusal
) -> None:
    secret = secrets.token_hex(12)
    response = raw_https(live_stack, refusal.build(live_stack, secret))

    assert response.status == refusal.status, response.body
    assert response.header_values("Content-Type") == ["application/problem+json"]
    body = json.loads(response.body)
    assert body["status"] == refusal.status
    assert set(body) == {"type", "title", "status", "detail", "request_id"}
    request_id = response.header("X-Request-ID")
    assert request_id
    assert REQUEST_ID.fullmatch(request_id)
    assert body["request_id"] == request_id
    for name, value in SECURITY_HEADERS.items():
        assert response.header_values(name) == [value], name
    assert len(response.header_values("Strict-Transport-Security")) == 1
    assert response.header("Server") in (None, "nginx")
    # Nothing of the request comes back: not its request line, query string or a header.
    assert secret not in response.body.decode("latin-1")
    assert b"GET " not in response.body
    assert b"POST " not in response.body


def test_gunicorn_refuses_directly_in_problem_form(live_stack: stack.LiveStack) -> None:
    """Without nginx (a request on gunicorn's socket) the refusal is the same problem, with a
    null request_id: gunicorn could not read the id a proxy would have sent."""
    secret = secrets.token_hex(12)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        unix.settimeout(10)
        unix.connect(str(live_stack.socket_path))
        unix.sendall(
            f"GET /api/v1/me?access_token={secret} HTTP/1.1\r\nHost: localhost\r\n".encode()
            + b"X-Note: \x01\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := unix.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nContent-Type: application/problem+json\r\n" in head
    for name, value in SECURITY_HEADERS.items():
        assert f"\r\n{name}: {value}".encode() in head
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "The request could not be read.",
        "request_id": None,
    }
    assert secret.encode() not in answer


# --- secrets in the request target and hostile bytes, through every log -------------------------


def secret_targets(secret: str, jwt_signature: str) -> dict[str, bytes]:
    """Request targets hiding a secret somewhere other than a plain query string."""
    jwt = f"{JWT_HEADER}.eyJzdWIiOiJ1c2VyIn0.{jwt_signature}"
    return {
        "encoded ?": f"/api/v1/me%3Faccess_token={jwt}".encode(),
        "double-encoded ?": f"/api/v1/me%253Faccess_token={secret}".encode(),
        "lower-case encoded ?": f"/api/v1/me%3faccess_token={secret}".encode(),
        "; parameter": f"/api/v1/me;password={secret}".encode(),
        "= in a segment": f"/api/v1/token={secret}/me".encode(),
        "JWT as a segment": f"/api/v1/{jwt}".encode(),
        "bearer token in the path": f"/api/v1/Bearer%20{secret}".encode(),
        "bearer token after +": f"/api/v1/Bearer+{secret}".encode(),
        "hex secret as a segment": f"/api/v1/keys/{secret}".encode(),
        "encoded slash": f"/api/v1/me%2F{secret}".encode(),
        "# in the target": f"/api/v1/me#access_token={secret}".encode(),
        "raw space": f"/api/v1/me password={secret}".encode(),
        "secret in the query after an encoded ?": f"/api/v1/me?a=%3Ftoken%3D{secret}".encode(),
    }


HOSTILE_BYTES = [
    b"\x80",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b'"',
    b"\\",
    b"\x01",
    b"\x1b[31m",
]


def hostile_requests(service: stack.LiveStack) -> list[bytes]:
    """Invalid UTF-8, control bytes, quotes and backslashes in each place a client controls."""
    sent = []
    for hostile in HOSTILE_BYTES:
        sent += [
            request(service, b"/api/v1/me" + hostile),
            request(service, b"/healthz?q=" + hostile),
            request(service, b"/api/v1/me", b"User-Agent: " + hostile),
            request(service, b"/api/v1/me", b"X-Request-ID: " + hostile),
            request(service, b"/api/v1/me", b"Authorization: Bearer " + hostile),
            request(service, b"/healthz", b"Referer: https://x.example/" + hostile),
            request(service, b"/healthz", b"Host: localhost" + hostile),
            request(service, b"/healthz" + hostile, b"Host: other" + hostile),
        ]
    return sent


@pytest.fixture(scope="module")
def logged(
    live_stack: stack.LiveStack,
) -> tuple[dict[str, str], dict[Path, bytes]]:
    """Sends the secret-bearing and hostile requests, then reads every log file as bytes."""
    secret_of: dict[str, str] = {}
    request_ids = []
    for name in secret_targets("", ""):
        secret = secrets.token_hex(16)
        signature = secrets.token_urlsafe(32)
        target = secret_targets(secret, signature)[name]
        secret_of[name] = secret if secret.encode() in target else signature
        response = raw_https(live_stack, request(live_stack, target))
        request_ids.append(response.header("X-Request-ID") or "")
    for raw in hostile_requests(live_stack):
        raw_https(live_stack, raw)
        # Port 80 too: its servers redirect, refuse or close, and log to the same file.
        with socket.create_connection(("127.0.0.1", live_stack.http_port), timeout=10) as plain:
            plain.sendall(raw.replace(live_stack.host_header().encode(), b"localhost"))
            while plain.recv(65536):
                pass
    # The secret in a header on a request gunicorn refuses: it reaches gunicorn's parser.
    header_secret = secrets.token_hex(16)
    secret_of["Authorization on a refused request"] = header_secret
    raw_https(
        live_stack,
        request(live_stack, b"/api/v1/me", f"Authorization: Bearer {header_secret}\x01".encode()),
    )

    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        texts = {
            path: path.read_bytes()
            for path in sorted(live_stack.log_dir.rglob("*"))
            if path.is_file()
        }
        everything = b"".join(texts.values())
        if all(f'"request_id":"{rid}"'.encode() in everything for rid in request_ids):
            return secret_of, texts
        assert time.monotonic() < deadline, "nginx did not log every request"
        time.sleep(0.2)


def test_no_secret_in_the_request_target_reaches_any_log(
    logged: tuple[dict[str, str], dict[Path, bytes]],
) -> None:
    secret_of, texts = logged
    for path, text in texts.items():
        leaked = [name for name, secret in secret_of.items() if secret.encode() in text]
        assert not leaked, f"{path.name} holds the secret of {leaked}"


def test_every_log_line_is_utf8_and_json(
    logged: tuple[dict[str, str], dict[Path, bytes]],
) -> None:
    _, texts = logged
    for path, text in texts.items():
        assert text.endswith(b"\n") or not text, f"{path.name} ends mid-line"
        for number, line in enumerate(text.splitlines(), 1):
            decoded = line.decode("utf-8")  # strict: raises on invalid UTF-8
            # nginx's error log has nginx's own format (and at "alert", nothing about requests).
            if path.name != "error.log":
                assert isinstance(json.loads(decoded), dict), f"{path.name}:{number}"
