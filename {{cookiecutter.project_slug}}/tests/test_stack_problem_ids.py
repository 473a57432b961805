"""nginx's own problem responses carry the request id in their body, as the app's do: a client
reporting an error quotes the body, and the id is what finds the request's log lines."""

from __future__ import annotations

import json
import re
import socket

import pytest

from stack import LiveStack, Response

pytestmark = pytest.mark.stack

NGINX_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def raw_https(stack: LiveStack, request: bytes) -> Response:
    """One request exactly as written (repeated headers included) over TLS."""
    with (
        socket.create_connection(("127.0.0.1", stack.https_port), timeout=10) as raw,
        stack.ssl_context().wrap_socket(raw, server_hostname=stack.server_name) as tls,
    ):
        tls.sendall(request)
        return parse(read_all(tls))


def raw_plain(port: int, request: bytes) -> Response:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(request)
        return parse(read_all(plain))


def read_all(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def parse(answer: bytes) -> Response:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
    return Response(int(status_line.split()[1]), headers, body)  # type: ignore[arg-type]


def assert_problem_with_request_id(response: Response, status: int) -> None:
    assert response.status == status
    assert response.header("Content-Type") == "application/problem+json"
    body = json.loads(response.body)
    assert body["status"] == status
    request_id = response.header("X-Request-ID")
    assert request_id
    assert NGINX_REQUEST_ID.fullmatch(request_id)
    assert body.get("request_id") == request_id


def test_plain_http_refusal(live_stack: LiveStack) -> None:
    assert_problem_with_request_id(live_stack.http("GET", "/api/v1/me"), 403)


def test_missing_acme_challenge(live_stack: LiveStack) -> None:
    response = live_stack.http("GET", "/.well-known/acme-challenge/no-such-token")
    assert_problem_with_request_id(response, 404)


def test_unknown_host(live_stack: LiveStack) -> None:
    assert_problem_with_request_id(live_stack.https("GET", "/healthz", host="other.example"), 421)


def test_body_too_large(live_stack: LiveStack) -> None:
    response = live_stack.https("POST", "/webhooks/events", body=b"x" * (1024 * 1024 + 1))
    assert_problem_with_request_id(response, 413)


def test_uri_too_long(live_stack: LiveStack) -> None:
    assert_problem_with_request_id(live_stack.https("GET", "/healthz?" + "a" * 9000), 414)


def test_method_nginx_refuses(live_stack: LiveStack) -> None:
    assert_problem_with_request_id(live_stack.https("TRACE", "/healthz"), 405)


def test_two_authorization_headers(live_stack: LiveStack) -> None:
    request = (
        f"GET /api/v1/me HTTP/1.1\r\nHost: {live_stack.host_header()}\r\n"
        "Authorization: Bearer a.b.c\r\nAuthorization: Bearer d.e.f\r\nConnection: close\r\n\r\n"
    )
    assert_problem_with_request_id(raw_https(live_stack, request.encode()), 400)


def test_plain_http_sent_to_the_https_port(live_stack: LiveStack) -> None:
    request = f"GET /healthz HTTP/1.1\r\nHost: {live_stack.host_header()}\r\n\r\n"
    assert_problem_with_request_id(raw_plain(live_stack.https_port, request.encode()), 400)
