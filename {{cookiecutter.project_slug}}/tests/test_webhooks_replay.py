"""Replay protection: duplicates, handler failure, in-flight deliveries, and the stores."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
import stripe
from flask import Flask, Response
from flask.testing import FlaskClient

from {{ cookiecutter.package_name }} import events, webhooks

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


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> webhooks.ReplayStore:
    if request.param == "memory":
        return webhooks.MemoryReplayStore()
    return webhooks.SqliteReplayStore(str(tmp_path / "replay.sqlite3"))


def post(client: FlaskClient, body: bytes, msg_id: str, at: float | None = None) -> Any:
    return client.post("/hook", data=body, headers=signed(body, msg_id, at))


# --- through the app --------------------------------------------------------------------------


def test_same_delivery_twice_is_processed_once(tmp_path: Path, store: webhooks.ReplayStore) -> None:
    handler = FlakyHandler()
    client = bare_app(tmp_path, handler, store).test_client()
    body = b'{"type": "order.paid"}'
    headers = signed(body, "msg_twice")
    first = client.post("/hook", data=body, headers=headers)
    second = client.post("/hook", data=body, headers=headers)
    assert (first.status_code, first.get_json()) == (200, {"status": "accepted"})
    assert (second.status_code, second.get_json()) == (200, {"status": "duplicate"})
    assert handler.processed == ["msg_twice"]


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
    tmp_path: Path, store: webhooks.ReplayStore
) -> None:
    handler = FlakyHandler(failures=1)
    client = bare_app(tmp_path, handler, store).test_client()
    body = b'{"type": "order.paid"}'
    failed = post(client, body, "msg_flaky")
    assert failed.status_code == 500
    assert failed.mimetype == "application/problem+json"
    assert "downstream" not in failed.get_data(as_text=True)  # never exception text
    assert post(client, body, "msg_flaky").get_json() == {"status": "accepted"}
    assert post(client, body, "msg_flaky").get_json() == {"status": "duplicate"}
    assert handler.processed == ["msg_flaky"]


def test_delivery_in_flight_elsewhere_is_409_not_accepted(
    tmp_path: Path, store: webhooks.ReplayStore
) -> None:
    handler = FlakyHandler()
    client = bare_app(tmp_path, handler, store).test_client()
    assert store.claim("standard-webhooks:msg_busy", 60) == "claimed"  # another worker
    response = post(client, b'{"type": "x"}', "msg_busy")
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    assert handler.processed == []


def test_unverified_delivery_never_touches_the_store(tmp_path: Path) -> None:
    store = webhooks.MemoryReplayStore()
    client = bare_app(tmp_path, FlakyHandler(), store).test_client()
    headers = signed(b'{"a": 1}', "msg_forged")
    assert client.post("/hook", data=b'{"a": 2}', headers=headers).status_code == 401
    assert store.claim("standard-webhooks:msg_forged", 60) == "claimed"


class BrokenStore:
    def claim(self, key: str, lease_seconds: int) -> webhooks.ClaimResult:
        raise webhooks.StoreUnavailable("down")

    def complete(self, key: str, ttl_seconds: int) -> None:
        raise webhooks.StoreUnavailable("down")

    def release(self, key: str) -> None:
        raise webhooks.StoreUnavailable("down")

    def ping(self) -> bool:
        return False


def test_store_unavailable_fails_closed_with_503(tmp_path: Path) -> None:
    handler = FlakyHandler()
    app = bare_app(tmp_path, handler, BrokenStore())
    response = post(app.test_client(), b'{"type": "x"}', "msg_down")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert handler.processed == []
    assert app.extensions["readiness_checks"]["webhook_replay_store"]() is False


def test_sqlite_file_gone_bad_fails_closed_with_503(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite3"
    handler = FlakyHandler()
    app = bare_app(tmp_path, handler, REPLAY_STORE_URL=f"sqlite://{path}")
    checks = app.extensions["readiness_checks"]
    assert checks["webhook_replay_store"]() is True
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.mkdir()  # the path now names a directory: SQLite cannot open it
    assert post(app.test_client(), b'{"type": "x"}', "msg_gone").status_code == 503
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


def test_replay_ttl_never_shorter_than_the_timestamp_window(tmp_path: Path) -> None:
    app = bare_app(
        tmp_path, FlakyHandler(), WEBHOOK_TOLERANCE_SECONDS=300, WEBHOOK_REPLAY_TTL_SECONDS=10
    )
    assert app.extensions["webhooks"].replay_ttl >= 600


@pytest.mark.parametrize(
    "url", ["postgres://db/x", "sqlite://", "file:///tmp/x", "memory://elsewhere"]
)
def test_unknown_store_url_refuses_to_start(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="REPLAY_STORE_URL"):
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=url)


def test_unwritable_sqlite_location_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    url = f"sqlite://{tmp_path / 'a-file' / 'replay.sqlite3'}"
    with pytest.raises(ValueError, match="REPLAY_STORE_URL"):
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=url)


def test_redis_store_without_the_redis_package_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis were not installed
    with pytest.raises(ValueError, match="redis package"):
        webhooks.open_replay_store("redis://127.0.0.1:6379/0", str(tmp_path))


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
    assert store.claim("k", 60) == "claimed"
    assert store.claim("k", 60) == "processing"
    store.complete("k", 3600)
    assert store.claim("k", 60) == "done"
    clock.now += 3599
    assert store.claim("k", 60) == "done"
    clock.now += 2
    assert store.claim("k", 60) == "claimed"  # forgotten after its ttl
    store.release("k")
    assert store.claim("k", 60) == "claimed"
    assert store.ping() is True


def test_lapsed_lease_can_be_taken_over(clocked_store: tuple[webhooks.ReplayStore, Clock]) -> None:
    store, clock = clocked_store
    assert store.claim("k", 60) == "claimed"  # a worker that then died
    clock.now += 61
    assert store.claim("k", 60) == "claimed"


def test_release_does_not_forget_an_accepted_id(
    clocked_store: tuple[webhooks.ReplayStore, Clock],
) -> None:
    store, _ = clocked_store
    store.claim("k", 60)
    store.complete("k", 3600)
    store.release("k")
    if isinstance(store, webhooks.SqliteReplayStore):
        assert store.claim("k", 60) == "done"


def test_sqlite_purges_expired_ids(tmp_path: Path) -> None:
    clock = Clock()
    store = webhooks.SqliteReplayStore(str(tmp_path / "r.sqlite3"), clock=clock)
    for number in range(50):
        store.claim(f"old-{number}", 60)
        store.complete(f"old-{number}", 10)
    clock.now += 3600
    store.claim("new", 60)
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT key FROM webhook_deliveries").fetchall()
    assert rows == [("new",)]


def test_sqlite_claim_is_exclusive_across_threads(tmp_path: Path) -> None:
    store = webhooks.SqliteReplayStore(str(tmp_path / "r.sqlite3"))
    barrier = threading.Barrier(16)
    results: list[str] = []

    def claim() -> None:
        barrier.wait()
        results.append(store.claim("same", 60))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["claimed"] + ["processing"] * 15


def _claim_in_child(path: str, start_at: float, queue: Any) -> None:
    store = webhooks.SqliteReplayStore(path)
    time.sleep(max(0.0, start_at - time.time()))
    queue.put((os.getpid(), [store.claim(f"key-{n}", 60) for n in range(20)]))


def test_sqlite_claim_is_exclusive_across_forked_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite3")
    webhooks.SqliteReplayStore(path).claim("warm-up", 60)  # the parent used the file before fork
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


def test_sqlite_waits_for_a_busy_writer_then_reports_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite3")
    store = webhooks.SqliteReplayStore(path, busy_timeout=0.3)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(webhooks.StoreUnavailable):
            store.claim("k", 60)
        assert time.monotonic() - started >= 0.25  # waited for the busy timeout first
        assert store.ping() is False
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.claim("k", 60) == "claimed"
