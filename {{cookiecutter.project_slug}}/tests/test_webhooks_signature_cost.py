"""What an unauthenticated sender can make the receiver compute: a Standard Webhooks `v1`
header may carry up to MAX_SIGNATURES candidates, and each one must not cost another HMAC of a
body of up to 1 MiB. One HMAC per configured secret is the work any check needs; the number of
candidates (chosen by whoever sends the request) must not multiply it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import Any

import pytest

from {{ cookiecutter.package_name }} import webhooks

NOW = 1_700_000_000
BODY = os.urandom(64 * 1024)
SECRETS = (os.urandom(32), os.urandom(32))
# The tests' own signing, out of reach of the counting fixture below.
_HMAC_NEW = hmac.new


class Headers(dict[str, str]):
    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


def headers(signature: str, msg_id: str = "msg_1") -> Headers:
    return Headers(
        {"webhook-id": msg_id, "webhook-timestamp": str(NOW), "webhook-signature": signature}
    )


def v1(secret: bytes, msg_id: str = "msg_1") -> str:
    signed = f"{msg_id}.{NOW}.".encode() + BODY
    return "v1," + base64.b64encode(_HMAC_NEW(secret, signed, hashlib.sha256).digest()).decode()


@pytest.fixture
def body_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every HMAC computed over the body, however it is called."""
    calls: list[int] = []
    real_new, real_digest = hmac.new, hmac.digest

    def new(key: Any, msg: Any = None, digestmod: Any = None) -> Any:
        if msg is not None and len(msg) >= len(BODY):
            calls.append(len(msg))
        return real_new(key, msg, digestmod)

    def digest(key: Any, msg: Any, digest: Any) -> bytes:
        if len(msg) >= len(BODY):
            calls.append(len(msg))
        return real_digest(key, msg, digest)

    monkeypatch.setattr(hmac, "new", new)
    monkeypatch.setattr(hmac, "digest", digest)
    return calls


def test_forged_candidates_cost_one_hmac_per_secret(body_hashes: list[int]) -> None:
    forged = " ".join(["v1," + base64.b64encode(os.urandom(32)).decode()] * 16)
    with pytest.raises(webhooks.WebhookRejected):
        webhooks.verify_standard_webhook(
            headers(forged), BODY, {"v1": SECRETS}, now=NOW, tolerance=300
        )
    assert len(body_hashes) == len(SECRETS)


def test_the_matching_candidate_is_found_among_many(body_hashes: list[int]) -> None:
    # The second secret of a rotation signed it, and its signature comes last of sixteen.
    forged = ["v1," + base64.b64encode(os.urandom(32)).decode()] * 15
    signature = " ".join([*forged, v1(SECRETS[1])])
    verified = webhooks.verify_standard_webhook(
        headers(signature), BODY, {"v1": SECRETS}, now=NOW, tolerance=300
    )
    assert verified.delivery_id == "msg_1"
    assert len(body_hashes) == len(SECRETS)


def test_no_candidate_of_a_version_costs_nothing_of_it(body_hashes: list[int]) -> None:
    # Only v1a candidates and no v1a key: nothing to verify, and no HMAC computed either.
    signature = "v1a," + base64.b64encode(os.urandom(64)).decode()
    with pytest.raises(webhooks.WebhookRejected):
        webhooks.verify_standard_webhook(
            headers(signature), BODY, {"v1": SECRETS}, now=NOW, tolerance=300
        )
    assert body_hashes == []


def test_clock_is_checked_before_any_hmac(body_hashes: list[int]) -> None:
    with pytest.raises(webhooks.WebhookRejected):
        webhooks.verify_standard_webhook(
            headers(v1(SECRETS[0])), BODY, {"v1": SECRETS}, now=time.time(), tolerance=300
        )
    assert body_hashes == []
