"""Signature verification: published vectors, the senders' own libraries, and hostile input.

The app here is a bare Flask app with only webhooks.init_app and the events blueprint, which is
also how the module is used when copied into another project.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import io
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
import stripe
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Request

from {{ cookiecutter.package_name }} import events, webhooks

# Standard Webhooks' published test vector (standard-webhooks/spec, reference libraries' tests).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# GitHub's documented example ("Validating webhook deliveries").
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SECOND_SECRET = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
STRIPE_SECRET = "whsec_test_stripe_endpoint_secret_0123456789"
TOLERANCE = 300


def bare_app(tmp_path: Path, clock: Callable[[], float] = time.time, **config: Any) -> Flask:
    app = Flask("webhook_signature_tests", instance_path=str(tmp_path / "instance"))
    app.config.update(
        MAX_CONTENT_LENGTH=1024 * 1024,
        WEBHOOK_SECRET=SW_SECRET,
        WEBHOOK_TOLERANCE_SECONDS=TOLERANCE,
        REPLAY_STORE_URL="memory://",
    )
    app.config.update(config)
    webhooks.init_app(app, clock=clock)
    app.register_blueprint(events.blueprint)
    return app


@pytest.fixture
def webhook_client(tmp_path: Path) -> FlaskClient:
    return bare_app(
        tmp_path, GITHUB_WEBHOOK_SECRET=GH_SECRET, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET
    ).test_client()


@pytest.fixture
def frozen_client(tmp_path: Path) -> FlaskClient:
    return bare_app(tmp_path, clock=lambda: SW_TIMESTAMP).test_client()


def sw_headers(
    msg_id: str = SW_ID, timestamp: int | str = SW_TIMESTAMP, signature: str = SW_SIGNATURE
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def sw_sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Sign with the reference library, never with the code under test."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return standardwebhooks.Webhook(secret).sign(msg_id, when, body.decode())


def sw_delivery(
    body: bytes, *, secret: str = SW_SECRET, msg_id: str = "msg_1", at: int | None = None
) -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    return sw_headers(msg_id, timestamp, sw_sign(secret, msg_id, timestamp, body))


# Every refusal's detail, so that a refusal for another reason fails the test that expects one.
NO_SIGNATURE = "no valid signature"
OUTSIDE_WINDOW = "timestamp outside the accepted window"
TOO_LARGE = "body larger than the webhook limit"
NOT_JSON = "body is not JSON"
NO_ID = "event has no valid id"
NOT_FOUND = "The requested URL was not found on the server."
TOO_MANY = "too many signatures in webhook-signature"
ONE_T = "Stripe-Signature header needs exactly one t= element"
BAD_T = "invalid Stripe-Signature t= timestamp"


def missing(header: str) -> str:
    return f"missing {header} header"


def invalid(header: str) -> str:
    return f"invalid {header} header"


def assert_problem(response: Any, status: int, detail: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem: dict[str, Any] = response.get_json(force=True)
    # The whole body (its request id, there when logs.py configured logging, is
    # test_problems.py's to check): nothing else may leak into it.
    problem.pop("request_id", None)
    assert problem == {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return problem


def recorded(webhook_client: FlaskClient) -> list[dict[str, Any]]:
    app = webhook_client.application
    with app.app_context():
        return list(events.received_events())


# --- published vectors -----------------------------------------------------------------------


def test_standard_webhooks_vector_verifies_as_a_function() -> None:
    key = webhooks.decode_standard_secret(SW_SECRET)
    verified = webhooks.verify_standard_webhook(
        Headers(sw_headers()), SW_BODY, [key], now=SW_TIMESTAMP, tolerance=TOLERANCE
    )
    assert verified.delivery_id == SW_ID
    assert verified.timestamp == SW_TIMESTAMP


def test_a_v1a_entry_with_only_v1_secrets_is_no_match() -> None:
    # A plain sequence of keys is the v1 secrets alone: a v1a entry has nothing to check with.
    key = webhooks.decode_standard_secret(SW_SECRET)
    headers = Headers(sw_headers(signature="v1a," + base64.b64encode(bytes(64)).decode()))
    with pytest.raises(webhooks.WebhookRejected) as rejected:
        webhooks.verify_standard_webhook(
            headers, SW_BODY, [key], now=SW_TIMESTAMP, tolerance=TOLERANCE
        )
    assert (rejected.value.status, rejected.value.detail) == (401, NO_SIGNATURE)


def test_standard_webhooks_vector_is_accepted_over_http(frozen_client: FlaskClient) -> None:
    response = frozen_client.post("/webhooks/events", data=SW_BODY, headers=sw_headers())
    assert response.status_code == 200
    assert response.get_json() == {"status": "accepted"}
    assert recorded(frozen_client) == [{"source": "standard-webhooks", "id": SW_ID, "type": ""}]


def test_standard_webhooks_vector_is_stale_with_the_real_clock(tmp_path: Path) -> None:
    response = (
        bare_app(tmp_path)
        .test_client()
        .post("/webhooks/events", data=SW_BODY, headers=sw_headers())
    )
    assert_problem(response, 401, OUTSIDE_WINDOW)


def test_github_vector_verifies_as_a_function() -> None:
    headers = Headers(
        {
            "X-Hub-Signature-256": GH_SIGNATURE,
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "X-GitHub-Event": "push",
        }
    )
    verified = webhooks.verify_github(headers, GH_BODY, [GH_SECRET.encode()])
    assert verified.event_type == "push"
    with pytest.raises(webhooks.WebhookRejected) as rejected:
        webhooks.verify_github(headers, GH_BODY + b" ", [GH_SECRET.encode()])
    assert (rejected.value.status, rejected.value.detail) == (401, NO_SIGNATURE)


def test_github_vector_passes_verification_over_http(webhook_client: FlaskClient) -> None:
    # The vector's body is not JSON: 400 "body is not JSON" proves the signature was accepted
    # (a bad signature is 401) and that parsing happens only after verification.
    response = webhook_client.post(
        "/webhooks/github", data=GH_BODY, headers=gh_headers(GH_SIGNATURE)
    )
    assert_problem(response, 400, NOT_JSON)


# --- interoperability with the senders' libraries ---------------------------------------------


def test_delivery_signed_by_standardwebhooks_library_is_accepted(
    webhook_client: FlaskClient,
) -> None:
    body = json.dumps({"type": "user.created", "data": {"id": 7}}).encode()
    response = webhook_client.post("/webhooks/events", data=body, headers=sw_delivery(body))
    assert response.get_json() == {"status": "accepted"}
    assert recorded(webhook_client)[-1] == {
        "source": "standard-webhooks",
        "id": "msg_1",
        "type": "user.created",
    }


def test_our_acceptance_matches_the_reference_verifier() -> None:
    body = b'{"type": "ping"}'
    headers = sw_delivery(body)
    standardwebhooks.Webhook(SW_SECRET).verify(body, headers)  # raises if the library disagrees
    key = webhooks.decode_standard_secret(SW_SECRET)
    webhooks.verify_standard_webhook(
        Headers(headers), body, [key], now=time.time(), tolerance=TOLERANCE
    )


def stripe_event(event_id: str = "evt_1", event_type: str = "payment_intent.succeeded") -> bytes:
    payment = {"id": "pi_1", "object": "payment_intent", "amount": 2000, "currency": "eur"}
    event = {"id": event_id, "object": "event", "type": event_type, "data": {"object": payment}}
    return json.dumps(event).encode()


def stripe_headers(
    body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    signature = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=timestamp
    )
    return {"Stripe-Signature": signature, "Content-Type": "application/json"}


def test_delivery_signed_by_stripe_library_is_accepted(webhook_client: FlaskClient) -> None:
    body = stripe_event()
    response = webhook_client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert response.get_json() == {"status": "accepted"}
    assert recorded(webhook_client)[-1] == {
        "source": "stripe",
        "id": "evt_1",
        "type": "payment_intent.succeeded",
    }


def test_stripe_library_agrees_on_what_we_accept() -> None:
    body = stripe_event()
    headers = stripe_headers(body)
    stripe.WebhookSignature.verify_header(body, headers["Stripe-Signature"], STRIPE_SECRET, 300)
    webhooks.verify_stripe(
        Headers(headers), body, [STRIPE_SECRET.encode()], now=time.time(), tolerance=TOLERANCE
    )


def test_future_stripe_timestamp_is_refused_although_stripe_library_accepts_it(
    webhook_client: FlaskClient,
) -> None:
    body = stripe_event()
    headers = stripe_headers(body, timestamp=int(time.time()) + TOLERANCE + 60)
    stripe.WebhookSignature.verify_header(body, headers["Stripe-Signature"], STRIPE_SECRET, 300)
    assert_problem(
        webhook_client.post("/webhooks/stripe", data=body, headers=headers), 401, OUTSIDE_WINDOW
    )


# --- Standard Webhooks: refusals --------------------------------------------------------------


def test_tampered_body_is_refused(webhook_client: FlaskClient) -> None:
    body = b'{"type": "user.created", "amount": 1}'
    headers = sw_delivery(body)
    tampered = body.replace(b"1", b"9")
    assert_problem(
        webhook_client.post("/webhooks/events", data=tampered, headers=headers), 401, NO_SIGNATURE
    )


def test_wrong_secret_is_refused(webhook_client: FlaskClient) -> None:
    body = b'{"type": "user.created"}'
    headers = sw_delivery(body, secret=SECOND_SECRET)
    assert_problem(
        webhook_client.post("/webhooks/events", data=body, headers=headers), 401, NO_SIGNATURE
    )


@pytest.mark.parametrize(("offset", "status"), [(-310, 401), (-290, 200), (290, 200), (310, 401)])
def test_timestamp_window_applies_in_both_directions(
    webhook_client: FlaskClient, offset: int, status: int
) -> None:
    body = b'{"type": "user.created"}'
    headers = sw_delivery(body, msg_id=f"msg_offset{offset}", at=int(time.time()) + offset)
    response = webhook_client.post("/webhooks/events", data=body, headers=headers)
    if status == 401:
        assert_problem(response, 401, OUTSIDE_WINDOW)
    else:
        assert response.get_json() == {"status": "accepted"}


def test_window_edges_with_a_frozen_clock(frozen_client: FlaskClient) -> None:
    app = frozen_client.application
    state: webhooks.WebhookState = app.extensions["webhooks"]
    for now, status in [
        (SW_TIMESTAMP + 300, 200),
        (SW_TIMESTAMP + 301, 401),
        (SW_TIMESTAMP - 300, 200),
        (SW_TIMESTAMP - 301, 401),
    ]:
        state.clock = functools.partial(float, now)
        state.store = webhooks.MemoryReplayStore()
        response = frozen_client.post("/webhooks/events", data=SW_BODY, headers=sw_headers())
        if status == 401:
            assert_problem(response, 401, OUTSIDE_WINDOW)
        else:
            assert response.get_json() == {"status": "accepted"}


VALID_MAC = SW_SIGNATURE.partition(",")[2]


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("v1," + VALID_MAC[:20], id="truncated"),
        pytest.param("v1," + VALID_MAC[:-2], id="truncated-keeps-padding"),
        pytest.param("v2," + VALID_MAC, id="unknown-version"),
        pytest.param("v1a," + VALID_MAC, id="asymmetric-version-unsupported"),
        pytest.param(VALID_MAC, id="no-version"),
        pytest.param("v1", id="version-only"),
        pytest.param("v1,", id="empty-mac"),
        pytest.param("v1,!!!not-base64!!!", id="not-base64"),
        pytest.param("v1," + VALID_MAC[:8] + "!" + VALID_MAC[8:], id="junk-inside-a-valid-mac"),
        pytest.param("v1,\u00e9\u00e9\u00e9", id="non-ascii"),
        pytest.param("v1," + VALID_MAC.lower(), id="case-changed"),
        pytest.param("," * 50, id="commas"),
        pytest.param("v1," + base64.b64encode(b"\0" * 32).decode(), id="zero-mac"),
    ],
)
def test_bad_signature_values_are_401(frozen_client: FlaskClient, signature: str) -> None:
    headers = sw_headers(signature=signature)
    assert_problem(
        frozen_client.post("/webhooks/events", data=SW_BODY, headers=headers), 401, NO_SIGNATURE
    )


def test_valid_signature_among_garbage_entries_is_accepted(frozen_client: FlaskClient) -> None:
    headers = sw_headers(signature=f"v2,abc v1,!!! {SW_SIGNATURE} v1a,xyz")
    response = frozen_client.post("/webhooks/events", data=SW_BODY, headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize("gone", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_400(frozen_client: FlaskClient, gone: str) -> None:
    headers = sw_headers()
    del headers[gone]
    assert_problem(
        frozen_client.post("/webhooks/events", data=SW_BODY, headers=headers), 400, missing(gone)
    )


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("webhook-timestamp", "abc"),
        ("webhook-timestamp", "1614265330.5"),
        ("webhook-timestamp", "-1614265330"),
        ("webhook-timestamp", "1e9"),
        ("webhook-timestamp", "9" * 5000),
        ("webhook-timestamp", "\u0661\u0666"),  # Arabic-Indic digits: int() would accept them
        ("webhook-id", "msg with spaces"),
        ("webhook-id", "msg_\u00e9"),
        ("webhook-id", "x" * 300),
        ("webhook-id", "x" * 257),
        ("webhook-timestamp", "1" * 16),
    ],
)
def test_garbage_headers_are_400_never_500(
    frozen_client: FlaskClient, header: str, value: str
) -> None:
    headers = sw_headers()
    headers[header] = value
    assert_problem(
        frozen_client.post("/webhooks/events", data=SW_BODY, headers=headers), 400, invalid(header)
    )


def test_a_blank_header_is_missing(frozen_client: FlaskClient) -> None:
    headers = {**sw_headers(), "webhook-signature": "   "}
    response = frozen_client.post("/webhooks/events", data=SW_BODY, headers=headers)
    assert_problem(response, 400, missing("webhook-signature"))


def test_header_lengths_at_their_limits_pass_the_format_check(tmp_path: Path) -> None:
    # A 256-character id is verified and accepted; 15 digits are a timestamp, only far from now.
    client = bare_app(tmp_path).test_client()
    body = b'{"type": "long.id"}'
    headers = sw_delivery(body, msg_id="x" * 256)
    response = client.post("/webhooks/events", data=body, headers=headers)
    assert response.get_json() == {"status": "accepted"}
    headers = {**sw_headers(), "webhook-timestamp": "1" * 15}
    assert_problem(
        client.post("/webhooks/events", data=SW_BODY, headers=headers), 401, OUTSIDE_WINDOW
    )


def test_signed_body_that_is_not_json_is_400(webhook_client: FlaskClient) -> None:
    body = b"\xff\xfe not json"
    headers = sw_delivery(b"placeholder")
    when = int(headers["webhook-timestamp"])
    key = webhooks.decode_standard_secret(SW_SECRET)
    mac = hmac.new(key, b"msg_1." + str(when).encode() + b"." + body, hashlib.sha256).digest()
    headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()
    assert_problem(
        webhook_client.post("/webhooks/events", data=body, headers=headers), 400, NOT_JSON
    )


def test_body_over_one_mebibyte_is_413(webhook_client: FlaskClient) -> None:
    body = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    response = webhook_client.post("/webhooks/events", data=body, headers=sw_delivery(body))
    assert_problem(response, 413, TOO_LARGE)


def test_webhook_limit_holds_even_if_the_app_allows_larger_bodies(tmp_path: Path) -> None:
    app = bare_app(tmp_path, MAX_CONTENT_LENGTH=None)
    body = b"x" * (1024 * 1024 + 1)
    response = app.test_client().post("/webhooks/events", data=body, headers=sw_delivery(body))
    assert_problem(response, 413, TOO_LARGE)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_smaller_app_limit_applies_to_webhooks_at_its_boundary(
    tmp_path: Path, chunked: bool
) -> None:
    client = bare_app(tmp_path, MAX_CONTENT_LENGTH=1000).test_client()

    def send(body: bytes, msg_id: str) -> TestResponse:
        headers = sw_delivery(body, msg_id=msg_id)
        if chunked:
            return post_chunked(client, body, headers)
        return client.post("/webhooks/events", data=body, headers=headers)

    assert send(sized_body(1000), "msg_at").get_json() == {"status": "accepted"}
    assert_problem(send(sized_body(1001), "msg_past"), 413, TOO_LARGE)


def test_body_of_exactly_one_mebibyte_is_read(webhook_client: FlaskClient) -> None:
    prefix, suffix = b'{"type": "big", "pad": "', b'"}'
    body = prefix + b"x" * (1024 * 1024 - len(prefix) - len(suffix)) + suffix
    assert len(body) == 1024 * 1024
    response = webhook_client.post("/webhooks/events", data=body, headers=sw_delivery(body))
    assert response.status_code == 200


def post_chunked(client: FlaskClient, body: bytes, headers: dict[str, str]) -> TestResponse:
    """Post as gunicorn hands over a chunked request: no Content-Length, and the server (not
    the app) ends the stream, which it says with wsgi.input_terminated."""
    environ = EnvironBuilder(
        path="/webhooks/events",
        method="POST",
        headers=Headers({**headers, "Transfer-Encoding": "chunked"}),
        input_stream=io.BytesIO(body),
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    return client.open(Request(environ))


def sized_body(size: int) -> bytes:
    prefix, suffix = b'{"type": "big", "pad": "', b'"}'
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


@pytest.mark.parametrize("app_limit", [1024 * 1024, None], ids=["app-1MiB", "app-unlimited"])
def test_chunked_body_over_one_mebibyte_is_413_not_truncated(
    tmp_path: Path, app_limit: int | None
) -> None:
    # Truncated at the limit, the body would fail its signature: a misleading 401.
    client = bare_app(tmp_path, MAX_CONTENT_LENGTH=app_limit).test_client()
    body = sized_body(1024 * 1024 + 1)
    assert_problem(post_chunked(client, body, sw_delivery(body)), 413, TOO_LARGE)


def test_a_body_shorter_than_its_content_length_is_400(webhook_client: FlaskClient) -> None:
    # The client went away mid-body: refused as incomplete, never verified on a fragment.
    body = b'{"type": "cut"}'
    environ = EnvironBuilder(
        path="/webhooks/events", method="POST", headers=Headers(sw_delivery(body)),
        input_stream=io.BytesIO(body),
    ).get_environ()  # fmt: skip
    environ["CONTENT_LENGTH"] = str(len(body) + 100)
    response = webhook_client.open(Request(environ))
    assert_problem(response, 400, "body incomplete")


def test_chunked_body_of_exactly_one_mebibyte_is_read(webhook_client: FlaskClient) -> None:
    body = sized_body(1024 * 1024)
    response = post_chunked(webhook_client, body, sw_delivery(body))
    assert (response.status_code, response.get_json()) == (200, {"status": "accepted"})


# --- rotation ---------------------------------------------------------------------------------


THIRD_SECRET = "whsec_" + base64.b64encode(b"a third secret of 32 bytes......").decode()


@pytest.mark.parametrize(
    "configured",
    [
        f"{SW_SECRET} {SECOND_SECRET} {THIRD_SECRET}",
        f"  {SW_SECRET}\t{SECOND_SECRET}\n{THIRD_SECRET}  ",
        (SW_SECRET, SECOND_SECRET, THIRD_SECRET),
        ["", SW_SECRET, "", SECOND_SECRET, THIRD_SECRET],
    ],
    ids=["space-separated", "any-whitespace", "tuple", "list-with-blanks"],
)
def test_rotation_accepts_every_listed_secret_in_any_position(
    tmp_path: Path, configured: object
) -> None:
    webhook_client = bare_app(tmp_path, WEBHOOK_SECRET=configured).test_client()
    body = b'{"type": "rotation"}'
    for number, secret in enumerate([SW_SECRET, SECOND_SECRET, THIRD_SECRET]):
        headers = sw_delivery(body, secret=secret, msg_id=f"msg_rot{number}")
        response = webhook_client.post("/webhooks/events", data=body, headers=headers)
        assert response.get_json() == {"status": "accepted"}, secret
    stranger = "whsec_" + base64.b64encode(b"a fourth secret nobody configured").decode()
    headers = sw_delivery(body, secret=stranger, msg_id="msg_rot_stranger")
    response = webhook_client.post("/webhooks/events", data=body, headers=headers)
    assert_problem(response, 401, NO_SIGNATURE)


@pytest.mark.parametrize(
    "configured",
    [
        SW_SECRET.removeprefix("whsec_"),
        "whsec_" + base64.b64encode(b"17 bytes of a key").decode().rstrip("="),
    ],
    ids=["without-prefix", "unpadded-base64"],
)
def test_standard_secret_spellings_that_are_accepted(tmp_path: Path, configured: str) -> None:
    padded = configured.removeprefix("whsec_")
    key = base64.b64decode(padded + "=" * (-len(padded) % 4))
    client = bare_app(tmp_path, WEBHOOK_SECRET=configured).test_client()
    body = b'{"type": "spelling"}'
    # Signed with the whsec_ spelling of the same key bytes, by the reference library.
    headers = sw_delivery(body, secret="whsec_" + base64.b64encode(key).decode())
    assert client.post("/webhooks/events", data=body, headers=headers).get_json() == {
        "status": "accepted"
    }


def test_sender_signing_with_both_secrets_during_rotation_is_accepted(tmp_path: Path) -> None:
    webhook_client = bare_app(tmp_path, WEBHOOK_SECRET=SECOND_SECRET).test_client()
    body = b'{"type": "rotation"}'
    headers = sw_delivery(body)
    new_signature = sw_delivery(body, secret=SECOND_SECRET, at=int(headers["webhook-timestamp"]))
    headers["webhook-signature"] += " " + new_signature["webhook-signature"]
    assert webhook_client.post("/webhooks/events", data=body, headers=headers).status_code == 200


STRIPE_ROTATED = ("whsec_rotated_stripe_secret_9876543210", "whsec_third_stripe_secret_24680")


@pytest.mark.parametrize(
    "configured",
    [
        " ".join((STRIPE_SECRET, *STRIPE_ROTATED)),
        (STRIPE_SECRET, *STRIPE_ROTATED),
        ["", STRIPE_SECRET, *STRIPE_ROTATED],
    ],
    ids=["space-separated", "tuple", "list-with-blanks"],
)
def test_stripe_rotation_accepts_every_listed_secret(tmp_path: Path, configured: object) -> None:
    webhook_client = bare_app(tmp_path, STRIPE_WEBHOOK_SECRET=configured).test_client()
    for number, secret in enumerate([STRIPE_SECRET, *STRIPE_ROTATED, "whsec_not_configured"]):
        body = stripe_event(event_id=f"evt_rot{number}")
        response = webhook_client.post(
            "/webhooks/stripe", data=body, headers=stripe_headers(body, secret)
        )
        if number < 3:
            assert response.get_json() == {"status": "accepted"}, secret
        else:
            assert_problem(response, 401, NO_SIGNATURE)


GH_ROTATED = ("second secret", "third")


@pytest.mark.parametrize(
    "configured",
    [(GH_SECRET, *GH_ROTATED), ["", GH_SECRET, *GH_ROTATED]],
    ids=["tuple", "list-with-blanks"],
)
def test_github_secret_list_rotates(tmp_path: Path, configured: object) -> None:
    webhook_client = bare_app(tmp_path, GITHUB_WEBHOOK_SECRET=configured).test_client()
    for number, secret in enumerate([GH_SECRET, *GH_ROTATED, "not configured"]):
        body = b'{"zen": "Design for failure.", "n": %d}' % number
        response = webhook_client.post(
            "/webhooks/github",
            data=body,
            headers=gh_headers(gh_sign(secret, body), delivery=f"d-{number}"),
        )
        if number < 3:
            assert response.get_json() == {"status": "accepted"}, secret
        else:
            assert_problem(response, 401, NO_SIGNATURE)


def test_a_github_secret_with_spaces_is_one_secret(tmp_path: Path) -> None:
    webhook_client = bare_app(tmp_path, GITHUB_WEBHOOK_SECRET=GH_SECRET).test_client()
    body = b'{"zen": "Mind your words, they are important."}'
    for number, secret in enumerate([GH_SECRET, *GH_SECRET.split()]):
        response = webhook_client.post(
            "/webhooks/github",
            data=body,
            headers=gh_headers(gh_sign(secret, body), delivery=f"d-{number}"),
        )
        if number == 0:
            assert response.get_json() == {"status": "accepted"}
        else:
            assert_problem(response, 401, NO_SIGNATURE)


NOT_BASE64_SECRET = "WEBHOOK_SECRET: a secret is not whsec_ followed by base64"
SHORT_SECRET = "WEBHOOK_SECRET: a secret is shorter than 16 bytes"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_not+base64!", NOT_BASE64_SECRET),
        ("whsec_" + base64.b64encode(bytes(range(200, 216))).decode() + "!", NOT_BASE64_SECRET),
        ("whsec_", SHORT_SECRET),
        ("whsec_c2hvcnQ=", SHORT_SECRET),
        ("whsec_" + base64.b64encode(b"15 bytes of key").decode(), SHORT_SECRET),
        (f"{SW_SECRET} whsec_c2hvcnQ=", SHORT_SECRET),
    ],
    ids=["not-base64", "base64-then-garbage", "empty", "too-short", "15-bytes", "second-short"],
)
def test_unusable_standard_secret_refuses_to_start_without_echoing_it(
    tmp_path: Path, secret: str, message: str
) -> None:
    with pytest.raises(webhooks.WebhookConfigError) as error:
        bare_app(tmp_path, WEBHOOK_SECRET=secret)
    assert str(error.value) == message
    assert error.value.setting == "WEBHOOK_SECRET"


def test_a_standard_secret_of_16_bytes_is_enough(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(b"16 bytes of key!").decode()
    client = bare_app(tmp_path, WEBHOOK_SECRET=secret).test_client()
    body = b'{"type": "short.enough"}'
    response = client.post("/webhooks/events", data=body, headers=sw_delivery(body, secret=secret))
    assert response.get_json() == {"status": "accepted"}


# --- GitHub -----------------------------------------------------------------------------------


def gh_sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def gh_headers(signature: str, delivery: str = "d-1", event: str = "push") -> dict[str, str]:
    return {
        "X-Hub-Signature-256": signature,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "Content-Type": "application/json",
    }


def test_github_delivery_is_accepted_and_dispatched_by_event_header(
    webhook_client: FlaskClient,
) -> None:
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 42}'
    response = webhook_client.post(
        "/webhooks/github", data=body, headers=gh_headers(gh_sign(GH_SECRET, body), event="ping")
    )
    assert response.get_json() == {"status": "accepted"}
    assert recorded(webhook_client)[-1] == {"source": "github", "id": "d-1", "type": "ping"}


GOOD_GH_BODY = b'{"ok": true}'
GOOD_GH_HEX = gh_sign(GH_SECRET, GOOD_GH_BODY).removeprefix("sha256=")


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        pytest.param({"X-Hub-Signature-256": None}, 400, missing("X-Hub-Signature-256"),
                     id="missing-signature"),
        pytest.param({"X-GitHub-Delivery": None}, 400, missing("X-GitHub-Delivery"),
                     id="missing-delivery"),
        pytest.param({"X-GitHub-Event": None}, 400, missing("X-GitHub-Event"), id="missing-event"),
        pytest.param({"X-GitHub-Delivery": "has space"}, 400, invalid("X-GitHub-Delivery"),
                     id="garbage-delivery"),
        pytest.param({"X-GitHub-Event": "x" * 257}, 400, invalid("X-GitHub-Event"),
                     id="garbage-event"),
        pytest.param({"X-Hub-Signature-256": "sha1=" + GOOD_GH_HEX}, 401, NO_SIGNATURE,
                     id="other-algorithm"),
        pytest.param({"X-Hub-Signature-256": "SHA256=" + GOOD_GH_HEX}, 401, NO_SIGNATURE,
                     id="algorithm-upper-case"),
        pytest.param({"X-Hub-Signature-256": "sha256=" + GOOD_GH_HEX + "=x"}, 401, NO_SIGNATURE,
                     id="trailing-equals"),
        pytest.param({"X-Hub-Signature-256": "sha256=zz"}, 401, NO_SIGNATURE, id="not-hex"),
        pytest.param({"X-Hub-Signature-256": "sha256=\u00e9"}, 401, NO_SIGNATURE, id="non-ascii"),
        pytest.param({"X-Hub-Signature-256": GOOD_GH_HEX}, 401, NO_SIGNATURE, id="no-prefix"),
        pytest.param({"X-Hub-Signature-256": "sha256=" + GOOD_GH_HEX[:-2]}, 401, NO_SIGNATURE,
                     id="truncated"),
    ],
)  # fmt: skip
def test_github_refusals(
    webhook_client: FlaskClient, change: dict[str, str | None], status: int, detail: str
) -> None:
    headers: dict[str, str | None] = dict(gh_headers(gh_sign(GH_SECRET, GOOD_GH_BODY)))
    headers.update(change)
    sent = {name: value for name, value in headers.items() if value is not None}
    response = webhook_client.post("/webhooks/github", data=GOOD_GH_BODY, headers=sent)
    assert_problem(response, status, detail)
    assert recorded(webhook_client) == []


def test_github_signature_with_spaces_around_it_is_accepted(webhook_client: FlaskClient) -> None:
    headers = gh_headers(f" sha256={GOOD_GH_HEX} ")
    response = webhook_client.post("/webhooks/github", data=GOOD_GH_BODY, headers=headers)
    assert response.get_json() == {"status": "accepted"}


def test_legacy_sha1_header_alone_is_not_enough(webhook_client: FlaskClient) -> None:
    body = b'{"ok": true}'
    sha1 = "sha1=" + hmac.new(GH_SECRET.encode(), body, hashlib.sha1).hexdigest()
    headers = {"X-Hub-Signature": sha1, "X-GitHub-Delivery": "d-1", "X-GitHub-Event": "push"}
    assert_problem(
        webhook_client.post("/webhooks/github", data=body, headers=headers),
        400,
        missing("X-Hub-Signature-256"),
    )


# --- Stripe -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status", "detail"),
    [
        pytest.param("", 400, missing("Stripe-Signature"), id="empty"),
        pytest.param("v1=abc", 400, ONE_T, id="no-timestamp"),
        pytest.param("t=abc,v1=abc", 400, BAD_T, id="timestamp-not-a-number"),
        pytest.param("t=,v1=SIG", 400, BAD_T, id="timestamp-empty"),
        pytest.param("t=1" + "0" * 15 + ",v1=SIG", 400, BAD_T, id="timestamp-16-digits"),
        pytest.param("t=NOW,t=NOW,v1=SIG", 400, ONE_T, id="two-timestamps"),
        pytest.param("t=NOW=1,v1=SIG", 400, BAD_T, id="timestamp-with-equals"),
        pytest.param("garbage", 400, ONE_T, id="garbage"),
        pytest.param("T=NOW,v1=SIG", 400, ONE_T, id="upper-case-t"),
        pytest.param("t=NOW", 401, NO_SIGNATURE, id="no-v1"),
        pytest.param("t=NOW,v0=SIG", 401, NO_SIGNATURE, id="only-v0"),
        pytest.param("t=NOW,V1=SIG", 401, NO_SIGNATURE, id="upper-case-v1"),
        pytest.param("t=NOW,v1=SIG=", 401, NO_SIGNATURE, id="v1-trailing-equals"),
        pytest.param("t=NOW,v1=zz", 401, NO_SIGNATURE, id="v1-not-hex"),
        pytest.param("t=NOW,v1=\u00e9", 401, NO_SIGNATURE, id="v1-non-ascii"),
        pytest.param("t=NOW,v1=SIGTRUNC", 401, NO_SIGNATURE, id="v1-truncated"),
        pytest.param("t=OLD,v1=SIGOLD", 401, OUTSIDE_WINDOW, id="old"),
        pytest.param("t=FUTURE,v1=SIGFUTURE", 401, OUTSIDE_WINDOW, id="future"),
    ],
)
def test_stripe_refusals(
    webhook_client: FlaskClient, header: str, status: int, detail: str
) -> None:
    body = stripe_event()
    now = int(time.time())

    def sig(at: int) -> str:
        return stripe_headers(body, timestamp=at)["Stripe-Signature"].partition("v1=")[2]

    header = (
        header.replace("SIGTRUNC", sig(now)[:40])
        .replace("SIGOLD", sig(now - 400))
        .replace("SIGFUTURE", sig(now + 400))
        .replace("SIG", sig(now))
        .replace("NOW", str(now))
        .replace("OLD", str(now - 400))
        .replace("FUTURE", str(now + 400))
    )
    assert_problem(
        webhook_client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header}),
        status,
        detail,
    )
    assert recorded(webhook_client) == []


@pytest.mark.parametrize(
    "shape",
    ["v1=SIG,t=NOW", " t=NOW , v1=BAD , v1=SIG ", "t=NOW,v0=BAD,v1=SIG,x=y"],
    ids=["t-last", "spaces-and-a-bad-v1-first", "other-elements"],
)
def test_stripe_header_shapes_that_are_accepted(webhook_client: FlaskClient, shape: str) -> None:
    body = stripe_event()
    now = int(time.time())
    good = stripe_headers(body, timestamp=now)["Stripe-Signature"].partition("v1=")[2]
    header = shape.replace("SIG", good).replace("BAD", "0" * 64).replace("NOW", str(now))
    response = webhook_client.post(
        "/webhooks/stripe", data=body, headers={"Stripe-Signature": header}
    )
    assert response.get_json() == {"status": "accepted"}


def test_verified_stripe_delivery_carries_its_timestamp() -> None:
    body = stripe_event()
    headers = stripe_headers(body, timestamp=SW_TIMESTAMP)
    verified = webhooks.verify_stripe(
        Headers(headers), body, [STRIPE_SECRET.encode()], now=SW_TIMESTAMP, tolerance=TOLERANCE
    )
    assert verified == webhooks.VerifiedDelivery(delivery_id=None, timestamp=SW_TIMESTAMP)


def test_stripe_wrong_secret_and_tampered_body(webhook_client: FlaskClient) -> None:
    body = stripe_event()
    wrong = stripe_headers(body, secret="whsec_someone_else")
    assert_problem(
        webhook_client.post("/webhooks/stripe", data=body, headers=wrong), 401, NO_SIGNATURE
    )
    tampered = body.replace(b"2000", b"1")
    assert_problem(
        webhook_client.post("/webhooks/stripe", data=tampered, headers=stripe_headers(body)),
        401,
        NO_SIGNATURE,
    )


def test_stripe_secret_is_used_whole_not_base64_decoded(webhook_client: FlaskClient) -> None:
    body = stripe_event()
    when = str(int(time.time()))
    decoded_key = base64.b64decode(STRIPE_SECRET.removeprefix("whsec_") + "==")
    mac = hmac.new(decoded_key, when.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"Stripe-Signature": f"t={when},v1={mac}"}
    assert_problem(
        webhook_client.post("/webhooks/stripe", data=body, headers=headers), 401, NO_SIGNATURE
    )


@pytest.mark.parametrize(
    "event",
    [{"object": "event"}, {"id": 12}, {"id": "evt with space"}, {"id": ""}, {"id": "e" * 257},
     ["evt_1"]],
    ids=["no-id", "id-not-string", "id-garbage", "id-empty", "id-too-long", "not-an-object"],
)  # fmt: skip
def test_stripe_event_without_usable_id_is_400(webhook_client: FlaskClient, event: object) -> None:
    body = json.dumps(event).encode()
    assert_problem(
        webhook_client.post("/webhooks/stripe", data=body, headers=stripe_headers(body)),
        400,
        NO_ID,
    )
    assert recorded(webhook_client) == []


def test_stripe_event_type_comes_from_the_body_and_may_be_absent(
    webhook_client: FlaskClient,
) -> None:
    for number, event in enumerate([{"id": "evt_t1", "type": 7}, {"id": "evt_t2"}]):
        body = json.dumps(event).encode()
        response = webhook_client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
        assert response.get_json() == {"status": "accepted"}, number
    assert recorded(webhook_client) == [
        {"source": "stripe", "id": "evt_t1", "type": ""},
        {"source": "stripe", "id": "evt_t2", "type": ""},
    ]


# --- Standard Webhooks v1a (ed25519) ---------------------------------------------------------

# The sender's signing key (what Standard Webhooks serialises as whsk_): it never reaches the
# receiver, which is configured with the public key only.
SENDER_KEY = Ed25519PrivateKey.generate()
SENDER_PUBLIC_KEY = "whpk_" + base64.b64encode(SENDER_KEY.public_key().public_bytes_raw()).decode()


def v1a_signature(key: Ed25519PrivateKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """Signed with cryptography's Ed25519, never with the code under test."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1a," + base64.b64encode(key.sign(signed)).decode()


