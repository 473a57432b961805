"""serving.ThreadWorker in a real gunicorn: responses whose head and body leave together, and
requests served on each thread's own loop without one connection holding up the others for
longer than INLINE_IO_TIMEOUT_SECONDS (with one thread) or at all (with two)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gunicorn.config import Config  # type: ignore[import-untyped, unused-ignore]
from gunicorn.workers.gthread import (  # type: ignore[import-untyped, unused-ignore]
    ThreadWorker as GunicornThreadWorker,
)

import stack
from {{ cookiecutter.package_name }} import serving

APP = """
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/empty":
        start_response("204 No Content", [])
        return [b""]
    if path == "/slow":
        import time
        time.sleep(4)
    if path == "/chunks":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one,", b"two,", b"three"])
    body = ("%s %s" % (environ["REQUEST_METHOD"], path)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@contextlib.contextmanager
def gunicorn(
    tmp_path: Path, threads: int, *options: str
) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    """One worker of serving.ThreadWorker on a free loopback port, stopped by its PID."""
    (tmp_path / "echo.py").write_text(APP, encoding="utf-8")
    port = stack.free_port()
    log = tmp_path / "gunicorn.log"
    src = str(stack.PROJECT_ROOT / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "--chdir", str(tmp_path)),
                *("-k", "{{ cookiecutter.package_name }}.serving.ThreadWorker", "-w", "1"),
                *("--threads", str(threads), "--bind", f"127.0.0.1:{port}"),
                *("--no-control-socket", "--graceful-timeout", "5", *options, "echo:app"),
            ],
            # Not the project root: gunicorn would read the service's own gunicorn.conf.py there.
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, log)
        yield port, log, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise AssertionError(f"gunicorn did not listen:\n{log.read_text()}")


