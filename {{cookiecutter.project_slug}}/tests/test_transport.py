"""transport.py on its own, in a bare Flask app: how a user who copies the file will use it."""

from __future__ import annotations

import ast
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask, Response, abort
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }} import transport

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
VIA_PROXY_HTTPS = {"X-Forwarded-Proto": "https"}
HTTPS_ONLY = "This API is only served over HTTPS."
DEFAULT_HSTS = "max-age=63072000; includeSubDomains"


def assert_refused_over_plain_http(response: TestResponse) -> None:
    """The HTTPS refusal itself, not some other 403."""
    assert response.status_code == 403
    assert response.get_json()["detail"] == HTTPS_ONLY
    assert "Strict-Transport-Security" not in response.headers


def bare_app(**config: object) -> Flask:
    app = Flask("copied")
    app.config.update(config)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/where")
    def where() -> dict[str, object]:
        from flask import request  # noqa: PLC0415 - keeps the fixture app self-contained

        return {"addr": request.remote_addr, "scheme": request.scheme, "host": request.host}

    @app.get("/cacheable")
    def cacheable() -> Response:
        response = Response("{}", mimetype="application/json")
        response.headers["Cache-Control"] = "public, max-age=60"
        return response

    @app.get("/boom")
    def boom() -> str:
        abort(418)

    transport.init_app(app)
    return app


@pytest.fixture
def client() -> FlaskClient:
    return bare_app().test_client()


def test_https_via_trusted_proxy_is_served_with_headers_and_one_hsts(client: FlaskClient) -> None:
    response = client.get("/where", headers=VIA_PROXY_HTTPS)
    assert response.status_code == 200
    assert response.headers.getlist("Strict-Transport-Security") == [
        "max-age=63072000; includeSubDomains"
    ]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.getlist(name) == [value]


def test_plain_http_is_refused_with_a_problem_and_no_hsts(client: FlaskClient) -> None:
    response = client.post("/where", data=b"secret=1")
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    body = json.loads(response.data)
    assert body == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": "This API is only served over HTTPS.",
    }
    assert "Strict-Transport-Security" not in response.headers
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


def test_unknown_paths_over_http_are_refused_before_routing(client: FlaskClient) -> None:
    assert_refused_over_plain_http(client.get("/no/such/page"))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_healthz_answers_over_plain_http_without_hsts(client: FlaskClient, method: str) -> None:
    response = client.open("/healthz", method=method)
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_only_the_exact_healthz_path_is_exempt(client: FlaskClient) -> None:
    assert_refused_over_plain_http(client.get("/healthz/"))
    assert_refused_over_plain_http(client.get("/healthz/../where"))


def test_one_hop_trusts_only_the_last_forwarded_address(client: FlaskClient) -> None:
    headers = {**VIA_PROXY_HTTPS, "X-Forwarded-For": "198.51.100.1, 203.0.113.9"}
    seen = client.get("/where", headers=headers).get_json()
    assert seen["addr"] == "203.0.113.9"


# Two proxies: the outer one saw HTTPS from the client, the inner one plain HTTP from the outer.
TWO_PROXIES = {
    "X-Forwarded-Proto": "https, http",
    "X-Forwarded-For": "192.0.2.1, 198.51.100.1, 203.0.113.9",
    "X-Forwarded-Host": "api.example.com, inner.internal",
}


@pytest.mark.parametrize("hops", [2, "2", " 2 "])
def test_two_hops_trust_two_of_each_forwarded_value(hops: object) -> None:
    seen = bare_app(TRUSTED_PROXY_HOPS=hops).test_client().get("/where", headers=TWO_PROXIES)
    assert seen.get_json() == {"addr": "198.51.100.1", "scheme": "https",
                               "host": "api.example.com"}  # fmt: skip


@pytest.mark.parametrize("hops", [1, "1"])
def test_one_hop_trusts_only_the_last_of_each(hops: object) -> None:
    # The nearest proxy reports plain HTTP here: the request is refused, not served.
    client = bare_app(TRUSTED_PROXY_HOPS=hops).test_client()
    assert_refused_over_plain_http(client.get("/where", headers=TWO_PROXIES))
    served = client.get("/where", headers={**TWO_PROXIES, "X-Forwarded-Proto": "http, https"})
    assert served.get_json() == {"addr": "203.0.113.9", "scheme": "https",
                                 "host": "inner.internal"}  # fmt: skip