def v1a_delivery(
    body: bytes, *, key: Ed25519PrivateKey = SENDER_KEY, msg_id: str = "msg_a1",
    at: int | None = None, also: str = "",
) -> dict[str, str]:  # fmt: skip
    timestamp = int(time.time()) if at is None else at
    signature = v1a_signature(key, msg_id, timestamp, body)
    return sw_headers(msg_id, timestamp, f"{also} {signature}".strip())


def asymmetric_app(tmp_path: Path, **config: Any) -> Flask:
    # No shared secret at all: only the sender's public key.
    return bare_app(
        tmp_path, **{"WEBHOOK_SECRET": None, "WEBHOOK_PUBLIC_KEY": SENDER_PUBLIC_KEY, **config}
    )


EVENT = b'{"type": "invoice.paid", "data": {"id": "in_1"}}'


def test_v1a_vector_verifies_as_a_function() -> None:
    key = webhooks.decode_standard_public_key(SENDER_PUBLIC_KEY)
    headers = Headers(v1a_delivery(EVENT, at=SW_TIMESTAMP))
    verified = webhooks.verify_standard_webhook(
        headers, EVENT, {"v1a": (key,)}, now=SW_TIMESTAMP, tolerance=TOLERANCE
    )
    assert verified.delivery_id == "msg_a1"
    with pytest.raises(webhooks.WebhookRejected) as rejected:
        webhooks.verify_standard_webhook(
            headers, EVENT + b" ", {"v1a": (key,)}, now=SW_TIMESTAMP, tolerance=TOLERANCE
        )
    assert (rejected.value.status, rejected.value.detail) == (401, NO_SIGNATURE)