def read_response(sock: socket.socket, buffered: bytearray) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 response off a kept-alive connection (Content-Length or chunked)."""
    while b"\r\n\r\n" not in buffered:
        buffered += receive(sock)
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    del buffered[:]
    buffered += rest
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buffered:
                buffered += receive(sock)
            size_line, _, rest = bytes(buffered).partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += receive(sock)
            body += rest[:size]
            del buffered[:]
            buffered += rest[size + 2 :]
            if size == 0:
                return status, headers, body
    length = int(headers.get("content-length", "0"))
    while len(buffered) < length:
        buffered += receive(sock)
    body = bytes(buffered[:length])
    del buffered[:length]
    return status, headers, body


def receive(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("closed by the server")
    return chunk


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_kept_alive_connection_serves_every_kind_of_response_whole(
    tmp_path: Path, threads: int
) -> None:
    with (
        gunicorn(tmp_path, threads) as (port, _, _),
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        buffered = bytearray()
        for path, method, status, body in [
            ("/first", "GET", "HTTP/1.1 200 OK", b"GET /first"),
            ("/empty", "GET", "HTTP/1.1 204 No Content", b""),
            ("/chunks", "GET", "HTTP/1.1 200 OK", b"one,two,three"),
            ("/head", "HEAD", "HTTP/1.1 200 OK", b""),
            ("/last", "POST", "HTTP/1.1 200 OK", b"POST /last"),
        ]:
            request = get(path, method)
            if method == "POST":
                request = request.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
            client.sendall(request)
            if method == "HEAD":
                found = read_head_only(client, buffered)
            else:
                found = read_response(client, buffered)[0::2]
            assert found == (status, body), path
        assert not buffered


def read_head_only(sock: socket.socket, buffered: bytearray) -> tuple[str, bytes]:
    while b"\r\n\r\n" not in buffered:
        buffered += receive(sock)
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    del buffered[:]
    buffered += rest
    return head.decode("latin-1").split("\r\n")[0], b""


def test_pipelined_requests_are_all_answered_in_order(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, 1) as (port, _, _),
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        client.sendall(get("/a") + get("/b") + get("/c"))
        buffered = bytearray()
        bodies = [read_response(client, buffered)[2] for _ in range(3)]
    assert bodies == [b"GET /a", b"GET /b", b"GET /c"]


def test_a_long_pipeline_is_answered_whole_while_others_are_served(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, 1) as (port, _, _),
        socket.create_connection(("127.0.0.1", port), timeout=30) as pipelining,
        socket.create_connection(("127.0.0.1", port), timeout=30) as other,
    ):
        pipelining.sendall(b"".join(get(f"/{number}") for number in range(1000)))
        other.sendall(get("/other"))
        assert read_response(other, bytearray())[2] == b"GET /other"
        buffered = bytearray()
        bodies = [read_response(pipelining, buffered)[2] for _ in range(1000)]
    assert bodies == [f"GET /{number}".encode() for number in range(1000)]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_worker_serves_many_connections_in_turn(tmp_path: Path, threads: int) -> None:
    with gunicorn(tmp_path, threads) as (port, _, _), contextlib.ExitStack() as open_connections:
        clients = [
            open_connections.enter_context(socket.create_connection(("127.0.0.1", port), 10))
            for _ in range(20)
        ]
        buffers = [bytearray() for _ in clients]
        for round_number in range(3):
            for number, client in enumerate(clients):
                client.sendall(get(f"/{round_number}/{number}"))
            for number, client in enumerate(clients):
                body = read_response(client, buffers[number])[2]
                assert body == f"GET /{round_number}/{number}".encode()


def test_an_idle_new_connection_holds_up_nobody(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, 1) as (port, _, _),
        socket.create_connection(("127.0.0.1", port), timeout=10) as silent,
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        time.sleep(0.2)  # accepted and waiting for its first bytes
        started = time.monotonic()
        client.sendall(get("/other"))
        assert read_response(client, bytearray())[2] == b"GET /other"
        assert time.monotonic() - started < 1.0
        silent.sendall(get("/late"))
        assert read_response(silent, bytearray())[2] == b"GET /late"


def test_a_peer_stalled_mid_request_is_cut_off_and_the_others_go_on(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, 1) as (port, log, _),
        socket.create_connection(("127.0.0.1", port), timeout=30) as stalled,
        socket.create_connection(("127.0.0.1", port), timeout=30) as client,
    ):
        stalled.sendall(b"GET /half HTTP/1.1\r\nHost: te")
        time.sleep(0.3)  # the worker is now reading the rest of that request
        started = time.monotonic()
        client.sendall(get("/other"))
        assert read_response(client, bytearray())[2] == b"GET /other"
        waited = time.monotonic() - started
        # its own wait, then gunicorn lingers up to 2 s for the stalled peer to close
        assert waited < serving.INLINE_IO_TIMEOUT_SECONDS + 3.5
        assert stalled.recv(65536) == b""  # closed, never answered with half a request
    assert "Socket error processing request" in log.read_text()


def test_a_second_loop_serves_while_the_first_waits_on_a_stalled_peer(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, 2) as (port, log, _),
        socket.create_connection(("127.0.0.1", port), timeout=30) as stalled,
    ):
        stalled.sendall(b"GET /half HTTP/1.1\r\nHost: te")
        time.sleep(0.3)  # one loop is now reading the rest of that request
        for number in range(3):
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                client.sendall(get(f"/other/{number}"))
                assert read_response(client, bytearray())[2] == f"GET /other/{number}".encode()
            assert time.monotonic() - started < 1.0
        assert stalled.recv(65536) == b""  # still cut off in the end, never half answered
    assert "Socket error processing request" in log.read_text()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_stopping_worker_closes_its_kept_alive_connections_and_exits(
    tmp_path: Path, threads: int
) -> None:
    with (
        gunicorn(tmp_path, threads) as (port, _, process),
        contextlib.ExitStack() as open_connections,
    ):
        clients = [
            open_connections.enter_context(socket.create_connection(("127.0.0.1", port), 20))
            for _ in range(6)
        ]
        for number, client in enumerate(clients):
            client.sendall(get(f"/before/{number}"))
            assert read_response(client, bytearray())[2] == f"GET /before/{number}".encode()
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        for client in clients:
            assert client.recv(65536) == b""
        process.wait(timeout=15)
        assert time.monotonic() - started < 10


def test_a_worker_reads_each_setting_once_and_keeps_it() -> None:
    config = Config()
    config.set("keepalive", 7)
    settled = serving.SettledConfig(config)
    assert settled.keepalive == 7
    assert settled.address == config.address  # derived settings too
    config.set("keepalive", 9)
    assert settled.keepalive == 7
    assert serving.SettledConfig(config).keepalive == 9
    with pytest.raises(AttributeError):
        settled.no_such_setting  # noqa: B018 - the look-up itself is the test


def test_the_loops_share_the_worker_connections_limit(tmp_path: Path) -> None:
    # 4 for the worker: 2 per loop, one of them kept alive between requests at most.
    with (
        gunicorn(tmp_path, 2, "--worker-connections", "4", "--keep-alive", "30") as (port, _, _),
        contextlib.ExitStack() as open_connections,
    ):
        closed = 0
        for number in range(4):
            client = open_connections.enter_context(
                socket.create_connection(("127.0.0.1", port), timeout=10)
            )
            client.sendall(get(f"/{number}"))
            assert read_response(client, bytearray())[2] == f"GET /{number}".encode()
            client.settimeout(1)
            with contextlib.suppress(TimeoutError):
                closed += client.recv(65536) == b""
        assert closed >= 2


def test_a_quick_stop_drops_what_is_in_flight_on_every_loop(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, 2) as (port, _, process),
        socket.create_connection(("127.0.0.1", port), timeout=20) as first,
        socket.create_connection(("127.0.0.1", port), timeout=20) as second,
    ):
        first.sendall(get("/slow"))
        time.sleep(0.3)  # that loop is busy now: the other one takes the second connection
        second.sendall(get("/slow"))
        time.sleep(0.3)
        started = time.monotonic()
        os.kill(process.pid, signal.SIGQUIT)  # gunicorn's quick stop, passed on to the worker
        process.wait(timeout=15)
        # Neither loop waits for its request: no graceful timeout, no answer.
        assert time.monotonic() - started < 2.0
        for client in (first, second):
            with contextlib.suppress(ConnectionResetError):
                assert client.recv(65536) == b""


# Loaded by gunicorn (-c) in the worker: the first worker's second loop fails on its first turn.
FAILING_LOOP_CONFIG = """
import os
from {{ cookiecutter.package_name }} import serving

