"""bearer.py with keys from a JWKS served by a real HTTP (or HTTPS) server on 127.0.0.1.

Start-up fetch, no fetch per request, key rotation (also in the middle of a verification),
provider outages with and without cached keys (each logged with its cause), hostile JWKS
documents, the document size limit, and a refetch storm bounded by the cooldown.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from joserfc.jwk import RSAKey
from werkzeug.test import TestResponse

from jose_helpers import (
    BAD_SIGNATURE,
    KEYS_UNAVAILABLE,
    MALFORMED,
    NO_KID,
    RSA_KEYS,
    UNKNOWN_KID,
    JwksServer,
    TricklingJwksServer,
    make_claims,
    mint,
    private,
    public_jwk,
    segment,
    serve_in_thread,
)
from {{ cookiecutter.package_name }} import bearer


@pytest.fixture
def key_a() -> RSAKey:
    return RSA_KEYS[0]


@pytest.fixture
def key_b() -> RSAKey:
    return RSA_KEYS[1]


@pytest.fixture
def server() -> Iterator[JwksServer]:
    jwks = JwksServer()
    yield jwks
    jwks.stop()


class RawJwksServer:
    """Serves `body` verbatim: JwksServer only sends documents that json.dumps produced."""

    def __init__(self) -> None:
        self.body = b""
        self.hits = 0
        self.url = ""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = serve_in_thread(self.httpd)
        # A unique path: bearer.py caches per URL and process, and ports get reused.
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/jwks-{uuid.uuid4().hex}.json"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def raw_server() -> Iterator[RawJwksServer]:
    jwks = RawJwksServer()
    yield jwks
    jwks.stop()


def jwks_app(url: str, **config: Any) -> Flask:
    app = Flask("bearer_jwks")
    app.config.update(
        {
            "APP_ENV": "test",
            "JWT_ISSUER": "https://issuer.test/",
            "JWT_AUDIENCE": "https://api.test",
            "JWT_JWKS_URL": url,
            "JWT_JWKS_TIMEOUT_SECONDS": 2,
            "JWT_JWKS_COOLDOWN_SECONDS": 0,
            **config,
        }
    )
    bearer.init_app(app)

    @app.get("/read")
    @bearer.require_scopes("items:read")
    def read() -> dict[str, str]:
        return {"sub": bearer.current_principal().sub}

    return app


def call(app: Flask, token: str) -> TestResponse:
    return app.test_client().get("/read", headers={"Authorization": f"Bearer {token}"})


def assert_refused(response: TestResponse, detail: str) -> None:
    """401 invalid_token for this reason (the problem's detail is the RFC 6750 description)."""
    body = response.get_json()
    assert (response.status_code, body.get("error"), body["detail"]) == (
        401,
        "invalid_token",
        detail,
    )


def assert_unavailable(response: TestResponse, retry_after: str = "1") -> None:
    """503: no key to judge the token with, never a guess."""
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert (body["status"], body["detail"]) == (503, KEYS_UNAVAILABLE)
    assert "error" not in body
    assert response.headers["Retry-After"] == retry_after
    assert "WWW-Authenticate" not in response.headers


def fetch_failures(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    """The causes that the failed fetches of url logged, in order. Only url's: an earlier
    test's cache may still refresh in the background, against a server that has stopped."""
    prefix, suffix = f"JWKS fetch from {url} failed (", "); keeping cached keys"
    causes = []
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith(prefix) and message.endswith(suffix):
            assert record.levelno == logging.WARNING
            causes.append(message[len(prefix) : -len(suffix)])
    return causes


def ready(app: Flask) -> bool:
    return bool(app.extensions["readiness_checks"]["bearer_keys"]())


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    give_up_at = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up_at, "condition not met in time"
        time.sleep(0.02)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks-{uuid.uuid4().hex}.json"


# --------------------------------------------------------------------- normal operation


def test_keys_are_fetched_at_start_and_not_per_request(server: JwksServer, key_a: RSAKey) -> None:
    server.publish(key_a)
    app = jwks_app(server.url)
    assert server.hits == 1
    for n in range(10):
        token = mint(key_a, make_claims(jti=f"t-{n}"))
        assert call(app, token).status_code == 200
    assert server.hits == 1
    assert ready(app)


@pytest.mark.parametrize("library", ["joserfc", "pyjwt"])
def test_token_from_each_library_is_accepted(
    server: JwksServer, key_a: RSAKey, library: str
) -> None:
    server.publish(key_a)
    response = call(jwks_app(server.url), mint(key_a, make_claims(), library=library))
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice"}


def test_one_cache_per_url_and_process(server: JwksServer, key_a: RSAKey) -> None:
    server.publish(key_a)
    first, second = jwks_app(server.url), jwks_app(server.url)
    assert call(first, mint(key_a, make_claims())).status_code == 200
    assert call(second, mint(key_a, make_claims())).status_code == 200
    assert server.hits == 1


# --------------------------------------------------------------------- rejections


def test_unknown_kid_is_invalid_token(server: JwksServer, key_a: RSAKey, key_b: RSAKey) -> None:
    server.publish(key_a)
    assert_refused(call(jwks_app(server.url), mint(key_b, make_claims())), UNKNOWN_KID)


def test_other_key_with_same_kid_is_invalid_token(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey
) -> None:
    server.publish(key_a)
    token = mint(key_b, make_claims(), kid=key_a.thumbprint())
    assert_refused(call(jwks_app(server.url), token), BAD_SIGNATURE)


@pytest.mark.parametrize(
    ("kid", "detail"),
    [(None, NO_KID), ("", NO_KID), (7, MALFORMED)],  # PyJWT refuses to read a kid of 7
    ids=["absent", "empty", "number"],
)
def test_token_without_a_usable_kid_is_invalid_token(
    server: JwksServer, key_a: RSAKey, kid: Any, detail: str
) -> None:
    server.publish(key_a)
    header = {"alg": "RS256", "typ": "at+jwt"} | ({} if kid is None else {"kid": kid})
    # Refused before any key is looked up, so the signature does not matter (nor can PyJWT
    # write a kid that is a number).
    token = f"{segment(header)}.{segment(make_claims())}.c2ln"
    assert_refused(call(jwks_app(server.url), token), detail)


def test_token_without_kid_before_any_key_arrived_is_503(server: JwksServer, key_a: RSAKey) -> None:
    server.status = 500
    no_kid = jwt.encode(make_claims(), private(key_a), algorithm="RS256", headers={"typ": "at+jwt"})
    assert_unavailable(call(jwks_app(server.url), no_kid))


# What a provider may publish besides its signing keys; each is skipped, never used.
UNUSABLE_KEYS: dict[str, Callable[[RSAKey], Any]] = {
    "encryption-key": lambda key: public_jwk(key, use="enc"),
    "private-key": lambda key: key.as_dict(private=True) | {"kid": key.thumbprint()},
    "symmetric-key": lambda key: {"kty": "oct", "k": "c2VjcmV0", "kid": key.thumbprint()},
    "unknown-key-type": lambda key: public_jwk(key, kty="RSA2"),
    "hmac-alg": lambda key: public_jwk(key, alg="HS256"),
    "none-alg": lambda key: public_jwk(key, alg="none"),
    "alg-not-a-name": lambda key: public_jwk(key, alg=["RS256"]),
    "no-kid": lambda key: {k: v for k, v in public_jwk(key).items() if k != "kid"},
    "broken-modulus": lambda key: public_jwk(key, n="!!"),
    "not-an-object": lambda key: [public_jwk(key)],
}


@pytest.mark.parametrize("name", list(UNUSABLE_KEYS))
def test_unusable_keys_are_skipped(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey, name: str
) -> None:
    server.document = {"keys": [UNUSABLE_KEYS[name](key_b), public_jwk(key_a)]}
    app = jwks_app(server.url)
    assert call(app, mint(key_a, make_claims())).status_code == 200
    assert_refused(call(app, mint(key_b, make_claims())), UNKNOWN_KID)


@pytest.mark.parametrize("use", ["sig", None])
def test_signing_keys_with_or_without_use_are_used(
    server: JwksServer, key_a: RSAKey, use: str | None
) -> None:
    server.document = {"keys": [public_jwk(key_a, **({} if use is None else {"use": use}))]}
    assert call(jwks_app(server.url), mint(key_a, make_claims())).status_code == 200


def test_the_first_key_with_a_kid_wins(server: JwksServer, key_a: RSAKey, key_b: RSAKey) -> None:
    kid = "shared"
    server.document = {
        "keys": [
            public_jwk(key_a, use="enc", kid=kid),  # skipped: not a signing key
            public_jwk(key_a, kid=kid),
            public_jwk(key_b, kid=kid),  # a second key under the same kid: ignored
        ]
    }
    app = jwks_app(server.url)
    assert call(app, mint(key_a, make_claims(), kid=kid)).status_code == 200
    assert_refused(call(app, mint(key_b, make_claims(), kid=kid)), BAD_SIGNATURE)


def test_a_jwks_without_any_usable_key_is_an_outage(
    server: JwksServer, key_a: RSAKey, caplog: pytest.LogCaptureFixture
) -> None:
    server.document = {"keys": [UNUSABLE_KEYS[name](key_a) for name in UNUSABLE_KEYS]}
    app = jwks_app(server.url)
    assert_unavailable(call(app, mint(key_a, make_claims())))
    assert fetch_failures(caplog, server.url)[0] == "no usable signing key"
    assert not ready(app)


# --------------------------------------------------------------------- rotation


def test_new_kid_is_accepted_after_refetch(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey
) -> None:
    server.publish(key_a)
    app = jwks_app(server.url)
    server.publish(key_a, key_b)
    assert call(app, mint(key_b, make_claims())).status_code == 200
    assert server.hits == 2
    assert call(app, mint(key_a, make_claims())).status_code == 200
    assert server.hits == 2


def test_a_refetch_that_changes_nothing_keeps_verified_tokens(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.publish(key_a)
    app = jwks_app(server.url)
    token = mint(key_a, make_claims())
    verified: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        verified.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    assert call(app, token).status_code == 200
    assert_refused(call(app, mint(key_b, make_claims())), UNKNOWN_KID)  # refetch: same keys
    assert server.hits == 2
    assert call(app, token).status_code == 200
    assert verified == [token]  # still answered from the verified-token cache


def test_retired_kid_is_rejected_once_the_cache_expires(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey
) -> None:
    server.publish(key_a)
    app = jwks_app(server.url, JWT_JWKS_CACHE_SECONDS=1)
    old_token = mint(key_a, make_claims())
    assert call(app, old_token).status_code == 200
    server.publish(key_b)  # the provider retires key_a
    time.sleep(1.1)
    generation = app.extensions["bearer"].keys.generation
    # Due for a refresh: this request starts it in the background and is answered from the
    # cached keys (a request that cached keys can answer never waits on a fetch) ...
    assert call(app, old_token).status_code == 200
    eventually(lambda: app.extensions["bearer"].keys.generation != generation)
    assert_refused(call(app, old_token), UNKNOWN_KID)  # ... the next one sees the new key set
    assert call(app, mint(key_b, make_claims())).status_code == 200


def test_kid_retired_while_its_token_is_verified_is_not_cached(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.publish(key_a)
    app = jwks_app(server.url)
    keys = app.extensions["bearer"].keys
    token = mint(key_a, make_claims(jti="raced"))
    real_decode = jwt.decode
    rotations: list[int] = []

    def decode_while_the_provider_retires_key_a(*args: Any, **kwargs: Any) -> Any:
        # The race made deterministic: between the key lookup and the cache write, another
        # request's refresh sees the provider's new key set, which no longer holds key_a.
        if not rotations:
            server.publish(key_b)
            keys.refresh(wait=True)
            rotations.append(keys.generation)
        return real_decode(*args, **kwargs)

    # The jwt module object is the one bearer.py calls, so this reaches its jwt.decode().
    monkeypatch.setattr(jwt, "decode", decode_while_the_provider_retires_key_a)
    # Judged with the key valid when the request began: accepted, like any in-flight request.
    assert call(app, token).status_code == 200
    assert rotations
    assert_refused(call(app, token), UNKNOWN_KID)
    assert call(app, mint(key_b, make_claims())).status_code == 200


# --------------------------------------------------------------------- outages


@pytest.fixture
def elsewhere(key_a: RSAKey) -> Iterator[JwksServer]:
    """Where a redirect points: a JWKS that must never be asked."""
    jwks = JwksServer()
    jwks.publish(key_a)
    yield jwks
    jwks.stop()


def break_server(server: JwksServer, how: str, elsewhere: JwksServer) -> None:
    if how == "stopped":
        server.stop()
    elif how == "http-500":
        server.status = 500
    elif how == "http-204":
        server.status = 204
    elif how == "not-a-jwks":
        server.document = ["not", "a", "jwks"]
    elif how == "keys-not-a-list":
        server.document = {"keys": {"kid": "x"}}
    elif how == "no-keys":
        server.document = {"keys": []}
    elif how == "redirect":
        # No redirect is followed: it could downgrade https to http or leave the host.
        server.redirect_to = elsewhere.url


# How each outage is logged: its cause, never the document.
OUTAGES = {
    "stopped": "ConnectionRefusedError",
    "http-500": "HTTP 500",
    "http-204": "HTTP 204",
    "not-a-jwks": "not a JWK Set",
    "keys-not-a-list": "not a JWK Set",
    "no-keys": "no usable signing key",
    "redirect": "HTTP 302",
}


@pytest.mark.parametrize("how", list(OUTAGES))
def test_outage_after_start_keeps_cached_kids(
    server: JwksServer, elsewhere: JwksServer, key_a: RSAKey, key_b: RSAKey, *, how: str
) -> None:
    server.publish(key_a)
    app = jwks_app(server.url)
    break_server(server, how, elsewhere)
    # An unknown kid refetches at once (cooldown 0 here); the fetch fails ...
    assert_refused(call(app, mint(key_b, make_claims())), UNKNOWN_KID)
    assert server.hits == (1 if how == "stopped" else 2)
    # ... and the keys fetched before still answer.
    assert call(app, mint(key_a, make_claims(jti="after-outage"))).status_code == 200
    assert ready(app)
    assert elsewhere.hits == 0


@pytest.mark.parametrize("how", list(OUTAGES))
def test_outage_with_nothing_cached_is_503(
    server: JwksServer,
    elsewhere: JwksServer,
    key_a: RSAKey,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    server.publish(key_a)
    break_server(server, how, elsewhere)
    app = jwks_app(server.url)  # starts anyway: the provider may come back
    assert_unavailable(call(app, mint(key_a, make_claims())))
    assert not ready(app)
    assert set(fetch_failures(caplog, server.url)) == {OUTAGES[how]}
    assert elsewhere.hits == 0


def test_retry_after_is_the_refetch_cooldown(server: JwksServer, key_a: RSAKey) -> None:
    server.status = 500
    app = jwks_app(server.url, JWT_JWKS_COOLDOWN_SECONDS=45)
    assert_unavailable(call(app, mint(key_a, make_claims())), retry_after="45")
    assert server.hits == 1  # inside the cooldown: no second fetch


# Documents that made the JSON parser or the key filter raise something unexpected, and the
# cause the failed fetch logs.
HOSTILE_JWKS = {
    "unclosed-arrays": "JSON nested too deeply",
    "deep-keys": "JSON nested too deeply",
    "deep-closed-arrays": "JSON nested too deeply",
    "unhashable-alg": "no usable signing key",
    "not-json": "not JSON",
    "not-utf-8": "not JSON",
}


def hostile_jwks(name: str, key: RSAKey) -> bytes:
    if name == "unclosed-arrays":
        return b"[" * 200_000
    if name == "deep-keys":
        return b'{"keys": ' + b"[" * 200_000
    if name == "deep-closed-arrays":
        return b"[" * 100_000 + b"]" * 100_000
    if name == "unhashable-alg":
        return json.dumps({"keys": [public_jwk(key, alg=["RS256"])]}).encode()
    if name == "not-json":
        return b"<html>Sign in</html>"
    if name == "not-utf-8":
        return b'{"keys": ["\xff\xfe"]}'
    raise ValueError(name)


@pytest.mark.parametrize("name", list(HOSTILE_JWKS))
def test_hostile_jwks_at_start_is_an_outage_not_a_crash(
    raw_server: RawJwksServer, key_a: RSAKey, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    raw_server.body = hostile_jwks(name, key_a)
    app = jwks_app(raw_server.url)  # starts anyway, as for any other unusable document
    assert raw_server.hits == 1
    assert_unavailable(call(app, mint(key_a, make_claims())))
    assert not ready(app)
    assert fetch_failures(caplog, raw_server.url)[0] == HOSTILE_JWKS[name]


@pytest.mark.parametrize("name", list(HOSTILE_JWKS))
def test_hostile_jwks_after_start_keeps_cached_keys(
    raw_server: RawJwksServer, key_a: RSAKey, key_b: RSAKey, name: str
) -> None:
    raw_server.body = json.dumps({"keys": [public_jwk(key_a)]}).encode()
    app = jwks_app(raw_server.url)
    raw_server.body = hostile_jwks(name, key_a)
    # An unknown kid refetches at once (cooldown 0 here), so the hostile document is parsed now.
    unknown = call(app, mint(key_b, make_claims()))
    assert raw_server.hits == 2
    assert_refused(unknown, UNKNOWN_KID)
    assert call(app, mint(key_a, make_claims(jti="after-hostile"))).status_code == 200
    assert ready(app)


MAX_JWKS_BYTES = 512 * 1024


@pytest.mark.parametrize(("size", "usable"), [(MAX_JWKS_BYTES, True), (MAX_JWKS_BYTES + 1, False)])
def test_jwks_document_size_limit(
    raw_server: RawJwksServer,
    key_a: RSAKey,
    caplog: pytest.LogCaptureFixture,
    size: int,
    usable: bool,
) -> None:
    document = json.dumps({"keys": [public_jwk(key_a)]}).encode()
    raw_server.body = document + b" " * (size - len(document))  # JSON allows trailing spaces
    assert len(raw_server.body) == size
    app = jwks_app(raw_server.url)
    response = call(app, mint(key_a, make_claims()))
    if usable:
        assert response.status_code == 200
    else:
        assert_unavailable(response)
        assert set(fetch_failures(caplog, raw_server.url)) == {"document too large"}


def wait_for_fetch_failures(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    """fetch_failures once the background fetch of url has logged one (at most 5 s)."""
    give_up_at = time.monotonic() + 5
    while not fetch_failures(caplog, url) and time.monotonic() < give_up_at:
        time.sleep(0.02)
    return fetch_failures(caplog, url)


def test_an_endless_document_is_cut_at_the_size_limit(
    key_a: RSAKey, caplog: pytest.LogCaptureFixture
) -> None:
    # No Content-Length and a body that never ends: reading stops one byte past the limit
    # instead of reading on until the deadline.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(5)
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                try:
                    while True:
                        connection.sendall(b" " * 65536)
                except OSError:
                    return  # the client hung up

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/jwks-{uuid.uuid4().hex}.json"
        started = time.monotonic()
        app = jwks_app(url, JWT_JWKS_TIMEOUT_SECONDS=3, JWT_JWKS_COOLDOWN_SECONDS=60)
        assert wait_for_fetch_failures(caplog, url) == ["document too large"]
        assert time.monotonic() - started < 2.5
        assert_unavailable(call(app, mint(key_a, make_claims())), retry_after="60")
        thread.join(timeout=5)


def test_a_tls_handshake_that_never_answers_ends_at_the_fetch_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The kernel accepts the connection; nobody ever answers the ClientHello.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/jwks-{uuid.uuid4().hex}.json"
        started = time.monotonic()
        jwks_app(url, JWT_JWKS_TIMEOUT_SECONDS=1)
        assert wait_for_fetch_failures(caplog, url) == ["TimeoutError"]
        assert time.monotonic() - started < 3


def test_a_fetch_runs_on_a_named_daemon_thread(
    server: JwksServer, key_a: RSAKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Daemon: a fetch stuck on its provider never holds up the interpreter's exit. Named: it
    # can be told apart in a thread dump.
    threads: list[tuple[str, bool]] = []
    parse = bearer._parse_jwks

    def spy(document: Any) -> Any:
        thread = threading.current_thread()
        threads.append((thread.name, thread.daemon))
        return parse(document)

    monkeypatch.setattr(bearer, "_parse_jwks", spy)
    server.publish(key_a)
    app = jwks_app(server.url)
    assert call(app, mint(key_a, make_claims())).status_code == 200
    assert threads == [("jwks-fetch", True)]


def test_an_unexpected_error_in_a_document_is_logged_by_its_class_not_its_text(
    server: JwksServer,
    key_a: RSAKey,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the parser raised may quote the document; the log names the exception class only.
    def trip(document: Any) -> Any:
        raise ValueError("quoting the document: k=s3cret")

    monkeypatch.setattr(bearer, "_parse_jwks", trip)
    server.publish(key_a)
    app = jwks_app(server.url)
    assert_unavailable(call(app, mint(key_a, make_claims())))
    assert set(fetch_failures(caplog, server.url)) == {"ValueError"}
    assert "s3cret" not in caplog.text


def test_unreachable_host_with_nothing_cached_is_503(key_a: RSAKey) -> None:
    app = jwks_app(closed_port_url())
    assert_unavailable(call(app, mint(key_a, make_claims())))
    assert not ready(app)


def test_service_recovers_when_the_provider_comes_back(server: JwksServer, key_a: RSAKey) -> None:
    server.publish(key_a)
    server.status = 500
    app = jwks_app(server.url)
    assert_unavailable(call(app, mint(key_a, make_claims())))
    assert not ready(app)
    server.status = 200
    fetches_while_down = server.hits
    assert ready(app)  # the readiness probe itself fetches while no key is known
    # One more fetch, or none when a background fetch started by the failed call got there
    # first: which of the two runs first is up to the scheduler.
    assert server.hits in (fetches_while_down, fetches_while_down + 1)
    recovered_at = server.hits
    assert call(app, mint(key_a, make_claims())).status_code == 200
    assert ready(app)
    assert server.hits == recovered_at  # keys in hand: nothing is fetched again


# --------------------------------------------------------------------- what is fetched


def test_the_request_is_a_get_of_the_url_asking_for_json(server: JwksServer, key_a: RSAKey) -> None:
    server.publish(key_a)
    jwks_app(server.url)  # no query: the path alone, without a stray "?"
    jwks_app(f"{server.url}?tenant=a&x=1")
    unique = uuid.uuid4().hex  # a new URL for this process's key caches
    jwks_app(f"http://127.0.0.1:{server.httpd.server_port}?{unique}")  # no path at all
    assert server.requests == [
        (server.path, "application/json"),
        (f"{server.path}?tenant=a&x=1", "application/json"),
        (f"/?{unique}", "application/json"),
    ]
    # The Host header names the configured port: a provider's virtual host depends on it.
    assert server.hosts == [f"127.0.0.1:{server.httpd.server_port}"] * 3


@pytest.mark.parametrize(
    ("url", "address"),
    [("https://idp.test/jwks", ("idp.test", 443)), ("http://localhost/jwks", ("localhost", 80)),
     ("https://idp.test:8443/jwks", ("idp.test", 8443))],
)  # fmt: skip
def test_a_url_without_a_port_is_fetched_from_the_default_one(
    monkeypatch: pytest.MonkeyPatch, url: str, address: tuple[str, int]
) -> None:
    connections: list[tuple[tuple[str, int], float]] = []

    def refuse(target: tuple[str, int], timeout: float) -> socket.socket:
        connections.append((target, timeout))
        raise ConnectionRefusedError

    monkeypatch.setattr(socket, "create_connection", refuse)
    # A query string makes the URL new to this process's key caches.
    jwks_app(f"{url}?{uuid.uuid4().hex}", JWT_JWKS_TIMEOUT_SECONDS=3)
    [(target, timeout)] = connections
    assert target == address
    assert 2 < timeout <= 3  # the connection too is bounded by the fetch's deadline


# --------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def tls_authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A CA (the file SSL_CERT_FILE will name) and a server context for localhost."""
    directory = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "JWKS test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


@pytest.fixture
def https_server(
    tls_authority: tuple[Path, ssl.SSLContext], key_a: RSAKey
) -> Iterator[tuple[JwksServer, Path]]:
    """A JWKS publishing key_a over https for localhost, and the CA file that trusts it."""
    jwks = JwksServer()
    jwks.publish(key_a)
    ca_file, context = tls_authority
    jwks.httpd.socket = context.wrap_socket(jwks.httpd.socket, server_side=True)
    yield jwks, ca_file
    jwks.stop()


def https_url(server: JwksServer, host: str) -> str:
    return server.url.replace("http://127.0.0.1", f"https://{host}")


def test_https_jwks_is_fetched_from_a_verified_server(
    https_server: tuple[JwksServer, Path], key_a: RSAKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca_file = https_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # what create_default_context() trusts
    app = jwks_app(https_url(server, "localhost"), APP_ENV="production")
    assert call(app, mint(key_a, make_claims())).status_code == 200


@pytest.mark.parametrize(
    ("host", "trusted"),
    [("127.0.0.1", True),  # the certificate names localhost only
     ("localhost", False)],  # signed by a CA nobody trusts
    ids=["wrong-name", "unknown-ca"],
)  # fmt: skip
def test_https_jwks_from_an_unverified_server_is_never_used(
    https_server: tuple[JwksServer, Path],
    key_a: RSAKey,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    *,
    host: str,
    trusted: bool,
) -> None:
    server, ca_file = https_server
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    url = https_url(server, host)
    app = jwks_app(url)
    assert_unavailable(call(app, mint(key_a, make_claims())))
    assert set(fetch_failures(caplog, url)) == {"SSLCertVerificationError"}


# --------------------------------------------------------------------- refetch storm


def test_unknown_kids_refetch_at_most_once_per_cooldown(server: JwksServer, key_a: RSAKey) -> None:
    server.publish(key_a)
    app = jwks_app(server.url, JWT_JWKS_COOLDOWN_SECONDS=1)
    assert server.hits == 1
    tokens = [mint(key_a, make_claims(), kid=f"random-{n}") for n in range(20)]
    statuses: list[int] = []

    def storm() -> None:
        threads = [
            threading.Thread(target=lambda t=token: statuses.append(call(app, t).status_code))
            for token in tokens
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    storm()  # inside the cooldown that the start-up fetch began: no fetch at all
    assert server.hits == 1
    time.sleep(1.1)
    storm()  # cooldown over: one fetch for the whole storm
    assert server.hits == 2
    storm()
    assert server.hits == 2
    assert statuses == [401] * 60


# --------------------------------------------------------------------- slow providers


@pytest.fixture
def trickling() -> Iterator[TricklingJwksServer]:
    jwks = TricklingJwksServer()
    yield jwks
    jwks.stop()


DEADLINE = 1  # JWT_JWKS_TIMEOUT_SECONDS in these tests
# What a request that must not wait may take on a loaded CI machine.
PROMPT = 1.0


def timed(function: Callable[[], Any], limit: float) -> tuple[Any, float]:
    """Run function in a thread; give up waiting after `limit` seconds (then the result is
    None), so a test against a blocking implementation fails instead of hanging."""
    results: list[Any] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: results.append(function()), daemon=True)
    worker.start()
    worker.join(timeout=limit)
    return (results[0] if results else None), time.monotonic() - started


def test_start_against_a_stalled_provider_ends_at_the_deadline(
    trickling: TricklingJwksServer, key_a: RSAKey
) -> None:
    trickling.publish(key_a)
    trickling.trickle = True
    app, elapsed = timed(
        lambda: jwks_app(trickling.url, JWT_JWKS_TIMEOUT_SECONDS=DEADLINE), DEADLINE + 5
    )
    assert app is not None, f"init_app still waiting after {elapsed:.1f} s"
    assert elapsed < DEADLINE + PROMPT
    response, elapsed = timed(lambda: call(app, mint(key_a, make_claims())), DEADLINE + 5)
    assert response is not None
    assert response.status_code == 503
    assert elapsed < DEADLINE + PROMPT


def test_unknown_kids_wait_at_most_the_deadline_on_a_stalled_provider(
    trickling: TricklingJwksServer, key_a: RSAKey, key_b: RSAKey
) -> None:
    trickling.publish(key_a)
    app = jwks_app(trickling.url, JWT_JWKS_TIMEOUT_SECONDS=DEADLINE)
    trickling.trickle = True
    answers: list[int] = []

    def unknown_kid() -> None:
        answers.append(call(app, mint(key_b, make_claims())).status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=unknown_kid, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # the fetch is now stalled
    cached, elapsed = timed(lambda: call(app, mint(key_a, make_claims(jti="c"))), 10)
    assert cached is not None
    assert cached.status_code == 200
    assert elapsed < PROMPT, f"a cached kid waited {elapsed:.1f} s"
    for thread in threads:
        thread.join(timeout=DEADLINE + 5 - (time.monotonic() - started))
    assert answers == [401] * 4, f"after {time.monotonic() - started:.1f} s: {answers}"
    assert time.monotonic() - started < DEADLINE + PROMPT


def test_a_due_refresh_never_holds_up_a_cached_kid(
    trickling: TricklingJwksServer, key_a: RSAKey
) -> None:
    trickling.publish(key_a)
    app = jwks_app(trickling.url, JWT_JWKS_TIMEOUT_SECONDS=DEADLINE, JWT_JWKS_CACHE_SECONDS=1)
    trickling.trickle = True
    time.sleep(1.1)  # the cached key set is due for a refresh, which will stall
    for n in range(3):
        token = mint(key_a, make_claims(jti=f"due-{n}"))
        response, elapsed = timed(functools.partial(call, app, token), 10)
        assert response is not None
        assert response.status_code == 200
        assert elapsed < PROMPT, f"request {n} waited {elapsed:.1f} s for the refresh"
    assert ready(app)


def test_refresh_runs_after_the_deadline_again(
    trickling: TricklingJwksServer, key_a: RSAKey, key_b: RSAKey
) -> None:
    # A stalled fetch that ran into its deadline must not leave the cache stuck "fetching".
    trickling.publish(key_a)
    app = jwks_app(trickling.url, JWT_JWKS_TIMEOUT_SECONDS=1)
    trickling.trickle = True
    assert call(app, mint(key_b, make_claims())).status_code == 401
    trickling.trickle = False
    trickling.publish(key_a, key_b)
    time.sleep(1.2)
    assert call(app, mint(key_b, make_claims())).status_code == 200


def test_a_name_that_resolves_slowly_never_holds_a_request_past_the_deadline(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Name resolution is outside the fetch's own deadline (getaddrinfo takes no timeout), so
    # the waiting request bounds its own wait.
    server.publish(key_a)
    url = server.url.replace("127.0.0.1", "localhost")
    app = jwks_app(url, JWT_JWKS_TIMEOUT_SECONDS=DEADLINE)
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        time.sleep(DEADLINE + 2)
        return real_getaddrinfo(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    response, elapsed = timed(lambda: call(app, mint(key_b, make_claims())), DEADLINE + 5)
    assert response is not None
    assert_refused(response, UNKNOWN_KID)
    assert elapsed < DEADLINE + PROMPT


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_worker_forked_during_a_fetch_fetches_for_itself(
    trickling: TricklingJwksServer, key_a: RSAKey, key_b: RSAKey
) -> None:
    # gunicorn builds the app in its master and forks the workers: a fetch in flight in the
    # master has no thread in the worker, which must not wait for it forever.
    trickling.publish(key_a)
    app = jwks_app(trickling.url, JWT_JWKS_TIMEOUT_SECONDS=DEADLINE)
    trickling.trickle = True
    threading.Thread(target=call, args=(app, mint(key_b, make_claims())), daemon=True).start()
    time.sleep(0.2)  # the master's fetch is now stalled
    go, ready_to_go = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            os.read(go, 1)
            jwks_app(trickling.url, JWT_JWKS_TIMEOUT_SECONDS=DEADLINE)  # a worker's own app
            os._exit(0 if call(app, mint(key_b, make_claims())).status_code == 200 else 1)
        finally:
            os._exit(2)
    trickling.trickle = False
    trickling.publish(key_a, key_b)
    os.write(ready_to_go, b"x")
    give_up_at = time.monotonic() + DEADLINE + 5
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < give_up_at:
        time.sleep(0.05)
    if waited == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the worker hung")
    assert os.waitstatus_to_exitcode(waited[1]) == 0, "the worker did not get the new key"


# --- the clock's boundaries: a reading exactly at a limit counts as having reached it ---------


class _FrozenClock:
    """bearer's view of the time module, with monotonic() stopped at ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _keys_at(monkeypatch: pytest.MonkeyPatch, now: float) -> bearer._JwksKeys:
    monkeypatch.setattr(bearer, "time", _FrozenClock(now))
    return bearer._JwksKeys("https://idp.invalid/jwks", max_age=300, cooldown=30, timeout=2)


def test_a_key_set_exactly_max_age_old_is_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _keys_at(monkeypatch, 1300.0)
    keys._fetched_at = 1000.0
    refreshes: list[bool] = []

    def refresh(*, wait: bool) -> None:
        refreshes.append(wait)

    monkeypatch.setattr(keys, "refresh", refresh)
    keys.refresh_if_stale()
    assert refreshes == [False]


def test_a_refetch_exactly_one_cooldown_after_the_last_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = _keys_at(monkeypatch, 1030.0)
    keys._attempted_at = 1000.0
    assert keys._cooldown_over() is True
    keys._attempted_at = 1000.5
    assert keys._cooldown_over() is False


def test_a_fetch_deadline_reached_exactly_has_no_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bearer, "time", _FrozenClock(50.0))
    assert bearer._time_left(50.5) == 0.5
    with pytest.raises(TimeoutError):
        bearer._time_left(50.0)


def test_the_at_fork_hook_gives_every_shared_key_set_fresh_locks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Run in this process: what the hook does in a forked child, where mutation testing cannot
    # see it (the fork test shows the child itself).
    keys = bearer._JwksKeys("https://idp.invalid/jwks", max_age=300, cooldown=30, timeout=2)
    monkeypatch.setitem(bearer._JWKS_CLIENTS, ("https://idp.invalid/jwks", 300, 30, 2), keys)
    held_lock = keys._lock
    held_lock.acquire()
    keys._fetching = True
    shared_lock = bearer._JWKS_CLIENTS_LOCK
    monkeypatch.setattr(bearer, "_JWKS_CLIENTS_LOCK", shared_lock)
    try:
        bearer._reset_jwks_clients_after_fork()
        assert bearer._JWKS_CLIENTS_LOCK is not shared_lock
        assert not bearer._JWKS_CLIENTS_LOCK.locked()
        assert keys._lock is not held_lock
        assert not keys._lock.locked()
        assert keys._fetching is False
    finally:
        held_lock.release()
