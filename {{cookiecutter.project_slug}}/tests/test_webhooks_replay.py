"""Replay protection: duplicates, handler failure, in-flight deliveries, and the stores.

The tests through the app and the ownership tests run against every store: memory, SQLite and
a real Redis (redis-server on a free port; missing, it fails under CI=true and skips elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import os
import sqlite3
import stat
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
    assert store.claim("standard-webhooks:msg_busy", 60, "worker-2") == "claimed"
    response = post(client, b'{"type": "x"}', "msg_busy")
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    assert handler.processed == []


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


@pytest.mark.parametrize("mode", [0o777, 0o1777])  # sticky or not, like /tmp
def test_sqlite_store_in_a_directory_everyone_may_write_is_refused(
    tmp_path: Path, mode: int
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(ValueError, match=r"^REPLAY_STORE_URL: .*writable by everyone"):
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{shared}/replay.db")


def test_sqlite_store_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.db").touch(mode=0o600)
    (tmp_path / "replay.db").symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(ValueError, match=r"^REPLAY_STORE_URL: .*symbolic link"):
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{tmp_path}/replay.db")


@pytest.mark.parametrize("planted", ["replay.db", "replay.db-wal", "replay.db-shm"])
def test_sqlite_store_files_someone_else_made_are_refused(tmp_path: Path, planted: str) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("needs root to give a file to another user, and CI=true requires it")
        pytest.skip("needs root to give a file to another user")
    (tmp_path / planted).touch(mode=0o644)
    os.chown(tmp_path / planted, 65534, 65534)
    with pytest.raises(ValueError, match=r"^REPLAY_STORE_URL: .*owned by uid 65534"):
        bare_app(tmp_path, FlakyHandler(), REPLAY_STORE_URL=f"sqlite://{tmp_path}/replay.db")


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


def test_sqlite_purges_expired_ids(tmp_path: Path) -> None:
    clock = Clock()
    store = webhooks.SqliteReplayStore(str(tmp_path / "r.sqlite3"), clock=clock)
    for number in range(50):
        store.claim(f"old-{number}", 60, "a")
        store.complete(f"old-{number}", 10)
    clock.now += 3600
    store.claim("new", 60, "a")
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT key FROM webhook_deliveries").fetchall()
    assert rows == [("new",)]


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


def test_sqlite_waits_for_a_busy_writer_then_reports_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite3")
    store = webhooks.SqliteReplayStore(path, busy_timeout=0.3)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(webhooks.StoreUnavailable):
            store.claim("k", 60, "a")
        assert time.monotonic() - started >= 0.25  # waited for the busy timeout first
        assert store.ping() is False
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.claim("k", 60, "a") == "claimed"
