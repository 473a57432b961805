"""DPoP (RFC 9449) on a bare Flask app: bearer.py, dpop.py and a replay store, nothing else.

Tokens and proofs come from joserfc, an independent JOSE library, and from PyJWT; hostile
proofs are built by hand. Every defect of a proof is tried alone, on an otherwise valid proof,
so each refusal is known to come from that one check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey, OKPKey, RSAKey
from werkzeug.test import TestResponse

from jose_helpers import (
    AUDIENCE,
    ISSUER,
    MISSING,
    JoseKey,
    b64url,
    bound_to,
    dpop_proof,
    make_claims,
    mint,
    segment,
)
from {{ cookiecutter.package_name }} import bearer, dpop, webhooks

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

BASE_URL = "https://api.test"
READ_URL = f"{BASE_URL}/read"
LIBRARIES = ["joserfc", "pyjwt"]
ALGS = 'algs="ES256 RS256 PS256 EdDSA"'


@pytest.fixture(scope="session")
def issuer_key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture(scope="session")
def client_key() -> ECKey:
    return ECKey.generate_key("P-256")


@pytest.fixture(scope="session")
def other_key() -> ECKey:
    return ECKey.generate_key("P-256")


@pytest.fixture
def public_key_file(tmp_path: Path, issuer_key: RSAKey) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(issuer_key.as_pem(private=False))
    return path


class BrokenStore:
    def claim(self, key: str, lease_seconds: int, owner: str) -> str:
        raise webhooks.StoreUnavailable("down")


def dpop_app(public_key_file: Path, store: Any = None, **config: Any) -> Flask:
    app = Flask("dpop_only")
    app.config.update(
        {"APP_ENV": "test", "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
         "JWT_PUBLIC_KEY_FILE": str(public_key_file), **config}
    )  # fmt: skip
    bearer.init_app(app)
    dpop.init_app(app, store=store or webhooks.MemoryReplayStore())

    @app.route("/read", methods=["GET", "POST"])
    @bearer.require_scopes("items:read")
    def read() -> dict[str, Any]:
        return {"sub": bearer.current_principal().sub}

    @app.get("/write")
    @bearer.require_scopes("items:write")
    def write() -> dict[str, Any]:
        return {}

    return app


@pytest.fixture
def make_client(public_key_file: Path) -> Callable[..., FlaskClient]:
    def build(store: Any = None, **config: Any) -> FlaskClient:
        return dpop_app(public_key_file, store, **config).test_client()

    return build


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    return make_client()


@pytest.fixture
def token(issuer_key: RSAKey, client_key: ECKey) -> str:
    return mint(issuer_key, make_claims(**bound_to(client_key)))


def call(
    client: FlaskClient, token: str, proof: str | list[str] | None, *, method: str = "GET",
    path: str = "/read", scheme: str = "DPoP",
) -> TestResponse:  # fmt: skip
    headers = [("Authorization", f"{scheme} {token}")]
    proofs = proof if isinstance(proof, list) else [proof] if proof is not None else []
    headers += [("DPoP", value) for value in proofs]
    return client.open(path, method=method, headers=headers, base_url=BASE_URL)


def challenges(response: TestResponse) -> dict[str, dict[str, str]]:
    """WWW-Authenticate parsed into {scheme: {param: value}}."""
    header = response.headers["WWW-Authenticate"]
    parsed: dict[str, dict[str, str]] = {}
    for scheme, params in re.findall(r'(Bearer|DPoP) ((?:\w+="[^"]*"(?:, )?)*)', header):
        parsed[scheme] = dict(re.findall(r'(\w+)="([^"]*)"', params))
    return parsed


def assert_refused(response: TestResponse, error: str, status: int = 401) -> dict[str, str]:
    """The DPoP challenge carries the error (with algs); the body is problem+json."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["error"] == error
    dpop_challenge = challenges(response)["DPoP"]
    assert dpop_challenge["error"] == error
    assert dpop_challenge["algs"] == "ES256 RS256 PS256 EdDSA"
    assert dpop_challenge["error_description"] == body["detail"]
    assert "error" not in challenges(response).get("Bearer", {})
    return dpop_challenge


