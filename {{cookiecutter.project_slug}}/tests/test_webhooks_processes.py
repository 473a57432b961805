"""Replay protection across real processes: gunicorn with several workers, SQLite and Redis.

A tiny WSGI app factory (written to a temporary directory) mounts this package's webhooks module
on /hook; its handler appends one line per processed event to a shared file, which is how the
test counts invocations across worker processes.

Redis tests start `redis-server` on a free 127.0.0.1 port. Without the binary they fail under
CI=true and are skipped (with the reason) elsewhere.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from {{ cookiecutter.package_name }} import webhooks

SECRET = "whsec_" + base64.b64encode(b"process test secret of 32 bytes!").decode()
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
WORKERS = 4
CONCURRENT_DELIVERIES = 20
SRC_DIR = Path(webhooks.__file__).resolve().parent.parent

WSGI_APP = '''
"""Minimal app for the multi-process webhook tests: only the standalone webhooks module."""
import importlib
import os
import time

from flask import Flask, jsonify

webhooks = importlib.import_module(os.environ["WEBHOOKS_MODULE"])
receiver = webhooks.Receiver(webhooks.STANDARD_WEBHOOKS)


@receiver.on()
def count(event):
    # O_APPEND writes of one short line are atomic across processes.
    with open(os.environ["COUNT_FILE"], "a") as handle:
        handle.write(str(os.getpid()) + " " + event.delivery_id + "\\n")
    time.sleep(float(os.environ["HANDLER_SECONDS"]))


def create_app():
    app = Flask(__name__, instance_path=os.environ["INSTANCE_PATH"])
    app.config.update(
        MAX_CONTENT_LENGTH=1024 * 1024,
        WEBHOOK_SECRET=os.environ["WEBHOOK_SECRET"],
        REPLAY_STORE_URL=os.environ.get("REPLAY_STORE_URL") or None,
    )
    webhooks.init_app(app)
    app.add_url_rule("/hook", view_func=receiver.receive, methods=["POST"])

    @app.get("/readyz")
    def readyz():
        checks = app.extensions["readiness_checks"]
        ready = all(check() for check in checks.values())
        return jsonify(ready=ready), 200 if ready else 503

    @app.get("/pid")
    def pid():
        time.sleep(0.2)  # keeps this worker busy so that concurrent probes reach the others
        return jsonify(pid=os.getpid())

    @app.after_request
    def worker_pid(response):
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app
'''


def ci_requires(binary: str) -> None:
    """Fail under CI when a required system binary is missing; skip with the reason elsewhere."""
    if shutil.which(binary) is not None:
        return
    message = f"{binary} is not installed (Debian package redis-server)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, redis.RedisError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Gunicorn:
    port: int
    count_file: Path
    process: subprocess.Popen[bytes]

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Any = None,
        *,
        chunked: bool = False,
    ) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        # An iterable body has no length: http.client then sends Transfer-Encoding: chunked.
        pieces = (body[start : start + 65536] for start in range(0, len(body), 65536))
        try:
            connection.request(
                method, path, body=pieces if chunked else body, headers=headers or {}
            )
            response = connection.getresponse()
            payload = response.read()
            return response.status, dict(response.getheaders()), payload
        finally:
            connection.close()

    def processed(self) -> list[str]:
        if not self.count_file.exists():
            return []
        return self.count_file.read_text().splitlines()


def wait_for_every_worker(server: Gunicorn, timeout: float = 30.0) -> None:
    """Ready means every worker answers, not just the first one to boot."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    with concurrent.futures.ThreadPoolExecutor(WORKERS * 2) as pool:
        while len(seen) < WORKERS:
            assert time.monotonic() < deadline, f"only workers {seen} answered"
            answers = pool.map(lambda _: server.request("GET", "/pid"), range(WORKERS * 2))
            seen |= {headers["X-Worker-Pid"] for status, headers, _ in answers if status == 200}


