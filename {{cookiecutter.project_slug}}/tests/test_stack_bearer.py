"""Bearer tokens end to end: client -> nginx (TLS) -> gunicorn -> app (scripts/devstack).

The in-process tests (test_bearer*.py) cover every case; these check that the real stack keeps
the answers intact (challenges, problem bodies, duplicate headers) and that no token reaches
any log file, then run the JWKS outage cases against real gunicorn workers.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from jose_helpers import (
    MISSING,
    JwksServer,
    TricklingJwksServer,
    hs256_token,
    make_claims,
    mint,
    segment,
    unsigned_token,
)
from stack import LiveStack, Response

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack_key(live_stack: LiveStack) -> RSAKey:
    return RSAKey.import_key(live_stack.private_key_pem)


@pytest.fixture(scope="module")
def other_key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture
def token_for(live_stack: LiveStack, stack_key: RSAKey) -> Callable[..., str]:
    def build(key: RSAKey | None = None, **claims: Any) -> str:
        values = {"iss": live_stack.issuer, "aud": live_stack.audience, **claims}
        return mint(key or stack_key, make_claims(**values))

    return build


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def challenge(response: Response) -> dict[str, str]:
    header = response.header("WWW-Authenticate") or ""
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.header("Content-Type") == "application/problem+json"
    body: dict[str, Any] = json.loads(response.body)
    assert body["status"] == status
    return body


def https_with_repeated_header(stack: LiveStack, path: str, name: str, values: list[str]) -> int:
    """http.client.putheader keeps repeats, which LiveStack.https's mapping cannot express."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.https_port, timeout=10)
    connection.sock = stack.ssl_context().wrap_socket(
        socket.create_connection(("127.0.0.1", stack.https_port), timeout=10),
        server_hostname=stack.server_name,
    )
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", stack.host_header())
        for value in values:
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


# --------------------------------------------------------------------- accepted


def test_valid_token_reads_and_writes_items(live_stack: LiveStack, token_for: Any) -> None:
    token = token_for(scope="items:read items:write")
    me = live_stack.https("GET", "/api/v1/me", headers=bearer(token))
    assert me.status == 200
    assert json.loads(me.body)["sub"] == "alice"
    name = f"stack-{uuid.uuid4().hex}"
    created = live_stack.https(
        "POST",
        "/api/v1/items",
        headers={**bearer(token), "Content-Type": "application/json"},
        body=json.dumps({"name": name}).encode(),
    )
    assert created.status == 201
    assert json.loads(created.body)["name"] == name


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer  "], ids=repr)
def test_scheme_variants_pass_through_nginx(
    live_stack: LiveStack, token_for: Any, scheme: str
) -> None:
    response = live_stack.https("GET", "/api/v1/items", headers=bearer(token_for(), scheme))
    assert response.status == 200


# --------------------------------------------------------------------- refused


def test_no_token_gets_bare_challenge(live_stack: LiveStack) -> None:
    response = live_stack.https("GET", "/api/v1/items")
    problem(response, 401)
    assert response.header("WWW-Authenticate") == (
        'Bearer realm="api", DPoP realm="api", algs="ES256 RS256 PS256 EdDSA"'
    )


def test_two_authorization_headers_are_invalid_request(
    live_stack: LiveStack, token_for: Any
) -> None:
    token = token_for()
    values = [f"Bearer {token}", f"Bearer {token}"]
    assert https_with_repeated_header(live_stack, "/api/v1/items", "Authorization", values) == 400


def test_token_in_query_string_is_invalid_request(live_stack: LiveStack, token_for: Any) -> None:
    response = live_stack.https("GET", f"/api/v1/items?access_token={token_for()}")
    problem(response, 400)
    assert challenge(response)["error"] == "invalid_request"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