# --------------------------------------------------------------------- accepted


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(
    "key_factory",
    [
        lambda: ECKey.generate_key("P-256"),
        lambda: RSAKey.generate_key(2048),
        lambda: OKPKey.generate_key("Ed25519"),
    ],
    ids=["ES256", "PS256", "EdDSA"],
)
def test_bound_token_with_valid_proof_is_accepted(
    client: FlaskClient, issuer_key: RSAKey, key_factory: Callable[[], JoseKey], library: str
) -> None:
    key = key_factory()
    token = mint(issuer_key, make_claims(**bound_to(key)), library=library)
    proof = dpop_proof(key, "GET", READ_URL, token, library=library)
    response = call(client, token, proof)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"sub": "alice"}


def test_rs256_proof_is_accepted(client: FlaskClient, issuer_key: RSAKey) -> None:
    key = RSAKey.generate_key(2048)
    token = mint(issuer_key, make_claims(**bound_to(key)))
    assert (
        call(client, token, dpop_proof(key, "GET", READ_URL, token, alg="RS256")).status_code == 200
    )


@pytest.mark.parametrize(
    "htu",
    [
        f"{READ_URL}?page=2#top",
        "HTTPS://API.TEST:443/read",
        f"{BASE_URL}/r%65ad",
        f"{BASE_URL}/read#",
    ],
    ids=[
        "query-and-fragment-ignored",
        "case-and-default-port",
        "unreserved-escape",
        "empty-fragment",
    ],
)
def test_htu_is_compared_after_normalization(
    client: FlaskClient, client_key: ECKey, token: str, htu: str
) -> None:
    # RFC 9449 section 4.3: query and fragment ignored; RFC 3986 6.2.2/6.2.3 normalization.
    assert call(client, token, dpop_proof(client_key, "GET", htu, token)).status_code == 200


def test_request_query_is_ignored(client: FlaskClient, client_key: ECKey, token: str) -> None:
    response = call(client, token, dpop_proof(client_key, "GET", READ_URL, token), path="/read?x=1")
    assert response.status_code == 200


def test_iat_within_the_window_is_accepted(
    client: FlaskClient, client_key: ECKey, token: str
) -> None:
    for skew in (-89, 89):  # leeway 30 + 60 s
        proof = dpop_proof(client_key, "GET", READ_URL, token, iat=int(time.time()) + skew)
        assert call(client, token, proof).status_code == 200, skew


def test_scope_is_still_checked(client: FlaskClient, client_key: ECKey, token: str) -> None:
    proof = dpop_proof(client_key, "GET", f"{BASE_URL}/write", token)
    params = assert_refused(call(client, token, proof, path="/write"), "insufficient_scope", 403)
    assert params["scope"] == "items:write"


# --------------------------------------------------------------------- each defect alone


def forged_signature(client_key: ECKey, other_key: ECKey, token: str) -> str:
    # The jwk header names client_key; other_key signed.
    return dpop_proof(client_key, "GET", READ_URL, token, signer=other_key)


def unsigned(client_key: ECKey, token: str) -> str:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": client_key.as_dict(private=False)}
    claims = {"jti": "u-1", "htm": "GET", "htu": READ_URL, "iat": int(time.time())}
    claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
    return f"{segment(header)}.{segment(claims)}."


def hs256(client_key: ECKey, token: str) -> str:
    # HMAC with the public key's x coordinate as "secret": what a confused verifier would take.
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": client_key.as_dict(private=False)}
    claims = {"jti": "h-1", "htm": "GET", "htu": READ_URL, "iat": int(time.time())}
    claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
    signing_input = f"{segment(header)}.{segment(claims)}"
    secret = str(client_key.as_dict(private=False)["x"]).encode()
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def es256_by_a_p384_key(token: str) -> str:
    """ES256 names P-256; both libraries refuse to sign it with a P-384 key, so by hand."""
    key = ECKey.generate_key("P-384")
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    claims = {"jti": "c-1", "htm": "GET", "htu": READ_URL, "iat": int(time.time())}
    claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
    signing_input = f"{segment(header)}.{segment(claims)}"
    private_key = key.private_key
    assert private_key is not None
    der = private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(48, 'big') + s.to_bytes(48, 'big'))}"


