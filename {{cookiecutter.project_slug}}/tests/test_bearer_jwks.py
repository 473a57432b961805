"""bearer.py with keys from a JWKS served by a real HTTP server on 127.0.0.1.

Start-up fetch, no fetch per request, key rotation (also in the middle of a verification),
provider outages with and without cached keys, hostile JWKS documents, and a refetch storm
bounded by the cooldown.
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from flask import Flask
from joserfc.jwk import RSAKey
from werkzeug.test import TestResponse

from jose_helpers import JwksServer, TricklingJwksServer, make_claims, mint, public_jwk
from {{ cookiecutter.package_name }} import bearer


@pytest.fixture(scope="module")
def key_a() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture(scope="module")
def key_b() -> RSAKey:
    return RSAKey.generate_key(2048)


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
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
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


def error_of(response: TestResponse) -> str:
    return str(response.get_json().get("error"))


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
    response = call(jwks_app(server.url), mint(key_b, make_claims()))
    assert response.status_code == 401
    assert error_of(response) == "invalid_token"
    assert response.get_json()["detail"] == "The access token was signed by an unknown key"


def test_other_key_with_same_kid_is_invalid_token(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey
) -> None:
    server.publish(key_a)
    token = mint(key_b, make_claims(), kid=key_a.thumbprint())
    response = call(jwks_app(server.url), token)
    assert response.status_code == 401
    assert response.get_json()["detail"] == "The access token signature is invalid"


def test_token_without_kid_is_invalid_token(server: JwksServer, key_a: RSAKey) -> None:
    server.publish(key_a)
    no_kid = jwt.encode(
        make_claims(), key_a.as_pem(private=True), algorithm="RS256", headers={"typ": "at+jwt"}
    )
    assert "kid" not in jwt.get_unverified_header(no_kid)
    response = call(jwks_app(server.url), no_kid)
    assert response.status_code == 401
    assert response.get_json()["detail"] == "The access token has no key id"


def test_key_published_for_one_alg_is_not_used_with_another(
    server: JwksServer, key_a: RSAKey
) -> None:
    server.publish(key_a, alg="RS256", use="sig")
    app = jwks_app(server.url, JWT_ALGORITHMS=("RS256", "PS256"))
    assert call(app, mint(key_a, make_claims(), alg="RS256")).status_code == 200
    response = call(app, mint(key_a, make_claims(), alg="PS256"))
    assert response.status_code == 401
    assert error_of(response) == "invalid_token"


def test_encryption_and_private_keys_are_not_used(server: JwksServer, key_a: RSAKey) -> None:
    private = key_a.as_dict(private=True) | {"kid": "private"}
    encryption = public_jwk(key_a, use="enc") | {"kid": "encryption"}
    server.document = {"keys": [private, encryption]}
    app = jwks_app(server.url)
    for kid in ("private", "encryption"):
        response = call(app, mint(key_a, make_claims(), kid=kid))
        assert response.status_code == 503  # nothing usable was ever published


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
    response = call(app, old_token)  # ... the next one sees the new key set
    assert response.status_code == 401
    assert error_of(response) == "invalid_token"
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
    response = call(app, token)
    assert response.status_code == 401
    assert response.get_json()["detail"] == "The access token was signed by an unknown key"
    assert call(app, mint(key_b, make_claims())).status_code == 200


# --------------------------------------------------------------------- outages


def break_server(server: JwksServer, how: str) -> None:
    if how == "stopped":
        server.stop()
    elif how == "http-500":
        server.status = 500
    elif how == "not-a-jwks":
        server.document = ["not", "a", "jwks"]
    elif how == "no-keys":
        server.document = {"keys": []}
    elif how == "redirect":
        server.redirect_to = "http://127.0.0.1:9/elsewhere.json"


OUTAGES = ["stopped", "http-500", "not-a-jwks", "no-keys", "redirect"]


@pytest.mark.parametrize("how", OUTAGES)
def test_outage_after_start_keeps_cached_kids(
    server: JwksServer, key_a: RSAKey, key_b: RSAKey, how: str
) -> None:
    server.publish(key_a)
    app = jwks_app(server.url, JWT_JWKS_CACHE_SECONDS=1)
    break_server(server, how)
    time.sleep(1.1)  # the cache is due for a refresh, which fails
    assert call(app, mint(key_a, make_claims(jti="after-outage"))).status_code == 200
    unknown = call(app, mint(key_b, make_claims()))
    assert (unknown.status_code, error_of(unknown)) == (401, "invalid_token")
    assert ready(app)


@pytest.mark.parametrize("how", OUTAGES)
def test_outage_with_nothing_cached_is_503(server: JwksServer, key_a: RSAKey, how: str) -> None:
    server.publish(key_a)
    break_server(server, how)
    app = jwks_app(server.url)  # starts anyway: the provider may come back
    response = call(app, mint(key_a, make_claims()))
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 503
    assert "Retry-After" in response.headers
    assert not ready(app)


HOSTILE_JWKS = ["unclosed-arrays", "deep-keys", "deep-closed-arrays", "unhashable-alg"]


def hostile_jwks(name: str, key: RSAKey) -> bytes:
    """Documents that made the JSON parser or the key filter raise something unexpected."""
    if name == "unclosed-arrays":
        return b"[" * 200_000
    if name == "deep-keys":
        return b'{"keys": ' + b"[" * 200_000
    if name == "deep-closed-arrays":
        return b"[" * 100_000 + b"]" * 100_000
    if name == "unhashable-alg":
        return json.dumps({"keys": [public_jwk(key, alg=["RS256"])]}).encode()
    raise ValueError(name)


@pytest.mark.parametrize("name", HOSTILE_JWKS)
def test_hostile_jwks_at_start_is_an_outage_not_a_crash(
    raw_server: RawJwksServer, key_a: RSAKey, name: str
) -> None:
    raw_server.body = hostile_jwks(name, key_a)
    app = jwks_app(raw_server.url)  # starts anyway, as for any other unusable document
    assert raw_server.hits == 1
    response = call(app, mint(key_a, make_claims()))
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert not ready(app)


@pytest.mark.parametrize("name", HOSTILE_JWKS)
def test_hostile_jwks_after_start_keeps_cached_keys(
    raw_server: RawJwksServer, key_a: RSAKey, key_b: RSAKey, name: str
) -> None:
    raw_server.body = json.dumps({"keys": [public_jwk(key_a)]}).encode()
    app = jwks_app(raw_server.url)
    raw_server.body = hostile_jwks(name, key_a)
    # An unknown kid refetches at once (cooldown 0 here), so the hostile document is parsed now.
    unknown = call(app, mint(key_b, make_claims()))
    assert raw_server.hits == 2
    assert unknown.status_code == 401, unknown.get_data(as_text=True)[:200]
    assert error_of(unknown) == "invalid_token"
    assert call(app, mint(key_a, make_claims(jti="after-hostile"))).status_code == 200
    assert ready(app)


def test_unreachable_host_with_nothing_cached_is_503(key_a: RSAKey) -> None:
    app = jwks_app(closed_port_url())
    assert call(app, mint(key_a, make_claims())).status_code == 503
    assert not ready(app)


def test_service_recovers_when_the_provider_comes_back(server: JwksServer, key_a: RSAKey) -> None:
    server.publish(key_a)
    server.status = 500
    app = jwks_app(server.url)
    assert call(app, mint(key_a, make_claims())).status_code == 503
    server.status = 200
    assert call(app, mint(key_a, make_claims())).status_code == 200
    assert ready(app)


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


DEADLINE = 2  # JWT_JWKS_TIMEOUT_SECONDS in these tests
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


def test_cache_defaults(server: JwksServer, key_a: RSAKey) -> None:
    server.publish(key_a)
    app = Flask("defaults")
    app.config.update(
        APP_ENV="test",
        JWT_ISSUER="https://issuer.test/",
        JWT_AUDIENCE="https://api.test",
        JWT_JWKS_URL=server.url,
    )
    bearer.init_app(app)
    keys = app.extensions["bearer"].keys
    assert (keys.cooldown, keys.max_age, keys.timeout) == (30, 300, 5)
