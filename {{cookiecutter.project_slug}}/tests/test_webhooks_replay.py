"""Replay protection: duplicates, handler failure, in-flight deliveries, and the stores.

The tests through the app and the ownership tests run against every store: memory, SQLite and
a real Redis (redis-server on a free port; missing, it fails under CI=true and skips elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import multiprocessing
import os
import selectors
import socket
import sqlite3
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import standardwebhooks
import stripe
from flask import Flask, Response
from flask.testing import FlaskClient

import test_webhooks_processes
from {{ cookiecutter.package_name }} import events, webhooks

# redis-server on a free 127.0.0.1 port, without persistence, stopped by its pid.
redis_server = test_webhooks_processes.redis_server

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def signed(body: bytes, msg_id: str, at: float | None = None) -> dict[str, str]:
    when = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    signature = standardwebhooks.Webhook(SECRET).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


class FlakyHandler:
    """Fails the first ``failures`` calls, then records the events it was given."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.processed: list[str] = []
        self.calls = 0

    def __call__(self, event: webhooks.WebhookEvent) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("downstream unavailable")
        self.processed.append(event.delivery_id)


def bare_app(
    tmp_path: Path,
    handler: Callable[[webhooks.WebhookEvent], None],
    store: webhooks.ReplayStore | None = None,
    **config: Any,
) -> Flask:
    app = Flask("webhook_replay_tests", instance_path=str(tmp_path / "instance"))
    app.config.update(MAX_CONTENT_LENGTH=1024 * 1024, WEBHOOK_SECRET=SECRET)
    app.config.update(config)
    webhooks.init_app(app, store=store)
    receiver = webhooks.Receiver(webhooks.STANDARD_WEBHOOKS)
    receiver.on()(handler)

    @app.post("/hook")
    def hook() -> Response:
        return receiver.receive()

    return app


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> webhooks.ReplayStore:
    if request.param == "memory":
        return webhooks.MemoryReplayStore()
    if request.param == "redis":
        url, _ = request.getfixturevalue("redis_server")
        return webhooks.RedisReplayStore(url)
    return webhooks.SqliteReplayStore(str(tmp_path / "replay.sqlite3"))


def post(client: FlaskClient, body: bytes, msg_id: str, at: float | None = None) -> Any:
    return client.post("/hook", data=body, headers=signed(body, msg_id, at))


FAILED = "the event could not be processed, retry later"
UNAVAILABLE = "replay store unavailable, retry later"
IN_FLIGHT = "this delivery is being processed, retry later"