def raw_claims(client_key: ECKey, token: str, iat: str) -> str:
    """A validly signed proof whose iat is raw JSON (400 digits, NaN) json.dumps cannot write."""
    import jwt  # noqa: PLC0415

    header = {"typ": "dpop+jwt", "jwk": client_key.as_dict(private=False)}
    ath = b64url(hashlib.sha256(token.encode()).digest())
    # Concatenated: doubled braces in an f-string would read as template syntax at bake time.
    members = f'"jti": "r-1", "htm": "GET", "htu": "{READ_URL}", "ath": "{ath}", "iat": {iat}'
    payload = "{" + members + "}"
    return jwt.api_jws.encode(
        payload.encode(), client_key.as_pem(private=True), algorithm="ES256", headers=header
    )


DEFECTS: dict[str, Callable[[ECKey, ECKey, str], str]] = {
    "wrong-htm": lambda k, o, t: dpop_proof(k, "POST", READ_URL, t),
    "lower-case-htm": lambda k, o, t: dpop_proof(k, "get", READ_URL, t),
    "htu-other-path": lambda k, o, t: dpop_proof(k, "GET", f"{BASE_URL}/other", t),
    "htu-path-prefix": lambda k, o, t: dpop_proof(k, "GET", f"{BASE_URL}/rea", t),
    "htu-other-host": lambda k, o, t: dpop_proof(k, "GET", "https://evil.test/read", t),
    "htu-other-port": lambda k, o, t: dpop_proof(k, "GET", "https://api.test:8443/read", t),
    "htu-http": lambda k, o, t: dpop_proof(k, "GET", "http://api.test/read", t),
    "htu-userinfo": lambda k, o, t: dpop_proof(k, "GET", "https://u@api.test/read", t),
    "htu-not-a-url": lambda k, o, t: dpop_proof(k, "GET", "/read", t),
    "htu-number": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, htu=7),
    "missing-ath": lambda k, o, t: dpop_proof(k, "GET", READ_URL, None),
    "ath-of-other-token": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t + "x"),
    "ath-not-a-string": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, ath=1),
    "stale-iat": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=int(time.time()) - 91),
    "future-iat": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=int(time.time()) + 91),
    "iat-string": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=str(int(time.time()))),
    "iat-400-digits": lambda k, o, t: raw_claims(k, t, "1" + "0" * 400),
    "iat-nan": lambda k, o, t: raw_claims(k, t, "NaN"),
    "iat-1e400": lambda k, o, t: raw_claims(k, t, "1e400"),
    "missing-iat": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=MISSING),
    "missing-jti": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, jti=MISSING),
    "jti-not-a-string": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, jti=12),
    "jti-too-long": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, jti="j" * 257),
    "missing-htm": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, htm=MISSING),
    "missing-htu": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, htu=MISSING),
    "typ-jwt": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"typ": "JWT"}),
    "typ-at+jwt": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"typ": "at+jwt"}),
    "no-typ": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"typ": MISSING}),
    "alg-none": lambda k, o, t: unsigned(k, t),
    "alg-hs256": lambda k, o, t: hs256(k, t),
    "private-key-in-jwk": lambda k, o, t: dpop_proof(
        k, "GET", READ_URL, t, header={"jwk": k.as_dict(private=True)}
    ),
    "no-jwk": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"jwk": MISSING}),
    # joserfc refuses to sign this one; PyJWT does what it is told, like an attacker.
    "jwk-not-an-object": lambda k, o, t: dpop_proof(
        k, "GET", READ_URL, t, header={"jwk": "k"}, library="pyjwt"
    ),
    "jwk-other-curve": lambda k, o, t: es256_by_a_p384_key(t),
    "signature-by-other-key": forged_signature,
    "not-a-jwt": lambda k, o, t: "not-a-jwt",
    "two-parts": lambda k, o, t: "abc.def",
    "oversized": lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, padding="x" * 9000),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_defect_alone_is_invalid_dpop_proof(
    client: FlaskClient, client_key: ECKey, other_key: ECKey, token: str, defect: str
) -> None:
    proof = DEFECTS[defect](client_key, other_key, token)
    response = call(client, token, proof)
    assert_refused(response, "invalid_dpop_proof")
    assert proof not in response.get_data(as_text=True)
    assert token not in response.get_data(as_text=True)