@pytest.mark.parametrize("hops", [0, "0"])
def test_zero_hops_ignore_forwarding_headers(hops: object) -> None:
    client = bare_app(TRUSTED_PROXY_HOPS=hops).test_client()
    assert_refused_over_plain_http(client.get("/where", headers=VIA_PROXY_HTTPS))
    direct_https = client.get(
        "/where", base_url="https://localhost", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert direct_https.get_json()["addr"] == "127.0.0.1"


def test_forwarded_host_is_taken_from_the_trusted_proxy(client: FlaskClient) -> None:
    headers = {**VIA_PROXY_HTTPS, "X-Forwarded-Host": "api.example.com"}
    seen = client.get("/where", headers=headers).get_json()
    assert seen == {"addr": "127.0.0.1", "scheme": "https", "host": "api.example.com"}


# --- who may speak for the client: only the configured proxy addresses --------------------------


def from_peer(client: FlaskClient, peer: str, headers: dict[str, str]) -> dict[str, object]:
    response = client.get("/where", headers=headers, environ_base={"REMOTE_ADDR": peer})
    return {"status": response.status_code, **(response.get_json() or {})}


FORGED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Host": "api.example.com",
}


def test_forwarding_headers_from_a_peer_that_is_not_a_proxy_are_ignored(
    client: FlaskClient,
) -> None:
    # Another container on the proxy's network reaching the app directly: it cannot claim
    # HTTPS (so plain HTTP is refused), another client address, or another host.
    assert from_peer(client, "172.18.0.5", FORGED)["detail"] == HTTPS_ONLY
    direct_https = client.get(
        "/where", base_url="https://localhost", headers=FORGED,
        environ_base={"REMOTE_ADDR": "172.18.0.5"},
    ).get_json()  # fmt: skip
    assert direct_https == {"addr": "172.18.0.5", "scheme": "https", "host": "localhost"}


def test_the_headers_are_gone_for_the_app_too() -> None:
    app = bare_app()

    @app.get("/headers")
    def headers() -> dict[str, object]:
        from flask import request  # noqa: PLC0415

        return {name: request.headers.get(name) for name in EVERY_FORWARDING_HEADER}

    response = app.test_client().get(
        "/headers", base_url="https://localhost", headers=EVERY_FORWARDING_HEADER,
        environ_base={"REMOTE_ADDR": "172.18.0.5"},
    )  # fmt: skip
    assert response.get_json() == dict.fromkeys(EVERY_FORWARDING_HEADER)


EVERY_FORWARDING_HEADER = {
    **FORGED,
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "Forwarded": "for=1.2.3.4;proto=https",
}


def test_ignored_forwarding_headers_are_logged_once_per_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = bare_app().test_client()
    with caplog.at_level(logging.WARNING, logger=transport.log.name):
        from_peer(client, "172.18.0.4", {})  # nothing to ignore: nothing to say
        from_peer(client, "172.18.0.5", {"X-Forwarded-Port": "443"})
        from_peer(client, "172.18.0.6", FORGED)  # a prober cannot flood the log
    warnings = [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == transport.log.name
    ]
    assert warnings == [(logging.WARNING, "forwarding headers from 172.18.0.5 ignored: not a "
                                          "proxy in FORWARDED_ALLOW_IPS")]  # fmt: skip


def test_a_trusted_proxy_writes_no_warning(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=transport.log.name):
        assert from_peer(client, "127.0.0.1", FORGED)["status"] == 200
    assert [record for record in caplog.records if record.name == transport.log.name] == []