def start_gunicorn(
    tmp_path: Path, store_url: str, handler_seconds: float = 0.3, preload: bool = True
) -> Gunicorn:
    app_dir = tmp_path / "app"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "webhook_test_app.py").write_text(WSGI_APP)
    (app_dir / "gunicorn_test.conf.py").write_text("# empty: command-line settings only\n")
    port = free_port()
    count_file = tmp_path / "processed.txt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(app_dir), str(SRC_DIR)]),
        "WEBHOOKS_MODULE": webhooks.__name__,
        "COUNT_FILE": str(count_file),
        "HANDLER_SECONDS": str(handler_seconds),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "WEBHOOK_SECRET": SECRET,
        "REPLAY_STORE_URL": store_url,
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(app_dir / "gunicorn_test.conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WORKERS),
        # Sync workers, unlike gthread, leave queued connections to idle workers: the 20
        # deliveries are then really spread over several processes (asserted below).
        "--worker-class",
        "sync",
        "--no-control-socket",
        "--log-level",
        "warning",
        # --preload: init_app runs once in the master, then gunicorn forks, which is what the
        # stores must survive (no SQLite connection or Redis socket may cross the fork).
        *(["--preload"] if preload else []),
        "webhook_test_app:create_app()",
    ]
    process = subprocess.Popen(command, cwd=app_dir, env=env)
    server = Gunicorn(port=port, count_file=count_file, process=process)
    try:
        wait_until(lambda: server.request("GET", "/readyz")[0] == 200, "gunicorn to be ready")
        wait_for_every_worker(server)
    except BaseException:
        stop(process)
        raise
    return server