def assert_problem(response: Any, status: int, detail: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    # A log line written during the request gives it an id (when logs.py configured logging),
    # which the problem then carries: that is test_problems.py's to check.
    problem.pop("request_id", None)
    assert problem == {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == webhooks.__name__
    ]


# --- through the app --------------------------------------------------------------------------


def test_same_delivery_twice_is_processed_once(
    tmp_path: Path, store: webhooks.ReplayStore, caplog: pytest.LogCaptureFixture
) -> None:
    handler = FlakyHandler()
    client = bare_app(tmp_path, handler, store).test_client()
    body = b'{"type": "order.paid"}'
    headers = signed(body, "msg_twice")
    with caplog.at_level(logging.INFO, logger=webhooks.__name__):
        first = client.post("/hook", data=body, headers=headers)
        second = client.post("/hook", data=body, headers=headers)
    assert (first.status_code, first.get_json()) == (200, {"status": "accepted"})
    assert first.mimetype == "application/json"
    assert (second.status_code, second.get_json()) == (200, {"status": "duplicate"})
    assert handler.processed == ["msg_twice"]
    assert logged(caplog) == [
        (logging.INFO, "webhook accepted: standard-webhooks order.paid msg_twice")
    ]


def test_sender_retry_with_fresh_timestamp_is_a_duplicate(
    tmp_path: Path, store: webhooks.ReplayStore
) -> None:
    handler = FlakyHandler()
    client = bare_app(tmp_path, handler, store).test_client()
    body = b'{"type": "order.paid"}'
    assert post(client, body, "msg_retry", time.time() - 100).get_json()["status"] == "accepted"
    assert post(client, body, "msg_retry").get_json()["status"] == "duplicate"
    assert handler.processed == ["msg_retry"]


def test_handler_failure_releases_the_id_so_the_retry_is_processed(
    tmp_path: Path, store: webhooks.ReplayStore, caplog: pytest.LogCaptureFixture
) -> None:
    handler = FlakyHandler(failures=1)
    client = bare_app(tmp_path, handler, store).test_client()
    body = b'{"type": "order.paid"}'
    with caplog.at_level(logging.INFO, logger=webhooks.__name__):
        failed = post(client, body, "msg_flaky")
    assert_problem(failed, 500, FAILED)  # never the exception's text
    assert logged(caplog) == [
        (logging.ERROR, "webhook handler failed for standard-webhooks msg_flaky")
    ]
    assert caplog.records[-1].exc_info is not None
    assert post(client, body, "msg_flaky").get_json() == {"status": "accepted"}
    assert post(client, body, "msg_flaky").get_json() == {"status": "duplicate"}
    assert handler.processed == ["msg_flaky"]


def test_delivery_in_flight_elsewhere_is_409_not_accepted(
    tmp_path: Path, store: webhooks.ReplayStore
) -> None:
    handler = FlakyHandler()
    client = bare_app(tmp_path, handler, store).test_client()
    assert store.claim("standard-webhooks:msg_busy", 60, "worker-2") == "claimed"
    response = post(client, b'{"type": "x"}', "msg_busy")
    assert_problem(response, 409, IN_FLIGHT)
    assert response.headers["Retry-After"] == "30"
    assert handler.processed == []


@pytest.mark.parametrize(("lease", "retry_after"), [(1, "1"), (29, "29"), (30, "30"), (31, "30")])
def test_retry_after_is_the_lease_up_to_30_seconds(
    tmp_path: Path, lease: int, retry_after: str
) -> None:
    store = webhooks.MemoryReplayStore()
    client = bare_app(tmp_path, FlakyHandler(), store, WEBHOOK_LEASE_SECONDS=lease).test_client()
    assert store.claim("standard-webhooks:msg_busy", 60, "worker-2") == "claimed"
    response = post(client, b'{"type": "x"}', "msg_busy")
    assert_problem(response, 409, IN_FLIGHT)
    assert response.headers["Retry-After"] == retry_after


class Recorder:
    """A handler that records every event whole."""

    def __init__(self) -> None:
        self.events: list[webhooks.WebhookEvent] = []

    def __call__(self, event: webhooks.WebhookEvent) -> None:
        self.events.append(event)


def test_handlers_run_for_their_event_type_and_for_every_type(tmp_path: Path) -> None:
    app = Flask("dispatch", instance_path=str(tmp_path / "instance"))
    app.config.update(WEBHOOK_SECRET=SECRET, REPLAY_STORE_URL="memory://")
    webhooks.init_app(app)
    receiver = webhooks.Receiver(webhooks.STANDARD_WEBHOOKS)
    paid, everything, other = Recorder(), Recorder(), Recorder()
    receiver.on("order.paid", "order.shipped")(paid)
    receiver.on()(everything)
    receiver.on("order.refunded")(other)
    app.add_url_rule("/hook", view_func=receiver.as_view("hook"), methods=["POST"])
    client = app.test_client()
    at = int(time.time())
    for number, event_type in enumerate(["order.paid", "order.shipped", "user.created"]):
        body = json.dumps({"type": event_type, "n": number}).encode()
        assert post(client, body, f"msg_d{number}", at).get_json() == {"status": "accepted"}
    assert [event.event_type for event in paid.events] == ["order.paid", "order.shipped"]
    assert [event.event_type for event in everything.events] == [
        "order.paid", "order.shipped", "user.created"
    ]  # fmt: skip
    assert other.events == []
    first = paid.events[0]
    assert (first.source, first.delivery_id, first.timestamp) == (
        "standard-webhooks", "msg_d0", at
    )  # fmt: skip
    assert first.payload == {"type": "order.paid", "n": 0}
    assert first.body == b'{"type": "order.paid", "n": 0}'


def test_a_receiver_without_a_catch_all_handler_dispatches_by_type(tmp_path: Path) -> None:
    app = Flask("typed_only", instance_path=str(tmp_path / "instance"))
    app.config.update(WEBHOOK_SECRET=SECRET, REPLAY_STORE_URL="memory://")
    webhooks.init_app(app)
    receiver = webhooks.Receiver(webhooks.STANDARD_WEBHOOKS)
    paid = Recorder()
    receiver.on("order.paid")(paid)
    app.add_url_rule("/hook", view_func=receiver.as_view("hook"), methods=["POST"])
    client = app.test_client()
    for number, event_type in enumerate(["order.paid", "user.created"]):
        body = json.dumps({"type": event_type}).encode()
        assert post(client, body, f"msg_t{number}").get_json() == {"status": "accepted"}
    assert [event.event_type for event in paid.events] == ["order.paid"]


def test_as_view_names_the_view_and_carries_its_sender() -> None:
    view = webhooks.Receiver(webhooks.GITHUB).as_view("receive_github")
    assert (view.__name__, view.__qualname__) == ("receive_github", "receive_github")
    assert view.__doc__ == webhooks.GITHUB.description
    assert view.webhook_sender is webhooks.GITHUB  # type: ignore[attr-defined]


def test_a_receiver_needs_a_sender_and_an_initialised_app(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^Receiver needs a webhooks.Sender, got 'github'$"):
        webhooks.Receiver("github")  # type: ignore[arg-type]
    app = Flask("not_initialised", instance_path=str(tmp_path / "instance"))
    with (
        app.test_request_context(),
        pytest.raises(
            RuntimeError, match=r"^call webhooks.init_app\(app\) before receiving webhooks$"
        ),
    ):
        webhooks.Receiver(webhooks.GITHUB).receive()


@pytest.mark.parametrize(
    "body",
    [b'{"type": "x", "n": NaN}', b'{"type": "x", "n": Infinity}', b'{"type": "x", "n": 1e999}',
     b"[" * 100_000, b'{"type": "x"'],
    ids=["nan", "infinity", "overflowing-float", "too-deep", "truncated"],
)  # fmt: skip
def test_bodies_that_are_not_strict_json_are_400(tmp_path: Path, body: bytes) -> None:
    handler = FlakyHandler()
    client = bare_app(tmp_path, handler, webhooks.MemoryReplayStore()).test_client()
    assert_problem(post(client, body, "msg_json"), 400, "body is not JSON")
    assert handler.calls == 0


def test_finite_floats_are_kept(tmp_path: Path) -> None:
    recorder = Recorder()
    client = bare_app(tmp_path, recorder, webhooks.MemoryReplayStore()).test_client()
    body = b'{"type": "x", "amount": 12.5, "tiny": 1e-300}'
    assert post(client, body, "msg_float").get_json() == {"status": "accepted"}
    assert recorder.events[0].payload == {"type": "x", "amount": 12.5, "tiny": 1e-300}


class SlowFirstAttempt:
    """A handler whose first call hangs until told to fail (a downstream that timed out);
    every later call is recorded and returns, or, with ``hold_second``, waits to be let go."""

    def __init__(self, hold_second: bool = False) -> None:
        self.runs = 0
        self.first_started = threading.Event()
        self.fail_first = threading.Event()
        self.second_started = threading.Event()
        self.finish_second = threading.Event()
        self.hold_second = hold_second

    def __call__(self, event: webhooks.WebhookEvent) -> None:
        self.runs += 1
        if self.runs == 1:
            self.first_started.set()
            assert self.fail_first.wait(10)
            raise RuntimeError("downstream timed out")
        if self.runs == 2 and self.hold_second:
            self.second_started.set()
            assert self.finish_second.wait(10)


def post_in_thread(app: Flask, body: bytes, msg_id: str) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(post(app.test_client(), body, msg_id)), daemon=True
    )
    thread.start()
    return thread, answers


LEASE = 1  # seconds: the smallest lease, so that it lapses within the test


def test_late_failure_after_the_retry_was_accepted_keeps_it_a_duplicate(
    tmp_path: Path, store: webhooks.ReplayStore
) -> None:
    # The first attempt outlives its lease; the sender's retry takes the delivery over and is
    # accepted; then the first attempt fails. Its release must not erase the retry's "done".
    handler = SlowFirstAttempt()
    app = bare_app(tmp_path, handler, store, WEBHOOK_LEASE_SECONDS=LEASE)
    body = b'{"type": "order.paid"}'
    first, first_answer = post_in_thread(app, body, "msg_late_failure")
    assert handler.first_started.wait(10)
    time.sleep(LEASE + 0.2)
    assert post(app.test_client(), body, "msg_late_failure").get_json() == {"status": "accepted"}
    handler.fail_first.set()
    first.join(10)
    assert first_answer[0].status_code == 500
    replay = post(app.test_client(), body, "msg_late_failure")
    assert replay.get_json() == {"status": "duplicate"}
    assert handler.runs == 2


def test_late_failure_never_frees_a_claim_a_retry_took_over(
    tmp_path: Path, store: webhooks.ReplayStore
) -> None:
    # As above, but the retry is still in its handler when the first attempt fails: the claim
    # is the retry's now, so a third copy must wait (409), not run beside it.
    handler = SlowFirstAttempt(hold_second=True)
    app = bare_app(tmp_path, handler, store, WEBHOOK_LEASE_SECONDS=LEASE)
    body = b'{"type": "order.paid"}'
    first, first_answer = post_in_thread(app, body, "msg_taken_over")
    assert handler.first_started.wait(10)
    time.sleep(LEASE + 0.2)
    retry, retry_answer = post_in_thread(app, body, "msg_taken_over")
    assert handler.second_started.wait(10)
    handler.fail_first.set()
    first.join(10)
    assert first_answer[0].status_code == 500
    third = post(app.test_client(), body, "msg_taken_over")
    assert third.status_code == 409, third.get_json()
    handler.finish_second.set()
    retry.join(10)
    assert retry_answer[0].get_json() == {"status": "accepted"}
    assert post(app.test_client(), body, "msg_taken_over").get_json() == {"status": "duplicate"}
    assert handler.runs == 2


def test_unverified_delivery_never_touches_the_store(tmp_path: Path) -> None:
    store = webhooks.MemoryReplayStore()
    client = bare_app(tmp_path, FlakyHandler(), store).test_client()
    headers = signed(b'{"a": 1}', "msg_forged")
    assert client.post("/hook", data=b'{"a": 2}', headers=headers).status_code == 401
    assert store.claim("standard-webhooks:msg_forged", 60, "test") == "claimed"


class BrokenStore:
    def claim(self, key: str, lease_seconds: int, owner: str) -> webhooks.ClaimResult:
        raise webhooks.StoreUnavailable("down")

    def complete(self, key: str, ttl_seconds: int) -> None:
        raise webhooks.StoreUnavailable("down")

    def release(self, key: str, owner: str) -> None:
        raise webhooks.StoreUnavailable("down")

    def ping(self) -> bool:
        return False


def test_store_unavailable_fails_closed_with_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler = FlakyHandler()
    app = bare_app(tmp_path, handler, BrokenStore())
    with caplog.at_level(logging.INFO, logger=webhooks.__name__):
        response = post(app.test_client(), b'{"type": "x"}', "msg_down")
    assert_problem(response, 503, UNAVAILABLE)
    assert handler.calls == 0
    assert logged(caplog) == [
        (logging.ERROR, "webhook replay store unavailable; standard-webhooks delivery refused")
    ]
    assert app.extensions["readiness_checks"]["webhook_replay_store"]() is False


class FailsAfterClaim(webhooks.MemoryReplayStore):
    """Claims work; then the store goes away (the handler ran, or failed, meanwhile)."""

    def complete(self, key: str, ttl_seconds: int) -> None:
        raise webhooks.StoreUnavailable("down")

    def release(self, key: str, owner: str) -> None:
        raise webhooks.StoreUnavailable("down")


def test_store_lost_after_the_handler_ran_still_accepts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The handler has run: an error would invite a retry that runs it again once the lease
    # lapses. The claim keeps the delivery a duplicate until then.
    handler = FlakyHandler()
    store = FailsAfterClaim()
    client = bare_app(tmp_path, handler, store).test_client()
    with caplog.at_level(logging.INFO, logger=webhooks.__name__):
        response = post(client, b'{"type": "x"}', "msg_lost")
    assert response.get_json() == {"status": "accepted"}
    assert handler.processed == ["msg_lost"]
    assert logged(caplog) == [
        (
            logging.ERROR,
            "webhook replay store unavailable; delivery accepted, id kept only by lease",
        ),
        (logging.INFO, "webhook accepted: standard-webhooks x msg_lost"),
    ]
    assert store.claim("standard-webhooks:msg_lost", 60, "retry") == "processing"


def test_store_lost_after_the_handler_failed_keeps_the_claim_until_its_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler = FlakyHandler(failures=1)
    store = FailsAfterClaim()
    client = bare_app(tmp_path, handler, store).test_client()
    with caplog.at_level(logging.INFO, logger=webhooks.__name__):
        response = post(client, b'{"type": "x"}', "msg_lost")
    assert_problem(response, 500, FAILED)
    assert logged(caplog) == [
        (logging.ERROR, "webhook handler failed for standard-webhooks msg_lost"),
        (logging.ERROR, "webhook replay store unavailable; claim kept until its lease expires"),
    ]


def test_sqlite_file_gone_bad_fails_closed_with_503(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite3"
    handler = FlakyHandler()
    app = bare_app(tmp_path, handler, REPLAY_STORE_URL=f"sqlite://{path}")
    checks = app.extensions["readiness_checks"]
    assert checks["webhook_replay_store"]() is True
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.mkdir()  # the path now names a directory: SQLite cannot open it
    assert_problem(post(app.test_client(), b'{"type": "x"}', "msg_gone"), 503, UNAVAILABLE)
    assert handler.processed == []
    assert checks["webhook_replay_store"]() is False


def test_github_replay_with_a_forged_delivery_id_is_a_duplicate(tmp_path: Path) -> None:
    app = Flask("github_replay", instance_path=str(tmp_path / "instance"))
    app.config.update(GITHUB_WEBHOOK_SECRET="gh secret", REPLAY_STORE_URL="memory://")
    webhooks.init_app(app)
    app.register_blueprint(events.blueprint)
    client = app.test_client()
    body = b'{"action": "opened", "number": 1}'
    signature = "sha256=" + hmac.new(b"gh secret", body, hashlib.sha256).hexdigest()

    def deliver(delivery: str) -> Any:
        headers = {
            "X-Hub-Signature-256": signature,
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Event": "pull_request",
        }
        return client.post("/webhooks/github", data=body, headers=headers).get_json()

    assert deliver("guid-1") == {"status": "accepted"}
    assert deliver("guid-1") == {"status": "duplicate"}  # GitHub's own redelivery
    assert deliver("guid-forged") == {"status": "duplicate"}  # captured and replayed
    with app.app_context():
        assert len(events.received_events()) == 1
    # The forged id's claim was given back when the body turned out a duplicate: a genuine
    # delivery that happens to carry that id is processed, not held as in flight.
    other = b'{"action": "closed", "number": 1}'
    signature = "sha256=" + hmac.new(b"gh secret", other, hashlib.sha256).hexdigest()
    headers = {
        "X-Hub-Signature-256": signature,
        "X-GitHub-Delivery": "guid-forged",
        "X-GitHub-Event": "pull_request",
    }
    answer = client.post("/webhooks/github", data=other, headers=headers)
    assert answer.get_json() == {"status": "accepted"}


def test_github_body_in_flight_under_another_id_is_409_and_frees_the_id(tmp_path: Path) -> None:
    store = webhooks.MemoryReplayStore()
    app = Flask("github_in_flight", instance_path=str(tmp_path / "instance"))
    app.config.update(GITHUB_WEBHOOK_SECRET="gh secret")
    webhooks.init_app(app, store=store)
    app.register_blueprint(events.blueprint)
    body = b'{"action": "opened", "number": 2}'
    digest = hashlib.sha256(body).hexdigest()
    assert store.claim(f"github-body:{digest}", 60, "another-worker") == "claimed"
    signature = "sha256=" + hmac.new(b"gh secret", body, hashlib.sha256).hexdigest()
    headers = {
        "X-Hub-Signature-256": signature,
        "X-GitHub-Delivery": "guid-2",
        "X-GitHub-Event": "pull_request",
    }
    assert_problem(app.test_client().post("/webhooks/github", data=body, headers=headers), 409,
                   IN_FLIGHT)  # fmt: skip
    assert store.claim("github:guid-2", 60, "retry") == "claimed"


def test_stripe_dedupes_on_the_event_id_in_the_signed_body(tmp_path: Path) -> None:
    app = Flask("stripe_replay", instance_path=str(tmp_path / "instance"))
    secret = "whsec_stripe_replay_test"
    app.config.update(STRIPE_WEBHOOK_SECRET=secret, REPLAY_STORE_URL="memory://")
    webhooks.init_app(app)
    app.register_blueprint(events.blueprint)
    client = app.test_client()
    results = []
    for event_id, pause in [("evt_a", 0), ("evt_a", 1), ("evt_b", 0)]:
        body = json.dumps({"id": event_id, "object": "event", "type": "charge.succeeded"})
        header = stripe.WebhookSignature.generate_signature_header(
            body, secret, timestamp=int(time.time()) + pause
        )
        response = client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header})
        results.append(response.get_json()["status"])
    assert results == ["accepted", "duplicate", "accepted"]


