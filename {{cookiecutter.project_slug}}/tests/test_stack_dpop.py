"""DPoP end to end: client -> nginx (TLS) -> gunicorn workers -> app (scripts/devstack).

The in-process tests (test_dpop.py) try every defect; these check what only the real stack
shows: htu is the URL the client called through nginx (its server name and public port), a
proof replayed concurrently to several worker processes is accepted once (SQLite and Redis
replay stores), and neither token nor proof reaches a log.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey

import stack
import test_webhooks_processes
from jose_helpers import bound_to, dpop_proof, make_claims, mint

pytestmark = [pytest.mark.stack, pytest.mark.filterwarnings("ignore:EdDSA is deprecated")]

LiveStack = stack.LiveStack
Response = stack.Response
redis_server = test_webhooks_processes.redis_server
REPLAYS = 8


@pytest.fixture(scope="module")
def client_key() -> ECKey:
    return ECKey.generate_key("P-256")


def bound_token(live: LiveStack, key: ECKey, **claims: Any) -> str:
    issuer_key = RSAKey.import_key(live.private_key_pem)
    values = {"iss": live.issuer, "aud": live.audience, **bound_to(key), **claims}
    return mint(issuer_key, make_claims(**values))


def dpop_headers(token: str, proof: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def dpop_challenge(response: Response) -> dict[str, str]:
    header = response.header("WWW-Authenticate") or ""
    challenge = header[header.index("DPoP ") :]
    return dict(re.findall(r'(\w+)="([^"]*)"', challenge))


def test_bound_token_with_proof_passes_through_nginx(
    live_stack: LiveStack, client_key: ECKey
) -> None:
    token = bound_token(live_stack, client_key, scope="items:read items:write")
    url = live_stack.url("/api/v1/items")
    read = live_stack.https("GET", "/api/v1/items?page=1", headers=dpop_headers(
        token, dpop_proof(client_key, "GET", url, token)))  # fmt: skip
    assert read.status == 200, read.body
    body = json.dumps({"name": "dpop"}).encode()
    headers = {**dpop_headers(token, dpop_proof(client_key, "POST", url, token)),
               "Content-Type": "application/json"}  # fmt: skip
    assert live_stack.https("POST", "/api/v1/items", headers=headers, body=body).status == 201


@pytest.mark.parametrize(
    "htu",
    ["https://127.0.0.1:{port}/api/v1/me", "https://localhost/api/v1/me",
     "http://localhost:{port}/api/v1/me", "https://localhost:{port}/api/v1/me/"],
    ids=["another-server-name", "without-the-public-port", "plain-http", "other-path"],
)  # fmt: skip
def test_proof_for_another_url_than_the_one_called_is_refused(
    live_stack: LiveStack, client_key: ECKey, htu: str
) -> None:
    token = bound_token(live_stack, client_key)
    proof = dpop_proof(client_key, "GET", htu.format(port=live_stack.https_port), token)
    response = live_stack.https("GET", "/api/v1/me", headers=dpop_headers(token, proof))
    assert response.status == 401
    assert dpop_challenge(response)["error"] == "invalid_dpop_proof"


def test_bound_token_sent_as_bearer_is_refused(live_stack: LiveStack, client_key: ECKey) -> None:
    token = bound_token(live_stack, client_key)
    proof = dpop_proof(client_key, "GET", live_stack.url("/api/v1/me"), token)
    headers = {"Authorization": f"Bearer {token}", "DPoP": proof}
    response = live_stack.https("GET", "/api/v1/me", headers=headers)
    assert response.status == 401
    assert json.loads(response.body)["error"] == "invalid_token"


def test_two_dpop_headers_are_refused(live_stack: LiveStack, client_key: ECKey) -> None:
    token = bound_token(live_stack, client_key)
    url = live_stack.url("/api/v1/me")
    connection = http.client.HTTPConnection("127.0.0.1", live_stack.https_port, timeout=10)
    connection.sock = live_stack.ssl_context().wrap_socket(
        socket.create_connection(("127.0.0.1", live_stack.https_port), timeout=10),
        server_hostname=live_stack.server_name,
    )
    try:
        connection.putrequest("GET", "/api/v1/me", skip_host=True)
        connection.putheader("Host", live_stack.host_header())
        connection.putheader("Authorization", f"DPoP {token}")
        for _ in range(2):
            connection.putheader("DPoP", dpop_proof(client_key, "GET", url, token))
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 401
        assert json.loads(answer.read())["error"] == "invalid_dpop_proof"
    finally:
        connection.close()


def replay_concurrently(live: LiveStack, headers: dict[str, str]) -> list[Response]:
    """The same request on REPLAYS connections at once; gunicorn spreads them over workers."""
    answers: list[Response] = []
    start = threading.Barrier(REPLAYS)

    def send() -> None:
        start.wait(timeout=10)
        answers.append(live.https("GET", "/api/v1/me", headers=headers))

    threads = [threading.Thread(target=send) for _ in range(REPLAYS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return answers


def assert_accepted_once(answers: list[Response]) -> None:
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [200] + [401] * (REPLAYS - 1), statuses
    refused = [json.loads(answer.body) for answer in answers if answer.status == 401]
    assert {body["detail"] for body in refused} == {"The DPoP proof was already used (jti)"}


def test_proof_replayed_to_several_workers_is_accepted_once_with_sqlite(
    live_stack: LiveStack, client_key: ECKey
) -> None:
    assert int(live_stack.env["WEB_CONCURRENCY"]) >= 2
    token = bound_token(live_stack, client_key)
    proof = dpop_proof(client_key, "GET", live_stack.url("/api/v1/me"), token)
    assert_accepted_once(replay_concurrently(live_stack, dpop_headers(token, proof)))


def test_proof_replayed_to_several_workers_is_accepted_once_with_redis(
    start_stack: Callable[..., LiveStack], redis_server: tuple[str, Any], client_key: ECKey
) -> None:
    url, _ = redis_server
    live = start_stack(settings={"REPLAY_STORE_URL": url, "WEB_CONCURRENCY": "3"})
    token = bound_token(live, client_key)
    proof = dpop_proof(client_key, "GET", live.url("/api/v1/me"), token)
    assert_accepted_once(replay_concurrently(live, dpop_headers(token, proof)))
    fresh = dpop_proof(client_key, "GET", live.url("/api/v1/me"), token)
    assert live.https("GET", "/api/v1/me", headers=dpop_headers(token, fresh)).status == 200


def test_no_token_or_proof_reaches_any_log(live_stack: LiveStack, client_key: ECKey) -> None:
    token = bound_token(live_stack, client_key)
    proof = dpop_proof(client_key, "GET", live_stack.url("/api/v1/me"), token)
    live_stack.https("GET", "/api/v1/me", headers=dpop_headers(token, proof))
    live_stack.https("GET", "/api/v1/me", headers=dpop_headers(token, proof))  # replay: refused
    time.sleep(1.0)  # access lines are written after the response
    logs = [path for path in live_stack.log_dir.rglob("*") if path.is_file()]
    assert logs
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in (token, proof):
            assert secret.split(".")[2] not in text, f"a signature in {path.name}"
