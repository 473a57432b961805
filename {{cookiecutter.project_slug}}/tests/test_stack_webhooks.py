"""Signed webhooks through the real stack: client -> nginx (TLS) -> several gunicorn workers.

The in-process and bare-gunicorn tests (test_webhooks_*.py) cover every answer; these prove that
replay protection holds in what ships: 20 identical deliveries, each on its own TLS connection,
released together through nginx to gunicorn workers that take one request at a time
(GUNICORN_THREADS=1), are processed exactly once with the SQLite store and with a real Redis;
Redis stopped mid-test makes the next delivery fail closed (503).

So that the copies really overlap (the example handlers take a millisecond), these stacks also
register one slow handler for the test event type "test.slow", from outside the package: a
launcher that devstack runs as its Python (DEVSTACK_PYTHON) adds it before gunicorn starts.
Nothing under src/ knows of it; the first copy is still being handled when the others arrive.

"Processed" is counted from the example handler's log lines in the stack's gunicorn log, which
every worker writes to: an effect that crosses processes, unlike a worker's in-memory list.
That the deliveries really reached several workers is read from /proc/<pid>/io: a worker writes
its access lines for each request it answers, so its write counter grows only when it answered
(Linux only; elsewhere that one check is left out).

redis-server and nginx are required under CI=true; elsewhere their absence skips, saying why.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import secrets
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
import stripe

import stack
import test_webhooks_processes
from {{ cookiecutter.package_name }} import events, logs, webhooks

pytestmark = pytest.mark.stack

LiveStack = stack.LiveStack
Response = stack.Response

# The bare-gunicorn tests' Redis: redis-server on a free 127.0.0.1 port, without persistence,
# stopped by its pid (fails under CI=true when the binary is missing).
redis_server = test_webhooks_processes.redis_server

WORKERS = 4
CONCURRENT_DELIVERIES = 20
ONE_MIB = 1024 * 1024
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
GITHUB_SECRET = secrets.token_hex(32)
STRIPE_SECRET = "whsec_" + secrets.token_hex(24)
# The start of the example handler's log line (events.record_event).
HANDLER_LINE = "webhook event recorded: "
HSTS = "max-age=63072000; includeSubDomains"
SLOW_EVENT = "test.slow"
# The slow handler holds the first copy until the test has seen the others answered (so they
# overlap it however loaded the machine is), or at most this long.
SLOW_HANDLER_SECONDS = 60.0
# No copy answered for this long: the rest wait behind the held one.
QUIET_SECONDS = 3.0

_SLOW_HANDLER_LAUNCHER = '''#!@PYTHON@
"""Written by tests/test_stack_webhooks.py, for tests only: gunicorn serving the app with one
more Standard Webhooks handler for the event type in STACK_TEST_SLOW_EVENT, which waits until
the file STACK_TEST_RELEASE_FILE exists (at most STACK_TEST_SLOW_SECONDS).
devstack runs this file as its Python interpreter (DEVSTACK_PYTHON) with "-m gunicorn ..."."""

import importlib
import os
import pathlib
import runpy
import sys
import time

events = importlib.import_module(os.environ["STACK_TEST_EVENTS_MODULE"])


# Registered in the master, before gunicorn forks: every worker inherits it.
@events.standard_webhooks.on(os.environ["STACK_TEST_SLOW_EVENT"])
def slow(event):
    release = pathlib.Path(os.environ["STACK_TEST_RELEASE_FILE"])
    deadline = time.monotonic() + float(os.environ["STACK_TEST_SLOW_SECONDS"])
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


if sys.argv[1:3] != ["-m", "gunicorn"]:
    sys.exit("expected the arguments -m gunicorn ...")
sys.argv = ["gunicorn", *sys.argv[3:]]
runpy.run_module("gunicorn", run_name="__main__", alter_sys=True)
'''


def stack_settings(**changes: str) -> dict[str, str]:
    return {
        "WEB_CONCURRENCY": str(WORKERS),
        # One request at a time per worker: deliveries can then only overlap across processes.
        "GUNICORN_THREADS": "1",
        # 20 requests at once from one address would otherwise partly be refused (429) by nginx.
        "RATE_LIMIT_PER_SECOND": "0",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        **changes,
    }


def slow_handler_settings(directory: Path) -> dict[str, str]:
    """Settings for start_stack(): the app also has a slow handler for SLOW_EVENT."""
    launcher = directory / "python-with-slow-webhook-handler"
    launcher.write_text(_SLOW_HANDLER_LAUNCHER.replace("@PYTHON@", sys.executable), "utf-8")
    launcher.chmod(0o700)
    return {
        "DEVSTACK_PYTHON": str(launcher),
        "STACK_TEST_EVENTS_MODULE": events.__name__,
        "STACK_TEST_SLOW_EVENT": SLOW_EVENT,
        "STACK_TEST_SLOW_SECONDS": str(SLOW_HANDLER_SECONDS),
        "STACK_TEST_RELEASE_FILE": str(directory / "release-slow-handler"),
    }


@pytest.fixture(scope="module")
def sqlite_stack(
    start_stack: Callable[..., LiveStack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    # The stack's replay store is the embedded default kind: a SQLite file (here in the test's
    # directory; test_webhooks_processes covers the default location in the instance folder).
    launcher_dir = tmp_path_factory.mktemp("launcher")
    stack = start_stack(settings=stack_settings(**slow_handler_settings(launcher_dir)))
    assert stack.env["REPLAY_STORE_URL"].startswith("sqlite:///")
    yield stack
    stack.stop()  # four workers are not kept around for the rest of the session


# --------------------------------------------------------------------- deliveries


def standard_delivery(msg_id: str, body: bytes) -> dict[str, str]:
    """Signed by the reference library, never by the code under test."""
    when = datetime.fromtimestamp(int(time.time()), tz=UTC)
    signature = standardwebhooks.Webhook(WEBHOOK_SECRET).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def order_paid(msg_id: str, event_type: str = "order.paid") -> bytes:
    return json.dumps({"type": event_type, "data": {"order": msg_id}}).encode()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def open_tls(stack: LiveStack) -> http.client.HTTPConnection:
    """A new connection with its TLS handshake done, so a barrier releases requests, not
    handshakes."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.https_port, timeout=30)
    connection.sock = stack.ssl_context().wrap_socket(
        socket.create_connection(("127.0.0.1", stack.https_port), timeout=30),
        server_hostname=stack.server_name,
    )
    return connection


