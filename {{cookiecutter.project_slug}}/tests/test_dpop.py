"""DPoP (RFC 9449) on a bare Flask app: bearer.py, dpop.py and a replay store, nothing else.

Tokens and proofs come from joserfc, an independent JOSE library, and from PyJWT; hostile
proofs are built by hand. Every defect of a proof is tried alone, on an otherwise valid proof,
and its refusal is checked for the reason it gives, so each refusal is known to come from that
one check.
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
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey, OKPKey, RSAKey
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Response

from jose_helpers import (
    AUDIENCE,
    BAD_BINDING,
    ISSUER,
    MISSING,
    RSA_KEYS,
    JoseKey,
    b64url,
    bound_to,
    dpop_proof,
    make_claims,
    mint,
    private,
    segment,
    slug,
)
from {{ cookiecutter.package_name }} import bearer, dpop, webhooks

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

BASE_URL = "https://api.test"
READ_URL = f"{BASE_URL}/read"
LIBRARIES = ["joserfc", "pyjwt"]
DEFAULT_ALGS = "ES256 RS256 PS256 EdDSA"
ALGS = f'algs="{DEFAULT_ALGS}"'

# dpop.py's refusals (the RFC 6750 error_description, also the problem's detail).
MALFORMED = "The DPoP proof is not a single well-formed JWT"
OTHER_URL = "The DPoP proof was made for another URL (htu)"
OTHER_METHOD = "The DPoP proof was made for another HTTP method"
OTHER_TOKEN = "The DPoP proof was made for another access token (ath)"
IAT_WINDOW = "The DPoP proof is too old or from the future"
IAT_NUMBER = "The DPoP proof iat must be a number"
BAD_JTI = "The DPoP proof jti must be a string of 1 to 256 characters"
WRONG_TYP = "The DPoP proof must have typ dpop+jwt"
ALG_NOT_ALLOWED = "The DPoP proof signing algorithm is not allowed"
PRIVATE_JWK = "The DPoP proof jwk contains private key material"
NO_JWK = "The DPoP proof has no jwk header"
JWK_MISFIT = "The DPoP proof jwk does not fit its alg"
UNUSABLE_JWK = "The DPoP proof jwk is not a usable public key"
SHORT_RSA = "The DPoP proof jwk is an RSA key shorter than 2048 bits"
BAD_SIGNATURE = "The DPoP proof signature does not verify with its jwk"
TOO_LARGE = "The DPoP proof is too large"
REPLAYED = "The DPoP proof was already used (jti)"
NOT_ONE = "Send exactly one DPoP proof"
NO_PROOF = "A DPoP proof is required with the DPoP scheme"
NOT_HTTPS = "DPoP proofs are only accepted over https"
UNKNOWN_HOST = "This request's host is not a configured server name"
OTHER_KEY = "The DPoP proof key is not the key the token is bound to"
NOT_BOUND = "The access token is not DPoP-bound; send it as a Bearer token"
BOUND_AS_BEARER = "A DPoP-bound token must be sent with the DPoP scheme"
DPOP_ONLY = "This API accepts DPoP-bound tokens only"


def lacks(claim: str) -> str:
    return f"The DPoP proof lacks the {claim} claim"


@pytest.fixture
def issuer_key() -> RSAKey:
    return RSA_KEYS[0]


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


class RecordingStore:
    """Claims every key, and remembers what it was asked."""

    def __init__(self, answer: str = "claimed") -> None:
        self.answer = answer
        self.claims: list[tuple[str, int, str]] = []

    def claim(self, key: str, lease_seconds: int, owner: str) -> str:
        self.claims.append((key, lease_seconds, owner))
        return self.answer


def dpop_app(public_key_file: Path, store: Any = None, **config: Any) -> Flask:
    app = Flask("dpop_only")
    app.config.update(
        {"APP_ENV": "test", "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
         "JWT_PUBLIC_KEY_FILE": str(public_key_file), **config}
    )  # fmt: skip
    bearer.init_app(app)
    dpop.init_app(app, store=store or webhooks.MemoryReplayStore())

    @app.route("/read", methods=["GET", "POST", "DELETE"])
    @bearer.require_scopes("items:read")
    def read() -> dict[str, Any]:
        return {"sub": bearer.current_principal().sub}

    @app.get("/write")
    @bearer.require_scopes("items:write")
    def write() -> dict[str, Any]:
        return {}

    @app.get("/")
    @bearer.require_scopes()
    def home() -> dict[str, Any]:
        return {}

    @app.get("/files/<path:name>")
    @bearer.require_scopes("items:read")
    def files(name: str) -> dict[str, Any]:
        return {"name": name}

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
    path: str = "/read", scheme: str = "DPoP", base_url: str = BASE_URL, **environ: str,
) -> TestResponse:  # fmt: skip
    headers = [("Authorization", f"{scheme} {token}")]
    proofs = proof if isinstance(proof, list) else [proof] if proof is not None else []
    headers += [("DPoP", value) for value in proofs]
    return client.open(
        path, method=method, headers=headers, base_url=base_url, environ_overrides=environ
    )


def challenges(response: TestResponse) -> dict[str, dict[str, str]]:
    """WWW-Authenticate parsed into {scheme: {param: value}}."""
    header = response.headers["WWW-Authenticate"]
    parsed: dict[str, dict[str, str]] = {}
    for scheme, params in re.findall(r'(Bearer|DPoP) ((?:\w+="[^"]*"(?:, )?)*)', header):
        parsed[scheme] = dict(re.findall(r'(\w+)="([^"]*)"', params))
    return parsed


def assert_refused(
    response: TestResponse,
    error: str,
    description: str,
    status: int = 401,
    algs: str = DEFAULT_ALGS,
) -> dict[str, str]:
    """Refused for this reason: the DPoP challenge carries the error and description (with the
    algs), the body is the matching problem+json; the Bearer challenge carries no error."""
    body = response.get_json()
    assert (response.status_code, body.get("error"), body["detail"]) == (status, error, description)
    assert response.mimetype == "application/problem+json"
    dpop_challenge = challenges(response)["DPoP"]
    assert dpop_challenge["error"] == error
    assert dpop_challenge["algs"] == algs
    assert dpop_challenge["error_description"] == description
    assert "error" not in challenges(response).get("Bearer", {})
    return dpop_challenge


def proof_of_length(key: ECKey, token: str, length: int) -> str:
    """A valid proof exactly `length` characters long (a claim pads it)."""
    base = len(dpop_proof(key, "GET", READ_URL, token, padding=""))
    guess = max(0, (length - base) * 3 // 4)
    for extra in range(8):  # base64 skips some lengths; a header member shifts the header too
        for padding in range(max(0, guess - 12), guess + 5):
            header = {"kid": "k" * extra}
            proof = dpop_proof(key, "GET", READ_URL, token, header=header, padding="x" * padding)
            if len(proof) == length:
                return proof
    raise AssertionError(f"no proof of length {length}")


# --------------------------------------------------------------------- accepted


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(
    "key_factory",
    [
        lambda: ECKey.generate_key("P-256"),
        lambda: RSA_KEYS[2],
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


# Every algorithm a proof may use, with a key it fits: RSA for RS* and PS*, each EC curve for
# its ES* and both Edwards curves for EdDSA.
PROOF_KEYS: dict[str, Callable[[], JoseKey]] = {
    "RS256": lambda: RSA_KEYS[2],
    "RS384": lambda: RSA_KEYS[2],
    "RS512": lambda: RSA_KEYS[2],
    "PS256": lambda: RSA_KEYS[2],
    "PS384": lambda: RSA_KEYS[2],
    "PS512": lambda: RSA_KEYS[2],
    "ES256": lambda: ECKey.generate_key("P-256"),
    "ES384": lambda: ECKey.generate_key("P-384"),
    "ES512": lambda: ECKey.generate_key("P-521"),
    "EdDSA": lambda: OKPKey.generate_key("Ed25519"),
    "EdDSA-Ed448": lambda: OKPKey.generate_key("Ed448"),
}


@pytest.mark.parametrize("name", list(PROOF_KEYS))
def test_each_algorithm_is_accepted_when_configured_and_refused_when_not(
    make_client: Callable[..., FlaskClient], issuer_key: RSAKey, name: str
) -> None:
    alg = name.partition("-")[0]
    key = PROOF_KEYS[name]()
    token = mint(issuer_key, make_claims(**bound_to(key)))
    configured = make_client(JWT_DPOP_ALGORITHMS=f"ES256 {alg}")
    proof = dpop_proof(key, "GET", READ_URL, token, alg=alg, library="pyjwt")
    assert call(configured, token, proof).status_code == 200
    # The allowlist is the setting, not every algorithm a proof could use (RFC 9449 4.3).
    others = " ".join(other for other in ("ES256", "PS256") if other != alg)
    refused = call(make_client(JWT_DPOP_ALGORITHMS=others), token, proof)
    assert_refused(refused, "invalid_dpop_proof", ALG_NOT_ALLOWED, algs=others)


@pytest.mark.parametrize("alg", ["ES384", "ES512", "RS384", "PS512"])
def test_algorithms_outside_the_default_list_are_refused_by_default(
    client: FlaskClient, issuer_key: RSAKey, alg: str
) -> None:
    key = PROOF_KEYS[alg]()
    token = mint(issuer_key, make_claims(**bound_to(key)))
    proof = dpop_proof(key, "GET", READ_URL, token, alg=alg, library="pyjwt")
    assert_refused(call(client, token, proof), "invalid_dpop_proof", ALG_NOT_ALLOWED)


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


@pytest.mark.parametrize(
    ("called", "htu"),
    [
        ("/read?x=1", READ_URL),
        ("/r%65ad", READ_URL),
        ("/read", f"{BASE_URL}/r%65ad"),
        ("/files/a%2fb", f"{BASE_URL}/files/a%2Fb"),
        ("/files/caf%C3%A9", f"{BASE_URL}/files/café"),
        ("/files/a%7E", f"{BASE_URL}/files/a~"),
    ],
    ids=["query", "escaped-letter", "escaped-in-htu", "escaped-slash", "utf-8", "escaped-tilde"],
)
def test_the_url_the_client_called_is_compared_as_sent(
    client: FlaskClient, client_key: ECKey, token: str, called: str, htu: str
) -> None:
    # A %2F stays a %2F (it is no path separator), an unreserved escape is its character,
    # anything else compares in upper-case percent-encoded UTF-8.
    proof = dpop_proof(client_key, "GET", htu, token)
    assert call(client, token, proof, path=called).status_code == 200


@pytest.mark.parametrize(
    ("environ", "htu"),
    [
        ({"REQUEST_URI": ""}, f"{BASE_URL}/files/a%2Fb"),  # gunicorn's RAW_URI alone
        ({"RAW_URI": ""}, f"{BASE_URL}/files/a%2Fb"),  # REQUEST_URI alone
        ({"RAW_URI": "https://api.test/files/a%2Fb?q=1"}, f"{BASE_URL}/files/a%2Fb"),
        ({"RAW_URI": "", "REQUEST_URI": ""}, f"{BASE_URL}/files/a/b"),  # only the WSGI path
        ({"RAW_URI": "", "REQUEST_URI": "", "SCRIPT_NAME": "/api"}, f"{BASE_URL}/api/files/a/b"),
    ],
    ids=["raw-uri", "request-uri", "absolute-form", "decoded-path", "script-name"],
)
def test_the_called_path_comes_from_what_the_server_saw(
    client: FlaskClient, client_key: ECKey, token: str, environ: dict[str, str], htu: str
) -> None:
    proof = dpop_proof(client_key, "GET", htu, token)
    response = call(client, token, proof, path="/files/a%2Fb", **environ)
    assert response.status_code == 200, response.get_json()


def test_a_path_that_starts_with_two_slashes_names_no_host(
    client: FlaskClient, client_key: ECKey, token: str
) -> None:
    # "//api.test/read" is a path (origin-form), not the authority api.test and the path /read.
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    response = call(client, token, proof, RAW_URI="//api.test/read", REQUEST_URI="")
    assert_refused(response, "invalid_dpop_proof", OTHER_URL)


def test_an_absolute_form_target_without_a_path_is_the_root(
    client: FlaskClient, client_key: ECKey, token: str
) -> None:
    proof = dpop_proof(client_key, "GET", f"{BASE_URL}/", token)
    response = call(client, token, proof, path="/", RAW_URI="https://api.test", REQUEST_URI="")
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize(
    "typ", ["dpop+jwt", "application/dpop+jwt", "DPoP+JWT", "Application/DPOP+jwt"]
)
def test_proof_typ_is_a_media_type(
    client: FlaskClient, client_key: ECKey, token: str, typ: str
) -> None:
    # RFC 7515 section 4.1.9: compared case-insensitively, "application/" may be left out.
    proof = dpop_proof(client_key, "GET", READ_URL, token, header={"typ": typ})
    assert call(client, token, proof).status_code == 200


def test_iat_window_is_the_leeway_plus_60_seconds(
    make_client: Callable[..., FlaskClient],
    client_key: ECKey,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)  # the proof's clock, stopped
    for leeway, window in ((None, 90), (0, 60), (7, 67)):
        client = make_client(**({} if leeway is None else {"JWT_LEEWAY_SECONDS": leeway}))
        for skew in (-window, window):
            proof = dpop_proof(client_key, "GET", READ_URL, token, iat=now + skew)
            assert call(client, token, proof).status_code == 200, (leeway, skew)
        for skew in (-window - 1, window + 1):
            proof = dpop_proof(client_key, "GET", READ_URL, token, iat=now + skew)
            assert_refused(call(client, token, proof), "invalid_dpop_proof", IAT_WINDOW)


def test_scope_is_still_checked(client: FlaskClient, client_key: ECKey, token: str) -> None:
    proof = dpop_proof(client_key, "GET", f"{BASE_URL}/write", token)
    response = call(client, token, proof, path="/write")
    params = assert_refused(
        response, "insufficient_scope", "The access token lacks a required scope", 403
    )
    assert params["scope"] == "items:write"


@pytest.mark.parametrize("scheme", ["DPoP", "dpop", "DPOP"])
def test_dpop_scheme_is_case_insensitive(
    client: FlaskClient, client_key: ECKey, token: str, scheme: str
) -> None:
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    assert call(client, token, proof, scheme=scheme).status_code == 200


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
    der = private(key).sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
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
        payload.encode(), private(client_key), algorithm="ES256", headers=header
    )


def signed_payload(client_key: ECKey, payload: bytes) -> str:
    """A validly signed proof whose payload is these exact bytes."""
    import jwt  # noqa: PLC0415

    header = {"typ": "dpop+jwt", "jwk": client_key.as_dict(private=False)}
    return jwt.api_jws.encode(payload, private(client_key), algorithm="ES256", headers=header)


def jwk_without(client_key: ECKey, member: str) -> dict[str, Any]:
    return {k: v for k, v in client_key.as_dict(private=False).items() if k != member}


Defect = Callable[[ECKey, ECKey, str], str]
# Each defect, alone on an otherwise valid proof, and the reason it is refused for.
DEFECTS: dict[str, tuple[Defect, str]] = {
    "wrong-htm": (lambda k, o, t: dpop_proof(k, "POST", READ_URL, t), OTHER_METHOD),
    "lower-case-htm": (lambda k, o, t: dpop_proof(k, "get", READ_URL, t), OTHER_METHOD),
    "htu-other-path": (lambda k, o, t: dpop_proof(k, "GET", f"{BASE_URL}/other", t), OTHER_URL),
    "htu-path-prefix": (lambda k, o, t: dpop_proof(k, "GET", f"{BASE_URL}/rea", t), OTHER_URL),
    "htu-trailing-slash": (lambda k, o, t: dpop_proof(k, "GET", f"{BASE_URL}/read/", t), OTHER_URL),
    "htu-escaped-slash": (lambda k, o, t: dpop_proof(k, "GET", f"{BASE_URL}%2Fread", t), OTHER_URL),
    "htu-other-host": (
        lambda k, o, t: dpop_proof(k, "GET", "https://evil.test/read", t),
        OTHER_URL,
    ),
    "htu-other-port": (
        lambda k, o, t: dpop_proof(k, "GET", "https://api.test:8443/read", t),
        OTHER_URL,
    ),
    "htu-bad-port": (
        lambda k, o, t: dpop_proof(k, "GET", "https://api.test:99999/read", t),
        OTHER_URL,
    ),
    "htu-http": (lambda k, o, t: dpop_proof(k, "GET", "http://api.test/read", t), OTHER_URL),
    "htu-userinfo": (lambda k, o, t: dpop_proof(k, "GET", "https://u@api.test/read", t), OTHER_URL),
    "htu-no-host": (lambda k, o, t: dpop_proof(k, "GET", "https:///read", t), OTHER_URL),
    "htu-not-a-url": (lambda k, o, t: dpop_proof(k, "GET", "/read", t), OTHER_URL),
    "htu-number": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, htu=7), OTHER_URL),
    "missing-ath": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, None), lacks("ath")),
    "ath-of-other-token": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t + "x"), OTHER_TOKEN),
    "ath-not-a-string": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, ath=1), OTHER_TOKEN),
    "stale-iat": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=int(time.time()) - 91),
        IAT_WINDOW,
    ),
    "future-iat": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=int(time.time()) + 91),
        IAT_WINDOW,
    ),
    "iat-string": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=str(int(time.time()))),
        IAT_NUMBER,
    ),
    "iat-bool": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=True), IAT_NUMBER),
    "iat-400-digits": (lambda k, o, t: raw_claims(k, t, "1" + "0" * 400), IAT_WINDOW),
    "iat-nan": (lambda k, o, t: raw_claims(k, t, "NaN"), IAT_WINDOW),
    "iat-1e400": (lambda k, o, t: raw_claims(k, t, "1e400"), IAT_WINDOW),
    "missing-iat": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, iat=MISSING), lacks("iat")),
    "missing-jti": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, jti=MISSING), lacks("jti")),
    "jti-not-a-string": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, jti=12), BAD_JTI),
    "jti-empty": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, jti=""), BAD_JTI),
    "jti-257-characters": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, jti="j" * 257),
        BAD_JTI,
    ),
    "missing-htm": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, htm=MISSING), lacks("htm")),
    "missing-htu": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, htu=MISSING), lacks("htu")),
    "typ-jwt": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"typ": "JWT"}),
        WRONG_TYP,
    ),
    "typ-at+jwt": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"typ": "at+jwt"}),
        WRONG_TYP,
    ),
    "typ-prefix": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"typ": "x/dpop+jwt"}),
        WRONG_TYP,
    ),
    "typ-number": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"typ": 7}, library="pyjwt"),
        WRONG_TYP,
    ),
    "no-typ": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"typ": MISSING}),
        WRONG_TYP,
    ),
    "alg-none": (lambda k, o, t: unsigned(k, t), ALG_NOT_ALLOWED),
    "alg-hs256": (lambda k, o, t: hs256(k, t), ALG_NOT_ALLOWED),
    "private-key-in-jwk": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"jwk": k.as_dict(private=True)}),
        PRIVATE_JWK,
    ),
    "symmetric-key-in-jwk": (
        lambda k, o, t: dpop_proof(
            k, "GET", READ_URL, t, header={"jwk": k.as_dict(private=False) | {"k": "c2VjcmV0"}}
        ),
        PRIVATE_JWK,
    ),
    "no-jwk": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"jwk": MISSING}), NO_JWK),
    # joserfc refuses to sign this one; PyJWT does what it is told, like an attacker.
    "jwk-not-an-object": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"jwk": "k"}, library="pyjwt"),
        NO_JWK,
    ),
    "jwk-other-curve": (lambda k, o, t: es256_by_a_p384_key(t), JWK_MISFIT),
    "jwk-other-key-type": (
        lambda k, o, t: dpop_proof(
            k, "GET", READ_URL, t, header={"jwk": RSA_KEYS[2].as_dict(private=False)}
        ),
        JWK_MISFIT,
    ),
    "jwk-without-curve": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"jwk": jwk_without(k, "crv")}),
        JWK_MISFIT,
    ),
    "jwk-without-y": (
        lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, header={"jwk": jwk_without(k, "y")}),
        UNUSABLE_JWK,
    ),
    "jwk-off-the-curve": (
        lambda k, o, t: dpop_proof(
            k, "GET", READ_URL, t, header={"jwk": k.as_dict(private=False) | {"y": "AAAA"}}
        ),
        UNUSABLE_JWK,
    ),
    "signature-by-other-key": (forged_signature, BAD_SIGNATURE),
    "payload-not-json": (lambda k, o, t: signed_payload(k, b"not json"), MALFORMED),
    "payload-not-an-object": (lambda k, o, t: signed_payload(k, b"[1, 2]"), MALFORMED),
    "header-not-json": (lambda k, o, t: "bm90.e30.c2ln", MALFORMED),
    "not-a-jwt": (lambda k, o, t: "not-a-jwt", MALFORMED),
    "two-parts": (lambda k, o, t: "abc.def", MALFORMED),
    "four-parts": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t) + ".x", MALFORMED),
    "not-token68": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t) + " ", MALFORMED),
    "oversized": (lambda k, o, t: dpop_proof(k, "GET", READ_URL, t, padding="x" * 9000), TOO_LARGE),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_defect_alone_is_invalid_dpop_proof(
    client: FlaskClient, client_key: ECKey, other_key: ECKey, token: str, defect: str
) -> None:
    make_proof, description = DEFECTS[defect]
    proof = make_proof(client_key, other_key, token)
    response = call(client, token, proof)
    assert_refused(response, "invalid_dpop_proof", description)
    assert proof not in response.get_data(as_text=True)
    assert token not in response.get_data(as_text=True)


def test_proof_size_limit(client: FlaskClient, client_key: ECKey, token: str) -> None:
    at_limit = proof_of_length(client_key, token, 8192)
    assert call(client, token, at_limit).status_code == 200
    over = proof_of_length(client_key, token, 8193)
    assert_refused(call(client, token, over), "invalid_dpop_proof", TOO_LARGE)


def test_jti_of_256_characters_is_accepted(
    client: FlaskClient, client_key: ECKey, token: str
) -> None:
    for jti in ("j", "j" * 256):
        assert (
            call(client, token, dpop_proof(client_key, "GET", READ_URL, token, jti=jti)).status_code
            == 200
        )


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_htm_is_the_method_called(
    client: FlaskClient, client_key: ECKey, token: str, method: str
) -> None:
    proof = dpop_proof(client_key, method, READ_URL, token)
    assert call(client, token, proof, method=method).status_code == 200
    other = dpop_proof(client_key, "GET", READ_URL, token)
    response = call(client, token, other, method=method)
    assert_refused(response, "invalid_dpop_proof", OTHER_METHOD)


@pytest.mark.filterwarnings("ignore::Warning")
@pytest.mark.parametrize(("bits", "accepted"), [(2047, False), (2048, True)])
def test_rsa_proof_keys_need_2048_bits(
    client: FlaskClient, issuer_key: RSAKey, bits: int, accepted: bool
) -> None:
    key = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=bits))
    token = mint(issuer_key, make_claims(**bound_to(key)))
    response = call(client, token, dpop_proof(key, "GET", READ_URL, token, library="pyjwt"))
    if accepted:
        assert response.status_code == 200
    else:
        assert_refused(response, "invalid_dpop_proof", SHORT_RSA)


def test_replayed_proof_is_refused(client: FlaskClient, client_key: ECKey, token: str) -> None:
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    assert call(client, token, proof).status_code == 200
    assert_refused(call(client, token, proof), "invalid_dpop_proof", REPLAYED)


def test_same_jti_of_another_key_is_no_replay(
    client: FlaskClient, issuer_key: RSAKey, client_key: ECKey, other_key: ECKey
) -> None:
    # The jti is remembered per key: two clients cannot block each other by guessing ids.
    for key in (client_key, other_key):
        token = mint(issuer_key, make_claims(**bound_to(key)))
        proof = dpop_proof(key, "GET", READ_URL, token, jti="same")
        assert call(client, token, proof).status_code == 200


@pytest.mark.parametrize("answer", ["done", "processing", "busy"])
def test_a_jti_the_store_does_not_grant_is_a_replay(
    make_client: Callable[..., FlaskClient], client_key: ECKey, token: str, answer: str
) -> None:
    client = make_client(store=RecordingStore(answer))
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    assert_refused(call(client, token, proof), "invalid_dpop_proof", REPLAYED)


def test_missing_proof_is_refused(client: FlaskClient, token: str) -> None:
    assert_refused(call(client, token, None), "invalid_dpop_proof", NO_PROOF)


def test_two_proofs_are_refused(client: FlaskClient, client_key: ECKey, token: str) -> None:
    proofs = [dpop_proof(client_key, "GET", READ_URL, token) for _ in range(2)]
    assert_refused(call(client, token, proofs), "invalid_dpop_proof", NOT_ONE)
    folded = ", ".join(proofs)  # what a server makes of two fields
    assert_refused(call(client, token, folded), "invalid_dpop_proof", NOT_ONE)


def test_proof_by_another_key_than_the_bound_one_is_invalid_token(
    client: FlaskClient, other_key: ECKey, token: str
) -> None:
    # A valid proof, but of another key than the token's cnf.jkt: the binding fails.
    response = call(client, token, dpop_proof(other_key, "GET", READ_URL, token))
    assert_refused(response, "invalid_token", OTHER_KEY)


def test_bound_token_sent_as_bearer_is_invalid_token(
    client: FlaskClient, client_key: ECKey, token: str
) -> None:
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    response = call(client, token, proof, scheme="Bearer")
    assert response.status_code == 401
    assert response.get_json()["detail"] == BOUND_AS_BEARER
    offered = challenges(response)
    assert offered["Bearer"]["error"] == "invalid_token"
    assert offered["Bearer"]["error_description"] == BOUND_AS_BEARER
    assert offered["DPoP"] == {"realm": "api", "algs": DEFAULT_ALGS}


def test_unbound_token_with_dpop_scheme_is_invalid_token(
    client: FlaskClient, client_key: ECKey, issuer_key: RSAKey
) -> None:
    token = mint(issuer_key, make_claims())
    response = call(client, token, dpop_proof(client_key, "GET", READ_URL, token))
    assert_refused(response, "invalid_token", NOT_BOUND)


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
        body = response.get_json()
        assert (response.status_code, body["error"], body["detail"]) == (
            401,
            "invalid_token",
            BAD_BINDING,
        )


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
    assert offered["Bearer"]["error_description"] == "Send exactly one Authorization header"
    assert offered["DPoP"]["error_description"] == "Send exactly one Authorization header"


def test_required_mode_refuses_plain_bearer_tokens_with_a_dpop_challenge(
    make_client: Callable[..., FlaskClient], issuer_key: RSAKey, client_key: ECKey, token: str
) -> None:
    client = make_client(JWT_DPOP="required")
    unbound = mint(issuer_key, make_claims())
    response = call(client, unbound, None, scheme="Bearer")
    assert_refused(response, "invalid_token", DPOP_ONLY)
    assert not response.headers["WWW-Authenticate"].startswith("Bearer")
    nothing = client.get("/read", base_url=BASE_URL)
    assert nothing.headers["WWW-Authenticate"] == f'DPoP realm="api", {ALGS}'
    assert call(client, token, dpop_proof(client_key, "GET", READ_URL, token)).status_code == 200


@pytest.mark.parametrize("setting", [None, "", "allowed"])
def test_allowed_mode_is_the_default(
    make_client: Callable[..., FlaskClient], issuer_key: RSAKey, setting: str | None
) -> None:
    client = make_client(**({} if setting is None else {"JWT_DPOP": setting}))
    unbound = mint(issuer_key, make_claims())
    assert call(client, unbound, None, scheme="Bearer").status_code == 200
    nothing = client.get("/read", base_url=BASE_URL)
    assert nothing.headers["WWW-Authenticate"] == f'Bearer realm="api", DPoP realm="api", {ALGS}'


def test_configured_origins_are_enforced(
    make_client: Callable[..., FlaskClient], client_key: ECKey, token: str
) -> None:
    client = make_client(JWT_DPOP_ORIGINS="https://api.example.com https://localhost:8443")
    # The request's host (api.test) is not a configured server name: refused even with a
    # proof that names it.
    response = call(client, token, dpop_proof(client_key, "GET", READ_URL, token))
    assert_refused(response, "invalid_dpop_proof", UNKNOWN_HOST)
    proof = dpop_proof(client_key, "GET", "https://localhost:8443/read", token)
    ok = call(client, token, proof, base_url="https://localhost:8443")
    assert ok.status_code == 200
    # Another configured origin than the one called is still another URL.
    proof = dpop_proof(client_key, "GET", "https://api.example.com/read", token)
    other = call(client, token, proof, base_url="https://localhost:8443")
    assert_refused(other, "invalid_dpop_proof", OTHER_URL)


@pytest.mark.parametrize(
    ("setting", "host", "htu"),
    [
        ("https://API.Example.com:443/", "api.example.com", "https://api.example.com/read"),
        ("https://api.example.com", "API.EXAMPLE.COM:443", "https://api.example.com/read"),
        ("https://[::1]:8443", "[::1]:8443", "https://[::1]:8443/read"),
        ("https://127.0.0.1:8443", "127.0.0.1:8443", "https://127.0.0.1:8443/read"),
        (" https://a.test\thttps://api.example.com\n", "api.example.com", "https://api.example.com/read"),
        (("https://a.test", "https://api.example.com"), "api.example.com", "https://api.example.com/read"),
        (["https://api.example.com"], "api.example.com", "https://api.example.com/read"),
        (frozenset({"https://api.example.com"}), "api.example.com", "https://api.example.com/read"),
    ],
    ids=["case-default-port-slash", "host-case-default-port", "ipv6", "ipv4", "whitespace",
         "tuple", "list", "set"],
)  # fmt: skip
def test_origin_spellings(
    make_client: Callable[..., FlaskClient],
    client_key: ECKey,
    token: str,
    *,
    setting: Any,
    host: str,
    htu: str,
) -> None:
    client = make_client(JWT_DPOP_ORIGINS=setting)
    proof = dpop_proof(client_key, "GET", htu, token)
    response = call(client, token, proof, HTTP_HOST=host)
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("setting", [None, "", " \t"], ids=["unset", "empty", "blank"])
def test_without_origins_any_host_the_proxy_forwarded_is_its_own_origin(
    make_client: Callable[..., FlaskClient], client_key: ECKey, token: str, setting: Any
) -> None:
    client = make_client(**({} if setting is None else {"JWT_DPOP_ORIGINS": setting}))
    proof = dpop_proof(client_key, "GET", "https://elsewhere.test:8443/read", token)
    response = call(client, token, proof, base_url="https://elsewhere.test:8443")
    assert response.status_code == 200, response.get_json()


def test_an_ipv6_origin_keeps_its_brackets(
    make_client: Callable[..., FlaskClient], client_key: ECKey, token: str
) -> None:
    # Without brackets, [::1]:8443 and the address ::1:8443 on port 443 would read the same.
    client = make_client(JWT_DPOP_ORIGINS="https://[::1]:8443")
    proof = dpop_proof(client_key, "GET", "https://[::1:8443]/read", token)
    response = call(client, token, proof, HTTP_HOST="[::1:8443]")
    assert_refused(response, "invalid_dpop_proof", UNKNOWN_HOST)


@pytest.mark.parametrize(
    "host", ["api.test:99999", "api.test:x", "bad host", "api.test/x", "user@api.test", ""],
)  # fmt: skip
def test_a_host_that_is_no_server_name_is_refused(
    client: FlaskClient, client_key: ECKey, token: str, host: str
) -> None:
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    response = call(client, token, proof, HTTP_HOST=host)
    assert_refused(response, "invalid_dpop_proof", UNKNOWN_HOST)


def test_a_bracketed_host_that_is_no_address_is_refused(
    client: FlaskClient, client_key: ECKey, token: str
) -> None:
    # [1:2:3] has the shape of an IPv6 host; the test client cannot build a URL of it, so the
    # request goes to the app as plain WSGI.
    proof = dpop_proof(client_key, "GET", READ_URL, token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof)]
    environ = EnvironBuilder(path="/read", base_url=BASE_URL, headers=headers).get_environ()
    environ["HTTP_HOST"] = "[1:2:3]"
    response = Response.from_app(client.application, environ)
    assert (response.status_code, response.get_json()["detail"]) == (401, UNKNOWN_HOST)


def test_plain_http_request_is_refused(client: FlaskClient, client_key: ECKey, token: str) -> None:
    proof = dpop_proof(client_key, "GET", "http://api.test/read", token)
    response = call(client, token, proof, base_url="http://api.test")
    assert_refused(response, "invalid_dpop_proof", NOT_HTTPS)


def test_replay_store_outage_is_503_never_acceptance(
    make_client: Callable[..., FlaskClient], client_key: ECKey, token: str
) -> None:
    client = make_client(store=BrokenStore())
    response = call(client, token, dpop_proof(client_key, "GET", READ_URL, token))
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == "The DPoP replay store is temporarily unavailable"
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize(("leeway", "lease"), [(None, 180), (0, 120), (300, 720)])
def test_jti_is_stored_hashed_per_key_for_the_proof_window(
    make_client: Callable[..., FlaskClient],
    client_key: ECKey,
    token: str,
    leeway: int | None,
    lease: int,
) -> None:
    store = RecordingStore()
    client = make_client(store=store, **({} if leeway is None else {"JWT_LEEWAY_SECONDS": leeway}))
    proofs = [dpop_proof(client_key, "GET", READ_URL, token, jti="my-jti-value") for _ in "ab"]
    for proof in proofs:
        assert call(client, token, proof).status_code == 200
    [(key, seconds, owner), again] = store.claims
    # Only a hash of key and jti (RFC 9449 section 11.1), the same for the same pair.
    digest = hashlib.sha256(f"{client_key.thumbprint()}:my-jti-value".encode()).hexdigest()
    assert key == f"dpop-jti:{digest}"
    assert again[0] == key
    assert seconds == lease  # twice the window: a proof is acceptable that long
    assert re.fullmatch(r"[0-9a-f]{32}", owner)
    assert again[2] != owner


def test_token_and_proof_never_reach_the_logs(
    client: FlaskClient, client_key: ECKey, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    proof = dpop_proof(client_key, "POST", READ_URL, token)
    assert call(client, token, proof).status_code == 401
    assert [record.getMessage() for record in caplog.records] == [
        f"DPoP token refused: status=401 error=invalid_dpop_proof reason={OTHER_METHOD}"
    ]
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
     lambda: RSA_KEYS[2]],
    ids=["EC", "OKP", "RSA"],
)  # fmt: skip
def test_thumbprint_agrees_with_joserfc(key_factory: Callable[[], JoseKey]) -> None:
    key = key_factory()
    assert dpop.jwk_thumbprint(key.as_dict(private=False)) == key.thumbprint()


@pytest.mark.parametrize(
    "jwk",
    [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "EC", "crv": "P-256", "x": "AA"},
     {"kty": "RSA", "n": 7, "e": "AQAB"}, {}],
    ids=["symmetric", "missing-member", "number-member", "empty"],
)  # fmt: skip
def test_thumbprint_of_no_public_key_is_refused(jwk: dict[str, Any]) -> None:
    with pytest.raises(dpop.DPoPProofError, match=f"^{UNUSABLE_JWK}$"):
        dpop.jwk_thumbprint(jwk)


# --------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("value", "algs"),
    [
        (None, DEFAULT_ALGS),
        ("", DEFAULT_ALGS),
        ("ES256", "ES256"),
        ("PS256,ES256", "PS256 ES256"),
        (" EdDSA  ES256 ,", "EdDSA ES256"),
        ("ES256 ES256", "ES256"),
        (("ES384", "RS256"), "ES384 RS256"),
        (["RS512", "RS512"], "RS512"),
    ],
    ids=slug,
)
def test_proof_algorithm_spellings(
    make_client: Callable[..., FlaskClient], value: Any, algs: str
) -> None:
    client = make_client(**({} if value is None else {"JWT_DPOP_ALGORITHMS": value}))
    response = client.get("/read", base_url=BASE_URL)
    assert challenges(response)["DPoP"]["algs"] == algs


@pytest.mark.parametrize(
    "value",
    ["sometimes", "Required", "REQUIRED", "Allowed", "required ", "true", "on", "1", "yes",
     "off", True, ["required"]],
    ids=slug,
)  # fmt: skip
def test_unknown_dpop_modes_are_refused(public_key_file: Path, value: Any) -> None:
    with pytest.raises(dpop.DPoPConfigError) as refused:
        dpop_app(public_key_file, JWT_DPOP=value)
    assert str(refused.value) == f"JWT_DPOP: must be one of allowed, required, got {value!r}"
    assert refused.value.setting == "JWT_DPOP"


NO_PROOF_ALGORITHM = "JWT_DPOP_ALGORITHMS: give at least one algorithm, e.g. ES256"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (",", NO_PROOF_ALGORITHM),
        (" ", NO_PROOF_ALGORITHM),
        ((), NO_PROOF_ALGORITHM),
        (7, NO_PROOF_ALGORITHM),
        ({"ES256"}, NO_PROOF_ALGORITHM),
        ("HS256", "'HS256'"),
        ("ES256 none", "'none'"),
        ("es256", "'es256'"),
        ("ES256;PS256", "'ES256;PS256'"),
        (("ES256", 7), "7"),
    ],
    ids=slug,
)
def test_unusable_proof_algorithms_are_refused(
    public_key_file: Path, value: Any, message: str
) -> None:
    with pytest.raises(dpop.DPoPConfigError) as refused:
        dpop_app(public_key_file, JWT_DPOP_ALGORITHMS=value)
    if message != NO_PROOF_ALGORITHM:
        message = (
            f"JWT_DPOP_ALGORITHMS: {message} is not allowed; use asymmetric algorithms only "
            "(RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA); HS* and "
            "none are refused (RFC 9449 section 4.2)"
        )
    assert str(refused.value) == message


@pytest.mark.parametrize(
    "value",
    ["http://api.example.com", "https://api.example.com/api", "api.example.com",
     "https://api.example.com:99999", "https://api.example.com?x=1", "https://api.example.com/?",
     "https://api.example.com#top", "https://u@api.example.com", "https://", ["https://a.test", 7]],
    ids=slug,
)  # fmt: skip
def test_unusable_origins_are_refused(public_key_file: Path, value: Any) -> None:
    with pytest.raises(dpop.DPoPConfigError) as refused:
        dpop_app(public_key_file, JWT_DPOP_ORIGINS=value)
    entry = value[1] if isinstance(value, list) else value
    assert str(refused.value) == (
        f"JWT_DPOP_ORIGINS: {entry!r} is not an https origin such as https://api.example.com "
        "or https://localhost:8443"
    )


@pytest.mark.parametrize("value", [7, {"https://a.test": 1}], ids=slug)
def test_origins_of_another_type_are_refused(public_key_file: Path, value: Any) -> None:
    with pytest.raises(dpop.DPoPConfigError) as refused:
        dpop_app(public_key_file, JWT_DPOP_ORIGINS=value)
    assert str(refused.value) == "JWT_DPOP_ORIGINS: give https origins separated by spaces"


def test_init_app_without_a_replay_store_fails_loudly() -> None:
    app = Flask("no_store")
    with pytest.raises(RuntimeError) as refused:
        dpop.init_app(app)
    # The whole message: it names both ways out.
    assert str(refused.value) == (
        "dpop.init_app needs a replay store shared by every worker: call "
        "webhooks.init_app(app) first, or pass store="
    )
    assert "dpop" not in app.extensions


def test_init_app_uses_the_registered_replay_store(public_key_file: Path) -> None:
    store = RecordingStore()
    app = Flask("registered_store")
    app.extensions["replay_store"] = store
    assert dpop.init_app(app).store is store
    assert app.extensions["dpop"].store is store


# --------------------------------------------------------------------- stands alone


def test_dpop_stands_alone_beside_bearer_without_the_service(
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


# --------------------------------------------------------------------- bearer.py's side


class FakeProofs:
    """Any proof checker bearer.py may be given (dpop.py is one): what it raises is what bearer
    answers, within the RFC 9449 error codes and a description safe in a header."""

    required = False
    algorithms = ("ES256",)

    def __init__(self, failure: Exception | None) -> None:
        self.failure = failure
        self.calls: list[tuple[str, str, int]] = []

    def verify_proof(self, access_token: str, bound_to: str, *, leeway: int) -> None:
        self.calls.append((access_token, bound_to, leeway))
        if self.failure is not None:
            raise self.failure


def refused_by(error: str | None, description: str) -> ValueError:
    failure = ValueError(description)
    if error is not None:
        failure.error = error  # type: ignore[attr-defined]
    return failure


@pytest.mark.parametrize(
    ("failure", "error", "description"),
    [
        (refused_by(None, "No good"), "invalid_dpop_proof", "No good"),
        (refused_by("invalid_token", "Bound elsewhere"), "invalid_token", "Bound elsewhere"),
        (refused_by("invalid_dpop_proof", "Stale"), "invalid_dpop_proof", "Stale"),
        # Anything else is replaced, never echoed into the challenge.
        (refused_by("server_error", "Boom"), "invalid_dpop_proof", "The DPoP proof is invalid"),
        (refused_by(None, 'Quote " inside'), "invalid_dpop_proof", "The DPoP proof is invalid"),
        (refused_by(None, "Line\nbreak"), "invalid_dpop_proof", "The DPoP proof is invalid"),
        (refused_by(None, ""), "invalid_dpop_proof", "The DPoP proof is invalid"),
    ],
    ids=["no-code", "invalid-token", "invalid-dpop-proof", "other-code", "quote", "newline",
         "empty"],
)  # fmt: skip
def test_a_proof_checkers_refusal_becomes_a_401_challenge(
    public_key_file: Path,
    issuer_key: RSAKey,
    client_key: ECKey,
    *,
    failure: Exception,
    error: str,
    description: str,
) -> None:
    app = dpop_app(public_key_file, JWT_LEEWAY_SECONDS=12)
    proofs = FakeProofs(failure)
    app.extensions["dpop"] = proofs
    token = mint(issuer_key, make_claims(**bound_to(client_key)))
    response = call(app.test_client(), token, "p.r.f")
    assert_refused(response, error, description, algs="ES256")
    assert proofs.calls == [(token, client_key.thumbprint(), 12)]


def test_a_proof_checker_that_cannot_answer_is_a_503(
    public_key_file: Path, issuer_key: RSAKey, client_key: ECKey, caplog: pytest.LogCaptureFixture
) -> None:
    app = dpop_app(public_key_file)
    app.extensions["dpop"] = FakeProofs(ConnectionRefusedError("store down"))
    token = mint(issuer_key, make_claims(**bound_to(client_key)))
    response = call(app.test_client(), token, "p.r.f")
    assert response.status_code == 503
    assert response.get_json()["detail"] == "The DPoP replay store is temporarily unavailable"
    assert "store down" not in response.get_data(as_text=True)
    assert [record.getMessage() for record in caplog.records] == [
        "access token not judged: The DPoP replay store is temporarily unavailable"
    ]
