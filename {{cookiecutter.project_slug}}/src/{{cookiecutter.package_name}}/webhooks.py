"""Signed webhook receivers with replay protection that holds across worker processes.

Three signature formats are verified over the raw request body, before anything parses it:

- Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature`` (space separated ``v1,<base64>`` and ``v1a,<base64>``) over
  ``id.timestamp.body``: ``v1`` is HMAC-SHA256 keyed with the base64 secret after its
  ``whsec_`` prefix, ``v1a`` an ed25519 signature checked with the sender's public key
  ``whpk_<base64>`` (asymmetric: this side holds nothing that can sign).
- GitHub: ``X-Hub-Signature-256: sha256=<hex>`` over the body; deduplicated on
  ``X-GitHub-Delivery`` and on a digest of the body (the delivery header is not signed).
- Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>``; HMAC-SHA256 over ``t.body`` keyed with the
  whole secret string; deduplicated on the event ``id`` (read from the body after verification).

The module stands alone: it imports Flask, the standard library and, only when they are
used, the ``redis`` client (a ``redis://`` replay store) and ``cryptography`` (ed25519 for
``v1a``; PyJWT's ``[crypto]`` extra brings it). Copy this file into any Flask app::

    from . import webhooks

    webhooks.init_app(app)
    github_events = webhooks.Receiver(webhooks.GITHUB)

    @github_events.on("push")
    def on_push(event: webhooks.WebhookEvent) -> None: ...

    @app.post("/webhooks/github")
    def receive_github():
        return github_events.receive()

``github_events.as_view("receive_github")`` gives the same view, marked with its ``Sender``
(the format as data: its setting, signed headers and verifier) for API documentation.

Configuration read by ``init_app`` (``app.config``):

``WEBHOOK_SECRET``            Standard Webhooks secrets ``whsec_...``; a str (space separated) or
                              a sequence. Every secret is tried, which is how you rotate.
``WEBHOOK_PUBLIC_KEY``        Standard Webhooks public keys ``whpk_...`` (``v1a``), as above; with
                              only these set, WEBHOOK_SECRET may stay unset.
``GITHUB_WEBHOOK_SECRET``     GitHub secret, used verbatim (it may contain spaces); a sequence of
                              str for rotation. Unset: the GitHub receiver answers 404.
``STRIPE_WEBHOOK_SECRET``     Stripe endpoint secret(s) ``whsec_...``; str (space separated) or a
                              sequence. Unset: the Stripe receiver answers 404.
``WEBHOOK_TOLERANCE_SECONDS`` accepted clock skew, past and future (default 300, at most 3600).
``WEBHOOK_REPLAY_TTL_SECONDS`` how long an accepted id is remembered (default 7 days).
``WEBHOOK_LEASE_SECONDS``     how long a delivery may be in processing before a retry may take it
                              over (default 60, at most 3600; covers a worker that died
                              mid-handler).
``REPLAY_STORE_URL``          ``sqlite:///abs/path``, ``redis://host:port/db`` (or ``rediss://``),
                              ``memory://`` (tests, single process only). Default: a SQLite file
                              in ``app.instance_path``.
``MAX_CONTENT_LENGTH``        bodies above min(this, 1 MiB) are refused with 413.

Processing order and why (the replay decision):

1. verify signature and timestamp on the raw bytes (401/400), then parse JSON (400);
2. *claim* every replay key as "processing" with a short lease, under a token of this attempt
   (atomic: SQLite upsert, Redis ``SET NX EX``). Already "done": 200 ``{"status": "duplicate"}``;
   still "processing" in another worker: 409 with ``Retry-After`` (the delivery is not yet
   accepted, so the sender must retry instead of believing it was); store unreachable: 503
   (fail closed, never accept);
3. run the handlers. If one raises, the claim is *released* and the answer is 500, so the sender's
   retry is processed; a replay can never be processed twice because the claim is taken before
   the handler starts. Release drops only a claim that is still this attempt's own: a handler
   that outlived its lease may find the key taken over by a retry, or already "done";
4. mark the keys "done" for ``WEBHOOK_REPLAY_TTL_SECONDS``, answer 200 ``{"status": "accepted"}``.

A worker killed inside a handler leaves a "processing" claim that expires after the lease; the
sender's next retry then processes the event (at-least-once for crashes and for handlers that
outlive the lease, exactly-once otherwise).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import importlib
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Literal, Protocol, TypeVar

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

__all__ = [
    "GITHUB",
    "SENDERS",
    "SETTINGS",
    "STANDARD_WEBHOOKS",
    "STRIPE",
    "ClaimResult",
    "HeaderLookup",
    "MemoryReplayStore",
    "Receiver",
    "RedisReplayStore",
    "ReplayStore",
    "Sender",
    "SignedHeader",
    "SigningKeys",
    "SqliteReplayStore",
    "StoreUnavailable",
    "VerifiedDelivery",
    "WebhookConfigError",
    "WebhookEvent",
    "WebhookRejected",
    "WebhookState",
    "decode_standard_public_key",
    "decode_standard_secret",
    "init_app",
    "open_replay_store",
    "verify_github",
    "verify_standard_webhook",
    "verify_stripe",
]

log = logging.getLogger(__name__)

STANDARD_WEBHOOKS_NAME: Final = "standard-webhooks"

EXTENSION_KEY = "webhooks"
REPLAY_STORE_KEY = "replay_store"
READINESS_CHECK_NAME = "webhook_replay_store"
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TOLERANCE_SECONDS = 300
DEFAULT_REPLAY_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_LEASE_SECONDS = 60
DEFAULT_SQLITE_FILENAME = "webhook-replay.sqlite3"
_WHSEC_PREFIX = "whsec_"
_WHPK_PREFIX = "whpk_"
_WHSK_PREFIX = "whsk_"
ED25519_PUBLIC_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
# Standard Webhooks senders sign with each key of a rotation: a handful of entries at most.
MAX_SIGNATURES = 16


class WebhookConfigError(ValueError):
    """An unusable setting; str() is one line starting with the setting's name, never its value."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


