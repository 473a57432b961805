"""How gunicorn serves the app: the classes gunicorn.conf.py names.

- ``Logger``: gunicorn's logger, with gunicorn's own access line only when GUNICORN_ACCESS_LOG
  asks for it. The app already writes one JSON access line per request (logs.py), with the
  request id and the authenticated subject; nginx writes another. gunicorn's would be a third,
  and it is the dearest: gunicorn collects every request header and WSGI environ entry into
  "atoms" for it whenever a logging configuration is set, even when nothing writes the line.
- ``ThreadWorker``: gunicorn's gthread worker whose own error responses (a request it cannot
  read: a control byte in a header, too many headers, an unknown transfer coding) are RFC 9457
  problem+json with the API's security headers, like every other error of the service.
  gunicorn's are HTML pages that quote the request line or header they choke on, query string
  and credentials included, and its log line about them does the same. Two changes make it
  cheaper per request: each response's head and body leave in one write (gunicorn writes them
  separately, and each write wakes nginx), and each of a worker's threads serves requests on an
  event loop of its own instead of one loop handing every request to a pool thread and back.
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from datetime import timedelta
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import util  # type: ignore[import-untyped, unused-ignore]
from gunicorn.glogging import Logger as GunicornLogger  # type: ignore[import-untyped, unused-ignore]
from gunicorn.http.errors import (  # type: ignore[import-untyped, unused-ignore]
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.gthread import (  # type: ignore[import-untyped, unused-ignore]
    PollableMethodQueue,
)
from gunicorn.workers.gthread import (  # type: ignore[import-untyped, unused-ignore]
    ThreadWorker as GunicornThreadWorker,
)

from .transport import SECURITY_HEADERS

# What each of gunicorn's refusals means for the client; any other ParseException is a request
# it could not read (400). Ordered: the first class the exception is an instance of wins.
REFUSALS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], HTTPStatus, str], ...] = (
    # A header the app tried to send is the server's fault, not the client's.
    (
        (InvalidResponseHeader, InvalidResponseHeaderName, ConfigurationProblem),
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "The server could not complete the request.",
    ),
    (LimitRequestLine, HTTPStatus.REQUEST_URI_TOO_LONG, "The request line is too long."),
    (
        LimitRequestHeaders,
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        "The request has too many headers, or one too large.",
    ),
    (
        UnsupportedTransferCoding,
        HTTPStatus.NOT_IMPLEMENTED,
        "The request's transfer coding is not supported.",
    ),
    (ExpectationFailed, HTTPStatus.EXPECTATION_FAILED, "The expectation cannot be met."),
    (ForbiddenProxyRequest, HTTPStatus.FORBIDDEN, "This request is not accepted."),
    (ParseException, HTTPStatus.BAD_REQUEST, "The request could not be read."),
)
SERVER_ERROR = (HTTPStatus.INTERNAL_SERVER_ERROR, "The server could not complete the request.")

# How long a worker serving requests on its own loop waits for a peer to send the rest of a
# request or take the response. nginx sends whole requests and reads promptly; this only bounds
# what a stalled peer can cost the worker's other connections.
INLINE_IO_TIMEOUT_SECONDS = 5
# Head and first body bytes up to this size leave in one write; above it, copying the body to
# join them would cost more than the write it saves.
COALESCE_LIMIT = 64 * 1024


class Logger(GunicornLogger):  # type: ignore[misc, unused-ignore]
    """gunicorn's logger; its access line is written only when ``accesslog`` names a target."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


def refusal(error: BaseException) -> tuple[HTTPStatus, str]:
    """The status and detail of gunicorn's answer to an error while serving a request."""
    for kinds, status, detail in REFUSALS:
        if isinstance(error, kinds):
            return status, detail
    return SERVER_ERROR


