"""logs.py: JSON lines, request ids, access lines, unhandled exceptions logged once and redacted."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, g, request
from flask.testing import FlaskClient
from gunicorn.glogging import Logger as GunicornLogger  # type: ignore[import-untyped, unused-ignore]
from gunicorn.glogging import SafeAtoms  # type: ignore[import-untyped, unused-ignore]
from werkzeug.middleware.proxy_fix import ProxyFix

from {{ cookiecutter.package_name }} import logs, serving
from {{ cookiecutter.package_name }}.logs import JsonFormatter, gunicorn_logconfig_dict

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImF1ZCI6Imh0dHBzOi8vYXBpIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2Nzg5MA"
)
OPAQUE = "8f14e45fceea167a5a36dedd4bea2543tok"
PASSWORD = "hunter2-Correct-Horse"
SECRETS = (JWT, OPAQUE, PASSWORD)
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\d\dZ")
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
PROBLEM_500_KEYS = {"type", "title", "status", "detail", "request_id"}

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Lines:
    """Parse the JSON lines written to stderr so far; fails on any stderr line that is not JSON."""

    def read() -> list[dict[str, Any]]:
        text = capsys.readouterr().err
        for secret in SECRETS:
            assert secret not in text, "a secret reached the log"
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    return read


@pytest.fixture
def mini_app() -> Flask:
    """A bare Flask app behind one trusted proxy with logs.init_app, as a user would wire it."""
    app = Flask("mini")
    app.config["LOG_LEVEL"] = "INFO"
    logs.init_app(app)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]

    @app.get("/hello")
    def hello() -> dict[str, bool]:
        app.logger.info("hello from the view")
        return {"ok": True}

    @app.get("/whoami")
    def whoami() -> dict[str, bool]:
        g.principal = SimpleNamespace(sub="alice")
        app.logger.info("who am i")
        return {"ok": True}

    @app.get("/crash")
    def crash() -> str:
        raise RuntimeError(f"lookup /token?refresh_token={OPAQUE} failed with {JWT}")

    @app.post("/careless")
    def careless() -> dict[str, bool]:
        # A developer dumping everything: headers and body must come out scrubbed anyway.
        app.logger.warning("headers %s", dict(request.headers))
        app.logger.warning("body %s", request.get_data(as_text=True))
        app.logger.warning("json", extra={"payload": request.get_json()})
        return {"ok": True}

    return app


@pytest.fixture
def mini_client(mini_app: Flask) -> FlaskClient:
    client = mini_app.test_client()
    client.environ_base["REMOTE_ADDR"] = "127.0.0.1"
    return client


def by_message(lines: list[dict[str, Any]], message: str) -> dict[str, Any]:
    matching = [line for line in lines if line["message"] == message]
    assert len(matching) == 1, lines
    return matching[0]


def test_every_line_is_json_with_the_request_fields(
    mini_client: FlaskClient, log_lines: Lines
) -> None:
    response = mini_client.get("/hello", headers={"X-Forwarded-For": "198.51.100.9"})
    assert response.status_code == 200
    lines = log_lines()
    app_line = by_message(lines, "hello from the view")
    assert ISO_UTC.fullmatch(app_line["time"])
    assert app_line["level"] == "INFO"
    assert app_line["logger"] == "mini"
    assert app_line["method"] == "GET"
    assert app_line["path"] == "/hello"
    assert app_line["client"] == "198.51.100.9"
    assert app_line["sub"] is None
    access = by_message(lines, "GET /hello 200")
    assert access["logger"].endswith(".access")
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)
    assert access["duration_ms"] >= 0
    assert access["client"] == "198.51.100.9"
    assert access["request_id"] == app_line["request_id"] == response.headers["X-Request-ID"]


def test_well_formed_request_id_is_kept_and_returned(
    mini_client: FlaskClient, log_lines: Lines
) -> None:
    sent = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = mini_client.get("/hello", headers={"X-Request-ID": sent})
    assert response.headers["X-Request-ID"] == sent
    assert {line["request_id"] for line in log_lines()} == {sent}


@pytest.mark.parametrize(
    "sent",
    ["short", "has spaces in it", "a" * 129, "../../etc/passwd", "<script>x</script>", "id;rm"],
)
def test_malformed_request_id_is_replaced(
    mini_client: FlaskClient, log_lines: Lines, sent: str
) -> None:
    response = mini_client.get("/hello", headers={"X-Request-ID": sent})
    returned = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(returned)
    assert {line["request_id"] for line in log_lines()} == {returned}


def test_missing_request_id_is_generated_per_request(
    mini_client: FlaskClient, log_lines: Lines
) -> None:
    first = mini_client.get("/hello").headers["X-Request-ID"]
    second = mini_client.get("/hello").headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second
    assert [line["request_id"] for line in log_lines()] == [first, first, second, second]


def test_path_is_logged_without_query_string(mini_client: FlaskClient, log_lines: Lines) -> None:
    mini_client.get(f"/hello?page=2&access_token={OPAQUE}&password={PASSWORD}")
    lines = log_lines()  # also asserts that no secret appears anywhere
    assert {line["path"] for line in lines} == {"/hello"}
    assert all("page=2" not in json.dumps(line) for line in lines)


def test_client_is_the_one_the_trusted_proxy_saw(
    mini_client: FlaskClient, log_lines: Lines
) -> None:
    # The client prepends a forged address; the proxy appends the real one.
    mini_client.get("/hello", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.5"})
    assert {line["client"] for line in log_lines()} == {"203.0.113.5"}


def test_sub_is_logged_when_known(mini_client: FlaskClient, log_lines: Lines) -> None:
    mini_client.get("/whoami")
    lines = log_lines()
    assert by_message(lines, "who am i")["sub"] == "alice"
    assert by_message(lines, "GET /whoami 200")["sub"] == "alice"


def test_unhandled_exception_is_logged_once_redacted(
    mini_client: FlaskClient, log_lines: Lines
) -> None:
    response = mini_client.get("/crash")
    assert response.status_code == 500
    lines = log_lines()  # asserts that neither the token nor the JWT is there
    errors = [line for line in lines if "exception" in line]
    assert len(errors) == 1
    error = errors[0]
    assert error["level"] == "ERROR"
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert error["path"] == "/crash"
    assert "Traceback (most recent call last)" in error["exception"]
    expected = "RuntimeError: lookup /token?refresh_token=[REDACTED] failed with [REDACTED]"
    assert expected in error["exception"]
    assert by_message(lines, "GET /crash 500")["request_id"] == error["request_id"]


def test_headers_and_bodies_dumped_by_the_app_are_scrubbed(
    mini_client: FlaskClient, log_lines: Lines
) -> None:
    response = mini_client.post(
        "/careless",
        json={"username": "bob", "password": PASSWORD, "refresh_token": OPAQUE},
        headers={"Authorization": f"Bearer {JWT}", "Cookie": f"session={OPAQUE}"},
    )
    assert response.status_code == 200
    lines = log_lines()  # asserts that no secret appears anywhere
    assert by_message(lines, "json")["payload"] == {
        "username": "bob",
        "password": "[REDACTED]",
        "refresh_token": "[REDACTED]",
    }
    assert "'Authorization': '[REDACTED]'" in json.dumps(lines)


def test_init_app_twice_adds_one_handler(mini_app: Flask) -> None:
    logs.init_app(Flask("another"))
    json_handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler.formatter, JsonFormatter)
    ]
    assert len(json_handlers) == 1


# --- the real application ---------------------------------------------------------------------


def test_500_problem_carries_the_request_id_and_nothing_else(
    app: Flask, client: FlaskClient, log_lines: Lines
) -> None:
    @app.get("/test-crash-logs")
    def crash() -> str:
        raise RuntimeError(f"password={PASSWORD} Authorization: Bearer {JWT}")

    log_lines()  # start-up lines are not about the request
    response = client.get("/test-crash-logs", headers={"X-Request-ID": "req-0123456789"})
    assert response.status_code == 500
    body = response.get_json(force=True)
    assert set(body) == PROBLEM_500_KEYS
    assert body["request_id"] == response.headers["X-Request-ID"] == "req-0123456789"
    text = response.get_data(as_text=True)
    assert "RuntimeError" not in text
    assert "password" not in text
    errors = [line for line in log_lines() if "exception" in line]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "req-0123456789"


def test_real_app_lines_share_the_request_id(client: FlaskClient, log_lines: Lines) -> None:
    log_lines()  # start-up lines are not about the request
    response = client.get(
        f"/api/v1/me?access_token={OPAQUE}", headers={"Authorization": f"Bearer {JWT}"}
    )
    assert response.status_code in (400, 401)
    request_id = response.headers["X-Request-ID"]
    lines = log_lines()  # asserts that neither token appears anywhere
    assert lines
    assert {line["request_id"] for line in lines} == {request_id}
    assert by_message(lines, f"GET /api/v1/me {response.status_code}")["path"] == "/api/v1/me"


def test_problem_for_a_404_carries_the_request_id(client: FlaskClient) -> None:
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.get_json(force=True)["request_id"] == response.headers["X-Request-ID"]


# --- the formatter: one line, the same whichever way it is written --------------------------


def make_record(
    message: str = "%s %s %s",
    args: tuple[object, ...] = ("GET", "/api/v1/items", 200),
    /,
    **extra: object,
) -> logging.LogRecord:
    record = logging.LogRecord("app.access", logging.INFO, __file__, 1, message, args, None)
    record.created, record.msecs = 1795000000.0125, 12.5
    record.__dict__.update(extra)
    return record


ACCESS_FIELDS: dict[str, object] = {
    "request_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "method": "GET",
    "path": "/api/v1/items",
    "status": 200,
    "duration_ms": 3.214,
    "client": "203.0.113.7",
    "sub": None,
}
RECORDS: dict[str, Callable[[], logging.LogRecord]] = {
    "access line": lambda: make_record(**ACCESS_FIELDS),
    "access line with a subject": lambda: make_record(**{**ACCESS_FIELDS, "sub": "alice"}),
    "outside a request": lambda: make_record("started %d workers", (2,)),
    "extra fields after the request's": lambda: make_record(
        "hello", (), attempt=2, ratio=0.5, flag=True, note="n", request_id="r-12345678"
    ),
    "quotes, backslashes, control and non-ASCII characters": lambda: make_record(
        'say "%s"', ("h\\i\n\x00\u00e9\ud83d\ude00",), path='/a"b\\c', client="\u2603"
    ),
    "numbers json would write as NaN": lambda: make_record(
        "m", (), duration_ms=math.nan, other=math.inf, big=10**30
    ),
    "fields named like the line's own": lambda: make_record("m", (), time="t", level="l"),
    "a private attribute": lambda: make_record("m", (), _private=object(), sub="bob"),
    "a percent sign in a field name": lambda: make_record("m", (), **{"a%sb": "%s", "c%": 1}),
}


# Escaping, numbers JSON has no word for, and booleans (rare in logs) take the full way.
TAKE_THE_FULL_WAY = {
    "quotes, backslashes, control and non-ASCII characters",
    "numbers json would write as NaN",
    "extra fields after the request's",
}


@pytest.mark.parametrize(("name", "make"), RECORDS.items(), ids=RECORDS)
def test_the_quick_and_the_full_way_write_the_same_valid_json(
    name: str, make: Callable[[], logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most records take a shortcut (nothing to scrub, nothing to escape): its lines must be
    exactly those of the full way, and every line strict JSON in printable ASCII."""
    shortcut = JsonFormatter()._line_if_nothing_to_do(make())
    assert (shortcut is None) is (name in TAKE_THE_FULL_WAY)
    quick = JsonFormatter().format(make())
    monkeypatch.setattr(JsonFormatter, "_line_if_nothing_to_do", lambda self, record: None)
    full = JsonFormatter().format(make())
    assert quick == full
    assert quick.isascii()
    assert quick.isprintable()
    entry = json.loads(quick, parse_constant=lambda name: pytest.fail(f"{name} in {quick}"))
    assert list(entry)[:5] == ["time", "level", "logger", "message", "request_id"]
    assert "_private" not in entry