# ---------------------------------------------------------------------------------------------
# Verification (pure functions: headers + raw body in, verified delivery out)
# ---------------------------------------------------------------------------------------------


class HeaderLookup(Protocol):
    """Case-insensitive header access, as ``flask.request.headers`` provides."""

    def get(self, key: str) -> str | None: ...


class WebhookRejected(Exception):
    """A refused delivery: ``status`` is the HTTP answer, ``detail`` a safe explanation."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class VerifiedDelivery:
    """What a verifier vouches for: the body is authentic and (if timestamped) fresh."""

    delivery_id: str | None
    timestamp: int | None
    event_type: str | None = None


@dataclass(frozen=True)
class SignedHeader:
    """A header a sender identifies or signs a delivery with; missing or malformed: 400."""

    name: str
    description: str
    # The whole value must match (ids end up in store keys and logs: visible ASCII, bounded;
    # timestamps are bounded so int() never sees a huge string). None: any non-empty value.
    pattern: re.Pattern[str] | None = None

    def read(self, headers: HeaderLookup) -> str:
        value = headers.get(self.name)
        if value is None or not value.strip():
            raise WebhookRejected(400, f"missing {self.name} header")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise WebhookRejected(400, f"invalid {self.name} header")
        return value


_VISIBLE_ID = re.compile(r"[!-~]{1,256}")
# 15 digits reach far beyond any plausible clock.
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")

WEBHOOK_ID = SignedHeader(
    "webhook-id", "Message id; an id already accepted is a duplicate.", _VISIBLE_ID
)
WEBHOOK_TIMESTAMP = SignedHeader(
    "webhook-timestamp", "Unix time of the delivery; must be within the tolerance.", _UNIX_SECONDS
)
WEBHOOK_SIGNATURE = SignedHeader(
    "webhook-signature",
    "Space separated `v1,<base64 HMAC-SHA256>` and `v1a,<base64 ed25519>` signatures of "
    "id.timestamp.body.",
)
HUB_SIGNATURE_256 = SignedHeader(
    "X-Hub-Signature-256", "`sha256=<hex HMAC-SHA256>` of the raw body."
)
GITHUB_DELIVERY = SignedHeader(
    "X-GitHub-Delivery", "Delivery id (GUID); a delivery already accepted is a duplicate.",
    _VISIBLE_ID,
)  # fmt: skip
GITHUB_EVENT = SignedHeader(
    "X-GitHub-Event", "Event type, e.g. push or ping: chooses the handlers.", _VISIBLE_ID
)
STRIPE_SIGNATURE = SignedHeader(
    "Stripe-Signature", "`t=<unix time>,v1=<hex HMAC-SHA256 of t.body>`; several v1 allowed."
)


def verify_standard_webhook(
    headers: HeaderLookup,
    body: bytes,
    keys: Sequence[bytes] | Mapping[str, Sequence[bytes]],
    *,
    now: float,
    tolerance: int,
) -> VerifiedDelivery:
    """Verify a Standard Webhooks delivery. ``keys`` maps a signature version ("v1", "v1a") to
    its decoded keys; a plain sequence is the "v1" secrets alone."""
    by_version = keys if isinstance(keys, Mapping) else {"v1": keys}
    msg_id = WEBHOOK_ID.read(headers)
    raw_timestamp = WEBHOOK_TIMESTAMP.read(headers)
    signature_header = WEBHOOK_SIGNATURE.read(headers)
    timestamp = int(raw_timestamp)
    _check_freshness(timestamp, now, tolerance)
    signed = msg_id.encode("ascii") + b"." + raw_timestamp.encode("ascii") + b"." + body
    entries = _standard_signature_entries(signature_header)
    if len(entries) > MAX_SIGNATURES:
        # Each v1a candidate costs an ed25519 verification per key: bounded work per request.
        raise WebhookRejected(400, "too many signatures in webhook-signature")
    candidates: dict[str, list[bytes]] = {}
    for version, candidate in entries:
        candidates.setdefault(version, []).append(candidate)
    matched = False
    # Every key of every version against every candidate of that version, none skipped, so
    # the time taken says nothing about which one matched.
    for version, of_version in candidates.items():
        check = STANDARD_SIGNATURE_CHECKS.get(version)
        if check is None:
            continue  # a version this receiver does not know: never a match
        matched |= check(tuple(by_version.get(version, ())), signed, of_version)
    if not matched:
        raise WebhookRejected(401, "no valid signature")
    return VerifiedDelivery(delivery_id=msg_id, timestamp=timestamp)


def verify_github(headers: HeaderLookup, body: bytes, secrets: Sequence[bytes]) -> VerifiedDelivery:
    """Verify a GitHub delivery (``X-Hub-Signature-256``); GitHub deliveries carry no timestamp."""
    signature_header = HUB_SIGNATURE_256.read(headers)
    delivery_id = GITHUB_DELIVERY.read(headers)
    event_type = GITHUB_EVENT.read(headers)
    algorithm, _, hex_digest = signature_header.strip().partition("=")
    candidates = [_hex_or_empty(hex_digest)] if algorithm == "sha256" else []
    _require_match(secrets, body, candidates)
    return VerifiedDelivery(delivery_id=delivery_id, timestamp=None, event_type=event_type)


def verify_stripe(
    headers: HeaderLookup,
    body: bytes,
    secrets: Sequence[bytes],
    *,
    now: float,
    tolerance: int,
) -> VerifiedDelivery:
    """Verify a Stripe delivery; unlike Stripe's library, future timestamps are refused too."""
    signature_header = STRIPE_SIGNATURE.read(headers)
    timestamps: list[str] = []
    candidates: list[bytes] = []
    for item in signature_header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            candidates.append(_hex_or_empty(value))
    if len(timestamps) != 1:
        raise WebhookRejected(400, "Stripe-Signature header needs exactly one t= element")
    if not _UNIX_SECONDS.fullmatch(timestamps[0]):
        raise WebhookRejected(400, "invalid Stripe-Signature t= timestamp")
    _check_freshness(int(timestamps[0]), now, tolerance)
    _require_match(secrets, timestamps[0].encode("ascii") + b"." + body, candidates)
    return VerifiedDelivery(delivery_id=None, timestamp=int(timestamps[0]))


