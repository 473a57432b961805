"""Logs end to end: client -> nginx (TLS) -> gunicorn -> app, through scripts/devstack.

Requests carrying every kind of secret the service handles go through a stack of their own
(bearer tokens good and bad, tokens and keys in query strings, a cookie, a signed webhook, a
password in a JSON body, an exception whose message holds credentials). Then every file under
the stack's log directory is read whole: nginx's access and error logs, and gunicorn.log, which
holds the stdout and stderr of gunicorn and the app (nginx writes its own stderr to its error
log, `-e`). No secret may appear anywhere; each request's nginx and app lines carry
the id returned in X-Request-ID, never the one the client sent; the client address is the real
one, never one the client claimed.

A second stack makes nginx fail in the ways whose error lines quote the request line (query
string, Host and Referer included): rate limiting, a body buffered to disk, gunicorn gone.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from joserfc.jwk import RSAKey

# Plain imports for the test helpers: the package's from-import then sorts last whatever its name.
import jose_helpers
import stack
from {{ cookiecutter.package_name }}.logs import access_logger

pytestmark = pytest.mark.stack

APP_ACCESS = access_logger.name
REAL_CLIENT = "127.0.0.1"
CLAIMED_CLIENT = "203.0.113.66"
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
# The app's field order (logs.py), which nginx's log_format repeats.
LEADING_FIELDS = ["time", "level", "logger", "message", "request_id", "method", "path", "status"]
LOG_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Exchange:
    name: str
    method: str
    path: str  # without the query string
    client_request_id: str
    response: stack.Response
    proxied: bool = True

    @property
    def request_id(self) -> str:
        return self.response.header("X-Request-ID") or ""


@dataclass
class Logs:
    texts: dict[Path, str]
    lines: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, log_dir: Path) -> Logs:
        texts = {
            path: path.read_text(errors="replace")
            for path in sorted(log_dir.rglob("*"))
            if path.is_file()
        }
        logs = cls(texts)
        for text in texts.values():
            for line in text.splitlines(keepends=True):
                # A line still being written has no newline yet; the next read gets it whole.
                if line.startswith("{") and line.endswith("\n"):
                    logs.lines.append(json.loads(line))
        return logs

    def about(self, request_id: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("request_id") == request_id]

    def by(self, logger: str, request_id: str) -> list[dict[str, Any]]:
        return [line for line in self.about(request_id) if line["logger"] == logger]


@dataclass
class Traffic:
    stack: stack.LiveStack
    secrets: dict[str, str]
    exchanges: dict[str, Exchange]
    logs: Logs


def spoofing_headers(client_request_id: str) -> dict[str, str]:
    """What a client might send to pose as someone else or pick its own request id."""
    return {
        "X-Request-ID": client_request_id,
        "X-Forwarded-For": CLAIMED_CLIENT,
        "X-Real-IP": CLAIMED_CLIENT,
        "Forwarded": f"for={CLAIMED_CLIENT}",
    }


def signed_delivery(secret: str, body: bytes) -> dict[str, str]:
    msg_id = f"msg_{secrets.token_hex(8)}"
    now = datetime.now(tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(msg_id, now, body.decode()),
        "Content-Type": "application/json",
    }


def jwt_secrets(name: str, token: str) -> dict[str, str]:
    # The signature alone is what makes a token usable; check the whole token as well.
    return {name: token, f"{name} signature": token.rsplit(".", 1)[1]}


def wait_for_lines(service: stack.LiveStack, exchanges: Iterable[Exchange]) -> Logs:
    """Access lines are written after the response: wait until every layer wrote its line."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        logs = Logs.read(service.log_dir)
        missing = [
            exchange.name
            for exchange in exchanges
            if not logs.by("nginx.access", exchange.request_id)
            or (exchange.proxied and not logs.by(APP_ACCESS, exchange.request_id))
        ]
        if not missing or time.monotonic() > deadline:
            assert not missing, f"no access lines for {missing}"
            return logs
        time.sleep(0.2)