HOSTILE: dict[str, Callable[[Any, RSAKey, RSAKey], str]] = {
    "expired": lambda t, k, o: t(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "wrong-audience": lambda t, k, o: t(aud="https://other.test"),
    "wrong-issuer": lambda t, k, o: t(iss="https://evil.test/"),
    "missing-sub": lambda t, k, o: t(sub=MISSING),
    "non-string-sub": lambda t, k, o: t(sub=42),
    "other-key": lambda t, k, o: t(key=o),
    # Hand-built: the claims are valid, only the algorithm is hostile.
    "alg-none": lambda t, k, o: unsigned_token({"alg": "none"}, claims_of(t())),
    "hs256-public-pem": lambda t, k, o: hs256_token(
        k.as_pem(private=False), {"alg": "HS256"}, claims_of(t())
    ),
    "tampered-payload": lambda t, k, o: ".".join(
        [t().split(".")[0], segment(make_claims(scope="admin")), t().split(".")[2]]
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_token_is_invalid_token(
    live_stack: LiveStack, token_for: Any, stack_key: RSAKey, other_key: RSAKey, case: str
) -> None:
    token = HOSTILE[case](token_for, stack_key, other_key)
    response = live_stack.https("GET", "/api/v1/items", headers=bearer(token))
    problem(response, 401)
    assert challenge(response)["error"] == "invalid_token"
    assert token not in response.body.decode()


def test_missing_scope_is_insufficient_scope(live_stack: LiveStack, token_for: Any) -> None:
    response = live_stack.https(
        "POST",
        "/api/v1/items",
        headers={**bearer(token_for(scope="items:read")), "Content-Type": "application/json"},
        body=b'{"name": "x"}',
    )
    problem(response, 403)
    assert challenge(response)["scope"] == "items:write"


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [("text/plain", b"x", 415), ("application/json", b"{", 400), ("application/json", b"[]", 422)],
    ids=["not-json", "malformed", "bad-shape"],
)
def test_bad_item_bodies_are_problems(
    live_stack: LiveStack, token_for: Any, content_type: str, body: bytes, status: int
) -> None:
    headers = {**bearer(token_for(scope="items:write")), "Content-Type": content_type}
    problem(live_stack.https("POST", "/api/v1/items", headers=headers, body=body), status)


def test_no_token_reaches_any_log(live_stack: LiveStack, token_for: Any) -> None:
    good, expired = token_for(), token_for(exp=int(time.time()) - 3600, iat=0)
    live_stack.https("GET", "/api/v1/items", headers=bearer(good))
    live_stack.https("GET", "/api/v1/items", headers=bearer(expired))
    live_stack.https("GET", f"/api/v1/items?access_token={good}")
    live_stack.https("GET", f"/nowhere?access_token={expired}")
    time.sleep(1.0)  # access lines are written after the response
    logs = [path for path in live_stack.log_dir.rglob("*") if path.is_file()]
    assert logs
    signatures = [good.split(".")[2], expired.split(".")[2]]
    for path in logs:
        text = path.read_text(errors="replace")
        for signature in signatures:
            assert signature not in text, f"token in {path.name}"


# --------------------------------------------------------------------- JWKS through workers


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def jwks_settings(url: str) -> dict[str, str]:
    return {"JWT_JWKS_URL": url, "JWT_PUBLIC_KEY_FILE": "", "WEB_CONCURRENCY": "2"}


def test_jwks_outage_after_start_keeps_cached_keys(
    start_stack: Callable[..., LiveStack], jwks_server: JwksServer, other_key: RSAKey
) -> None:
    jwks_server.publish(other_key)
    stack = start_stack(settings=jwks_settings(jwks_server.url))
    claims = make_claims(iss=stack.issuer, aud=stack.audience)
    assert stack.https("GET", "/api/v1/me", headers=bearer(mint(other_key, claims))).status == 200
    for _ in range(6):
        stack.https("GET", "/api/v1/me", headers=bearer(mint(other_key, claims)))
    # Once per worker (and the master, if it preloads), not per request. A worker may boot and
    # fetch after the first answer came from its sibling, so only the bound is exact.
    assert 1 <= jwks_server.hits <= 3
    jwks_server.stop()
    for _ in range(4):  # every worker still answers from its cached keys
        response = stack.https("GET", "/api/v1/me", headers=bearer(mint(other_key, claims)))
        assert response.status == 200
    assert stack.https("GET", "/readyz").status == 200


def test_jwks_unreachable_from_start_is_503(
    start_stack: Callable[..., LiveStack], other_key: RSAKey
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stack = start_stack(settings=jwks_settings(f"http://127.0.0.1:{port}/jwks-{uuid.uuid4()}"))
    claims = make_claims(iss=stack.issuer, aud=stack.audience)
    response = stack.https("GET", "/api/v1/me", headers=bearer(mint(other_key, claims)))
    problem(response, 503)
    assert stack.https("GET", "/readyz").status == 503
    assert stack.https("GET", "/healthz").status == 200


def test_slow_jwks_provider_never_stalls_a_worker(
    start_stack: Callable[..., LiveStack], other_key: RSAKey
) -> None:
    # One worker process, forked from the master that built the app and fetched the keys
    # first: its fetches run on a thread the worker starts itself.
    provider = TricklingJwksServer()
    unknown_key = RSAKey.generate_key(2048)
    try:
        provider.publish(other_key)
        settings = {
            **jwks_settings(provider.url),
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "4",
            "JWT_JWKS_TIMEOUT_SECONDS": "2",
            "JWT_JWKS_CACHE_SECONDS": "1",
            "JWT_JWKS_COOLDOWN_SECONDS": "0",
        }
        stack = start_stack(settings=settings)
        claims = make_claims(iss=stack.issuer, aud=stack.audience)
        cached = bearer(mint(other_key, claims))
        assert stack.https("GET", "/api/v1/me", headers=cached).status == 200
        provider.trickle = True  # from now on every fetch stalls, one byte a second
        time.sleep(1.1)  # and the cached key set is due for a refresh
        unknown: list[tuple[int, float]] = []

        def call_with_unknown_kid() -> None:
            started = time.monotonic()
            status = stack.https("GET", "/api/v1/me", headers=bearer(mint(unknown_key, claims)))
            unknown.append((status.status, time.monotonic() - started))

        callers = [threading.Thread(target=call_with_unknown_kid) for _ in range(2)]
        for caller in callers:
            caller.start()
        time.sleep(0.3)  # both now wait on a stalled fetch, on two of the four threads
        for path, headers in [("/api/v1/me", cached), ("/healthz", {})] * 3:
            started = time.monotonic()
            assert stack.https("GET", path, headers=headers).status == 200
            assert time.monotonic() - started < 1.0, f"{path} waited on the stalled fetch"
        for caller in callers:
            caller.join(timeout=15)
        assert [status for status, _ in unknown] == [401, 401]
        assert all(elapsed < 2 + 1.5 for _, elapsed in unknown), unknown
        # The stalled fetches ended at their deadline and left nothing stuck: once the
        # provider answers again, a new key is fetched and accepted.
        provider.trickle = False
        provider.publish(other_key, unknown_key)
        response = stack.https("GET", "/api/v1/me", headers=bearer(mint(unknown_key, claims)))
        assert response.status == 200
    finally:
        provider.stop()