def test_default_store_is_a_sqlite_file_in_the_instance_folder(tmp_path: Path) -> None:
    app = bare_app(tmp_path, FlakyHandler())  # REPLAY_STORE_URL unset
    state: webhooks.WebhookState = app.extensions["webhooks"]
    assert isinstance(state.store, webhooks.SqliteReplayStore)
    assert state.store.path == str(tmp_path / "instance" / "webhook-replay.sqlite3")
    assert Path(state.store.path).is_file()
    with sqlite3.connect(state.store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_store_is_private_to_this_user(tmp_path: Path) -> None:
    # Whoever can write the file (or its -wal/-shm companions, or swap them in the directory)
    # can make the service forget accepted deliveries, so replays would be processed again.
    app = bare_app(tmp_path, FlakyHandler())  # the default: a file in the instance folder
    instance = tmp_path / "instance"
    # SQLite drops -wal and -shm when the last connection closes: hold one open meanwhile.
    holder = sqlite3.connect(instance / "webhook-replay.sqlite3")
    try:
        holder.execute("SELECT count(*) FROM webhook_deliveries").fetchall()
        assert post(app.test_client(), b'{"type": "x"}', "msg_private").status_code == 200
        assert stat.S_IMODE(instance.stat().st_mode) == 0o700
        for suffix in ("", "-wal", "-shm"):
            name = f"webhook-replay.sqlite3{suffix}"
            assert stat.S_IMODE((instance / name).stat().st_mode) == 0o600, name
    finally:
        holder.close()


def foreign_store_message(name: object, problem: str) -> str:
    return (
        f"REPLAY_STORE_URL: {name} {problem}: whoever can write there could make the service"
        " forget accepted deliveries; use a directory only this user can write to"
    )


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o702])  # sticky or not, like /tmp
def test_sqlite_store_in_a_directory_everyone_may_write_is_refused(
    tmp_path: Path, mode: int
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{shared}/replay.db")
    assert str(refused.value) == foreign_store_message(shared, "is writable by everyone")


@pytest.mark.parametrize("name", ["replay.db", "replay.db-wal", "replay.db-shm"])
def test_sqlite_store_file_everyone_may_write_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).touch()
    (tmp_path / name).chmod(0o602)
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{tmp_path}/replay.db")
    assert str(refused.value) == foreign_store_message(tmp_path / name, "is writable by everyone")


