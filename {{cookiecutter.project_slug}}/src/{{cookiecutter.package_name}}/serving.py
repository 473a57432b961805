"""How gunicorn serves the app: the classes gunicorn.conf.py names.

- ``Logger``: gunicorn's logger, with gunicorn's own access line only when GUNICORN_ACCESS_LOG
  asks for it. The app already writes one JSON access line per request (logs.py), with the
  request id and the authenticated subject; nginx writes another. gunicorn's would be a third,
  and it is the dearest: gunicorn collects every request header and WSGI environ entry into
  "atoms" for it whenever a logging configuration is set, even when nothing writes the line.
- ``ThreadWorker``: gunicorn's gthread worker whose own error responses (a request it cannot
  read: a control byte in a header, too many headers, an unknown transfer coding) are RFC 9457
  problem+json with the API's security headers, like every other error of the service.
  gunicorn's are HTML pages that quote the request line or header they choke on, query string
  and credentials included, and its log line about them does the same.
"""

from __future__ import annotations

import json
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from gunicorn import util  # type: ignore[import-untyped, unused-ignore]
from gunicorn.glogging import Logger as GunicornLogger  # type: ignore[import-untyped, unused-ignore]
from gunicorn.http.errors import (  # type: ignore[import-untyped, unused-ignore]
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.gthread import (  # type: ignore[import-untyped, unused-ignore]
    ThreadWorker as GunicornThreadWorker,
)

from .transport import SECURITY_HEADERS

# What each of gunicorn's refusals means for the client; any other ParseException is a request
# it could not read (400). Ordered: the first class the exception is an instance of wins.
REFUSALS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], HTTPStatus, str], ...] = (
    # A header the app tried to send is the server's fault, not the client's.
    (
        (InvalidResponseHeader, InvalidResponseHeaderName, ConfigurationProblem),
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "The server could not complete the request.",
    ),
    (LimitRequestLine, HTTPStatus.REQUEST_URI_TOO_LONG, "The request line is too long."),
    (
        LimitRequestHeaders,
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        "The request has too many headers, or one too large.",
    ),
    (
        UnsupportedTransferCoding,
        HTTPStatus.NOT_IMPLEMENTED,
        "The request's transfer coding is not supported.",
    ),
    (ExpectationFailed, HTTPStatus.EXPECTATION_FAILED, "The expectation cannot be met."),
    (ForbiddenProxyRequest, HTTPStatus.FORBIDDEN, "This request is not accepted."),
    (ParseException, HTTPStatus.BAD_REQUEST, "The request could not be read."),
)
SERVER_ERROR = (HTTPStatus.INTERNAL_SERVER_ERROR, "The server could not complete the request.")


class Logger(GunicornLogger):  # type: ignore[misc, unused-ignore]
    """gunicorn's logger; its access line is written only when ``accesslog`` names a target."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


def refusal(error: BaseException) -> tuple[HTTPStatus, str]:
    """The status and detail of gunicorn's answer to an error while serving a request."""
    for kinds, status, detail in REFUSALS:
        if isinstance(error, kinds):
            return status, detail
    return SERVER_ERROR


def problem_response(status: HTTPStatus, detail: str) -> bytes:
    """A whole HTTP/1.1 problem+json response that closes the connection.

    request_id is null: gunicorn could not read the request, so it does not know the id the
    proxy gave it. nginx fills in its own (the sub_filter in proxy-to-app.conf).
    """
    body = json.dumps(
        {
            "type": "about:blank",
            "title": status.phrase,
            "status": int(status),
            "detail": detail,
            "request_id": None,
        },
        separators=(",", ":"),
    ).encode("ascii")
    head = [
        f"HTTP/1.1 {int(status)} {status.phrase}",
        "Connection: close",
        "Content-Type: application/problem+json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    return "\r\n".join(head).encode("ascii") + b"\r\n\r\n" + body


class ThreadWorker(GunicornThreadWorker):  # type: ignore[misc, unused-ignore]
    """gunicorn's gthread worker, answering what it cannot serve with problem+json."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, detail = refusal(exc)
        # Never the request line, URI or header text, which gunicorn's own line quotes: they
        # can hold credentials, and bytes that are not text. The kind of error says enough.
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            self.log.exception("Error handling request: %s", type(exc).__name__)
        else:
            self.log.warning("Refused a request: %d, %s", int(status), type(exc).__name__)
        try:
            util.write_nonblock(client, problem_response(status, detail))
        except Exception:  # noqa: BLE001 - the client may be gone; nothing left to tell it
            self.log.debug("Failed to send error message.")