@pytest.fixture(scope="module")
def traffic(
    start_stack: Callable[..., stack.LiveStack], tmp_path_factory: pytest.TempPathFactory
) -> Traffic:
    exception_api_key = secrets.token_hex(16)
    exception_bearer = secrets.token_hex(20)
    message = (
        f"billing refused https://billing.example/v1/charges?currency=eur&api_key="
        f"{exception_api_key} (Authorization: Bearer {exception_bearer})"
    )
    service = start_stack(
        settings=stack.raising_route_settings(tmp_path_factory.mktemp("raising-route"), message)
    )
    key = RSAKey.import_key(service.private_key_pem)

    def token(signing_key: RSAKey = key, **claims: Any) -> str:
        values = {"iss": service.issuer, "aud": service.audience, **claims}
        return jose_helpers.mint(signing_key, jose_helpers.make_claims(**values), typ="at+jwt")

    good = token(scope="items:read items:write")
    in_query = token()
    wrong = token(RSAKey.generate_key(2048))
    found: dict[str, str] = {
        **jwt_secrets("bearer token", good),
        **jwt_secrets("token in query", in_query),
        **jwt_secrets("wrong token", wrong),
        "opaque wrong token": secrets.token_hex(20),
        "cookie": secrets.token_hex(16),
        "api key in query": secrets.token_hex(16),
        "password in query": f"pw-{secrets.token_hex(8)}",
        "password in body": f"pw-{secrets.token_hex(8)}",
        "token in plain-HTTP query": secrets.token_hex(16),
        "exception api key": exception_api_key,
        "exception bearer": exception_bearer,
    }
    webhook_body = json.dumps({"type": "invoice.paid", "data": {"id": "in_1"}}).encode()
    delivery = signed_delivery(service.env["WEBHOOK_SECRET"], webhook_body)
    plain_delivery = signed_delivery(service.env["WEBHOOK_SECRET"], webhook_body)
    for name, headers in (("webhook", delivery), ("plain-HTTP webhook", plain_delivery)):
        found[f"{name} signature"] = headers["webhook-signature"].split(",", 1)[1]
    for name in ("WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET"):
        found[name] = service.env[name]
        found[f"{name} body"] = service.env[name].removeprefix("whsec_")

    exchanges: dict[str, Exchange] = {}

    def send(
        name: str,
        method: str,
        path: str,
        query: str = "",
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        plain_http: bool = False,
    ) -> None:
        client_request_id = f"client-chosen-{secrets.token_hex(8)}"
        all_headers = {**spoofing_headers(client_request_id), **(headers or {})}
        target = f"{path}?{query}" if query else path
        call = service.http if plain_http else service.https
        response = call(method, target, headers=all_headers, body=body)
        exchanges[name] = Exchange(
            name, method, path, client_request_id, response, proxied=not plain_http
        )

    json_type = {"Content-Type": "application/json"}
    send(
        "bearer",
        "GET",
        "/api/v1/me",
        headers={"Authorization": f"Bearer {good}", "Cookie": f"session={found['cookie']}"},
    )
    send("token in query", "GET", "/api/v1/items", f"page=2&access_token={in_query}&sort=name")
    send("wrong token", "GET", "/api/v1/items", headers={"Authorization": f"Bearer {wrong}"})
    send(
        "opaque wrong token",
        "GET",
        "/api/v1/items",
        headers={"Authorization": f"Bearer {found['opaque wrong token']}"},
    )
    send("webhook", "POST", "/webhooks/events", headers=delivery, body=webhook_body)
    send(
        "password in body",
        "POST",
        "/api/v1/items",
        headers={"Authorization": f"Bearer {good}", **json_type},
        body=json.dumps({"username": "alice", "password": found["password in body"]}).encode(),
    )
    send(
        "secrets in query",
        "GET",
        "/healthz",
        f"api_key={found['api key in query']}&password={found['password in query']}",
    )
    send("raise", "GET", stack.RAISING_ROUTE)
    send(
        "plain HTTP",
        "POST",
        "/webhooks/events",
        f"access_token={found['token in plain-HTTP query']}",
        headers=plain_delivery,
        body=webhook_body,
        plain_http=True,
    )
    logs = wait_for_lines(service, exchanges.values())
    return Traffic(service, found, exchanges, logs)


# --------------------------------------------------------------------- the requests themselves


def test_the_requests_got_their_expected_answers(traffic: Traffic) -> None:
    statuses = {name: exchange.response.status for name, exchange in traffic.exchanges.items()}
    assert statuses == {
        "bearer": 200,
        "token in query": 400,
        "wrong token": 401,
        "opaque wrong token": 401,
        "webhook": 200,
        "password in body": 422,
        "secrets in query": 200,
        "raise": 500,
        "plain HTTP": 403,
    }


def test_every_answer_carries_one_fresh_request_id(traffic: Traffic) -> None:
    ids = []
    for exchange in traffic.exchanges.values():
        values = exchange.response.header_values("X-Request-ID")
        assert len(values) == 1, exchange.name
        assert REQUEST_ID.fullmatch(values[0]), exchange.name
        assert values[0] != exchange.client_request_id
        ids.append(values[0])
    assert len(set(ids)) == len(ids)