def test_v1a_delivery_is_accepted_once_with_only_a_public_key(tmp_path: Path) -> None:
    client = asymmetric_app(tmp_path).test_client()
    headers = v1a_delivery(EVENT)
    assert client.post("/webhooks/events", data=EVENT, headers=headers).get_json() == {
        "status": "accepted"
    }
    assert client.post("/webhooks/events", data=EVENT, headers=headers).get_json() == {
        "status": "duplicate"
    }
    assert recorded(client) == [
        {"source": "standard-webhooks", "id": "msg_a1", "type": "invoice.paid"}
    ]


@pytest.mark.parametrize("configured", ["both", "public-key-only", "secret-only"])
def test_library_v1_beside_our_v1a_in_one_header_is_accepted(
    tmp_path: Path, configured: str
) -> None:
    # The standardwebhooks library signs v1 (it has no v1a); both entries share one header.
    timestamp = int(time.time())
    v1 = sw_sign(SW_SECRET, "msg_mixed", timestamp, EVENT)
    v1a = v1a_signature(SENDER_KEY, "msg_mixed", timestamp, EVENT)
    configurations: dict[str, dict[str, Any]] = {
        "both": {"WEBHOOK_SECRET": SW_SECRET, "WEBHOOK_PUBLIC_KEY": SENDER_PUBLIC_KEY},
        "public-key-only": {"WEBHOOK_SECRET": None, "WEBHOOK_PUBLIC_KEY": SENDER_PUBLIC_KEY},
        "secret-only": {"WEBHOOK_SECRET": SW_SECRET},
    }
    keys = configurations[configured]
    client = bare_app(tmp_path, **keys).test_client()
    for header in (f"{v1} {v1a}", f"{v1a} {v1}"):
        headers = sw_headers("msg_mixed", timestamp, header)
        standardwebhooks.Webhook(SW_SECRET).verify(EVENT, headers)  # the library agrees on v1
        response = client.post("/webhooks/events", data=EVENT, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)