@pytest.mark.parametrize("name", ["replay.db", "replay.db-wal", "replay.db-shm"])
def test_sqlite_store_file_that_is_a_symlink_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "elsewhere.db").touch(mode=0o600)
    (tmp_path / name).symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{tmp_path}/replay.db")
    assert str(refused.value) == foreign_store_message(tmp_path / name, "is a symbolic link")


def _open_store_as_nobody(url: str, instance: str, queue: Any) -> None:
    os.setgid(65534)
    os.setuid(65534)
    try:
        webhooks.open_replay_store(url, instance)
        queue.put("opened")
    except webhooks.WebhookConfigError as error:
        queue.put(str(error))


def test_a_service_user_may_keep_its_store_in_a_directory_root_made() -> None:
    # /var/lib/<service> made by root, group-writable for the service user: root may own the
    # directory (it could take the files anyway), another user may not.
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("needs root to become another user, and CI=true requires it")
        pytest.skip("needs root to become another user")
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o711)  # noqa: S103 (the other user must reach the directories inside)
        # Checked here too: a directory of another user is refused to root as well.
        (Path(top) / "lib-65533").mkdir()
        os.chown(Path(top) / "lib-65533", 65533, 65534)
        with pytest.raises(webhooks.WebhookConfigError) as refused:
            webhooks.open_replay_store(f"sqlite://{top}/lib-65533/replay.db", top)
        assert str(refused.value) == foreign_store_message(
            Path(top) / "lib-65533", "is owned by uid 65533"
        )
        outcomes = []
        for owner in (0, 65533):
            directory = Path(top) / f"lib-{owner}"
            directory.mkdir(exist_ok=True)
            directory.chmod(0o770)
            os.chown(directory, owner, 65534)
            queue = context.Queue()
            child = context.Process(
                target=_open_store_as_nobody,
                args=(f"sqlite://{directory}/replay.db", top, queue),
            )
            child.start()
            outcomes.append(queue.get(timeout=30))
            child.join(timeout=30)
    assert outcomes == [
        "opened",
        foreign_store_message(Path(top) / "lib-65533", "is owned by uid 65533"),
    ]