# --------------------------------------------------------------------- no secret anywhere


def test_the_logs_exist(traffic: Traffic) -> None:
    names = {path.relative_to(traffic.stack.log_dir).as_posix() for path in traffic.logs.texts}
    assert {"gunicorn.log", "nginx/access.log", "nginx/error.log"} <= names


def test_no_secret_reaches_any_log(traffic: Traffic) -> None:
    for path, text in traffic.logs.texts.items():
        for name, secret in traffic.secrets.items():
            assert secret not in text, f"{name} in {path.name}"


def test_no_query_string_reaches_any_log(traffic: Traffic) -> None:
    """Not even redacted: paths are logged without their query (sort=name is no secret)."""
    for path, text in traffic.logs.texts.items():
        for marker in ("access_token=", "password=", "sort=name"):
            assert marker not in text, f"{marker} in {path.name}"
    assert not [line for line in traffic.logs.lines if "?" in line.get("path", "")]


def test_nginx_error_log_quotes_no_request(traffic: Traffic) -> None:
    error_log = traffic.logs.texts[traffic.stack.log_dir / "nginx" / "error.log"]
    assert 'request: "' not in error_log


# --------------------------------------------------------------------- request ids


def test_each_layer_logs_each_request_under_its_id(traffic: Traffic) -> None:
    for exchange in traffic.exchanges.values():
        request_id, status = exchange.request_id, exchange.response.status
        loggers = ["nginx.access"] + ([APP_ACCESS] if exchange.proxied else [])
        for logger in loggers:
            lines = traffic.logs.by(logger, request_id)
            assert len(lines) == 1, (exchange.name, logger)
            line = lines[0]
            summary = (line["method"], line["path"], line["status"], line["client"])
            assert summary == (exchange.method, exchange.path, status, REAL_CLIENT), (
                exchange.name,
                logger,
            )
        if not exchange.proxied:
            assert {line["logger"] for line in traffic.logs.about(request_id)} == {"nginx.access"}


def test_one_access_line_from_python_per_request(traffic: Traffic) -> None:
    """nginx's line and the app's are enough: gunicorn's own access line is off by default."""
    assert [line for line in traffic.logs.lines if line["logger"] == "gunicorn.access"] == []


def test_app_lines_about_a_request_carry_its_id(traffic: Traffic) -> None:
    expected = {
        "token in query": "bearer token refused",
        "wrong token": "bearer token refused",
        "webhook": "webhook accepted",
        "raise": f"Exception on {stack.RAISING_ROUTE} [GET]",
    }
    for name, message_start in expected.items():
        lines = traffic.logs.about(traffic.exchanges[name].request_id)
        assert any(line["message"].startswith(message_start) for line in lines), name


def test_every_line_written_during_a_request_has_a_request_id(traffic: Traffic) -> None:
    during_requests = [line for line in traffic.logs.lines if "path" in line]
    assert during_requests
    for line in during_requests:
        assert REQUEST_ID.fullmatch(line["request_id"] or ""), line


def test_client_chosen_request_ids_are_ignored(traffic: Traffic) -> None:
    for exchange in traffic.exchanges.values():
        for path, text in traffic.logs.texts.items():
            assert exchange.client_request_id not in text, (exchange.name, path.name)


def test_authenticated_subject_is_on_the_app_access_line(traffic: Traffic) -> None:
    (line,) = traffic.logs.by(APP_ACCESS, traffic.exchanges["bearer"].request_id)
    assert line["sub"] == "alice"


# --------------------------------------------------------------------- client address


def test_logged_client_is_the_real_one(traffic: Traffic) -> None:
    ours = {exchange.request_id for exchange in traffic.exchanges.values()}
    with_client = [line for line in traffic.logs.lines if line.get("request_id") in ours]
    assert with_client
    assert {line["client"] for line in with_client} == {REAL_CLIENT}
    for path, text in traffic.logs.texts.items():
        assert CLAIMED_CLIENT not in text, path.name


# --------------------------------------------------------------------- unhandled exception


def test_unhandled_exception_answers_a_bare_problem_with_the_request_id(traffic: Traffic) -> None:
    exchange = traffic.exchanges["raise"]
    assert exchange.response.header("Content-Type") == "application/problem+json"
    body = json.loads(exchange.response.body)
    assert body == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": body["detail"],
        "request_id": exchange.request_id,
    }
    for text in ("billing", "RuntimeError", "Traceback"):
        assert text not in exchange.response.body.decode()


