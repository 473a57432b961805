"""Hostile request bodies answer 4xx, never 500, on every route that parses a body.

Each body goes through the route's own authentication first (a valid token with the needed
scope, a valid webhook signature over the hostile bytes), so that it reaches the parser. A new
route that takes a body must be added to AUTHENTIC below: the first test fails until it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey

from jose_helpers import b64url, make_claims, mint

GITHUB_SECRET = "g" * 40
STRIPE_SECRET = "whsec_" + "s" * 40
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

# What a client may send instead of a sane document. Nesting beyond the parser's recursion
# limit is the one that used to end in a RecursionError (500).
HOSTILE_BODIES = {
    "arrays nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "objects nested 50000 deep": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "unclosed nesting": b"[" * 100_000,
    "a 5000-digit number": b'{"name": ' + b"9" * 5000 + b"}",
    "an infinite number": b'{"name": 1e99999}',
    "invalid UTF-8": b'{"name": "\xff\xfe"}',
    "NaN, which is not JSON": b'{"name": NaN}',
    "Infinity, which is not JSON": b'{"name": -Infinity}',
    "empty": b"",
}

Headers = dict[str, str]
Authenticate = Callable[[Flask, bytes], Headers]


def bearer_with_scope(scope: str) -> Authenticate:
    def headers(app: Flask, body: bytes) -> Headers:
        key = RSAKey.import_key(app.config["TEST_PRIVATE_PEM"])
        claims = make_claims(
            iss=app.config["JWT_ISSUER"], aud=app.config["JWT_AUDIENCE"], scope=scope
        )
        token = mint(key, claims, typ="at+jwt")
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    return headers


def standard_webhook(app: Flask, body: bytes) -> Headers:
    msg_id = "msg_" + hashlib.sha256(body).hexdigest()[:16]
    timestamp = str(int(time.time()))
    key = base64.b64decode(app.config["WEBHOOK_SECRET"].removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "Content-Type": "application/json",
    }


def github_webhook(app: Flask, body: bytes) -> Headers:
    signature = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={signature}",
        "X-GitHub-Delivery": hashlib.sha256(body).hexdigest()[:32],
        "X-GitHub-Event": "push",
        "Content-Type": "application/json",
    }


def stripe_webhook(app: Flask, body: bytes) -> Headers:
    timestamp = int(time.time())
    signed = f"{timestamp}.".encode() + body
    signature = hmac.new(STRIPE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={signature}", "Content-Type": "application/json"}


# endpoint -> how to make a request that this endpoint accepts up to the body parser.
AUTHENTIC: dict[str, Authenticate] = {
    "api.create_item": bearer_with_scope("items:write"),
    "events.receive_standard_webhook": standard_webhook,
    "events.receive_github_webhook": github_webhook,
    "events.receive_stripe_webhook": stripe_webhook,
}


@pytest.fixture
def hostile_app(make_app: Callable[..., Flask], signing_keys: Any) -> Flask:
    app = make_app(GITHUB_WEBHOOK_SECRET=GITHUB_SECRET, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET)
    app.config["TEST_PRIVATE_PEM"] = signing_keys.private_pem
    return app


def https(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base.update({"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "127.0.0.1"})
    return client


def test_every_route_that_takes_a_body_is_covered(hostile_app: Flask) -> None:
    takes_a_body = {
        rule.endpoint
        for rule in hostile_app.url_map.iter_rules()
        if (rule.methods or set()) & BODY_METHODS
    }
    assert takes_a_body == set(AUTHENTIC)


@pytest.mark.parametrize("endpoint", sorted(AUTHENTIC))
@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_body_is_a_client_error(hostile_app: Flask, endpoint: str, body: bytes) -> None:
    rule = next(r for r in hostile_app.url_map.iter_rules() if r.endpoint == endpoint)
    method = sorted((rule.methods or set()) & BODY_METHODS)[0]
    headers = AUTHENTIC[endpoint](hostile_app, body)
    response = https(hostile_app).open(rule.rule, method=method, data=body, headers=headers)
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/problem+json"


def test_the_authentic_requests_are_accepted(hostile_app: Flask) -> None:
    """The table's credentials are right: a sane body passes every route (so the hostile
    bodies above really reached the parser, not an authentication refusal)."""
    for endpoint, authenticate in AUTHENTIC.items():
        rule = next(r for r in hostile_app.url_map.iter_rules() if r.endpoint == endpoint)
        body = json.dumps({"name": "ok", "id": f"evt_{endpoint}", "type": "x"}).encode()
        if endpoint == "api.create_item":
            body = json.dumps({"name": "ok"}).encode()
        response = https(hostile_app).post(
            rule.rule, data=body, headers=authenticate(hostile_app, body)
        )
        assert response.status_code in (200, 201), (endpoint, response.get_json())


@pytest.mark.parametrize("part", ["header", "claims"])
def test_deeply_nested_token_is_invalid_not_a_500(hostile_app: Flask, part: str) -> None:
    nested = "[" * 3000 + "]" * 3000
    header = b64url(b'{"alg":"RS256","typ":"at+jwt","x":' + nested.encode() + b"}")
    claims = b64url(b'{"sub":"a","x":' + nested.encode() + b"}")
    plain_header = b64url(b'{"alg":"RS256","typ":"at+jwt"}')
    token = f"{header if part == 'header' else plain_header}.{claims}.c2ln"
    response = https(hostile_app).get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