@pytest.mark.parametrize("planted", ["replay.db", "replay.db-wal", "replay.db-shm"])
def test_sqlite_store_files_someone_else_made_are_refused(tmp_path: Path, planted: str) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("needs root to give a file to another user, and CI=true requires it")
        pytest.skip("needs root to give a file to another user")
    (tmp_path / planted).touch(mode=0o644)
    os.chown(tmp_path / planted, 65534, 65534)
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{tmp_path}/replay.db")
    assert str(refused.value) == foreign_store_message(tmp_path / planted, "is owned by uid 65534")


@pytest.mark.parametrize(
    ("tolerance", "lease", "ttl", "kept"),
    [(300, 60, 10, 660), (300, 60, 659, 660), (300, 60, 661, 661), (1, 1, 1, 3)],
)
def test_replay_ttl_never_shorter_than_the_timestamp_window_and_the_lease(
    tmp_path: Path, tolerance: int, lease: int, ttl: int, kept: int
) -> None:
    # An id must be remembered while a timestamp either side of now still passes, plus the
    # lease a first attempt may hold it for.
    app = bare_app(
        tmp_path,
        FlakyHandler(),
        WEBHOOK_TOLERANCE_SECONDS=tolerance,
        WEBHOOK_LEASE_SECONDS=lease,
        WEBHOOK_REPLAY_TTL_SECONDS=ttl,
    )
    assert app.extensions["webhooks"].replay_ttl == kept


UNKNOWN_STORE = "REPLAY_STORE_URL: use sqlite:///path, redis://host:port/db or memory://"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/x", UNKNOWN_STORE),
        ("file:///tmp/x", UNKNOWN_STORE),
        ("memory://elsewhere", UNKNOWN_STORE),
        ("SQLITE:///tmp/x", UNKNOWN_STORE),
        ("REDIS://127.0.0.1/0", UNKNOWN_STORE),
        ("sqlite://", "REPLAY_STORE_URL: sqlite:// needs a file path"),
    ],
)
def test_unknown_store_url_refuses_to_start(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=url)
    assert str(refused.value) == message
    assert refused.value.setting == "REPLAY_STORE_URL"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:29998/0", "rediss://127.0.0.1:29998/0"])
def test_both_redis_schemes_open_a_redis_store(tmp_path: Path, url: str) -> None:
    # Nothing listens there: the store opens (connections are lazy) and reports itself down.
    store = webhooks.open_replay_store(url, str(tmp_path))
    assert isinstance(store, webhooks.RedisReplayStore)
    assert store.ping() is False


def test_unwritable_sqlite_location_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    path = tmp_path / "a-file" / "replay.sqlite3"
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{path}")
    assert str(refused.value) == f"REPLAY_STORE_URL: cannot create the SQLite replay store {path}"


def test_sqlite_file_sqlite_cannot_open_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite3"
    path.write_bytes(b"this is not a database, just a file of the right owner" * 100)
    path.chmod(0o600)
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{path}")
    assert str(refused.value) == f"REPLAY_STORE_URL: cannot create the SQLite replay store {path}"


def test_redis_store_without_the_redis_package_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis were not installed
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        webhooks.open_replay_store("redis://127.0.0.1:6379/0", str(tmp_path))
    assert str(refused.value) == "REPLAY_STORE_URL: a Redis store needs the redis package"


def test_a_store_given_to_init_app_is_the_one_used_and_shared(tmp_path: Path) -> None:
    store = webhooks.MemoryReplayStore()
    app = bare_app(tmp_path, FlakyHandler(), store, REPLAY_STORE_URL="postgres://ignored")
    assert app.extensions["webhooks"].store is store
    assert app.extensions["replay_store"] is store


def test_redis_store_down_refuses_every_operation() -> None:
    # Nothing listens on this port of the test range: every call fails at once.
    store = webhooks.RedisReplayStore("redis://127.0.0.1:29998/0")
    with pytest.raises(webhooks.StoreUnavailable):
        store.claim("k", 60, "a")
    with pytest.raises(webhooks.StoreUnavailable):
        store.complete("k", 60)
    with pytest.raises(webhooks.StoreUnavailable):
        store.release("k", "a")
    assert store.ping() is False


def test_a_redis_that_never_answers_is_a_quick_503_not_a_hang(tmp_path: Path) -> None:
    # Accepts connections (the kernel does, into the backlog) and never says a word: each try
    # ends at the client's socket timeout, and the client tries once more, then gives up.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        app = bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=url)
        started = time.monotonic()
        # In a thread, so that a client without timeouts fails the test instead of hanging it.
        thread, answers = post_in_thread(app, b'{"type": "x"}', "msg_hung")
        thread.join(12)
        took = time.monotonic() - started
    assert answers, f"no answer after {took:.1f} s"
    assert_problem(answers[0], 503, UNAVAILABLE)
    assert took < 10, f"{took:.1f} s"


