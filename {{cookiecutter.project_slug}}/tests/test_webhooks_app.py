"""The webhook receivers as wired by create_app (settings, transport, app-wide problems)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import standardwebhooks
import stripe
from flask import Flask
from flask.testing import FlaskClient

from {{ cookiecutter.package_name }} import events

GITHUB_SECRET = "a github secret with spaces"
STRIPE_SECRET = "whsec_app_level_stripe_secret_123456"


def https_client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base.update({"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "127.0.0.1"})
    return client


def standard_delivery(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(msg_id, now, body.decode()),
        "Content-Type": "application/json",
    }


def assert_problem(response: Any, status: int, detail: str) -> None:
    """The app-wide problem: the module's own body, with the request's id added."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem == {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "request_id": response.headers["X-Request-ID"],
    }


def recorded(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        return list(events.received_events())


def test_events_route_accepts_once_then_reports_duplicate(
    app: Flask, client: FlaskClient, base_env: dict[str, str]
) -> None:
    body = json.dumps({"type": "invoice.paid", "data": {"id": "in_1"}}).encode()
    headers = standard_delivery(base_env["WEBHOOK_SECRET"], "msg_app_1", body)
    first = client.post("/webhooks/events", data=body, headers=headers)
    second = client.post("/webhooks/events", data=body, headers=headers)
    assert (first.status_code, first.get_json()) == (200, {"status": "accepted"})
    assert (second.status_code, second.get_json()) == (200, {"status": "duplicate"})
    assert recorded(app) == [
        {"source": "standard-webhooks", "id": "msg_app_1", "type": "invoice.paid"}
    ]
    assert first.headers["X-Content-Type-Options"] == "nosniff"


def test_bad_signature_is_a_401_problem(client: FlaskClient) -> None:
    body = b'{"type": "invoice.paid"}'
    headers = standard_delivery("whsec_" + "A" * 44, "msg_app_2", body)
    response = client.post("/webhooks/events", data=body, headers=headers)
    assert_problem(response, 401, "no valid signature")


def test_github_and_stripe_answer_404_until_their_secret_is_set(client: FlaskClient) -> None:
    for path in ("/webhooks/github", "/webhooks/stripe"):
        response = client.post(path, data=b"{}")
        assert_problem(response, 404, "The requested URL was not found on the server.")


def test_github_and_stripe_work_once_configured(make_app: Callable[..., Flask]) -> None:
    app = make_app(GITHUB_WEBHOOK_SECRET=GITHUB_SECRET, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET)
    client = https_client(app)
    body = b'{"zen": "Approachable is better than simple.", "hook_id": 1}'
    signature = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    github = client.post(
        "/webhooks/github",
        data=body,
        headers={
            "X-Hub-Signature-256": signature,
            "X-GitHub-Delivery": "b7a1c3e0-0000-4000-8000-000000000001",
            "X-GitHub-Event": "ping",
        },
    )
    assert github.get_json() == {"status": "accepted"}
    event = json.dumps({"id": "evt_app", "object": "event", "type": "customer.created"})
    header = stripe.WebhookSignature.generate_signature_header(event, STRIPE_SECRET)
    stripe_answer = client.post(
        "/webhooks/stripe", data=event, headers={"Stripe-Signature": header}
    )
    assert stripe_answer.get_json() == {"status": "accepted"}
    assert [e["source"] for e in recorded(app)] == ["github", "stripe"]


def test_oversized_delivery_is_a_413_problem(client: FlaskClient) -> None:
    response = client.post("/webhooks/events", data=b"x" * (1024 * 1024 + 1))
    assert_problem(response, 413, "body larger than the webhook limit")


def test_get_on_a_receiver_is_a_405_problem(client: FlaskClient) -> None:
    response = client.get("/webhooks/events")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"


def test_readyz_includes_the_replay_store(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert "webhook_replay_store" in response.get_json()["checks"]


def test_stale_delivery_is_refused(client: FlaskClient, base_env: dict[str, str]) -> None:
    body = b'{"type": "invoice.paid"}'
    msg_id, then = "msg_app_old", datetime.fromtimestamp(time.time() - 3600, tz=UTC)
    signature = standardwebhooks.Webhook(base_env["WEBHOOK_SECRET"]).sign(
        msg_id, then, body.decode()
    )
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(then.timestamp())),
        "webhook-signature": signature,
    }
    response = client.post("/webhooks/events", data=body, headers=headers)
    assert_problem(response, 401, "timestamp outside the accepted window")