def test_a_line_holds_each_field_once_and_as_given() -> None:
    line = JsonFormatter().format(RECORDS["extra fields after the request's"]())
    entry = json.loads(line)
    assert entry["request_id"] == "r-12345678"
    assert list(entry)[5:] == ["attempt", "ratio", "flag", "note"]
    assert (entry["attempt"], entry["ratio"], entry["flag"]) == (2, 0.5, True)
    odd = json.loads(JsonFormatter().format(RECORDS["fields named like the line's own"]()))
    assert odd["level"] == "INFO"
    assert odd["time"] != "t"
    assert line.count('"request_id"') == 1


def test_a_secret_in_any_field_sends_the_record_the_full_way() -> None:
    line = JsonFormatter().format(make_record(**{**ACCESS_FIELDS, "path": f"/x/{JWT}"}))
    assert JWT not in line
    assert json.loads(line)["path"] == "/x/[REDACTED]"


# --- gunicorn -----------------------------------------------------------------------------------


def gunicorn_access_record(**atoms: Any) -> logging.LogRecord:
    defaults = {
        "h": "10.0.0.2",
        "m": "GET",
        "U": "/api/v1/items",
        "q": f"access_token={OPAQUE}",
        "r": f"GET /api/v1/items?access_token={OPAQUE} HTTP/1.1",
        "s": "200",
        "B": 512,
        "D": 1534,
        "f": f"https://app.example/cb?code={OPAQUE}",
        "{authorization}i": f"Bearer {JWT}",
        "{x-forwarded-for}i": "6.6.6.6, 198.51.100.20",
        "{x-request-id}i": "4bf92f3577b34da6a3ce929d0e0e4736",
        "{x-request-id}o": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    return logging.LogRecord(
        "gunicorn.access",
        logging.INFO,
        __file__,
        1,
        '%(h)s "%(r)s" %(s)s "%(f)s" %({authorization}i)s',
        (SafeAtoms({**defaults, **atoms}),),
        None,
    )


def test_gunicorn_access_line_has_the_app_shape() -> None:
    formatter = JsonFormatter(trusted_proxy_hops=1, forwarded_allow_ips="10.0.0.2")
    line = formatter.format(gunicorn_access_record())
    for secret in SECRETS:
        assert secret not in line
    entry = json.loads(line)
    assert entry["message"] == "GET /api/v1/items 200"
    assert entry["method"] == "GET"
    assert entry["path"] == "/api/v1/items"
    assert entry["status"] == 200
    assert entry["duration_ms"] == 1.534
    assert entry["client"] == "198.51.100.20"
    assert entry["request_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("allowed", [None, "10.9.9.9", "192.168.0.0/16"])
def test_gunicorn_access_line_ignores_forwarding_from_a_peer_that_is_not_a_proxy(
    allowed: str | None,
) -> None:
    # As in the app: X-Forwarded-For names the client only when the proxy itself sent it.
    formatter = JsonFormatter(trusted_proxy_hops=1, forwarded_allow_ips=allowed)
    entry = json.loads(formatter.format(gunicorn_access_record()))
    assert entry["client"] == "10.0.0.2"


def test_gunicorn_access_line_without_proxy_headers() -> None:
    atoms = gunicorn_access_record().args
    assert isinstance(atoms, dict)
    del atoms["{x-forwarded-for}i"], atoms["{x-request-id}o"], atoms["{x-request-id}i"]
    record = gunicorn_access_record()
    record.args = atoms
    entry = json.loads(JsonFormatter(trusted_proxy_hops=1).format(record))
    assert entry["client"] == "10.0.0.2"
    assert entry["request_id"] is None


def test_gunicorn_logconfig_dict_shape(tmp_path: Path) -> None:
    config = gunicorn_logconfig_dict("info", accesslog=str(tmp_path / "a.log"), errorlog="-")
    assert config["loggers"]["gunicorn.access"]["handlers"] == ["access"]
    assert config["handlers"]["access"]["filename"] == str(tmp_path / "a.log")
    assert config["handlers"]["error"]["stream"] == "ext://sys.stderr"
    assert config["root"]["level"] == "INFO"
    off = gunicorn_logconfig_dict(accesslog=None)
    assert off["handlers"]["access"]["class"] == "logging.NullHandler"


def test_gunicorn_access_line_is_built_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn builds its access atoms whenever a logging configuration is set; the service's
    logger skips that work unless GUNICORN_ACCESS_LOG (accesslog) names a target."""
    calls: list[object] = []
    monkeypatch.setattr(GunicornLogger, "access", lambda self, *args: calls.append(args))
    logger = serving.Logger.__new__(serving.Logger)
    logger.cfg = SimpleNamespace(accesslog=None, logconfig_dict=gunicorn_logconfig_dict())
    logger.access(None, None, {}, timedelta(0))
    assert calls == []
    logger.cfg.accesslog = "-"
    resp, req, environ, took = object(), object(), {"PATH_INFO": "/"}, timedelta(seconds=1)
    logger.access(resp, req, environ, took)
    assert calls == [(resp, req, environ, took)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - local http URL
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize(
    ("forwarded_allow_ips", "client"),
    [
        (None, "198.51.100.20"),  # the default: a proxy on this host, which the test plays
        ("10.89.253.2", "127.0.0.1"),  # the proxy is elsewhere: this peer speaks for nobody
    ],
)
def test_gunicorn_writes_json_and_no_secrets(
    base_env: dict[str, str], tmp_path: Path, forwarded_allow_ips: str | None, client: str
) -> None:
    """Real gunicorn with the baked gunicorn.conf.py: access and error logs in files, the
    client named by X-Forwarded-For only when a proxy sent it (gunicorn's line and the app's)."""
    project = Path(__file__).resolve().parent.parent
    port = free_port()
    access_log, error_log = tmp_path / "access.log", tmp_path / "error.log"
    env = {
        **os.environ,
        **base_env,
        "PYTHONPATH": os.pathsep.join([str(project / "src"), os.environ.get("PYTHONPATH", "")]),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_ACCESS_LOG": str(access_log),
        "GUNICORN_ERROR_LOG": str(error_log),
        "WEB_CONCURRENCY": "1",
        "TRUSTED_PROXY_HOPS": "1",
        **({"FORWARDED_ALLOW_IPS": forwarded_allow_ips} if forwarded_allow_ips else {}),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(project / "gunicorn.conf.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/healthz", time.monotonic() + 30)
        sent_id = "nginx-req-0123456789abcdef"
        asked = urllib.request.Request(  # noqa: S310 - local http URL
            f"{base}/healthz?token={OPAQUE}&password={PASSWORD}",
            headers={
                "Authorization": f"Bearer {JWT}",
                "X-Forwarded-For": "6.6.6.6, 198.51.100.20",
                "X-Forwarded-Proto": "https",
                "X-Request-ID": sent_id,
            },
        )
        with urllib.request.urlopen(asked, timeout=5) as answer:  # noqa: S310
            assert answer.headers["X-Request-ID"] == sent_id
            # HSTS goes on HTTPS answers only: it shows whether X-Forwarded-Proto was believed.
            believed = "Strict-Transport-Security" in answer.headers
            assert believed == (forwarded_allow_ips is None)
        # Request lines gunicorn refuses itself, with a secret behind a byte that is not ASCII
        # (which gunicorn's own line would write as an escape) or URL-encoded.
        for target in (f"/\x80{JWT}", f"/\xff%20Bearer%20{OPAQUE}", f"/\xe9;password={PASSWORD}"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as refused:
                refused.sendall(
                    b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                assert refused.recv(64).startswith(b"HTTP/1.1 400 ")
    finally:
        server.terminate()
        stdout, stderr = server.communicate(timeout=30)
    everything = b"".join([stdout, stderr, access_log.read_bytes(), error_log.read_bytes()])
    for secret in SECRETS:
        assert secret.encode() not in everything
    access_lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    ours = [line for line in access_lines if line["request_id"] == sent_id]
    assert len(ours) == 1
    assert ours[0]["logger"] == "gunicorn.access"
    assert ours[0]["path"] == "/healthz"
    assert ours[0]["status"] == 200
    assert ours[0]["client"] == client
    error_lines = [json.loads(line) for line in error_log.read_text().splitlines()]
    assert any(line["logger"] == "gunicorn.error" for line in error_lines)
    # The worker names the status and the kind of error, never the request line it refused.
    refusals = [line["message"] for line in error_lines if "Refused a request" in line["message"]]
    assert refusals == ["Refused a request: 400, InvalidRequestLine"] * 3
    app_access = [line for line in error_lines if line.get("request_id") == sent_id]
    assert [line["message"] for line in app_access] == ["GET /healthz 200"]
    assert [line["client"] for line in app_access] == [client]


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/api/v1/me", "/api/v1/me"),
        ("/", "/"),
        ("/api/v1/items/42/", "/api/v1/items/42/"),
        ("/static/app-1.2.3_min.js~", "/static/app-1.2.3_min.js~"),
        # What a decoder made of %3F, ;, = and spaces: cut there, whatever follows.
        (f"/api/v1/me?access_token={JWT}", "/api/v1/me[REDACTED]"),
        ("/api/v1/me;password=hunter2", "/api/v1/me[REDACTED]"),
        ("/api/v1/token=abc/me", "/api/v1/token[REDACTED]"),
        ("/api/v1/Bearer abc", "/api/v1/Bearer[REDACTED]"),
        ("/api/v1/Bearer+abc", "/api/v1/Bearer[REDACTED]"),
        ("/api/v1/caf\u00e9", "/api/v1/caf[REDACTED]"),
        ("/api/v1/\x80", "/api/v1/[REDACTED]"),
        ('/a"b\\c', "/a[REDACTED]"),
        ("no-slash", "[REDACTED]"),
        ("", ""),
        # Segments shaped like credentials are cut, the slash before them kept.
        (f"/api/v1/{JWT}", "/api/v1/[REDACTED]"),
        ("/api/v1/eyJ", "/api/v1/[REDACTED]"),
        ("/eyJhbGciOi/x", "/[REDACTED]"),
        ("/api/eyJ/v1", "/api/[REDACTED]"),
        (f"/api/v1/keys/{OPAQUE}/x", "/api/v1/keys/[REDACTED]"),
        ("/k/abcdefghijklmnopqrstuvw1", "/k/[REDACTED]"),
        ("/k/1abcdefghijklmnopqrstuvw", "/k/[REDACTED]"),
        ("/k/a23456789012345678901234", "/k/[REDACTED]"),
        # Not credentials: shorter than 24, or only letters, or only digits, or "eyj".
        ("/k/abcdefghijklmnopqrstuv1", "/k/abcdefghijklmnopqrstuv1"),
        ("/k/abcdefghijklmnopqrstuvwxyzabcdef", "/k/abcdefghijklmnopqrstuvwxyzabcdef"),
        ("/k/123456789012345678901234567890", "/k/123456789012345678901234567890"),
        ("/k/eyj/1", "/k/eyj/1"),
        ("/k/abcdefghijkl/mnopqrstuvw1", "/k/abcdefghijkl/mnopqrstuvw1"),
        # The first cut wins: a credential segment before an odd character, and the reverse.
        (f"/a/{OPAQUE}/b;c", "/a/[REDACTED]"),
        (f"/a;b/{OPAQUE}", "/a[REDACTED]"),
    ],
)
def test_loggable_path(path: str, logged: str) -> None:
    assert logs.loggable_path(path) == logged


def test_access_lines_log_the_loggable_path(mini_client: FlaskClient, log_lines: Lines) -> None:
    mini_client.get(f"/hello/{OPAQUE};password={PASSWORD}")
    assert {line["path"] for line in log_lines()} == {"/hello/[REDACTED]"}


def test_gunicorn_access_line_logs_the_loggable_path() -> None:
    record = gunicorn_access_record()
    assert isinstance(record.args, dict)
    record.args = {**record.args, "U": f"/api/v1/{OPAQUE}"}
    entry = json.loads(JsonFormatter(trusted_proxy_hops=1).format(record))
    assert entry["path"] == "/api/v1/[REDACTED]"


def test_gunicorn_access_line_without_a_path() -> None:
    record = gunicorn_access_record()
    assert isinstance(record.args, dict)
    record.args = {**record.args, "U": "-"}
    entry = json.loads(JsonFormatter(trusted_proxy_hops=1).format(record))
    assert entry["path"] is None
