"""Example webhook endpoints: /webhooks/events (Standard Webhooks), /webhooks/github, /stripe.

Replace the example handlers with your own; keep handlers idempotent and quick (answer within the
sender's timeout: GitHub 10 s, Stripe and Standard Webhooks senders about 15 s) and push slow work
to a queue. A handler that raises makes the delivery answer 500 and leaves it unmarked, so the
sender's retry is processed.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from flask import Blueprint, current_app
from flask.blueprints import BlueprintSetupState

from . import webhooks

log = logging.getLogger(__name__)

blueprint = Blueprint("events", __name__, url_prefix="/webhooks")

standard_webhooks = webhooks.Receiver(webhooks.STANDARD_WEBHOOKS)
github_webhooks = webhooks.Receiver(webhooks.GITHUB)
stripe_webhooks = webhooks.Receiver(webhooks.STRIPE)

RECEIVED_EVENTS_KEY = "received_webhook_events"
RECEIVED_EVENTS_KEPT = 100


@blueprint.record_once
def _create_event_log(state: BlueprintSetupState) -> None:
    state.app.extensions.setdefault(RECEIVED_EVENTS_KEY, deque(maxlen=RECEIVED_EVENTS_KEPT))


blueprint.add_url_rule(
    "/events", view_func=standard_webhooks.as_view("receive_standard_webhook"), methods=["POST"]
)
blueprint.add_url_rule(
    "/github", view_func=github_webhooks.as_view("receive_github_webhook"), methods=["POST"]
)
blueprint.add_url_rule(
    "/stripe", view_func=stripe_webhooks.as_view("receive_stripe_webhook"), methods=["POST"]
)


def received_events() -> deque[dict[str, Any]]:
    """Events recorded by the example handlers of this worker process (newest last)."""
    events: deque[dict[str, Any]] = current_app.extensions[RECEIVED_EVENTS_KEY]
    return events


@standard_webhooks.on()
@github_webhooks.on()
@stripe_webhooks.on()
def record_event(event: webhooks.WebhookEvent) -> None:
    """Every accepted event, whatever its type: a stand-in for storing or enqueueing it."""
    received_events().append(
        {"source": event.source, "id": event.delivery_id, "type": event.event_type}
    )
    log.info("webhook event recorded: %s %s %s", event.source, event.event_type, event.delivery_id)


@github_webhooks.on("ping")
def acknowledge_github_ping(event: webhooks.WebhookEvent) -> None:
    """GitHub sends `ping` when the webhook is created; its hook id tells which one."""
    hook_id = event.payload.get("hook_id") if isinstance(event.payload, dict) else None
    log.info("GitHub webhook %s is connected", hook_id)


@stripe_webhooks.on("payment_intent.succeeded")
def log_payment(event: webhooks.WebhookEvent) -> None:
    """An example of one specific event type; amounts are in the currency's smallest unit."""
    data = event.payload.get("data", {}) if isinstance(event.payload, dict) else {}
    payment = data.get("object", {}) if isinstance(data, dict) else {}
    if isinstance(payment, dict):
        log.info(
            "payment %s succeeded: %s %s",
            payment.get("id"),
            payment.get("amount"),
            payment.get("currency"),
        )
