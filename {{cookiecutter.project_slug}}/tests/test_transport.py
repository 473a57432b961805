"""transport.py on its own, in a bare Flask app: how a user who copies the file will use it."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from flask import Flask, Response, abort
from flask.testing import FlaskClient

from {{ cookiecutter.package_name }} import transport

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
VIA_PROXY_HTTPS = {"X-Forwarded-Proto": "https"}


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
    assert client.get("/no/such/page").status_code == 403


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_healthz_answers_over_plain_http_without_hsts(client: FlaskClient, method: str) -> None:
    response = client.open("/healthz", method=method)
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_only_the_exact_healthz_path_is_exempt(client: FlaskClient) -> None:
    assert client.get("/healthz/").status_code == 403
    assert client.get("/healthz/../where").status_code == 403


def test_one_hop_trusts_only_the_last_forwarded_address(client: FlaskClient) -> None:
    headers = {**VIA_PROXY_HTTPS, "X-Forwarded-For": "198.51.100.1, 203.0.113.9"}
    seen = client.get("/where", headers=headers).get_json()
    assert seen["addr"] == "203.0.113.9"


def test_two_hops_trust_two_forwarded_addresses() -> None:
    client = bare_app(TRUSTED_PROXY_HOPS=2).test_client()
    headers = {
        "X-Forwarded-Proto": "https, https",
        "X-Forwarded-For": "192.0.2.1, 198.51.100.1, 203.0.113.9",
    }
    assert client.get("/where", headers=headers).get_json()["addr"] == "198.51.100.1"


def test_zero_hops_ignore_forwarding_headers() -> None:
    client = bare_app(TRUSTED_PROXY_HOPS=0).test_client()
    assert client.get("/where", headers=VIA_PROXY_HTTPS).status_code == 403
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
    assert from_peer(client, "172.18.0.5", FORGED)["status"] == 403
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

        return {name: request.headers.get(name) for name in (*FORGED, "Forwarded")}

    response = app.test_client().get(
        "/headers", base_url="https://localhost", headers={**FORGED, "Forwarded": "for=1.2.3.4"},
        environ_base={"REMOTE_ADDR": "172.18.0.5"},
    )  # fmt: skip
    assert set(response.get_json().values()) == {None}


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
    ],
)
def test_forwarded_allow_ips_names_the_proxies(
    allowed: str | None, peer: str, trusted: bool
) -> None:
    config = {} if allowed is None else {"FORWARDED_ALLOW_IPS": allowed}
    seen = from_peer(bare_app(**config).test_client(), peer, FORGED)
    if trusted:
        assert seen == {"status": 200, "addr": "203.0.113.9", "scheme": "https",
                        "host": "api.example.com"}  # fmt: skip
    else:
        assert seen["status"] == 403


def test_preload_is_opt_in() -> None:
    client = bare_app(HSTS_PRELOAD="true", HSTS_MAX_AGE="31536000").test_client()
    response = client.get("/where", headers=VIA_PROXY_HTTPS)
    assert response.headers["Strict-Transport-Security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )


def test_error_responses_carry_the_headers_too(client: FlaskClient) -> None:
    response = client.get("/boom", headers=VIA_PROXY_HTTPS)
    assert response.status_code == 418
    assert response.headers.getlist("Strict-Transport-Security")
    assert response.headers["X-Frame-Options"] == "DENY"


def test_a_view_may_choose_its_own_cache_policy(client: FlaskClient) -> None:
    response = client.get("/cacheable", headers=VIA_PROXY_HTTPS)
    assert response.headers.getlist("Cache-Control") == ["public, max-age=60"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"TRUSTED_PROXY_HOPS": -1}, "TRUSTED_PROXY_HOPS"),
        ({"TRUSTED_PROXY_HOPS": "one"}, "TRUSTED_PROXY_HOPS"),
        ({"HSTS_MAX_AGE": -5}, "HSTS_MAX_AGE"),
        ({"HSTS_PRELOAD": "maybe"}, "HSTS_PRELOAD"),
        ({"HSTS_PRELOAD": True, "HSTS_MAX_AGE": 300}, "HSTS_PRELOAD"),
        ({"FORWARDED_ALLOW_IPS": "10.0.0.300"}, "FORWARDED_ALLOW_IPS"),
        ({"FORWARDED_ALLOW_IPS": "10.0.0.1/8"}, "FORWARDED_ALLOW_IPS"),  # host bits set
        ({"FORWARDED_ALLOW_IPS": "nginx"}, "FORWARDED_ALLOW_IPS"),  # names are not resolved
    ],
)
def test_bad_configuration_is_refused_at_init(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}: "):
        bare_app(**config)


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