@pytest.mark.parametrize(
    ("allowed", "peer", "trusted"),
    [
        (None, "127.0.0.1", True),  # the default: a proxy on this host
        (None, "::1", True),
        (None, "::ffff:127.0.0.1", True),  # a dual-stack socket's spelling of it
        (None, "", True),  # a unix socket: its file permissions are the fence
        (None, "127.0.0.2", False),
        (None, "10.0.0.7", False),
        ("10.89.253.2", "10.89.253.2", True),
        ("10.89.253.2", "10.89.253.1", False),
        ("10.0.0.0/8, fd00::/8", "10.200.1.1", True),
        ("10.0.0.0/8, fd00::/8", "fd12::1", True),
        ("10.0.0.0/8, fd00::/8", "127.0.0.1", False),
        ("*", "198.51.100.7", True),
        ("10.0.0.1, *", "198.51.100.7", True),
        (" 10.0.0.1 , ,192.0.2.0/24, ", "10.0.0.1", True),  # blanks and empty entries
        (" 10.0.0.1 , ,192.0.2.0/24, ", "192.0.2.9", True),
        (" 10.0.0.1 , ,192.0.2.0/24, ", "10.0.0.2", False),
        ("", "127.0.0.1", False),  # no proxy at all: only a unix socket's peer counts
        ("", "", True),
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),  # dual-stack spelling of an allowed peer
        ("10.0.0.0/8", "::ffff:11.1.2.3", False),
        ("fe80::/10", "fe80::1%eth0", True),  # a scoped (link-local) peer
        ("10.0.0.0/8", "fe80::1%eth0", False),
        (["10.0.0.0/8", "fd00::/8"], "fd00::5", True),  # a list in app.config
        (("10.0.0.0/8",), "10.9.9.9", True),
        (("10.0.0.0/8",), "192.0.2.9", False),
    ],
)
def test_forwarded_allow_ips_names_the_proxies(
    allowed: str | list[str] | tuple[str, ...] | None, peer: str, trusted: bool
) -> None:
    config = {} if allowed is None else {"FORWARDED_ALLOW_IPS": allowed}
    seen = from_peer(bare_app(**config).test_client(), peer, FORGED)
    if trusted:
        assert seen == {"status": 200, "addr": "203.0.113.9", "scheme": "https",
                        "host": "api.example.com"}  # fmt: skip
    else:
        assert (seen["status"], seen["detail"]) == (403, HTTPS_ONLY)


def test_a_peer_without_an_address_counts_as_a_unix_socket() -> None:
    # logs.py and gunicorn.conf.py ask too, for peers a server may report as "" or not at all.
    proxies = transport.TrustedProxies.parse("10.0.0.0/8")
    assert None in proxies
    assert "" in proxies
    assert "10.1.1.1" in proxies
    assert "192.0.2.1" not in proxies


def hsts(**config: object) -> str | None:
    response = bare_app(**config).test_client().get("/where", headers=VIA_PROXY_HTTPS)
    assert response.status_code == 200
    return response.headers.get("Strict-Transport-Security")


# Every word the reader takes (any case, surrounding blanks), and Python values in app.config.
PRELOAD_ON = ["1", "true", "True", "TRUE", "yes", "Yes", "on", "ON", " on ", True, 1]
PRELOAD_OFF = ["0", "false", "False", "no", "NO", "off", "Off", "", "  ", False, 0]


@pytest.mark.parametrize("value", PRELOAD_ON)
def test_every_spelling_of_preload_on_adds_preload(value: object) -> None:
    assert hsts(HSTS_PRELOAD=value) == f"{DEFAULT_HSTS}; preload"


@pytest.mark.parametrize("value", PRELOAD_OFF)
def test_every_spelling_of_preload_off_leaves_it_out(value: object) -> None:
    assert hsts(HSTS_PRELOAD=value) == DEFAULT_HSTS


@pytest.mark.parametrize("value", ["maybe", "2", "y", "n", "enabled", "true!", None, 2])
def test_any_other_preload_value_is_refused(value: object) -> None:
    with pytest.raises(transport.TransportConfigError) as refused:
        bare_app(HSTS_PRELOAD=value)
    assert str(refused.value) == (
        "HSTS_PRELOAD: must be one of 0, 1, false, no, off, on, true, yes"
    )
    assert refused.value.setting == "HSTS_PRELOAD"


def test_preload_needs_a_max_age_of_a_year_exactly_or_more() -> None:
    assert hsts(HSTS_PRELOAD="yes", HSTS_MAX_AGE="31536000") == (
        "max-age=31536000; includeSubDomains; preload"
    )
    with pytest.raises(transport.TransportConfigError) as refused:
        bare_app(HSTS_PRELOAD="yes", HSTS_MAX_AGE=31_535_999)
    assert str(refused.value) == "HSTS_PRELOAD: needs HSTS_MAX_AGE of at least 31536000"


@pytest.mark.parametrize(("max_age", "header"), [
    (0, "max-age=0; includeSubDomains"),  # the boundary: 0 tells browsers to forget the policy
    ("0", "max-age=0; includeSubDomains"),
    (" 300 ", "max-age=300; includeSubDomains"),
    (31_536_000, "max-age=31536000; includeSubDomains"),
])  # fmt: skip
def test_hsts_max_age_is_any_whole_number_from_zero(max_age: object, header: str) -> None:
    assert hsts(HSTS_MAX_AGE=max_age) == header


def test_hsts_header_value_refuses_a_negative_max_age() -> None:
    assert transport.hsts_header_value(0, preload=False) == "max-age=0; includeSubDomains"
    with pytest.raises(transport.TransportConfigError, match=r"^HSTS_MAX_AGE: must be zero or "):
        transport.hsts_header_value(-1, preload=False)


