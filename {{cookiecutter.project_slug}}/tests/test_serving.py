"""gunicorn's own refusals (serving.ThreadWorker): problem+json with the security headers, and
neither the answer nor the log line quotes what the client sent. The real stack shows the same
through nginx (test_stack_hostile_requests.py)."""

from __future__ import annotations

import json
import re
import socket
from http import HTTPStatus
from typing import Any

import pytest
from gunicorn.http.errors import (  # type: ignore[import-untyped, unused-ignore]
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidChunkSize,
    InvalidHeader,
    InvalidHeaderName,
    InvalidHTTPVersion,
    InvalidRequestLine,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ObsoleteFolding,
    UnsupportedTransferCoding,
)

# Plain import for the test helpers: the package's from-import then sorts last whatever its name.
import stack
from {{ cookiecutter.package_name }} import serving
from {{ cookiecutter.package_name }}.transport import SECURITY_HEADERS

SECRET = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequestLine(f"GET /?access_token={SECRET}"), 400),
        (InvalidHTTPVersion("HTTP/9.9"), 400),
        (InvalidHeader(f"Authorization: Bearer {SECRET}\x01"), 400),
        (InvalidHeaderName("X\x80"), 400),
        (ObsoleteFolding("X-Folded"), 400),
        (InvalidChunkSize(b"zz"), 400),
        (LimitRequestLine(5000, 4094), 414),
        (LimitRequestHeaders("limit request headers fields"), 431),
        (UnsupportedTransferCoding("gzip"), 501),
        (ExpectationFailed("100-continue-please"), 417),
        (ForbiddenProxyRequest("10.0.0.9"), 403),
        (ConfigurationProblem("bad"), 500),
        (InvalidResponseHeader("X-Bad"), 500),
        (InvalidResponseHeaderName("X\x01"), 500),
        (RuntimeError("boom"), 500),
        (OSError("reset"), 500),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_refusal_status(error: Exception, status: int) -> None:
    found, detail = serving.refusal(error)
    assert found == status
    assert detail
    assert SECRET not in detail


def split(answer: bytes) -> tuple[str, dict[str, str], dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("ascii").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert len(headers) == len(lines)
    assert int(headers["Content-Length"]) == len(body)
    return status_line, headers, json.loads(body)


def test_problem_response_is_a_whole_problem_with_the_security_headers() -> None:
    answer = serving.problem_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many.")
    status_line, headers, body = split(answer)
    assert status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert headers == {
        "Connection": "close",
        "Content-Type": "application/problem+json",
        "Content-Length": headers["Content-Length"],
        **SECURITY_HEADERS,
    }
    # Compact, as nginx's sub_filter looks for this exact text to fill in its request id.
    assert '"request_id":null}' in answer.decode()
    assert body == {
        "type": "about:blank",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "detail": "Too many.",
        "request_id": None,
    }


class RecordingLog:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _record(self, level: str, message: str, *args: object, **_: object) -> None:
        self.calls.append((level, message % args))

    def warning(self, message: str, *args: object) -> None:
        self._record("warning", message, *args)

    def exception(self, message: str, *args: object) -> None:
        self._record("exception", message, *args)

    def debug(self, message: str, *args: object) -> None:
        self._record("debug", message, *args)


def handle(error: Exception) -> tuple[bytes, list[tuple[str, str]]]:
    worker = serving.ThreadWorker.__new__(serving.ThreadWorker)
    worker.log = RecordingLog()
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        worker.handle_error(None, server_side, ("", -1), error)
        server_side.close()
        answer = b""
        while chunk := client_side.recv(65536):
            answer += chunk
    return answer, worker.log.calls


def test_worker_answers_a_refusal_as_a_problem_and_logs_no_request_text() -> None:
    answer, calls = handle(InvalidHeader(f"Authorization: Bearer {SECRET}\x01"))
    status_line, headers, body = split(answer)
    assert status_line == "HTTP/1.1 400 Bad Request"
    assert headers["Content-Type"] == "application/problem+json"
    assert body["detail"] == "The request could not be read."
    assert calls == [("warning", "Refused a request: 400, InvalidHeader")]
    assert SECRET.encode() not in answer


def test_worker_logs_a_server_error_with_its_traceback() -> None:
    answer, calls = handle(InvalidResponseHeader(f"X-Token: {SECRET}"))
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert calls == [("exception", "Error handling request: InvalidResponseHeader")]


def test_worker_survives_a_client_that_is_gone() -> None:
    worker = serving.ThreadWorker.__new__(serving.ThreadWorker)
    worker.log = RecordingLog()
    server_side, client_side = socket.socketpair()
    client_side.close()
    with server_side:
        worker.handle_error(None, server_side, ("", -1), InvalidHTTPVersion("HTTP/9"))
    assert worker.log.calls[-1] == ("debug", "Failed to send error message.")


def test_nginx_fills_in_the_request_id_gunicorn_leaves_null() -> None:
    snippet = stack.PROJECT_ROOT / "deploy" / "nginx" / "templates" / "snippets"
    proxy = (snippet / "proxy-to-app.conf.template").read_text()
    searched = re.search(r"^sub_filter '([^']+)' '([^']+)';$", proxy, re.MULTILINE)
    assert searched
    assert searched[2] == '"request_id":"$request_id"'
    answer = serving.problem_response(HTTPStatus.BAD_REQUEST, "x").decode()
    assert answer.count(searched[1]) == 1