def test_algorithm_outside_the_configured_list_is_refused(
    make_client: Callable[..., FlaskClient], issuer_key: RSAKey
) -> None:
    key = RSAKey.generate_key(2048)
    token = mint(issuer_key, make_claims(**bound_to(key)))
    client = make_client(JWT_DPOP_ALGORITHMS="ES256")
    response = call(client, token, dpop_proof(key, "GET", READ_URL, token, alg="PS256"))
    assert response.status_code == 401
    assert challenges(response)["DPoP"]["algs"] == "ES256"
    assert challenges(response)["DPoP"]["error"] == "invalid_dpop_proof"


@pytest.mark.filterwarnings("ignore::Warning")
def test_short_rsa_key_is_refused(client: FlaskClient, issuer_key: RSAKey) -> None:
    weak = RSAKey.generate_key(1024)
    token = mint(issuer_key, make_claims(**bound_to(weak)))
    response = call(client, token, dpop_proof(weak, "GET", READ_URL, token, library="pyjwt"))
    assert_refused(response, "invalid_dpop_proof")


def test_replayed_proof_is_refused(client: FlaskClient, client_key: ECKey, token: str) -> None:
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    assert call(client, token, proof).status_code == 200
    params = assert_refused(call(client, token, proof), "invalid_dpop_proof")
    assert params["error_description"] == "The DPoP proof was already used (jti)"


def test_missing_proof_is_refused(client: FlaskClient, token: str) -> None:
    assert_refused(call(client, token, None), "invalid_dpop_proof")


def test_two_proofs_are_refused(client: FlaskClient, client_key: ECKey, token: str) -> None:
    proofs = [dpop_proof(client_key, "GET", READ_URL, token) for _ in range(2)]
    params = assert_refused(call(client, token, proofs), "invalid_dpop_proof")
    assert params["error_description"] == "Send exactly one DPoP proof"


def test_proof_by_another_key_than_the_bound_one_is_invalid_token(
    client: FlaskClient, other_key: ECKey, token: str
) -> None:
    # A valid proof, but of another key than the token's cnf.jkt: the binding fails.
    response = call(client, token, dpop_proof(other_key, "GET", READ_URL, token))
    params = assert_refused(response, "invalid_token")
    assert params["error_description"] == "The DPoP proof key is not the key the token is bound to"


def test_bound_token_sent_as_bearer_is_invalid_token(
    client: FlaskClient, client_key: ECKey, token: str
) -> None:
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    response = call(client, token, proof, scheme="Bearer")
    assert response.status_code == 401
    offered = challenges(response)
    assert offered["Bearer"]["error"] == "invalid_token"
    assert offered["DPoP"] == {"realm": "api", "algs": "ES256 RS256 PS256 EdDSA"}


def test_unbound_token_with_dpop_scheme_is_invalid_token(
    client: FlaskClient, client_key: ECKey, issuer_key: RSAKey
) -> None:
    token = mint(issuer_key, make_claims())
    assert_refused(
        call(client, token, dpop_proof(client_key, "GET", READ_URL, token)), "invalid_token"
    )


@pytest.mark.parametrize(
    "cnf", [{"jkt": "short"}, {"x5t#S256": "abc"}, "jkt", {"jkt": 12}], ids=str
)
def test_token_bound_some_other_way_is_refused(
    client: FlaskClient, client_key: ECKey, issuer_key: RSAKey, cnf: Any
) -> None:
    token = mint(issuer_key, make_claims(cnf=cnf))
    for scheme in ("DPoP", "Bearer"):
        proof = dpop_proof(client_key, "GET", READ_URL, token)
        response = call(client, token, proof, scheme=scheme)
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_token"