def test_redis_store_keys_are_prefixed_and_expire(redis_server: tuple[str, Any]) -> None:
    # The Redis may be shared with other applications: every key is under webhook-replay:,
    # and nothing stays forever. The values are what workers of the next release read during
    # a rolling update, so their shape is part of the contract too.
    import redis  # noqa: PLC0415

    url, _ = redis_server
    store = webhooks.RedisReplayStore(url)
    client = redis.Redis.from_url(url)
    try:
        assert store.claim("k", 60, "owner-1") == "claimed"
        assert client.keys("*") == [b"webhook-replay:k"]
        assert client.get("webhook-replay:k") == b"processing:owner-1"
        assert 0 < client.ttl("webhook-replay:k") <= 60
        store.complete("k", 3600)
        assert client.get("webhook-replay:k") == b"done"
        assert 3540 < client.ttl("webhook-replay:k") <= 3600
        assert webhooks.RedisReplayStore(url, key_prefix="other:").claim("k", 60, "b") == "claimed"
        assert store.ping() is True
        assert sorted(client.keys("*")) == [b"other:k", b"webhook-replay:k"]
    finally:
        client.close()


def test_relative_sqlite_path_lands_in_the_instance_folder(tmp_path: Path) -> None:
    app = bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL="sqlite://data/replay.db")
    assert app.extensions["webhooks"].store.path == str(tmp_path / "instance/data/replay.db")


# --- the stores -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def clocked_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[webhooks.ReplayStore, Clock]:
    clock = Clock()
    if request.param == "memory":
        return webhooks.MemoryReplayStore(clock=clock), clock
    return webhooks.SqliteReplayStore(str(tmp_path / "r.sqlite3"), clock=clock), clock


def test_store_lifecycle(clocked_store: tuple[webhooks.ReplayStore, Clock]) -> None:
    store, clock = clocked_store
    assert store.claim("k", 60, "a") == "claimed"
    assert store.claim("k", 60, "b") == "processing"
    store.complete("k", 3600)
    assert store.claim("k", 60, "b") == "done"
    clock.now += 3599
    assert store.claim("k", 60, "b") == "done"
    clock.now += 2
    assert store.claim("k", 60, "c") == "claimed"  # forgotten after its ttl
    store.release("k", "c")
    assert store.claim("k", 60, "d") == "claimed"
    assert store.ping() is True


def test_a_lease_and_a_ttl_end_exactly_at_their_length(
    clocked_store: tuple[webhooks.ReplayStore, Clock],
) -> None:
    store, clock = clocked_store
    start = clock.now
    assert store.claim("k", 60, "a") == "claimed"
    clock.now = start + 59.999
    assert store.claim("k", 60, "b") == "processing"
    clock.now = start + 60
    assert store.claim("k", 60, "b") == "claimed"
    store.complete("k", 3600)
    clock.now = start + 60 + 3599.999
    assert store.claim("k", 60, "c") == "done"
    clock.now = start + 60 + 3600
    assert store.claim("k", 60, "c") == "claimed"


def test_lapsed_lease_can_be_taken_over(clocked_store: tuple[webhooks.ReplayStore, Clock]) -> None:
    store, clock = clocked_store
    assert store.claim("k", 60, "a") == "claimed"  # a worker that then died
    clock.now += 61
    assert store.claim("k", 60, "b") == "claimed"


def test_lapsed_claim_purged_by_another_worker_still_completes(
    clocked_store: tuple[webhooks.ReplayStore, Clock], tmp_path: Path
) -> None:
    # A handler outlived its lease and another worker purged the lapsed row meanwhile: the
    # handler did run, so the delivery must be remembered as done all the same.
    store, clock = clocked_store
    assert store.claim("k", 60, "slow") == "claimed"
    clock.now += 61
    assert store.claim("other", 60, "another-worker") == "claimed"  # purges lapsed rows
    store.complete("k", 3600)
    assert store.claim("k", 60, "replay") == "done"


# --- ownership, against every real store ------------------------------------------------------


def test_release_drops_only_the_owners_claim(store: webhooks.ReplayStore) -> None:
    assert store.claim("k", 60, "first") == "claimed"
    store.release("k", "someone-else")
    assert store.claim("k", 60, "second") == "processing"
    store.release("k", "first")
    assert store.claim("k", 60, "second") == "claimed"


def test_release_never_forgets_an_accepted_id(store: webhooks.ReplayStore) -> None:
    assert store.claim("k", 60, "first") == "claimed"
    store.complete("k", 3600)
    store.release("k", "first")
    assert store.claim("k", 60, "replay") == "done"


def test_late_completion_of_a_taken_over_claim_marks_done(store: webhooks.ReplayStore) -> None:
    # "first" outlived its lease and "second" took over; first's handler did run to the end, so
    # done is recorded, and second's later failure must not free the key for a third run.
    assert store.claim("k", 60, "second") == "claimed"
    store.complete("k", 3600)
    store.release("k", "second")
    assert store.claim("k", 60, "third") == "done"


def test_sqlite_file_from_before_owners_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE webhook_deliveries (key TEXT PRIMARY KEY, state TEXT NOT NULL,"
            " expires_at REAL NOT NULL) WITHOUT ROWID"
        )
        db.execute("INSERT INTO webhook_deliveries VALUES ('old-done', 'done', 9e99)")
        db.execute("INSERT INTO webhook_deliveries VALUES ('old-claim', 'processing', 9e99)")
    db.close()
    store = webhooks.SqliteReplayStore(str(path))
    assert store.claim("old-done", 60, "a") == "done"
    store.release("old-claim", "a")  # an owner-less claim: nobody's to release
    assert store.claim("old-claim", 60, "a") == "processing"
    assert store.claim("new", 60, "a") == "claimed"
    store.release("new", "a")
    assert store.claim("new", 60, "b") == "claimed"


