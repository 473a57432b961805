"""Every error is RFC 9457 problem+json, with no traceback or exception text."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, abort, request
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json(force=True)
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_unknown_route_is_a_404_problem(client: FlaskClient) -> None:
    body = assert_problem(client.get("/no/such/route"), 404)
    assert body["title"] == "Not Found"


def test_wrong_method_is_a_405_problem_with_allow(client: FlaskClient) -> None:
    response = client.delete("/healthz")
    assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


def test_oversized_body_is_a_413_problem(app: Flask, client: FlaskClient) -> None:
    @app.post("/test-upload")
    def upload() -> str:
        return str(len(request.get_data()))

    assert_problem(client.post("/test-upload", data=b"x" * (1024 * 1024 + 1)), 413)


def test_crash_is_a_500_problem_without_exception_text(app: Flask, client: FlaskClient) -> None:
    @app.get("/test-crash")
    def crash() -> str:
        raise RuntimeError("db password is hunter2 at /srv/secret/path")

    response = client.get("/test-crash")
    body = assert_problem(response, 500)
    text = response.get_data(as_text=True)
    assert "hunter2" not in text
    assert "RuntimeError" not in text
    assert "/srv/secret/path" not in text
    assert body["title"] == "Internal Server Error"


@pytest.mark.parametrize("status", [400, 401, 403, 409, 415, 422, 429, 503])
def test_aborts_render_as_problems(app: Flask, client: FlaskClient, status: int) -> None:
    @app.get(f"/test-abort-{status}")
    def fail() -> str:
        abort(status)

    assert_problem(client.get(f"/test-abort-{status}"), status)


VIA_PROXY = {"X-Forwarded-Proto": "https"}
REQUEST_ID = "req-problem-id-0001"

# One request per part of the service that answers with a problem of its own, and the reason
# that part gives (a problem for another reason, even with the same status, fails).
PROBLEMS_BY_OWNER = [
    pytest.param("GET", "/no/such/route", {}, 404,
                 "The requested URL was not found on the server. If you entered the URL manually "
                 "please check your spelling and try again.", id="router"),
    pytest.param("DELETE", "/healthz", {}, 405,
                 "The method is not allowed for the requested URL.", id="method"),
    pytest.param("GET", "/api/v1/items", {}, 401, "An access token is required",
                 id="bearer-no-token"),
    pytest.param("GET", "/api/v1/items?access_token=x", {}, 400,
                 "Access tokens are not accepted in the query string", id="bearer-token-in-url"),
    pytest.param("GET", "/api/v1/items", {"Authorization": "Bearer not.a.jwt"}, 401,
                 "The access token is malformed", id="bearer-invalid"),
    pytest.param("GET", "/api/v1/items", {"X-API-Key": "x"}, 401,
                 "API keys are not accepted by this service", id="apikeys-refused"),
    pytest.param("POST", "/webhooks/events", {}, 400, "missing webhook-id header",
                 id="webhook-missing-headers"),
    pytest.param("POST", "/webhooks/github", {}, 404,
                 "The requested URL was not found on the server.", id="webhook-unconfigured"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "headers", "status", "detail"), PROBLEMS_BY_OWNER)
def test_every_problem_carries_the_request_id(
    client: FlaskClient,
    *,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    detail: str,
) -> None:
    response = client.open(
        path, method=method, headers={**VIA_PROXY, "X-Request-ID": REQUEST_ID, **headers}
    )
    body = assert_problem(response, status)
    assert body["detail"] == detail
    assert body["request_id"] == REQUEST_ID
    assert response.headers["X-Request-ID"] == REQUEST_ID


def test_plain_http_refusal_carries_the_request_id(client: FlaskClient) -> None:
    response = client.get(
        "/api/v1/items",
        headers={"X-Request-ID": REQUEST_ID},
        environ_overrides={"HTTP_X_FORWARDED_PROTO": "http"},
    )
    body = assert_problem(response, 403)
    assert body["detail"] == "This API is only served over HTTPS."
    assert body["request_id"] == REQUEST_ID
    assert "Strict-Transport-Security" not in response.headers