def test_plain_bearer_tokens_still_work_when_dpop_is_allowed(
    client: FlaskClient, issuer_key: RSAKey
) -> None:
    token = mint(issuer_key, make_claims())
    assert call(client, token, None, scheme="Bearer").status_code == 200


def test_no_credentials_offers_both_schemes(client: FlaskClient) -> None:
    response = client.get("/read", base_url=BASE_URL)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="api", DPoP realm="api", {ALGS}'


def test_ambiguous_request_has_the_error_in_both_challenges(
    client: FlaskClient, token: str
) -> None:
    headers = [("Authorization", f"DPoP {token}"), ("Authorization", f"Bearer {token}")]
    response = client.get("/read", headers=headers, base_url=BASE_URL)
    assert response.status_code == 400
    offered = challenges(response)
    assert offered["Bearer"]["error"] == offered["DPoP"]["error"] == "invalid_request"


def test_required_mode_refuses_plain_bearer_tokens_with_a_dpop_challenge(
    make_client: Callable[..., FlaskClient], issuer_key: RSAKey, client_key: ECKey, token: str
) -> None:
    client = make_client(JWT_DPOP="required")
    unbound = mint(issuer_key, make_claims())
    response = call(client, unbound, None, scheme="Bearer")
    assert_refused(response, "invalid_token")
    assert not response.headers["WWW-Authenticate"].startswith("Bearer")
    nothing = client.get("/read", base_url=BASE_URL)
    assert nothing.headers["WWW-Authenticate"] == f'DPoP realm="api", {ALGS}'
    assert call(client, token, dpop_proof(client_key, "GET", READ_URL, token)).status_code == 200


def test_configured_origins_are_enforced(
    make_client: Callable[..., FlaskClient], client_key: ECKey, token: str
) -> None:
    client = make_client(JWT_DPOP_ORIGINS="https://api.example.com https://localhost:8443")
    # The request's host (api.test) is not a configured server name: refused even with a
    # proof that names it.
    assert_refused(
        call(client, token, dpop_proof(client_key, "GET", READ_URL, token)), "invalid_dpop_proof"
    )
    proof = dpop_proof(client_key, "GET", "https://localhost:8443/read", token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof)]
    ok = client.get("/read", headers=headers, base_url="https://localhost:8443")
    assert ok.status_code == 200
    # Another configured origin than the one called is still another URL.
    proof = dpop_proof(client_key, "GET", "https://api.example.com/read", token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof)]
    other = client.get("/read", headers=headers, base_url="https://localhost:8443")
    assert_refused(other, "invalid_dpop_proof")


def test_plain_http_request_is_refused(client: FlaskClient, client_key: ECKey, token: str) -> None:
    proof = dpop_proof(client_key, "GET", "http://api.test/read", token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof)]
    response = client.get("/read", headers=headers, base_url="http://api.test")
    assert_refused(response, "invalid_dpop_proof")


def test_replay_store_outage_is_503_never_acceptance(
    make_client: Callable[..., FlaskClient], client_key: ECKey, token: str
) -> None:
    client = make_client(store=BrokenStore())
    response = call(client, token, dpop_proof(client_key, "GET", READ_URL, token))
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert "Retry-After" in response.headers


def test_jti_is_stored_hashed_for_the_proof_window(
    make_client: Callable[..., FlaskClient], client_key: ECKey, token: str
) -> None:
    seen: list[tuple[str, int]] = []

    class RecordingStore:
        def claim(self, key: str, lease_seconds: int, owner: str) -> str:
            seen.append((key, lease_seconds))
            return "claimed"

    client = make_client(store=RecordingStore())
    proof = dpop_proof(client_key, "GET", READ_URL, token, jti="my-jti-value")
    assert call(client, token, proof).status_code == 200
    [(key, lease)] = seen
    assert "my-jti-value" not in key
    assert key.startswith("dpop-jti:")
    assert lease == 2 * (30 + 60)


