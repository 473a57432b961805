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