def test_one_valid_entry_of_either_kind_is_enough(tmp_path: Path) -> None:
    client = bare_app(tmp_path, WEBHOOK_PUBLIC_KEY=SENDER_PUBLIC_KEY).test_client()
    stranger = Ed25519PrivateKey.generate()
    timestamp = int(time.time())
    good_v1 = sw_sign(SW_SECRET, "msg_e1", timestamp, EVENT)
    bad_v1a = v1a_signature(stranger, "msg_e1", timestamp, EVENT)
    headers = sw_headers("msg_e1", timestamp, f"{bad_v1a} {good_v1}")
    assert client.post("/webhooks/events", data=EVENT, headers=headers).status_code == 200
    bad_v1 = sw_sign(SECOND_SECRET, "msg_e2", timestamp, EVENT)
    good_v1a = v1a_signature(SENDER_KEY, "msg_e2", timestamp, EVENT)
    headers = sw_headers("msg_e2", timestamp, f"{bad_v1} {good_v1a}")
    assert client.post("/webhooks/events", data=EVENT, headers=headers).status_code == 200


def hmac_with_the_public_key(msg_id: str, timestamp: int, body: bytes) -> str:
    """A v1 signature keyed with the public key's bytes, which anyone may know."""
    raw = base64.b64decode(SENDER_PUBLIC_KEY.removeprefix("whpk_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(raw, signed, hashlib.sha256).digest()).decode()


V1A_REFUSALS: dict[str, Callable[[int], dict[str, str]]] = {
    "other-key": lambda t: v1a_delivery(EVENT, key=Ed25519PrivateKey.generate(), at=t),
    "stale": lambda t: v1a_delivery(EVENT, at=t - TOLERANCE - 1),
    "future": lambda t: v1a_delivery(EVENT, at=t + TOLERANCE + 1),
    "other-id": lambda t: {**v1a_delivery(EVENT, at=t), "webhook-id": "msg_other"},
    "other-timestamp": lambda t: {**v1a_delivery(EVENT, at=t), "webhook-timestamp": str(t - 1)},
    "body-only-signed": lambda t: sw_headers(
        "msg_a1", t, "v1a," + base64.b64encode(SENDER_KEY.sign(EVENT)).decode()
    ),
    "truncated": lambda t: sw_headers(
        "msg_a1", t, v1a_delivery(EVENT, at=t)["webhook-signature"][:-8]
    ),
    "not-base64": lambda t: sw_headers("msg_a1", t, "v1a,!!!not base64!!!"),
    "empty": lambda t: sw_headers("msg_a1", t, "v1a,"),
    "64-zero-bytes": lambda t: sw_headers(
        "msg_a1", t, "v1a," + base64.b64encode(bytes(64)).decode()
    ),
    "v1-keyed-with-the-public-key": lambda t: sw_headers(
        "msg_a1", t, hmac_with_the_public_key("msg_a1", t, EVENT)
    ),
    "v1a-labelled-v1": lambda t: sw_headers(
        "msg_a1", t, v1a_delivery(EVENT, at=t)["webhook-signature"].replace("v1a,", "v1,")
    ),
}


@pytest.mark.parametrize("case", list(V1A_REFUSALS))
def test_v1a_refusals_are_401(tmp_path: Path, case: str) -> None:
    client = asymmetric_app(tmp_path).test_client()
    headers = V1A_REFUSALS[case](int(time.time()))
    detail = OUTSIDE_WINDOW if case in ("stale", "future") else NO_SIGNATURE
    assert_problem(client.post("/webhooks/events", data=EVENT, headers=headers), 401, detail)
    assert recorded(client) == []


def test_tampered_body_is_refused_with_v1a(tmp_path: Path) -> None:
    client = asymmetric_app(tmp_path).test_client()
    headers = v1a_delivery(EVENT)
    tampered = EVENT.replace(b"in_1", b"in_2")
    assert_problem(
        client.post("/webhooks/events", data=tampered, headers=headers), 401, NO_SIGNATURE
    )


def public_key_of(key: Ed25519PrivateKey) -> str:
    return "whpk_" + base64.b64encode(key.public_key().public_bytes_raw()).decode()


ROTATED_KEYS = (Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    "spelling",
    ["space-separated", "tuple", "list-with-blanks", "unpadded"],
)
def test_v1a_rotation_accepts_every_listed_public_key(tmp_path: Path, spelling: str) -> None:
    publics = [public_key_of(key) for key in (*ROTATED_KEYS, SENDER_KEY)]
    configured: object = {
        "space-separated": "  ".join(publics),
        "tuple": tuple(publics),
        "list-with-blanks": ["", *publics],
        "unpadded": " ".join(public.rstrip("=") for public in publics),
    }[spelling]
    client = asymmetric_app(tmp_path, WEBHOOK_PUBLIC_KEY=configured).test_client()
    for number, key in enumerate((*ROTATED_KEYS, SENDER_KEY)):
        headers = v1a_delivery(EVENT, key=key, msg_id=f"msg_rot_{number}")
        response = client.post("/webhooks/events", data=EVENT, headers=headers)
        assert response.get_json() == {"status": "accepted"}, number
    headers = v1a_delivery(EVENT, key=Ed25519PrivateKey.generate(), msg_id="msg_rot_stranger")
    assert_problem(client.post("/webhooks/events", data=EVENT, headers=headers), 401, NO_SIGNATURE)


def junk_v1a(count: int) -> str:
    return " ".join(f"v1a,{base64.b64encode(bytes([n]) * 64).decode()}" for n in range(count))


def test_too_many_signatures_are_400(tmp_path: Path) -> None:
    client = asymmetric_app(tmp_path).test_client()
    headers = v1a_delivery(EVENT, also=junk_v1a(16))  # 17 entries, the valid one last
    assert_problem(client.post("/webhooks/events", data=EVENT, headers=headers), 400, TOO_MANY)


def test_sixteen_signatures_are_checked(tmp_path: Path) -> None:
    client = asymmetric_app(tmp_path).test_client()
    headers = v1a_delivery(EVENT, also=junk_v1a(15))  # 16 entries, the valid one last
    response = client.post("/webhooks/events", data=EVENT, headers=headers)
    assert response.get_json() == {"status": "accepted"}


SIGNING_KEY_GIVEN = "holds a signing key (whsk_); give the public key (whpk_)"
NOT_WHPK = "a key is not whpk_ followed by base64"
NOT_32_BYTES = "a key is not a 32-byte ed25519 key"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("whsk_" + base64.b64encode(bytes(64)).decode(), SIGNING_KEY_GIVEN),
        (base64.b64encode(bytes(32)).decode(), NOT_WHPK),
        (SW_SECRET, NOT_WHPK),
        ("WHPK_" + SENDER_PUBLIC_KEY.removeprefix("whpk_"), NOT_WHPK),
        ("whpk_" + base64.b64encode(bytes(31)).decode(), NOT_32_BYTES),
        ("whpk_" + base64.b64encode(bytes(33)).decode(), NOT_32_BYTES),
        ("whpk_", NOT_32_BYTES),
        ("whpk_!!!", NOT_WHPK),
        (SENDER_PUBLIC_KEY + "!", NOT_WHPK),
        (f"{SENDER_PUBLIC_KEY} whpk_!!!", NOT_WHPK),
    ],
    ids=["secret-key", "no-prefix", "whsec", "upper-case-prefix", "31-bytes", "33-bytes",
         "empty", "not-base64", "base64-then-garbage", "second-bad"],
)  # fmt: skip
def test_unusable_public_key_refuses_to_start_naming_it(
    tmp_path: Path, value: str, problem: str
) -> None:
    with pytest.raises(webhooks.WebhookConfigError) as error:
        asymmetric_app(tmp_path, WEBHOOK_PUBLIC_KEY=value)
    assert str(error.value) == f"WEBHOOK_PUBLIC_KEY: {problem}"
    assert error.value.setting == "WEBHOOK_PUBLIC_KEY"