def post_worker_init(worker):
    def fail_once(loop, timeout):
        if os.path.exists("fail-once"):
            os.remove("fail-once")
            raise RuntimeError("a loop failed")
        return serving.ThreadWorker.wait_for_and_dispatch_events(loop, timeout)
    serving._Loop.wait_for_and_dispatch_events = fail_once
"""


def test_a_loop_that_fails_stops_its_worker_and_gunicorn_starts_another(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(FAILING_LOOP_CONFIG, encoding="utf-8")
    (tmp_path / "fail-once").touch()
    with gunicorn(tmp_path, 2, "-c", "failing.py") as (port, log, _):
        deadline = time.monotonic() + 20
        while "Booting worker" not in log.read_text().partition("a loop failed")[2]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert "Error in loop-1; stopping the worker" in text
        assert "Traceback" in text
        assert "Exception in thread" not in text  # not the thread's default hook
        for number in range(4):  # the new worker answers on both loops
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(get(f"/after/{number}"))
                assert read_response(client, bytearray())[2] == f"GET /after/{number}".encode()


def test_a_wake_up_after_the_queue_closed_goes_nowhere(tmp_path: Path) -> None:
    queue = serving._WakeUps()
    queue.init()
    write_end = queue._write_fd
    assert write_end is not None
    queue.close()
    # The closed pipe's number now belongs to another file, as it may in a running worker.
    reused = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if reused != write_end:
            os.dup2(reused, write_end)
        queue.defer(lambda: None)
        assert (tmp_path / "other").read_bytes() == b""
    finally:
        os.close(reused)
        if reused != write_end:
            os.close(write_end)


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def fileno(self) -> int:
        return -1


def test_the_head_waits_for_the_first_body_bytes() -> None:
    recorder = Recorder()
    held = serving._HeadWithBody(recorder)  # type: ignore[arg-type]
    held.sendall(b"HEAD\r\n\r\n")
    assert recorder.writes == []
    held.sendall(b"body")
    held.sendall(b"more")
    held.flush()
    assert recorder.writes == [b"HEAD\r\n\r\nbody", b"more"]


def test_anything_else_on_the_socket_sends_the_held_head_first() -> None:
    recorder = Recorder()
    held = serving._HeadWithBody(recorder)  # type: ignore[arg-type]
    held.sendall(b"HEAD\r\n\r\n")
    assert held.fileno() == -1
    assert recorder.writes == [b"HEAD\r\n\r\n"]
    held.sendall(b"body")
    assert recorder.writes == [b"HEAD\r\n\r\n", b"body"]


def test_a_head_alone_is_sent_by_flush() -> None:
    recorder = Recorder()
    held = serving._HeadWithBody(recorder)  # type: ignore[arg-type]
    held.sendall(b"HEAD\r\n\r\n")
    held.flush()
    held.flush()
    assert recorder.writes == [b"HEAD\r\n\r\n"]


def test_a_large_body_is_not_copied_to_join_its_head() -> None:
    recorder = Recorder()
    held = serving._HeadWithBody(recorder)  # type: ignore[arg-type]
    body = b"x" * serving.COALESCE_LIMIT
    held.sendall(b"HEAD\r\n\r\n")
    held.sendall(body)
    assert recorder.writes == [b"HEAD\r\n\r\n", body]


def test_an_informational_head_leaves_at_once_and_the_final_head_still_waits() -> None:
    recorder = Recorder()
    held = serving._HeadWithBody(recorder)  # type: ignore[arg-type]
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    held.sendall(hints)
    assert recorder.writes == [hints]
    held.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    held.sendall(b"body")
    assert recorder.writes == [hints, b"HTTP/1.1 200 OK\r\n\r\nbody"]


class Connection:
    def __init__(self, sock: Recorder) -> None:
        self.sock = sock


@pytest.mark.parametrize(
    ("writes", "sent"),
    [
        ([b"HEAD\r\n\r\n", b"body"], [b"HEAD\r\n\r\nbody"]),
        ([b"HEAD\r\n\r\n"], [b"HEAD\r\n\r\n"]),  # no body: the head leaves when serving ends
    ],
)
def test_the_worker_sends_head_and_body_of_a_response_in_one_write(
    monkeypatch: pytest.MonkeyPatch, writes: list[bytes], sent: list[bytes]
) -> None:
    def gunicorn_handle_request(worker: object, req: object, conn: Connection) -> bool:
        for data in writes:
            conn.sock.sendall(data)
        return True

    monkeypatch.setattr(GunicornThreadWorker, "handle_request", gunicorn_handle_request)
    recorder = Recorder()
    conn = Connection(recorder)
    worker = serving.ThreadWorker.__new__(serving.ThreadWorker)
    assert worker.handle_request(object(), conn) is True
    assert recorder.writes == sent
    assert conn.sock is recorder