@pytest.mark.parametrize("name", ["TRUSTED_PROXY_HOPS", "HSTS_MAX_AGE"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "must be zero or positive, got -1"),
        ("-1", "must be a whole number, got '-1'"),
        ("+1", "must be a whole number, got '+1'"),  # nginx reads digits only
        ("1_0", "must be a whole number, got '1_0'"),
        ("1.5", "must be a whole number, got '1.5'"),
        ("one", "must be a whole number, got 'one'"),
        ("", "must be a whole number, got ''"),
        (1.0, "must be a whole number"),
        (True, "must be a whole number"),  # a bool is an int to Python, not a count
        (None, "must be a whole number"),
    ],
)
def test_whole_number_settings_refuse_anything_else(name: str, value: object, problem: str) -> None:
    with pytest.raises(transport.TransportConfigError) as refused:
        bare_app(**{name: value})
    assert str(refused.value) == f"{name}: {problem}"
    assert refused.value.setting == name


@pytest.mark.parametrize("value", [10, None, ["10.0.0.1", 10], b"10.0.0.1"])
def test_forwarded_allow_ips_must_be_text(value: object) -> None:
    with pytest.raises(transport.TransportConfigError) as refused:
        bare_app(FORWARDED_ALLOW_IPS=value)
    assert str(refused.value) == "FORWARDED_ALLOW_IPS: must be a comma separated string"


def test_a_view_cannot_weaken_the_hsts_policy() -> None:
    app = bare_app()

    @app.get("/own-hsts")
    def own_hsts() -> Response:
        response = Response("{}", mimetype="application/json")
        response.headers["strict-transport-security"] = "max-age=0"
        response.headers["x-frame-options"] = "SAMEORIGIN"  # any case counts as the view's own
        return response

    response = app.test_client().get("/own-hsts", headers=VIA_PROXY_HTTPS)
    assert response.headers.getlist("Strict-Transport-Security") == [DEFAULT_HSTS]
    assert response.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]


def test_error_responses_carry_the_headers_too(client: FlaskClient) -> None:
    response = client.get("/boom", headers=VIA_PROXY_HTTPS)
    assert response.status_code == 418
    assert response.headers.getlist("Strict-Transport-Security")
    assert response.headers["X-Frame-Options"] == "DENY"


def test_a_view_may_choose_its_own_cache_policy(client: FlaskClient) -> None:
    response = client.get("/cacheable", headers=VIA_PROXY_HTTPS)
    assert response.headers.getlist("Cache-Control") == ["public, max-age=60"]


@pytest.mark.parametrize(
    "entry",
    [
        "10.0.0.300",
        "10.0.0.1/8",  # host bits set
        "nginx",  # names are not resolved
        "10.0.0.0/33",
    ],
)
def test_a_proxy_that_is_no_address_is_refused_at_init(entry: str) -> None:
    with pytest.raises(transport.TransportConfigError) as refused:
        bare_app(FORWARDED_ALLOW_IPS=f"127.0.0.1, {entry}")
    assert str(refused.value) == (
        f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or network "
        "(host names are not resolved)"
    )
    assert refused.value.setting == "FORWARDED_ALLOW_IPS"


# --- the WSGI contract, for an app whose wsgi_app another middleware already wraps ------------


def test_an_error_reported_beneath_reaches_the_server() -> None:
    app = Flask("wrapped")

    def failing(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
        try:
            raise LookupError("reported through exc_info")
        except LookupError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return []

    app.wsgi_app = failing  # type: ignore[method-assign]
    transport.init_app(app)
    # The server is told (werkzeug's test server re-raises, as PEP 3333 asks).
    with pytest.raises(LookupError, match="reported through exc_info"):
        app.test_client().get("/", base_url="https://localhost")


def test_the_write_callable_still_works_beneath() -> None:
    app = Flask("legacy")

    def writing(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written")  # type: ignore[operator]
        return []

    app.wsgi_app = writing  # type: ignore[method-assign]
    transport.init_app(app)
    response = app.test_client().get("/", base_url="https://localhost")
    assert response.data == b"written"
    assert response.headers["Strict-Transport-Security"] == DEFAULT_HSTS


def test_module_stands_alone() -> None:
    """Copyable into any Flask app: only flask, werkzeug and the standard library."""
    tree = ast.parse(Path(transport.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").split(".")[0])
    assert imported - sys.stdlib_module_names <= {"flask", "werkzeug"}