def problem_response(status: HTTPStatus, detail: str) -> bytes:
    """A whole HTTP/1.1 problem+json response that closes the connection.

    request_id is null: gunicorn could not read the request, so it does not know the id the
    proxy gave it. nginx fills in its own (the sub_filter in proxy-to-app.conf).
    """
    body = json.dumps(
        {
            "type": "about:blank",
            "title": status.phrase,
            "status": int(status),
            "detail": detail,
            "request_id": None,
        },
        separators=(",", ":"),
    ).encode("ascii")
    head = [
        f"HTTP/1.1 {int(status)} {status.phrase}",
        "Connection: close",
        "Content-Type: application/problem+json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    return "\r\n".join(head).encode("ascii") + b"\r\n\r\n" + body


class SettledConfig:
    """gunicorn's settings for one worker, each looked up once and then kept.

    gunicorn reads its settings some thirty times per request (limits while parsing, keep-alive,
    hooks), each a look-up through its settings table that costs about a microsecond; a
    worker's settings never change while it runs (a reload starts new workers).
    """

    def __init__(self, config: Any) -> None:
        self._config = config

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._config, name)
        setattr(self, name, value)  # found by the next look-up before __getattr__ is asked
        return value


class ThreadWorker(GunicornThreadWorker):  # type: ignore[misc, unused-ignore]
    """gunicorn's gthread worker, serving requests on its loops and answering what it cannot
    serve with problem+json.

    Each of its GUNICORN_THREADS threads runs an event loop of its own (its own poller and
    connections, the worker's app, settings and life) and serves each request itself, start to
    finish, when a connection turns readable, like a sync worker that keeps nginx's connections
    open. gunicorn hands every request from its one loop to a pool thread and back instead: two
    thread switches and a pipe round trip per request, which cost this service about 40% more
    CPU per request than serving it in place. A second loop keeps the worker accepting and
    serving while one of its requests waits on the network (a key set fetch, Redis); the
    connections of the waiting loop wait with it. A loop that fails stops the worker, and
    gunicorn starts a new one.

    New connections wait in the poller for their first bytes, and a peer that stalls
    mid-request or stops reading is cut off once a read or write waits
    INLINE_IO_TIMEOUT_SECONDS. Like gunicorn's sync workers, this counts on a buffering proxy in
    front (nginx as shipped: whole requests in, responses read at once): a peer that trickles
    bytes directly into the worker holds one of its loops. The loops also send the worker's
    heartbeat: a request that outlasts GUNICORN_TIMEOUT gets the worker killed and replaced
    when it holds the only loop (GUNICORN_THREADS=1), and only once every loop is stuck
    otherwise.
    """

    alive: bool

    def init_process(self) -> None:
        self.cfg: Any = SettledConfig(self.cfg)
        self._start_afresh()
        self._other_loops: list[_Loop] = []
        self._quitting = False
        # Each loop has its share of gunicorn's worker_connections.
        self.worker_connections = max(1, self.cfg.worker_connections // self.cfg.threads)
        self.max_keepalived = self.worker_connections - 1
        super().init_process()  # also opens the method queue

    def _start_afresh(self) -> None:
        """The state each loop has of its own: its connections and its wake-up pipe."""
        self.method_queue = _WakeUps()
        self.keepalived_conns: deque[Any] = deque()
        self.pending_conns: deque[Any] = deque()
        self.nr_conns = 0
        self._accepting = False
        # Connections whose next request was already read while serving the last one: served
        # on the loop's next turn, not from inside the last one (a long pipeline would recurse
        # one level per request and let one connection keep the loop to itself).
        self._read_ahead: deque[Any] = deque()
        self._serving = False

    def run(self) -> None:
        threads = [self._start_loop(number) for number in range(1, self.cfg.threads)]
        try:
            super().run()
        finally:
            # However this loop ended (stopped, parent gone, failed), the others end with it.
            self.stop_every_loop()
            if not self._quitting:  # a quick stop drops what is in flight, on every loop
                deadline = time.monotonic() + self.cfg.graceful_timeout
                for thread in threads:
                    thread.join(max(0.0, deadline - time.monotonic()))

    def stop_every_loop(self) -> None:
        """Tell every loop of the worker to stop, and wake those waiting in their pollers."""
        if self.alive:
            self.alive = False
            for loop in (self, *self._other_loops):
                loop.method_queue.defer(_nothing)

    def _start_loop(self, number: int) -> threading.Thread:
        loop = _Loop(self)
        self._other_loops.append(loop)
        thread = threading.Thread(target=loop.run, name=f"loop-{number}", daemon=True)
        thread.start()
        return thread

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stop_every_loop()

    def handle_quit(self, sig: int, frame: Any) -> None:
        self._quitting = True
        super().handle_quit(sig, frame)

    def enqueue_req(self, conn: Any) -> None:
        if not conn.initialized and not conn.data_ready:
            self._await_first_request(conn)
        elif self._serving:
            self._read_ahead.append(conn)
        else:
            self._serve_here(conn)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._read_ahead:
            timeout = 0
        super().wait_for_and_dispatch_events(timeout)
        for _ in range(len(self._read_ahead)):
            self._serve_here(self._read_ahead.popleft())

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        keep_alive = self._handle_once(conn)
        if keep_alive is True and self.alive and not conn.parser.unreader.buf.getvalue():
            # The common case: the connection stays registered with the poller, only moving to
            # the back of the line for the keep-alive deadline.
            conn.set_timeout()
            self.keepalived_conns.remove(conn)
            self.keepalived_conns.append(conn)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._finish(conn, keep_alive)

    def _await_first_request(self, conn: Any) -> None:
        bound_blocking_io(conn.sock, INLINE_IO_TIMEOUT_SECONDS)
        conn.timeout = time.monotonic() + max(self.cfg.keepalive, INLINE_IO_TIMEOUT_SECONDS)
        self.pending_conns.append(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )

    def _serve_here(self, conn: Any) -> None:
        self._finish(conn, self._handle_once(conn))

    def _handle_once(self, conn: Any) -> object:
        self._serving = True
        try:
            return self.handle(conn)
        finally:
            self._serving = False

    def _finish(self, conn: Any, keep_alive: object) -> None:
        served: Future[Any] = Future()
        served.set_result(keep_alive)
        # gunicorn's own bookkeeping: keep the connection for its next request, or close it
        # (a next request already read goes to _read_ahead through enqueue_req).
        self._serving = True
        try:
            self.finish_request(conn, served)
        finally:
            self._serving = False

    def murder_keepalived(self, force: bool = False) -> None:
        if not force:
            self._spare_readable(self.keepalived_conns)
        super().murder_keepalived(force)

    def murder_pending(self) -> None:
        self._spare_readable(self.pending_conns)
        super().murder_pending()

    def _spare_readable(self, waiting: deque[Any]) -> None:
        """Give expired connections with bytes waiting one more turn instead of closing them.

        While the loop serves a request, nobody watches the other connections: a request nginx
        sent in time on one of them can only be seen after its deadline, and closing it then
        would turn it into a 502. Only connections whose deadline passed are looked at.
        """
        now = time.monotonic()
        expired = []
        while waiting and waiting[0].timeout <= now:
            expired.append(waiting.popleft())
        if not expired:
            return
        readable = {key.fileobj for key in _readable_now(conn.sock for conn in expired)}
        for conn in reversed(expired):
            if conn.sock not in readable:
                waiting.appendleft(conn)  # still first in line, for gunicorn to close
        for conn in expired:
            if conn.sock in readable:
                conn.timeout = now + INLINE_IO_TIMEOUT_SECONDS
                waiting.append(conn)

    def handle_request(self, req: Any, conn: Any) -> bool:
        sock = conn.sock
        conn.sock = head_with_body = _HeadWithBody(sock)
        try:
            keep_alive = super().handle_request(req, conn)
        finally:
            conn.sock = sock
        head_with_body.flush()  # a response without a body: its head alone
        return bool(keep_alive)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, detail = refusal(exc)
        # Never the request line, URI or header text, which gunicorn's own line quotes: they
        # can hold credentials, and bytes that are not text. The kind of error says enough.
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            self.log.exception("Error handling request: %s", type(exc).__name__)
        else:
            self.log.warning("Refused a request: %d, %s", int(status), type(exc).__name__)
        try:
            util.write_nonblock(client, problem_response(status, detail))
        except Exception:  # noqa: BLE001 - the client may be gone; nothing left to tell it
            self.log.debug("Failed to send error message.")


class _Loop(ThreadWorker):
    """One more event loop of a worker, on a thread of its own: the worker's app, settings,
    heartbeat and life (stopping it stops every loop), its own poller and connections."""

    def __init__(self, worker: ThreadWorker) -> None:
        # Not gunicorn's __init__: all but the loop's own state is the worker's.
        self.__dict__.update(worker.__dict__)
        self.worker = worker
        # Its own descriptors for the listening sockets, so that each loop closes what it uses.
        self.sockets = [listener.dup() for listener in worker.sockets]
        self._start_afresh()
        self.method_queue.init()
        self.poller = selectors.DefaultSelector()

    @property  # type: ignore[misc, unused-ignore]
    def alive(self) -> bool:
        return bool(self.worker.alive)

    @alive.setter
    def alive(self, value: bool) -> None:
        self.worker.alive = value

    @property  # type: ignore[misc, unused-ignore]
    def nr(self) -> int:
        """Requests served, counted for the worker: gunicorn's max_requests is per worker."""
        return int(self.worker.nr)

    @nr.setter
    def nr(self, value: int) -> None:
        self.worker.nr = value

    def run(self) -> None:
        try:
            GunicornThreadWorker.run(self)
        except BaseException:
            # Not left to the thread's default hook, which would print past the JSON logs and
            # leave the worker serving on fewer loops, this loop's connections unanswered.
            self.log.exception("Error in %s; stopping the worker", threading.current_thread().name)
            self.worker.stop_every_loop()


class _WakeUps(PollableMethodQueue):  # type: ignore[misc, unused-ignore]
    """gunicorn's method queue, whose wake-ups after it is closed go nowhere.

    A signal can ask a loop to wake after the loop stopped and closed its pipe, when the pipe's
    descriptor numbers may already belong to another file or socket: that one must not get the
    wake-up byte. Reentrant: the signal handler that defers runs on a thread that may be
    deferring already.
    """

    _read_fd: int | None
    _write_fd: int | None

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.RLock()

    def close(self) -> None:
        with self._guard:
            super().close()
            self._read_fd = self._write_fd = None

    def defer(self, callback: Any, *args: Any) -> None:
        with self._guard:
            if self._write_fd is not None:
                super().defer(callback, *args)


def _nothing() -> None:
    """A callback that only wakes a poller."""


def _readable_now(sockets: Iterable[socket.socket]) -> list[selectors.SelectorKey]:
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        if not selector.get_map():
            return []
        return [key for key, _ in selector.select(timeout=0)]


def bound_blocking_io(sock: socket.socket, seconds: int) -> None:
    """Make blocking reads and writes on ``sock`` fail after ``seconds`` instead of waiting on.

    Kernel timeouts rather than ``settimeout``: gunicorn switches the socket between blocking and
    non-blocking for its poller, which resets Python's timeout but leaves these alone.
    """
    interval = struct.pack("ll", seconds, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)


def _is_informational(head: bytes) -> bool:
    """A 1xx head (103 Early Hints): it must leave at once, ahead of the final response."""
    return head.startswith(b"HTTP/") and head[9:10] == b"1"


class _HeadWithBody:
    """A socket whose first ``sendall`` (gunicorn's response head) waits for the second.

    gunicorn writes the head and each body chunk with separate ``sendall`` calls; a small JSON
    answer then costs two writes and wakes nginx twice. Everything but ``sendall`` goes to the
    real socket after anything held back has been sent, so the bytes keep their order whatever
    else touches the socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._held = b""
        self._first = True

    def sendall(self, data: bytes) -> None:
        if self._first and not _is_informational(data):
            self._first = False
            self._held = bytes(data)
            return
        if self._held:
            held, self._held = self._held, b""
            if len(held) + len(data) <= COALESCE_LIMIT:
                data = held + data
            else:
                self._sock.sendall(held)  # a large body is not copied to save one write
        self._sock.sendall(data)

    def flush(self) -> None:
        self._first = False
        if self._held:
            held, self._held = self._held, b""
            self._sock.sendall(held)

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._sock, name)