def post(
    connection: http.client.HTTPConnection,
    stack: LiveStack,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Response:
    try:
        connection.request(
            "POST", path, body=body, headers={"Host": stack.host_header(), **headers}
        )
        answer = connection.getresponse()
        return Response(answer.status, answer.getheaders(), answer.read())
    finally:
        connection.close()


def deliver_concurrently(
    stack: LiveStack,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    release: Path | None = None,
) -> list[Response]:
    """The same delivery CONCURRENT_DELIVERIES times, each on its own TLS connection, at once.

    With ``release`` (the slow handler's release file), the copy being processed is held until
    the other copies stop being answered for QUIET_SECONDS (or 45 s passed): they overlap it,
    whatever the load. Some copies may wait behind the held one (nginx reuses its idle
    connection to the busy worker); they are answered once it is released.
    """
    barrier = threading.Barrier(CONCURRENT_DELIVERIES)
    if release is not None:
        release.unlink(missing_ok=True)

    def one() -> Response:
        connection = open_tls(stack)
        barrier.wait(timeout=30)
        return post(connection, stack, path, headers, body)

    with concurrent.futures.ThreadPoolExecutor(CONCURRENT_DELIVERIES) as pool:
        futures = [pool.submit(one) for _ in range(CONCURRENT_DELIVERIES)]
        if release is not None:
            deadline = time.monotonic() + 45
            answered, quiet_since = 0, time.monotonic()
            while answered < len(futures) - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
                now_answered = sum(f.done() for f in futures)
                if now_answered != answered:
                    answered, quiet_since = now_answered, time.monotonic()
                elif answered and time.monotonic() - quiet_since > QUIET_SECONDS:
                    break
            release.touch()
        return [future.result(timeout=90) for future in futures]


# --------------------------------------------------------------------- what the stack logged


def log_lines(stack: LiveStack) -> list[dict[str, Any]]:
    lines = []
    for raw in stack.gunicorn_log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # e.g. a traceback of a worker that failed to boot
        if isinstance(line, dict):
            lines.append(line)
    return lines


def processed(stack: LiveStack, delivery_id: str) -> list[str]:
    """The example handler's lines for one delivery id, written by any worker."""
    return [
        line["message"]
        for line in log_lines(stack)
        if line.get("logger") == events.log.name
        and str(line.get("message")).startswith(HANDLER_LINE)
        and str(line.get("message")).split()[-1] == delivery_id
    ]


def reached_gunicorn(stack: LiveStack, request_ids: set[str]) -> set[str]:
    """Which of nginx's request ids the app behind gunicorn wrote an access line for."""
    logged = {
        line.get("request_id")
        for line in log_lines(stack)
        if line.get("logger") == logs.access_logger.name
    }
    return request_ids & {value for value in logged if isinstance(value, str)}


def wait_for_access_lines(stack: LiveStack, request_ids: set[str], timeout: float = 10) -> None:
    # The app writes its access line just before gunicorn sends the answer.
    deadline = time.monotonic() + timeout
    while reached_gunicorn(stack, request_ids) != request_ids:
        missing = request_ids - reached_gunicorn(stack, request_ids)
        assert time.monotonic() < deadline, f"requests {missing} never reached gunicorn"
        time.sleep(0.05)


def request_ids(responses: list[Response]) -> set[str]:
    ids = {response.header("X-Request-ID") for response in responses}
    assert None not in ids
    return {value for value in ids if value}


# --------------------------------------------------------------------- which workers answered


def bytes_written(pid: int) -> int | None:
    """write() bytes of a process so far (/proc/<pid>/io wchar); None where unreadable."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "wchar":
            return int(value)
    return None


def write_counters(pids: list[int]) -> dict[int, int] | None:
    counters = {pid: bytes_written(pid) for pid in pids}
    if not pids or None in counters.values():
        return None
    return {pid: value for pid, value in counters.items() if value is not None}


def grown(before: Mapping[int, int], after: Mapping[int, int]) -> dict[int, int]:
    return {pid: after[pid] - before[pid] for pid in before if after[pid] > before[pid]}


def settled_workers(stack: LiveStack, timeout: float = 30) -> list[int]:
    """The pids of all WORKERS workers once they are quiet, so that from then on only answers
    move their write counters. (The package is imported by the master; a worker's boot is
    create_app() and its first log line, done well within the quiet period.)"""
    deadline = time.monotonic() + timeout
    while len(pids := stack.gunicorn_worker_pids()) < WORKERS:
        assert time.monotonic() < deadline, f"only workers {pids} started"
        time.sleep(0.05)
    settled = write_counters(pids)
    while True:
        time.sleep(0.5)
        now = write_counters(pids)
        if now == settled:
            return pids
        assert time.monotonic() < deadline, "gunicorn workers keep writing while idle"
        settled = now


# --------------------------------------------------------------------- checks


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status == status, response.body
    assert response.header("Content-Type") == "application/problem+json"
    body: dict[str, Any] = json.loads(response.body)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    assert response.header_values("Strict-Transport-Security") == [HSTS]
    return body


def assert_processed_exactly_once(stack: LiveStack, msg_id: str) -> None:
    workers = settled_workers(stack)
    before = write_counters(workers)
    body = order_paid(msg_id, SLOW_EVENT)

    release = Path(stack.env["STACK_TEST_RELEASE_FILE"])
    responses = deliver_concurrently(
        stack, "/webhooks/events", standard_delivery(msg_id, body), body, release
    )

    answers = [(r.status, json.loads(r.body)) for r in responses]
    accepted = [a for a in answers if a == (200, {"status": "accepted"})]
    duplicates = [a for a in answers if a == (200, {"status": "duplicate"})]
    in_flight = [r for r in responses if r.status == 409]
    assert len(accepted) == 1, answers
    assert len(accepted) + len(duplicates) + len(in_flight) == CONCURRENT_DELIVERIES, answers
    for response in in_flight:  # not acknowledged: the sender retries
        assert_problem(response, 409)
        assert response.header("Retry-After")

    # Every copy reached the app (none was answered by nginx), and one was processed.
    wait_for_access_lines(stack, request_ids(responses))
    assert processed(stack, msg_id) == [f"{HANDLER_LINE}standard-webhooks {SLOW_EVENT} {msg_id}"]
    # The copies overlapped: some arrived while the first was still being handled.
    assert in_flight, answers

    # Several processes answered (and no worker was replaced meanwhile).
    assert stack.gunicorn_worker_pids() == workers
    after = write_counters(workers)
    if before is not None and after is not None:
        answered_by = grown(before, after)
        assert len(answered_by) > 1, f"one worker answered every delivery: {answered_by}"

    # Later copies, on whichever worker, are plain duplicates and are not processed again.
    for _ in range(3):
        late = stack.https(
            "POST", "/webhooks/events", headers=standard_delivery(msg_id, body), body=body
        )
        assert (late.status, json.loads(late.body)) == (200, {"status": "duplicate"})
    assert len(processed(stack, msg_id)) == 1


# --------------------------------------------------------------------- tests


def test_concurrent_identical_deliveries_are_processed_once_with_sqlite(
    sqlite_stack: LiveStack,
) -> None:
    assert_processed_exactly_once(sqlite_stack, new_id("msg_stack_sqlite"))


def test_concurrent_deliveries_once_with_redis_and_fail_closed_when_it_stops(
    start_stack: Callable[..., LiveStack], redis_server: tuple[str, Any], tmp_path: Path
) -> None:
    url, redis_process = redis_server
    stack = start_stack(
        settings=stack_settings(REPLAY_STORE_URL=url, **slow_handler_settings(tmp_path))
    )
    try:
        assert stack.https("GET", "/readyz").status == 200
        assert_processed_exactly_once(stack, new_id("msg_stack_redis"))

        test_webhooks_processes.stop(redis_process)  # by its pid

        outage_ids = [new_id("msg_during_outage") for _ in range(WORKERS * 2)]

        def deliver(msg_id: str) -> Response:
            body = order_paid(msg_id)
            return post(
                open_tls(stack), stack, "/webhooks/events", standard_delivery(msg_id, body), body
            )

        # At once, so that they spread over the workers, each with its own (now stale) pool.
        with concurrent.futures.ThreadPoolExecutor(len(outage_ids)) as pool:
            answers = list(pool.map(deliver, outage_ids))
        for response in answers:
            assert_problem(response, 503)
        assert all(processed(stack, msg_id) == [] for msg_id in outage_ids)
        with concurrent.futures.ThreadPoolExecutor(WORKERS * 2) as pool:
            probes = list(pool.map(lambda _: stack.https("GET", "/readyz"), range(WORKERS * 2)))
        for probe in probes:
            assert assert_problem(probe, 503)["failing"] == [webhooks.READINESS_CHECK_NAME]
        assert stack.https("GET", "/healthz").status == 200  # alive, just not ready
    finally:
        stack.stop()


def github_delivery(delivery_id: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": delivery_id,
        "X-GitHub-Event": "push",
        "Content-Type": "application/json",
    }


def stripe_delivery(body: bytes) -> dict[str, str]:
    signature = stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET)
    return {"Stripe-Signature": signature, "Content-Type": "application/json"}


def test_github_and_stripe_deliveries_are_accepted_through_the_stack(
    sqlite_stack: LiveStack,
) -> None:
    delivery_id = str(uuid.uuid4())
    push = json.dumps({"ref": "refs/heads/main", "after": uuid.uuid4().hex}).encode()
    github = sqlite_stack.https(
        "POST", "/webhooks/github", headers=github_delivery(delivery_id, push), body=push
    )
    assert (github.status, json.loads(github.body)) == (200, {"status": "accepted"})
    again = sqlite_stack.https(
        "POST", "/webhooks/github", headers=github_delivery(delivery_id, push), body=push
    )
    assert (again.status, json.loads(again.body)) == (200, {"status": "duplicate"})
    assert processed(sqlite_stack, delivery_id) == [f"{HANDLER_LINE}github push {delivery_id}"]

    event_id = new_id("evt")
    payment = {"id": "pi_stack", "object": "payment_intent", "amount": 2000, "currency": "eur"}
    event = {
        "id": event_id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": payment},
    }
    body = json.dumps(event).encode()
    answer = sqlite_stack.https(
        "POST", "/webhooks/stripe", headers=stripe_delivery(body), body=body
    )
    assert (answer.status, json.loads(answer.body)) == (200, {"status": "accepted"})
    assert processed(sqlite_stack, event_id) == [
        f"{HANDLER_LINE}stripe payment_intent.succeeded {event_id}"
    ]

    forged = sqlite_stack.https(
        "POST",
        "/webhooks/github",
        headers=github_delivery(str(uuid.uuid4()), push),
        body=push + b" ",
    )
    assert_problem(forged, 401)


def padded_event(size: int) -> bytes:
    """A JSON event of exactly `size` bytes."""
    empty = json.dumps({"type": "big.event", "pad": ""}).encode()
    body = json.dumps({"type": "big.event", "pad": "x" * (size - len(empty))}).encode()
    assert len(body) == size
    return body


def test_one_mib_is_accepted_and_one_byte_more_is_refused_by_nginx(
    sqlite_stack: LiveStack,
) -> None:
    at_limit_id = new_id("msg_one_mib")
    body = padded_event(ONE_MIB)
    at_limit = sqlite_stack.https(
        "POST", "/webhooks/events", headers=standard_delivery(at_limit_id, body), body=body
    )
    assert (at_limit.status, json.loads(at_limit.body)) == (200, {"status": "accepted"})
    assert len(processed(sqlite_stack, at_limit_id)) == 1

    over_id = new_id("msg_over_one_mib")
    body = padded_event(ONE_MIB + 1)
    over = sqlite_stack.https(
        "POST", "/webhooks/events", headers=standard_delivery(over_id, body), body=body
    )
    problem = assert_problem(over, 413)
    assert problem["title"] == "Content Too Large"
    # nginx's own answer: the request never reached gunicorn.
    time.sleep(0.5)
    request_id = over.header("X-Request-ID")
    assert request_id
    assert reached_gunicorn(sqlite_stack, {request_id}) == set()
    assert processed(sqlite_stack, over_id) == []
