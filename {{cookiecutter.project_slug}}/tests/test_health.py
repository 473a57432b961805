"""Liveness and readiness."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient


def test_healthz_answers_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_when_every_check_passes(app: Flask, client: FlaskClient) -> None:
    app.extensions["readiness_checks"] = {"always": lambda: True}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ready"


def test_readyz_is_503_when_a_check_fails(app: Flask, client: FlaskClient) -> None:
    app.extensions["readiness_checks"] = {"ok": lambda: True, "replay_store": lambda: False}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["failing"] == ["replay_store"]


def test_readyz_is_503_when_a_check_raises(app: Flask, client: FlaskClient) -> None:
    def broken() -> bool:
        raise ConnectionError("redis down")

    app.extensions["readiness_checks"] = {"replay_store": broken}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "redis down" not in response.get_data(as_text=True)