def sign(msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    when = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(KEY, f"{msg_id}.{when}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": when,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "Content-Type": "application/json",
    }


def deliver_concurrently(server: Gunicorn, msg_id: str) -> list[tuple[int, Any, str]]:
    """Send the identical delivery CONCURRENT_DELIVERIES times, released together."""
    body = json.dumps({"type": "order.paid", "data": {"order": msg_id}}).encode()
    headers = sign(msg_id, body)
    barrier = threading.Barrier(CONCURRENT_DELIVERIES)

    def one() -> tuple[int, Any, str]:
        barrier.wait()
        status, response_headers, payload = server.request("POST", "/hook", body, headers)
        return status, json.loads(payload), response_headers["X-Worker-Pid"]

    with concurrent.futures.ThreadPoolExecutor(CONCURRENT_DELIVERIES) as pool:
        futures = [pool.submit(one) for _ in range(CONCURRENT_DELIVERIES)]
        return [future.result(timeout=60) for future in futures]


def assert_processed_exactly_once(server: Gunicorn, msg_id: str) -> None:
    results = deliver_concurrently(server, msg_id)
    accepted = [r for r in results if r[0] == 200 and r[1] == {"status": "accepted"}]
    duplicates = [r for r in results if r[0] == 200 and r[1] == {"status": "duplicate"}]
    in_flight = [r for r in results if r[0] == 409]
    assert len(accepted) == 1, results
    assert len(accepted) + len(duplicates) + len(in_flight) == CONCURRENT_DELIVERIES, results
    assert len({pid for _, _, pid in results}) > 1, "expected several workers to answer"
    assert [line.split()[1] for line in server.processed()] == [msg_id]
    # Once the first delivery has finished, every later copy is a plain duplicate.
    body = json.dumps({"type": "order.paid", "data": {"order": msg_id}}).encode()
    status, _, payload = server.request("POST", "/hook", body, sign(msg_id, body))
    assert (status, json.loads(payload)) == (200, {"status": "duplicate"})
    assert len(server.processed()) == 1


def signed_body_of(size: int, msg_id: str) -> tuple[bytes, dict[str, str]]:
    prefix, suffix = b'{"type": "order.paid", "pad": "', b'"}'
    body = prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix
    return body, sign(msg_id, body)


@pytest.fixture
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    ci_requires("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_until(client.ping, "redis-server to answer", timeout=10)
        yield url, process
    finally:
        client.close()
        stop(process)


@pytest.fixture
def sqlite_gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    server = start_gunicorn(tmp_path, f"sqlite://{tmp_path / 'replay.sqlite3'}")
    yield server
    stop(server.process)


def test_concurrent_identical_deliveries_are_processed_once_with_sqlite(
    sqlite_gunicorn: Gunicorn,
) -> None:
    assert_processed_exactly_once(sqlite_gunicorn, "msg_sqlite_concurrent")


def test_chunked_body_over_the_limit_is_413_through_gunicorn(sqlite_gunicorn: Gunicorn) -> None:
    # gunicorn marks a chunked body as terminated; werkzeug then caps it at the limit silently.
    limit = 1024 * 1024
    body, headers = signed_body_of(limit + 1, "msg_chunked_over")
    status, response_headers, payload = sqlite_gunicorn.request(
        "POST", "/hook", body, headers, chunked=True
    )
    assert (status, json.loads(payload)["status"]) == (413, 413), payload[:200]
    assert response_headers["Content-Type"] == "application/problem+json"
    body, headers = signed_body_of(limit, "msg_chunked_at_limit")
    status, _, payload = sqlite_gunicorn.request("POST", "/hook", body, headers, chunked=True)
    assert (status, json.loads(payload)) == (200, {"status": "accepted"})
    assert [line.split()[1] for line in sqlite_gunicorn.processed()] == ["msg_chunked_at_limit"]


def test_default_store_is_shared_by_gunicorn_workers(tmp_path: Path) -> None:
    # Unset: a SQLite file in the instance folder, created by each worker's own init_app.
    server = start_gunicorn(tmp_path, "", preload=False)
    try:
        assert_processed_exactly_once(server, "msg_default_store")
        assert (tmp_path / "instance" / "webhook-replay.sqlite3").is_file()
    finally:
        stop(server.process)


def test_concurrent_identical_deliveries_are_processed_once_with_redis(
    tmp_path: Path, redis_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, _ = redis_server
    server = start_gunicorn(tmp_path, url)
    try:
        assert_processed_exactly_once(server, "msg_redis_concurrent")
    finally:
        stop(server.process)


def test_redis_stopped_mid_test_fails_closed_with_503(
    tmp_path: Path, redis_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, redis_process = redis_server
    server = start_gunicorn(tmp_path, url, handler_seconds=0)
    try:
        body = b'{"type": "order.paid"}'
        status, _, payload = server.request("POST", "/hook", body, sign("msg_before", body))
        assert (status, json.loads(payload)) == (200, {"status": "accepted"})

        stop(redis_process)

        for attempt in range(WORKERS * 2):  # reach every worker's (now stale) connection pool
            msg_id = f"msg_during_outage_{attempt}"
            status, headers, payload = server.request("POST", "/hook", body, sign(msg_id, body))
            assert status == 503, payload
            assert headers["Content-Type"] == "application/problem+json"
            assert json.loads(payload)["status"] == 503
        assert server.request("GET", "/readyz")[0] == 503
        assert [line.split()[1] for line in server.processed()] == ["msg_before"]
    finally:
        stop(server.process)


# --- the Redis store on its own ---------------------------------------------------------------


def test_redis_store_lifecycle(redis_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = redis_server
    store = webhooks.RedisReplayStore(url)
    client = redis.Redis.from_url(url)
    assert store.ping() is True
    assert store.claim("k", 60, "a") == "claimed"
    assert 0 < client.ttl("webhook-replay:k") <= 60
    assert store.claim("k", 60, "b") == "processing"
    store.release("k", "a")
    assert store.claim("k", 60, "b") == "claimed"
    store.complete("k", 3600)
    assert store.claim("k", 60, "c") == "done"
    assert 3590 < client.ttl("webhook-replay:k") <= 3600
    client.close()


def test_redis_keys_expire(redis_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = redis_server
    store = webhooks.RedisReplayStore(url)
    assert store.claim("short", 1, "a") == "claimed"
    time.sleep(1.2)
    assert store.claim("short", 1, "b") == "claimed"


def test_redis_claim_is_exclusive_across_threads(
    redis_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = redis_server
    store = webhooks.RedisReplayStore(url)
    barrier = threading.Barrier(16)

    def claim() -> str:
        barrier.wait()
        return store.claim("same", 60, threading.current_thread().name)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: claim(), range(16)))
    assert sorted(results) == ["claimed"] + ["processing"] * 15


def test_redis_store_down_raises_store_unavailable(
    redis_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = redis_server
    store = webhooks.RedisReplayStore(url)
    assert store.claim("k", 60, "a") == "claimed"
    stop(process)
    started = time.monotonic()
    with pytest.raises(webhooks.StoreUnavailable):
        store.claim("other", 60, "a")
    with pytest.raises(webhooks.StoreUnavailable):
        store.complete("k", 60)
    with pytest.raises(webhooks.StoreUnavailable):
        store.release("k", "a")
    assert store.ping() is False
    assert time.monotonic() - started < 10  # fails fast, no long retry backoff