def _check_freshness(timestamp: int, now: float, tolerance: int) -> None:
    # Both directions: a future timestamp would extend the replay window past the store's memory.
    if abs(now - timestamp) > tolerance:
        raise WebhookRejected(401, "timestamp outside the accepted window")


def _standard_signature_entries(header: str) -> list[tuple[str, bytes]]:
    entries = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        entries.append((version, _base64_or_empty(encoded)))
    return entries


def _base64_or_empty(value: str) -> bytes:
    # A malformed candidate simply never matches: the answer is 401, never a 500.
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _hex_or_empty(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return b""


def _hmac_sha256_matches(secrets: Sequence[bytes], signed: bytes, candidates: list[bytes]) -> bool:
    # One HMAC per secret, compared with every candidate: the sender picks how many candidates
    # there are, and each must not cost another pass over a body of up to 1 MiB.
    matched = False
    for secret in secrets:
        expected = hmac.new(secret, signed, hashlib.sha256).digest()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    return matched


def _ed25519_any_matches(
    public_keys: Sequence[bytes], signed: bytes, candidates: list[bytes]
) -> bool:
    # Inherently one pass over the body per (key, candidate): ed25519 hashes R || A || M, and R
    # is the candidate's own. MAX_SIGNATURES bounds the candidates.
    matched = False
    for public_key in public_keys:
        for candidate in candidates:
            matched |= _ed25519_matches(public_key, signed, candidate)
    return matched


def _ed25519_matches(public_key: bytes, signed: bytes, candidate: bytes) -> bool:
    # Imported here: only a service configured with WEBHOOK_PUBLIC_KEY needs cryptography.
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    if len(candidate) != ED25519_SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(candidate, signed)
    except InvalidSignature:
        return False
    return True


# Standard Webhooks signature versions and how the candidates of one version are checked
# against all its keys (True if any pair matches); the keys of each version come from its own
# setting (STANDARD_WEBHOOKS.keys).
STANDARD_SIGNATURE_CHECKS: Final[
    Mapping[str, Callable[[Sequence[bytes], bytes, list[bytes]], bool]]
] = {
    "v1": _hmac_sha256_matches,  # symmetric: HMAC-SHA256 keyed with a whsec_ secret
    "v1a": _ed25519_any_matches,  # asymmetric: ed25519, verified with a whpk_ public key
}


def _require_match(secrets: Sequence[bytes], signed: bytes, candidates: Sequence[bytes]) -> None:
    expected = [hmac.new(secret, signed, hashlib.sha256).digest() for secret in secrets]
    # Every secret against every candidate, each comparison constant time.
    matched = False
    for digest in expected:
        for candidate in candidates:
            matched |= hmac.compare_digest(digest, candidate)
    if not matched:
        raise WebhookRejected(401, "no valid signature")


def decode_standard_public_key(key: str) -> bytes:
    """The 32 bytes of a Standard Webhooks ed25519 public key, ``whpk_`` + base64."""
    if key.startswith(_WHSK_PREFIX):
        # The sender's signing key must never sit on the receiving side: whoever reads this
        # configuration could then sign deliveries, the very thing v1a exists to prevent.
        raise WebhookConfigError(
            "WEBHOOK_PUBLIC_KEY", "holds a signing key (whsk_); give the public key (whpk_)"
        )
    if not key.startswith(_WHPK_PREFIX):
        raise WebhookConfigError("WEBHOOK_PUBLIC_KEY", "a key is not whpk_ followed by base64")
    encoded = key.removeprefix(_WHPK_PREFIX)
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookConfigError(
            "WEBHOOK_PUBLIC_KEY", "a key is not whpk_ followed by base64"
        ) from None
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise WebhookConfigError("WEBHOOK_PUBLIC_KEY", "a key is not a 32-byte ed25519 key")
    # Every 32 bytes load as an ed25519 public key (a bad one simply never verifies), so only
    # whether v1a can be checked at all is left to find out before the first delivery.
    try:
        importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
    except ImportError:
        raise WebhookConfigError(
            "WEBHOOK_PUBLIC_KEY", "v1a signatures need the cryptography package"
        ) from None
    return raw


def decode_standard_secret(secret: str) -> bytes:
    """Key bytes of a Standard Webhooks secret (``whsec_`` + base64, prefix optional)."""
    encoded = secret.removeprefix(_WHSEC_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookConfigError(
            "WEBHOOK_SECRET", "a secret is not whsec_ followed by base64"
        ) from None
    if len(key) < 16:
        raise WebhookConfigError("WEBHOOK_SECRET", "a secret is shorter than 16 bytes")
    return key


# ---------------------------------------------------------------------------------------------
# Senders: what differs between webhook formats, as data read by Receiver and the API docs
# ---------------------------------------------------------------------------------------------


# A sender's decoded keys by signature version (e.g. {"v1": (secret,), "v1a": (public key,)}).
SenderKeys = Mapping[str, tuple[bytes, ...]]


class Verifier(Protocol):
    def __call__(
        self,
        headers: HeaderLookup,
        body: bytes,
        keys: SenderKeys,
        *,
        now: float,
        tolerance: int,
    ) -> VerifiedDelivery: ...


def _verify_github_delivery(
    headers: HeaderLookup, body: bytes, keys: SenderKeys, *, now: float, tolerance: int
) -> VerifiedDelivery:
    # GitHub signs no timestamp: there is no freshness to check.
    return verify_github(headers, body, keys["sha256"])


def _verify_stripe_delivery(
    headers: HeaderLookup, body: bytes, keys: SenderKeys, *, now: float, tolerance: int
) -> VerifiedDelivery:
    return verify_stripe(headers, body, keys["v1"], now=now, tolerance=tolerance)


def _utf8(secret: str) -> bytes:
    return secret.encode("utf-8")


@dataclass(frozen=True)
class SigningKeys:
    """One setting holding keys of a sender: which signatures they check and how to read them."""

    setting: str  # the configuration key; every sender's route answers 404 while all are unset
    version: str  # the signature version these keys check (the sender's own name for it)
    # Turns one configured key into bytes (raising WebhookConfigError if it cannot).
    decode: Callable[[str], bytes] = _utf8
    # Whether a str setting holds several space-separated keys (rotation).
    space_separated: bool = True
    # The least key length that is hard to guess (a production deployment should insist on it).
    strong_key_bytes: int = 32

    def keys_from(self, config: Mapping[str, Any]) -> tuple[bytes, ...]:
        value = config.get(self.setting)
        if not value:
            return ()
        if isinstance(value, str):
            keys = value.split() if self.space_separated else [value]
        else:
            keys = [key for key in value if key]
        return tuple(self.decode(key) for key in keys)


@dataclass(frozen=True)
class Sender:
    """One webhook format. Adding a sender is adding one of these; nothing branches on it."""

    name: str  # WebhookEvent.source, and the prefix of its replay keys
    keys: tuple[SigningKeys, ...]  # where its keys are configured, per signature version
    headers: tuple[SignedHeader, ...]
    verify: Verifier
    # Also deduplicate on a digest of the body, for senders whose id header is not signed.
    dedupe_on_body: bool = False
    description: str = ""

    @property
    def settings(self) -> tuple[str, ...]:
        return tuple(signing.setting for signing in self.keys)

    def keys_from(self, config: Mapping[str, Any]) -> dict[str, tuple[bytes, ...]]:
        """The configured keys by signature version; empty tuples for unset settings."""
        return {signing.version: signing.keys_from(config) for signing in self.keys}

    def replay_keys(self, event: WebhookEvent) -> list[str]:
        keys = [f"{self.name}:{event.delivery_id}"]
        if self.dedupe_on_body:
            keys.append(f"{self.name}-body:{hashlib.sha256(event.body).hexdigest()}")
        return keys


STANDARD_WEBHOOKS: Final = Sender(
    name=STANDARD_WEBHOOKS_NAME,
    keys=(
        # The Standard Webhooks specification: secrets of 24 to 64 random bytes.
        SigningKeys("WEBHOOK_SECRET", "v1", decode_standard_secret, strong_key_bytes=24),
        # An ed25519 public key is 32 bytes, always: decoding refuses anything else.
        SigningKeys("WEBHOOK_PUBLIC_KEY", "v1a", decode_standard_public_key),
    ),
    headers=(WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE),
    verify=verify_standard_webhook,
    description=(
        "Signed per Standard Webhooks: v1 (HMAC) with WEBHOOK_SECRET, v1a (ed25519) with "
        "WEBHOOK_PUBLIC_KEY; rotation: any listed key."
    ),
)
GITHUB: Final = Sender(
    name="github",
    # GitHub secrets are free text and may contain spaces: a str is one secret.
    keys=(SigningKeys("GITHUB_WEBHOOK_SECRET", "sha256", space_separated=False),),
    headers=(HUB_SIGNATURE_256, GITHUB_DELIVERY, GITHUB_EVENT),
    verify=_verify_github_delivery,
    # X-GitHub-Delivery is not covered by the signature and GitHub sends no timestamp: a
    # captured delivery re-sent with a fresh id must still be a duplicate.
    dedupe_on_body=True,
    description="Signed by GitHub with GITHUB_WEBHOOK_SECRET; 404 while it is unset.",
)
STRIPE: Final = Sender(
    name="stripe",
    # Stripe keys the HMAC with the whole secret string, "whsec_" included.
    keys=(SigningKeys("STRIPE_WEBHOOK_SECRET", "v1"),),
    headers=(STRIPE_SIGNATURE,),
    verify=_verify_stripe_delivery,
    description="Signed by Stripe with STRIPE_WEBHOOK_SECRET; 404 while it is unset.",
)
SENDERS: Final = (STANDARD_WEBHOOKS, GITHUB, STRIPE)

# What init_app reads from app.config (and validates: nothing else checks these).
SETTINGS: Final = (
    *(setting for sender in SENDERS for setting in sender.settings),
    "WEBHOOK_TOLERANCE_SECONDS",
    "WEBHOOK_REPLAY_TTL_SECONDS",
    "WEBHOOK_LEASE_SECONDS",
    "REPLAY_STORE_URL",
)


# ---------------------------------------------------------------------------------------------
# Replay stores
# ---------------------------------------------------------------------------------------------

ClaimResult = Literal["claimed", "processing", "done"]


class StoreUnavailable(Exception):
    """The replay store cannot answer; callers must refuse the delivery (fail closed)."""


class ReplayStore(Protocol):
    """Where accepted deliveries are remembered, shared by every worker that receives them.

    A key is free, "processing" (claimed by one attempt, identified by its ``owner`` token,
    until its lease lapses) or "done". Ownership matters to ``release`` only: an attempt may
    forget its own claim, never another attempt's claim nor a "done" mark. ``complete`` wins
    over any claim: "done" records that a handler ran to the end, which stays true even when
    that attempt outlived its lease and a retry took the claim over meanwhile (refusing the
    mark would leave the key to the retry, whose failure would then free it for a third run).
    """

    def claim(self, key: str, lease_seconds: int, owner: str) -> ClaimResult:
        """Atomically take ``key`` for ``owner`` unless it is done or claimed and not lapsed."""

    def complete(self, key: str, ttl_seconds: int) -> None:
        """Mark ``key`` as accepted and remember it for ``ttl_seconds``, whoever holds it."""

    def release(self, key: str, owner: str) -> None:
        """Forget ``owner``'s claim on ``key`` (its processing failed) so a retry is processed;
        anything else (another owner's claim, "done", nothing) is left as it is."""

    def ping(self) -> bool:
        """True when the store is usable (readiness check)."""


class MemoryReplayStore:
    """One process only: tests. A gunicorn with several workers would accept replays."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # key -> (state, expiry, owner of a "processing" claim)
        self._entries: dict[str, tuple[ClaimResult, float, str | None]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def claim(self, key: str, lease_seconds: int, owner: str) -> ClaimResult:
        now = self._clock()
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            current = self._entries.get(key)
            if current is not None:
                return current[0]
            self._entries[key] = ("processing", now + lease_seconds, owner)
            return "claimed"

    def complete(self, key: str, ttl_seconds: int) -> None:
        with self._lock:
            self._entries[key] = ("done", self._clock() + ttl_seconds, None)

    def release(self, key: str, owner: str) -> None:
        with self._lock:
            current = self._entries.get(key)
            if current is not None and current[0] == "processing" and current[2] == owner:
                del self._entries[key]

    def ping(self) -> bool:
        return True


class SqliteReplayStore:
    """A SQLite file shared by every worker process on one host.

    One short-lived connection per call: nothing is shared between threads, and no connection
    ever crosses a ``fork()`` (gunicorn's ``preload_app`` forks after ``init_app``), which SQLite
    forbids. WAL lets readers run beside the single writer; the busy timeout queues writers.

    Each process also holds one idle connection to the file. When the last connection to a WAL
    database closes, SQLite copies the log into the file and deletes it, and the next call
    builds both again: that made a delivery cost three to four times as much. The idle one is
    closed before any fork and opened again on the next call.
    """

    _SCHEMA = (
        (
            "CREATE TABLE IF NOT EXISTS webhook_deliveries ("
            " key TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at REAL NOT NULL, owner TEXT)"
            " WITHOUT ROWID"
        ),
        "CREATE INDEX IF NOT EXISTS webhook_deliveries_expiry ON webhook_deliveries (expires_at)",
    )
    # An expired row is taken over in the same statement, so claiming stays one atomic write.
    _CLAIM = (
        "INSERT INTO webhook_deliveries (key, state, expires_at, owner)"
        " VALUES (?, 'processing', ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET state = 'processing',"
        " expires_at = excluded.expires_at, owner = excluded.owner"
        " WHERE webhook_deliveries.expires_at <= ?"
    )
    # An upsert: the row may be gone (lapsed and purged by another worker) by the time a slow
    # handler finishes, and "done" must be remembered all the same.
    _COMPLETE = (
        "INSERT INTO webhook_deliveries (key, state, expires_at, owner) VALUES (?, 'done', ?, NULL)"
        " ON CONFLICT (key) DO UPDATE SET state = 'done',"
        " expires_at = excluded.expires_at, owner = NULL"
    )
    _PURGE_INTERVAL_SECONDS = 60.0

    def __init__(
        self, path: str, busy_timeout: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._last_purge = 0.0
        self._idle: sqlite3.Connection | None = None
        self._idle_lock = threading.Lock()
        self._create_schema()
        _SQLITE_STORES.add(self)

    def claim(self, key: str, lease_seconds: int, owner: str) -> ClaimResult:
        now = self._clock()
        with self._transaction() as db:
            if db.execute(self._CLAIM, (key, now + lease_seconds, owner, now)).rowcount == 1:
                self._purge_expired(db, now)
                return "claimed"
            row = db.execute(
                "SELECT state FROM webhook_deliveries WHERE key = ?", (key,)
            ).fetchone()
        return "done" if row is not None and row[0] == "done" else "processing"

    def complete(self, key: str, ttl_seconds: int) -> None:
        with self._transaction() as db:
            db.execute(self._COMPLETE, (key, self._clock() + ttl_seconds))

    def release(self, key: str, owner: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM webhook_deliveries"
                " WHERE key = ? AND state = 'processing' AND owner = ?",
                (key, owner),
            )

    def ping(self) -> bool:
        try:
            with self._transaction() as db:
                db.execute("SELECT 1 FROM webhook_deliveries LIMIT 1").fetchall()
        except StoreUnavailable:
            return False
        return True

    def _create_schema(self) -> None:
        try:
            db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            try:
                # WAL is a property of the file (set once, outside any transaction): every
                # later connection of every worker uses it.
                db.execute("PRAGMA journal_mode=WAL")
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StoreUnavailable("sqlite replay store unavailable") from exc
        with self._transaction() as db:
            for statement in self._SCHEMA:
                db.execute(statement)
            # A file made before claims had owners: old rows keep a NULL owner, which no
            # attempt can release, so they simply lapse with their lease.
            columns = {row[1] for row in db.execute("PRAGMA table_info(webhook_deliveries)")}
            if "owner" not in columns:
                db.execute("ALTER TABLE webhook_deliveries ADD COLUMN owner TEXT")

    def _purge_expired(self, db: sqlite3.Connection, now: float) -> None:
        # Per process, at most once a minute: keeps the file small without a writer per request.
        if now - self._last_purge >= self._PURGE_INTERVAL_SECONDS:
            self._last_purge = now
            db.execute("DELETE FROM webhook_deliveries WHERE expires_at <= ?", (now,))

    def _transaction(self) -> _SqliteTransaction:
        if self._idle is None:
            self._open_idle_connection()
        return _SqliteTransaction(self.path, self._busy_timeout)

    def _open_idle_connection(self) -> None:
        with self._idle_lock:
            if self._idle is not None:
                return
            try:
                db = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,  # closed by whichever thread forks
                )
            except sqlite3.Error:
                return  # only an optimisation: the call itself reports what is wrong
            try:
                # Reading opens the file and its log; a connection that never read holds neither.
                db.execute("PRAGMA schema_version").fetchone()
            except sqlite3.Error:
                db.close()
                return
            self._idle = db

    def close_idle_connection(self) -> None:
        """Close this process's idle connection (before a fork; it reopens on the next call)."""
        with self._idle_lock:
            if self._idle is not None:
                self._idle.close()
                self._idle = None


# Every SQLite store of this process, so that none of their connections crosses a fork.
_SQLITE_STORES: weakref.WeakSet[SqliteReplayStore] = weakref.WeakSet()


def _close_idle_sqlite_connections() -> None:
    for store in list(_SQLITE_STORES):
        store.close_idle_connection()


os.register_at_fork(before=_close_idle_sqlite_connections)


class _SqliteTransaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on a fresh connection; every sqlite3 error -> 503."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._db = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._close()
            raise StoreUnavailable("sqlite replay store unavailable") from exc
        return self._db

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._db is None:
            return
        try:
            self._db.execute("ROLLBACK" if exc is not None else "COMMIT")
        except sqlite3.Error as commit_error:
            if exc is None:
                raise StoreUnavailable("sqlite replay store unavailable") from commit_error
        finally:
            self._close()
        if isinstance(exc, sqlite3.Error):
            raise StoreUnavailable("sqlite replay store unavailable") from exc

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class RedisReplayStore:
    """Redis ``SET NX EX``: one store for several hosts. redis-py's pool reconnects after fork.

    A claim's value is ``processing:<owner>``; release compares and deletes in one Lua script,
    so that no other client's write can fall between the comparison and the delete.
    """

    _RELEASE_SCRIPT = (
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"
        " return 0"
    )

    def __init__(self, url: str, key_prefix: str = "webhook-replay:") -> None:
        # Imported here so that the module works without the redis package unless it is used.
        import redis  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        # Short timeouts and one immediate retry: an outage must turn into a quick 503, not a
        # request hanging through exponential backoff.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        self._prefix = key_prefix
        # EVALSHA, falling back to EVAL once when the server does not know the script yet.
        self._release = self._client.register_script(self._RELEASE_SCRIPT)

    def claim(self, key: str, lease_seconds: int, owner: str) -> ClaimResult:
        name = self._prefix + key
        try:
            if self._client.set(name, self._claim_value(owner), nx=True, ex=lease_seconds):
                return "claimed"
            state = self._client.get(name)
        except self._errors as exc:
            raise StoreUnavailable("redis replay store unavailable") from exc
        return "done" if state == b"done" else "processing"

    def complete(self, key: str, ttl_seconds: int) -> None:
        try:
            self._client.set(self._prefix + key, b"done", ex=ttl_seconds)
        except self._errors as exc:
            raise StoreUnavailable("redis replay store unavailable") from exc

    def release(self, key: str, owner: str) -> None:
        try:
            self._release(keys=[self._prefix + key], args=[self._claim_value(owner)])
        except self._errors as exc:
            raise StoreUnavailable("redis replay store unavailable") from exc

    @staticmethod
    def _claim_value(owner: str) -> bytes:
        return b"processing:" + owner.encode("utf-8")

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except self._errors:
            return False


def open_replay_store(url: str | None, instance_path: str) -> ReplayStore:
    """The store named by REPLAY_STORE_URL; unset means a SQLite file in the instance folder."""
    if not url:
        return _open_sqlite(os.path.join(instance_path, DEFAULT_SQLITE_FILENAME))
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path:
            raise WebhookConfigError("REPLAY_STORE_URL", "sqlite:// needs a file path")
        return _open_sqlite(os.path.join(instance_path, path))  # absolute paths stay as they are
    if url.startswith(("redis://", "rediss://")):
        try:
            return RedisReplayStore(url)
        except ImportError:
            raise WebhookConfigError(
                "REPLAY_STORE_URL", "a Redis store needs the redis package"
            ) from None
    if url == "memory://":
        return MemoryReplayStore()
    raise WebhookConfigError(
        "REPLAY_STORE_URL", "use sqlite:///path, redis://host:port/db or memory://"
    )


def _open_sqlite(path: str) -> SqliteReplayStore:
    # Refusing to start beats starting and answering 503 to every delivery.
    try:
        _claim_sqlite_files(path)
        return SqliteReplayStore(path)
    except (OSError, StoreUnavailable):
        raise WebhookConfigError(
            "REPLAY_STORE_URL", f"cannot create the SQLite replay store {path}"
        ) from None


def _claim_sqlite_files(path: str) -> None:
    """Whoever can write the store's file, or SQLite's -wal and -shm files beside it, or swap
    them in their directory, can make the service forget accepted deliveries (and so process
    replays). Refuse any of them that another user made or that everybody may write; make
    what is missing private to this user (SQLite gives -wal and -shm the file's own mode)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _refuse_foreign(directory, os.stat(directory), directory_owners=(os.geteuid(), 0))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            _refuse_foreign(name, os.lstat(name), directory_owners=())
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _refuse_foreign(name: str, info: os.stat_result, directory_owners: tuple[int, ...]) -> None:
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif info.st_uid != os.geteuid() and info.st_uid not in directory_owners:
        problem = f"is owned by uid {info.st_uid}"
    elif info.st_mode & stat.S_IWOTH:
        problem = "is writable by everyone"
    if problem:
        raise WebhookConfigError(
            "REPLAY_STORE_URL",
            f"{name} {problem}: whoever can write there could make the service forget accepted"
            " deliveries; use a directory only this user can write to",
        )


# ---------------------------------------------------------------------------------------------
# Flask integration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEvent:
    """A verified, not yet seen delivery handed to the handlers."""

    source: str
    delivery_id: str
    event_type: str
    payload: Any
    timestamp: int | None
    body: bytes = field(repr=False)


Handler = Callable[[WebhookEvent], None]
H = TypeVar("H", bound=Handler)


@dataclass
class WebhookState:
    """Per-app settings, kept in ``app.extensions["webhooks"]``; tests may replace ``clock``."""

    keys: dict[str, SenderKeys]  # sender name -> its keys by signature version
    store: ReplayStore
    tolerance: int = DEFAULT_TOLERANCE_SECONDS
    replay_ttl: int = DEFAULT_REPLAY_TTL_SECONDS
    lease: int = DEFAULT_LEASE_SECONDS
    max_body: int = MAX_BODY_BYTES
    clock: Callable[[], float] = time.time


def init_app(
    app: Flask, *, store: ReplayStore | None = None, clock: Callable[[], float] = time.time
) -> WebhookState:
    """Read the configuration, open the replay store and register its readiness check.

    Raises WebhookConfigError (naming the setting, never its value) for an unusable
    configuration, so a misconfigured service refuses to start instead of refusing every
    delivery.
    """
    config = app.config
    tolerance = _int_setting(config, "WEBHOOK_TOLERANCE_SECONDS", DEFAULT_TOLERANCE_SECONDS)
    lease = _int_setting(config, "WEBHOOK_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)
    replay_ttl = _int_setting(config, "WEBHOOK_REPLAY_TTL_SECONDS", DEFAULT_REPLAY_TTL_SECONDS)
    configured_max = config.get("MAX_CONTENT_LENGTH")
    state = WebhookState(
        keys={sender.name: sender.keys_from(config) for sender in SENDERS},
        store=store or open_replay_store(config.get("REPLAY_STORE_URL"), app.instance_path),
        tolerance=tolerance,
        # Ids must outlive every timestamp that could still pass the window, or a signed
        # delivery could be replayed once its id was forgotten.
        replay_ttl=max(replay_ttl, 2 * tolerance + lease),
        lease=lease,
        max_body=min(MAX_BODY_BYTES, configured_max or MAX_BODY_BYTES),
        clock=clock,
    )
    app.extensions[EXTENSION_KEY] = state
    # Shared with other modules that must remember something across workers and hosts (the
    # DPoP proofs' jti); they find it here rather than importing this module.
    app.extensions[REPLAY_STORE_KEY] = state.store

    def replay_store_ready() -> bool:
        return state.store.ping()

    app.extensions.setdefault("readiness_checks", {})[READINESS_CHECK_NAME] = replay_store_ready
    return state


# Upper bounds: a tolerance above an hour keeps captured deliveries replayable for as long; a
# lease longer than that keeps a crashed delivery from its retries.
_INT_SETTING_BOUNDS: Final = {
    "WEBHOOK_TOLERANCE_SECONDS": (1, 3600),
    "WEBHOOK_LEASE_SECONDS": (1, 3600),
    "WEBHOOK_REPLAY_TTL_SECONDS": (1, 365 * 24 * 3600),
}


def _int_setting(config: Mapping[str, Any], name: str, default: int) -> int:
    low, high = _INT_SETTING_BOUNDS[name]
    value = config.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise WebhookConfigError(name, f"must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise WebhookConfigError(name, f"must be between {low} and {high}, got {value!r}")
    return number


class Receiver:
    """One webhook endpoint of one sender's format, with handlers registered per event type.

    ``@receiver.on("invoice.paid")`` registers a handler; ``@receiver.on()`` (or ``"*"``)
    receives every event type. ``receiver.receive()`` is the whole view body, and
    ``receiver.as_view(name)`` a view function that API documentation can recognise.
    """

    def __init__(self, sender: Sender) -> None:
        if not isinstance(sender, Sender):
            raise TypeError(f"Receiver needs a webhooks.Sender, got {sender!r}")
        self.sender = sender
        self._handlers: dict[str, list[Handler]] = {}

    def on(self, *event_types: str) -> Callable[[H], H]:
        def register(handler: H) -> H:
            for event_type in event_types or ("*",):
                self._handlers.setdefault(event_type, []).append(handler)
            return handler

        return register

    def as_view(self, name: str) -> Callable[[], Response]:
        """A view function for ``add_url_rule``, marked with its sender (``webhook_sender``)."""

        def view() -> Response:
            return self.receive()

        view.__name__ = view.__qualname__ = name
        view.__doc__ = self.sender.description
        view.webhook_sender = self.sender  # type: ignore[attr-defined]
        return view

    def receive(self) -> Response:
        state: WebhookState | None = current_app.extensions.get(EXTENSION_KEY)
        if state is None:
            raise RuntimeError("call webhooks.init_app(app) before receiving webhooks")
        try:
            return self._receive(state)
        except WebhookRejected as rejected:
            return _problem(rejected.status, rejected.detail)
        except StoreUnavailable:
            log.error("webhook replay store unavailable; %s delivery refused", self.sender.name)
            return _problem(503, "replay store unavailable, retry later")

    def _receive(self, state: WebhookState) -> Response:
        sender_keys = state.keys[self.sender.name]
        if not any(sender_keys.values()):
            # Indistinguishable from a route that does not exist: nothing to probe.
            return _problem(404, "The requested URL was not found on the server.")
        body = _read_body(state.max_body)
        verified = self.sender.verify(
            request.headers, body, sender_keys, now=state.clock(), tolerance=state.tolerance
        )
        event = self._event(verified, body)
        keys = self.sender.replay_keys(event)
        # This attempt's own token: its release must never drop a claim a retry took over.
        attempt = secrets.token_urlsafe(16)
        claim = _claim_all(state.store, keys, state.lease, attempt)
        if claim == "done":
            return _status_response("duplicate")
        if claim == "processing":
            response = _problem(409, "this delivery is being processed, retry later")
            response.headers["Retry-After"] = str(min(state.lease, 30))
            return response
        try:
            self._dispatch(event)
        except Exception:
            log.exception("webhook handler failed for %s %s", event.source, event.delivery_id)
            _release_quietly(state.store, keys, attempt)
            return _problem(500, "the event could not be processed, retry later")
        _complete_quietly(state.store, keys, state.replay_ttl)
        log.info("webhook accepted: %s %s %s", event.source, event.event_type, event.delivery_id)
        return _status_response("accepted")

    def _event(self, verified: VerifiedDelivery, body: bytes) -> WebhookEvent:
        # Parsing only now, after the signature vouched for these exact bytes. Strict JSON
        # (RFC 8259): no NaN or Infinity for handlers to pass on to stricter parsers; nesting
        # deeper than the parser's recursion limit ends in RecursionError, a 400 too.
        try:
            payload = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
        except (ValueError, RecursionError):
            raise WebhookRejected(400, "body is not JSON") from None
        # Stripe's id lives in the signed body; the other formats' in a (checked) header.
        delivery_id = verified.delivery_id or _json_string(payload, "id") or ""
        if not _VISIBLE_ID.fullmatch(delivery_id):
            raise WebhookRejected(400, "event has no valid id")
        event_type = verified.event_type or _json_string(payload, "type") or ""
        return WebhookEvent(
            source=self.sender.name,
            delivery_id=delivery_id,
            event_type=event_type,
            payload=payload,
            timestamp=verified.timestamp,
            body=body,
        )

    def _dispatch(self, event: WebhookEvent) -> None:
        for handler in self._handlers.get(event.event_type, []) + self._handlers.get("*", []):
            handler(event)


def _read_body(limit: int) -> bytes:
    too_large = WebhookRejected(413, "body larger than the webhook limit")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    # A chunked body has no Content-Length. Werkzeug then stops reading at max_content_length
    # without an error, so a cap of `limit` would truncate silently (and the truncated body
    # fail its signature: a misleading 401). Reading one byte more tells "too large" apart.
    # Flask >= 3.1 allows this per-request limit; it must be set before the stream is read.
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large from None
    except ClientDisconnected:
        raise WebhookRejected(400, "body incomplete") from None
    if len(body) > limit:
        raise too_large
    return body


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _json_string(payload: Any, key: str) -> str | None:
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


def _claim_all(store: ReplayStore, keys: Sequence[str], lease: int, owner: str) -> ClaimResult:
    claimed: list[str] = []
    for key in keys:
        result = store.claim(key, lease, owner)
        if result != "claimed":
            for taken in claimed:
                store.release(taken, owner)
            return result
        claimed.append(key)
    return "claimed"


def _release_quietly(store: ReplayStore, keys: Sequence[str], owner: str) -> None:
    try:
        for key in keys:
            store.release(key, owner)
    except StoreUnavailable:
        # The claim then lapses with its lease and the sender's later retry is processed.
        log.error("webhook replay store unavailable; claim kept until its lease expires")


def _complete_quietly(store: ReplayStore, keys: Sequence[str], ttl: int) -> None:
    try:
        for key in keys:
            store.complete(key, ttl)
    except StoreUnavailable:
        # The handler has run: answering an error would invite a retry that, once the lease
        # expired, would be processed a second time. Accept and leave the lease to guard.
        log.error("webhook replay store unavailable; delivery accepted, id kept only by lease")


def _status_response(status: str) -> Response:
    return current_app.response_class(
        json.dumps({"status": status}), status=200, mimetype="application/json"
    )


def _problem(status: int, detail: str, **extensions: str) -> Response:
    """RFC 9457 problem+json with the request's id; built here so that this file stands alone."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    if request_id := g.get("request_id"):
        body["request_id"] = request_id
    return Response(json.dumps(body), status, mimetype="application/problem+json")
