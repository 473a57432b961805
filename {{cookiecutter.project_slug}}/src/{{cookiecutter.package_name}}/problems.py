"""RFC 9457 problem details for every error the app answers, 404/405/413/500 included.

Clients get a short, fixed description of what went wrong: never a traceback or the text of
an exception, which can carry paths, SQL or secrets.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, json
from werkzeug.exceptions import HTTPException, InternalServerError

PROBLEM_JSON = "application/problem+json"
# Headers of an HTTPException that still matter once the body is ours (e.g. Allow on 405).
KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def problem(
    status: int, detail: str | None = None, *, title: str | None = None, **extensions: Any
) -> Response:
    """Build an application/problem+json response."""
    phrase, description = describe(status)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or phrase,
        "status": status,
        "detail": detail or description,
        **extensions,
    }
    if request_id := g.get("request_id"):
        body["request_id"] = request_id
    return Response(json.dumps(body), status, mimetype=PROBLEM_JSON)


def describe(status: int) -> tuple[str, str]:
    try:
        known = HTTPStatus(status)
    except ValueError:
        return "Error", "The request could not be completed."
    return known.phrase, known.description


def render_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    # Unhandled exceptions arrive here wrapped in InternalServerError, already logged by Flask;
    # its description is fixed text, while original_exception is deliberately left unused.
    detail = InternalServerError.description if status >= 500 else error.description
    response = problem(status, detail)
    for name, value in error.get_headers():
        if name in KEPT_HEADERS:
            response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, render_http_exception)