def test_sqlite_purges_expired_ids_at_most_once_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    store = webhooks.SqliteReplayStore(str(tmp_path / "r.sqlite3"), clock=clock)

    def rows() -> list[str]:
        with sqlite3.connect(store.path) as db:
            found = [key for (key,) in db.execute("SELECT key FROM webhook_deliveries")]
        db.close()
        return sorted(found)

    for number in range(3):
        store.claim(f"old-{number}", 60, "a")  # the first claim purges (nothing yet)
        store.complete(f"old-{number}", 10)
    clock.now += 59.5
    store.claim("new-1", 60, "a")  # 59.5 s after the last purge: none
    assert rows() == ["new-1", "old-0", "old-1", "old-2"]
    clock.now += 0.5
    store.claim("new-2", 60, "a")  # a minute after it: expired rows go
    assert rows() == ["new-1", "new-2"]


def test_sqlite_claim_is_exclusive_across_threads(tmp_path: Path) -> None:
    store = webhooks.SqliteReplayStore(str(tmp_path / "r.sqlite3"))
    barrier = threading.Barrier(16)
    results: list[str] = []

    def claim() -> None:
        barrier.wait()
        results.append(store.claim("same", 60, threading.current_thread().name))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["claimed"] + ["processing"] * 15


def _claim_in_child(path: str, start_at: float, queue: Any) -> None:
    store = webhooks.SqliteReplayStore(path)
    time.sleep(max(0.0, start_at - time.time()))
    owner = str(os.getpid())
    queue.put((os.getpid(), [store.claim(f"key-{n}", 60, owner) for n in range(20)]))


def test_sqlite_log_outlives_each_call(tmp_path: Path) -> None:
    # The last connection to close would fold the log into the file and delete it, and every
    # call would then rebuild it; the store's idle connection keeps it.
    path = str(tmp_path / "r.sqlite3")
    store = webhooks.SqliteReplayStore(path)
    assert store.claim("k", 60, "a") == "claimed"
    store.complete("k", 60)
    assert Path(f"{path}-wal").exists()
    store.close_idle_connection()
    assert not Path(f"{path}-wal").exists()
    assert store.claim("k", 60, "b") == "done"
    assert Path(f"{path}-wal").exists()


def _idle_in_child(store: webhooks.SqliteReplayStore, queue: Any) -> None:
    crossed = store._idle is not None
    queue.put((crossed, store.claim("child", 60, "child"), store._idle is not None))


def test_sqlite_idle_connection_never_crosses_a_fork(tmp_path: Path) -> None:
    store = webhooks.SqliteReplayStore(str(tmp_path / "r.sqlite3"))
    assert store.claim("parent", 60, "parent") == "claimed"
    assert store._idle is not None
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_idle_in_child, args=(store, queue))
    child.start()
    assert queue.get(timeout=30) == (False, "claimed", True)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert store.claim("child", 60, "parent") == "processing"
    assert store._idle is not None


def test_sqlite_claim_is_exclusive_across_forked_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite3")
    webhooks.SqliteReplayStore(path).claim("warm-up", 60, "parent")  # used before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + 0.5
    children = [
        context.Process(target=_claim_in_child, args=(path, start_at, queue)) for _ in range(6)
    ]
    for child in children:
        child.start()
    outcomes = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    for n in range(20):
        winners = [pid for pid, results in outcomes if results[n] == "claimed"]
        assert len(winners) == 1, f"key-{n} claimed by {winners}"


def test_sqlite_errors_inside_a_transaction_are_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite3")
    store = webhooks.SqliteReplayStore(path)
    assert store.claim("kept", 60, "a") == "claimed"
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE webhook_deliveries RENAME TO moved_away")
    db.close()
    for call in (
        lambda: store.claim("k", 60, "a"),
        lambda: store.complete("k", 60),
        lambda: store.release("k", "a"),
    ):
        with pytest.raises(webhooks.StoreUnavailable):
            call()
    assert store.ping() is False
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE moved_away RENAME TO webhook_deliveries")
        assert db.execute("SELECT key FROM webhook_deliveries").fetchall() == [("kept",)]
    db.close()
    assert store.claim("kept", 60, "b") == "processing"