def test_token_and_proof_never_reach_the_logs(
    client: FlaskClient, client_key: ECKey, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    proof = dpop_proof(client_key, "POST", READ_URL, token)
    assert call(client, token, proof).status_code == 401
    assert caplog.records
    for secret in (token, proof):
        for part in secret.split("."):
            assert part not in caplog.text


# --------------------------------------------------------------------- the thumbprint


def test_thumbprint_matches_rfc_7638_example() -> None:
    # RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQ"
        "R0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTW"
        "hAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert dpop.jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    "key_factory",
    [lambda: ECKey.generate_key("P-256"), lambda: OKPKey.generate_key("Ed25519"),
     lambda: RSAKey.generate_key(2048)],
    ids=["EC", "OKP", "RSA"],
)  # fmt: skip
def test_thumbprint_agrees_with_joserfc(key_factory: Callable[[], JoseKey]) -> None:
    key = key_factory()
    assert dpop.jwk_thumbprint(key.as_dict(private=False)) == key.thumbprint()


# --------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("JWT_DPOP", "sometimes"),
        ("JWT_DPOP", "Required"),
        ("JWT_DPOP_ALGORITHMS", "HS256"),
        ("JWT_DPOP_ALGORITHMS", "ES256 none"),
        ("JWT_DPOP_ALGORITHMS", ","),
        ("JWT_DPOP_ORIGINS", "http://api.example.com"),
        ("JWT_DPOP_ORIGINS", "https://api.example.com/api"),
        ("JWT_DPOP_ORIGINS", "api.example.com"),
        ("JWT_DPOP_ORIGINS", "https://api.example.com:99999"),
        ("JWT_DPOP_ORIGINS", "https://api.example.com?x=1"),
    ],
)
def test_unusable_settings_are_refused_naming_them(
    public_key_file: Path, setting: str, value: str
) -> None:
    with pytest.raises(dpop.DPoPConfigError, match=rf"^{setting}: "):
        dpop_app(public_key_file, **{setting: value})


def test_init_app_without_a_replay_store_fails_loudly(public_key_file: Path) -> None:
    app = Flask("no_store")
    with pytest.raises(RuntimeError, match="replay store"):
        dpop.init_app(app)


# --------------------------------------------------------------------- stands alone


def test_dpop_copied_beside_bearer_works_without_the_service(
    tmp_path: Path, issuer_key: RSAKey, client_key: ECKey, public_key_file: Path
) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    for module in (bearer, dpop):
        (tmp_path / Path(str(module.__file__)).name).write_text(
            Path(str(module.__file__)).read_text()
        )
    token = mint(issuer_key, make_claims(**bound_to(client_key)))
    proofs = [dpop_proof(client_key, "GET", "https://api.copy/x", token) for _ in range(2)]
    script = """
import json, sys
from flask import Flask
import bearer, dpop
token, proof, replay_proof, issuer, audience, key_file = sys.argv[1:]

class Store:
    def __init__(self): self.seen = set()
    def claim(self, key, lease, owner):
        if key in self.seen: return "done"
        self.seen.add(key); return "claimed"

app = Flask("other")
app.config.update(JWT_ISSUER=issuer, JWT_AUDIENCE=audience, JWT_PUBLIC_KEY_FILE=key_file)
bearer.init_app(app)
dpop.init_app(app, store=Store())
app.add_url_rule("/x", "x", bearer.require_scopes("items:read")(lambda: "ok"))
client = app.test_client()
answers = []
for value in (proof, proof, replay_proof):
    headers = {"Authorization": "DPoP " + token, "DPoP": value}
    answers.append(client.get("/x", headers=headers, base_url="https://api.copy").status_code)
print(json.dumps(answers))
"""
    arguments = [token, proofs[0], proofs[1], ISSUER, AUDIENCE, str(public_key_file)]
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [200, 401, 200]