def test_unhandled_exception_is_logged_once_redacted(traffic: Traffic) -> None:
    exchange = traffic.exchanges["raise"]
    logged = [line for line in traffic.logs.about(exchange.request_id) if "exception" in line]
    assert len(logged) == 1
    (line,) = logged
    assert line["level"] == "ERROR"
    assert (line["method"], line["path"]) == ("GET", stack.RAISING_ROUTE)
    assert line["client"] == REAL_CLIENT
    assert "RuntimeError: billing refused" in line["exception"]
    assert "api_key=[REDACTED]" in line["exception"]
    assert "Authorization: [REDACTED]" in line["exception"]


# --------------------------------------------------------------------- nginx's own lines


def test_nginx_access_lines_have_the_apps_shape(traffic: Traffic) -> None:
    access_log = traffic.logs.texts[traffic.stack.log_dir / "nginx" / "access.log"]
    lines = [json.loads(text) for text in access_log.splitlines()]
    assert lines
    for line in lines:
        assert list(line)[: len(LEADING_FIELDS)] == LEADING_FIELDS
        assert line["logger"] == "nginx.access"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)", line["time"])
        assert line["message"] == f"{line['method']} {line['path']} {line['status']}"
        assert isinstance(line["status"], int)
        assert isinstance(line["duration_ms"], int)
    (proxied,) = traffic.logs.by("nginx.access", traffic.exchanges["bearer"].request_id)
    assert proxied["upstream_status"] == "200"
    assert isinstance(proxied["upstream_duration_ms"], int)


def test_nginx_logs_what_the_client_asked_for_on_its_own_error_pages(traffic: Traffic) -> None:
    """nginx answers plain-HTTP API calls itself (error_page): the line keeps the client's
    method and path, not the internal GET /_problem/403."""
    (line,) = traffic.logs.by("nginx.access", traffic.exchanges["plain HTTP"].request_id)
    assert (line["method"], line["path"], line["status"]) == ("POST", "/webhooks/events", 403)
    assert (line["scheme"], line["upstream_status"], line["upstream_duration_ms"]) == (
        "http",
        "",
        None,
    )


# --------------------------------------------------------------------- nginx when things fail


def test_failures_leave_no_request_in_nginx_error_log(
    start_stack: Callable[..., stack.LiveStack],
) -> None:
    """Each of these makes nginx write an error line quoting the request line, Host and Referer
    when its error log is at warn, error or crit; at alert none is written, while the access
    log still shows each failure."""
    service = start_stack(settings={"RATE_LIMIT_PER_SECOND": "1", "RATE_LIMIT_BURST": "0"})
    found = {f"secret {n}": secrets.token_hex(16) for n in range(6)}
    referer = {"Referer": f"https://app.example/back?token={found['secret 4']}"}
    # limit_req at 1 r/s without burst: the second call in a row is refused (warn).
    first = service.https("GET", f"/api/v1/items?access_token={found['secret 0']}")
    limited = service.https("GET", f"/api/v1/items?access_token={found['secret 1']}")
    # Over client_body_buffer_size (64k): nginx buffers the body to a temporary file (warn).
    large = service.https(
        "POST", f"/upload?token={found['secret 2']}", headers=referer, body=b"x" * 100_000
    )
    service.kill_gunicorn()
    # Nothing listens on the socket any more: connect() fails (error).
    unreachable = service.https(
        "GET", f"/healthz?access_token={found['secret 3']}", headers=referer
    )
    # As after a clean stop, the socket file is gone: connect() fails with ENOENT (crit).
    service.socket_path.unlink()
    no_socket = service.https("GET", f"/healthz?code={found['secret 5']}", headers=referer)
    statuses = [r.status for r in (first, limited, large, unreachable, no_socket)]
    assert statuses == [400, 429, 404, 502, 502]

    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        logs = Logs.read(service.log_dir)
        unreachable_lines = logs.by("nginx.access", unreachable.header("X-Request-ID") or "")
        if unreachable_lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for path, text in logs.texts.items():
        for name, secret in found.items():
            assert secret not in text, f"{name} in {path.name}"
    assert 'request: "' not in logs.texts[service.log_dir / "nginx" / "error.log"]
    (limited_line,) = logs.by("nginx.access", limited.header("X-Request-ID") or "")
    assert (limited_line["path"], limited_line["status"]) == ("/api/v1/items", 429)
    assert limited_line["upstream_status"] == ""
    (unreachable_line,) = unreachable_lines
    assert (unreachable_line["path"], unreachable_line["status"]) == ("/healthz", 502)
    # One attempt per kept-alive connection the kill reset (nginx retries those), then connect().
    assert re.fullmatch(r"502(, 502)*", unreachable_line["upstream_status"])