class _FailingCommit:
    """A SQLite connection whose COMMIT fails, as on a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *parameters: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *parameters)

    def close(self) -> None:
        self._db.close()


def test_sqlite_commit_that_fails_is_unavailable_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "r.sqlite3")
    store = webhooks.SqliteReplayStore(path)
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _FailingCommit(real_connect(*a, **k)))
    with pytest.raises(webhooks.StoreUnavailable):
        store.claim("k", 60, "a")
    monkeypatch.undo()
    assert store.claim("k", 60, "b") == "claimed"


def test_sqlite_claim_that_fails_halfway_keeps_nothing(tmp_path: Path) -> None:
    class PurgeFails(webhooks.SqliteReplayStore):
        def _purge_expired(self, db: sqlite3.Connection, now: float) -> None:
            raise sqlite3.OperationalError("disk I/O error")

    path = str(tmp_path / "r.sqlite3")
    with pytest.raises(webhooks.StoreUnavailable):
        PurgeFails(path).claim("k", 60, "a")  # the row was written before the purge failed
    assert webhooks.SqliteReplayStore(path).claim("k", 60, "b") == "claimed"


class LockHolder(threading.Thread):
    """Another connection writing: it holds SQLite's write lock for ``seconds`` (or until
    done()), then lets go. On a file not yet in WAL mode the exclusive lock keeps readers out
    as well."""

    def __init__(self, path: str, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.finished = threading.Event()
        self.blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.blocker.execute("BEGIN EXCLUSIVE")
        self.start()

    def run(self) -> None:
        self.finished.wait(self.seconds)
        self.blocker.execute("ROLLBACK")
        self.blocker.close()

    def done(self) -> None:
        self.finished.set()
        self.join()


def test_sqlite_waits_for_a_busy_writer_then_reports_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite3")
    store = webhooks.SqliteReplayStore(path, busy_timeout=0.3)
    writer = LockHolder(path, 30.0)
    try:
        started = time.monotonic()
        with pytest.raises(webhooks.StoreUnavailable):
            store.claim("k", 60, "a")
        waited = time.monotonic() - started
        assert 0.25 <= waited < 2, waited  # waited for its busy timeout, and only that long
        assert store.ping() is False
    finally:
        writer.done()
    assert store.claim("k", 60, "a") == "claimed"


def test_sqlite_waits_for_a_writer_that_finishes_within_the_default_busy_timeout(
    tmp_path: Path,
) -> None:
    # Another worker's claim holding the write lock a moment: this one queues behind it
    # instead of answering 503 at once.
    path = str(tmp_path / "r.sqlite3")
    store = webhooks.SqliteReplayStore(path)
    writer = LockHolder(path, 1.0)
    try:
        started = time.monotonic()
        assert store.claim("k", 60, "a") == "claimed"
        waited = time.monotonic() - started
    finally:
        writer.done()
    assert 0.8 <= waited < 4, waited


def test_sqlite_start_up_waits_for_a_writer_that_finishes_within_the_busy_timeout(
    tmp_path: Path,
) -> None:
    # Another worker (or `flask` command) holding the new file's lock while this one starts.
    path = str(tmp_path / "r.sqlite3")
    writer = LockHolder(path, 1.0)
    try:
        started = time.monotonic()
        store = webhooks.SqliteReplayStore(path)
        waited = time.monotonic() - started
    finally:
        writer.done()
    assert 0.8 <= waited < 4, waited
    assert store.claim("k", 60, "a") == "claimed"


def test_sqlite_start_up_waits_for_its_own_busy_timeout_only(tmp_path: Path) -> None:
    # The busy timeout given to the store holds at start-up too, not SQLite's 5 s default.
    path = str(tmp_path / "r.sqlite3")
    writer = LockHolder(path, 3.0)  # a start-up waiting 5 s would get the file after 3
    try:
        started = time.monotonic()
        with pytest.raises(webhooks.StoreUnavailable):
            webhooks.SqliteReplayStore(path, busy_timeout=0.3)
        waited = time.monotonic() - started
    finally:
        writer.done()
    assert 0.25 <= waited < 2, waited


def test_sqlite_busy_timeout_is_five_seconds_by_default_on_every_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waiting the whole 5 s out (and telling 5 from 6) would make this a 5 s test: the tests
    # above show the wait works; this reads the timeout SQLite itself reports for every
    # connection the store opens, at start-up and per call.
    real_connect = sqlite3.connect
    timeouts_ms: list[int] = []

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = real_connect(*args, **kwargs)
        timeouts_ms.append(db.execute("PRAGMA busy_timeout").fetchone()[0])
        return db

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = webhooks.SqliteReplayStore(str(tmp_path / "r.sqlite3"))
    assert store.claim("k", 60, "a") == "claimed"
    store.complete("k", 60)
    # WAL at start-up, the schema, the idle connection, the claim, the completion
    assert timeouts_ms == [5000] * 5


# --- the Redis client's timeouts, retry and health checks, against real sockets ---------------


class CuttingRelay:
    """A TCP relay to Redis that cuts a client's connection in the middle of a command that
    names ``marker`` (the command is dropped, the connection closed), as a load balancer, a
    NAT or a failover does to a pooled connection, ``cuts`` times; all else passes through."""

    def __init__(self, upstream_port: int, marker: bytes) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.cuts = 0
        self.connections = 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _cut(self, data: bytes) -> bool:
        with self._lock:
            if self.marker in data and self.cuts > 0:
                self.cuts -= 1
                return True
        return False

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        with client, upstream, selectors.DefaultSelector() as selector:
            for end in peers:
                selector.register(end, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data or (source is client and self._cut(data)):
                        return
                    peers[source].sendall(data)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def redis_port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def test_a_redis_connection_cut_mid_command_is_retried_once_on_a_new_one(
    redis_server: tuple[str, Any],
) -> None:
    url, _ = redis_server
    relay = CuttingRelay(redis_port(url), marker=b"cut-me")
    try:
        store = webhooks.RedisReplayStore(f"redis://127.0.0.1:{relay.port}/0")
        assert store.claim("first", 60, "w") == "claimed"  # the pooled connection
        relay.cuts = 1
        assert store.claim("cut-me-once", 60, "w") == "claimed"  # the retry, reconnected
        assert (relay.connections, relay.cuts) == (2, 0)
        relay.cuts = 2  # one retry only: an outage is a quick 503, not a loop of retries
        with pytest.raises(webhooks.StoreUnavailable):
            store.claim("cut-me-twice", 60, "w")
        assert (relay.connections, relay.cuts) == (3, 0)
        assert store.claim("cut-me-twice", 60, "w") == "claimed"  # never written before
    finally:
        relay.close()


def test_a_redis_host_that_never_completes_a_connection_is_given_up_after_2_s_twice(
    tmp_path: Path,
) -> None:
    # A listener whose accept queue is full drops further SYNs, the way a firewalled or
    # blackholed address does: connecting hangs until the client's connect timeout, 2 s, and
    # the client tries once more.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            store = webhooks.RedisReplayStore(f"redis://127.0.0.1:{port}/0")
            started = time.monotonic()
            with pytest.raises(webhooks.StoreUnavailable):
                store.claim("k", 60, "w")
            took = time.monotonic() - started
    assert 3.8 <= took < 5.5, f"{took:.1f} s"


class ShiftedClock:
    """time for redis-py's connection module, with monotonic() moved ``offset`` seconds on."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


def test_a_redis_connection_idle_30_s_is_checked_with_a_ping_before_use(
    redis_server: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An idle pooled connection may have been dropped silently (a NAT or load balancer
    # forgetting it): after 30 s without traffic the client PINGs before sending a command.
    # Waiting 30 s for real would make a slow test: redis-py's clock is moved on instead.
    import redis  # noqa: PLC0415
    import redis.connection  # noqa: PLC0415

    url, _ = redis_server
    clock = ShiftedClock()
    monkeypatch.setattr(redis.connection, "time", clock)
    observer = redis.Redis.from_url(url)
    try:

        def pings() -> int:
            stats = observer.info("commandstats").get("cmdstat_ping", {"calls": 0})
            return int(stats["calls"])

        store = webhooks.RedisReplayStore(url)
        assert store.claim("a", 60, "w") == "claimed"
        observer.config_resetstat()
        clock.offset += 29.5
        assert store.claim("b", 60, "w") == "claimed"
        assert pings() == 0
        clock.offset += 30.5
        assert store.claim("c", 60, "w") == "claimed"
        assert pings() == 1
    finally:
        observer.close()