def test_a_public_key_without_cryptography_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if cryptography were not installed: v1a cannot be checked, so start-up must stop.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric.ed25519", None)
    with pytest.raises(webhooks.WebhookConfigError) as error:
        asymmetric_app(tmp_path)
    assert str(error.value) == "WEBHOOK_PUBLIC_KEY: v1a signatures need the cryptography package"


# --- routes not configured --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhooks/github", "/webhooks/stripe", "/webhooks/events"])
def test_receivers_without_a_secret_answer_404(tmp_path: Path, path: str) -> None:
    webhook_client = bare_app(tmp_path, WEBHOOK_SECRET=None).test_client()
    response = webhook_client.post(path, data=b"{}", headers={"Stripe-Signature": "t=1"})
    assert_problem(response, 404, NOT_FOUND)


@pytest.mark.parametrize("unset", [None, "", (), [""]], ids=["none", "empty", "empty-tuple",
                                                            "blank-list"])  # fmt: skip
def test_every_unset_spelling_of_a_secret_is_404(tmp_path: Path, unset: object) -> None:
    client = bare_app(
        tmp_path, WEBHOOK_SECRET=unset, GITHUB_WEBHOOK_SECRET=unset, STRIPE_WEBHOOK_SECRET=unset
    ).test_client()
    for path in ("/webhooks/github", "/webhooks/stripe", "/webhooks/events"):
        assert_problem(client.post(path, data=b"{}"), 404, NOT_FOUND)
