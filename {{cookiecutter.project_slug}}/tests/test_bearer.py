"""bearer.py on a bare Flask app (nothing else of the service): RFC 6750, 8725 and 9068.

Tokens come from joserfc, an independent JOSE library, and from PyJWT, so that the module is
not only checked against the library it uses; hostile tokens are built by hand.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey, RSAKey
from werkzeug.test import TestResponse

from jose_helpers import (
    AUDIENCE,
    ISSUER,
    MISSING,
    JwksServer,
    b64url,
    hs256_token,
    make_claims,
    mint,
    public_jwk,
    segment,
    unsigned_token,
)
from {{ cookiecutter.package_name }} import bearer

LIBRARIES = ["joserfc", "pyjwt"]
# RFC 6750 section 3: error_description is limited to these characters.
DESCRIPTION_CHARS = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


@pytest.fixture(scope="session")
def our_key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture(scope="session")
def attacker_key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture
def public_key_file(tmp_path: Path, our_key: RSAKey) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(our_key.as_pem(private=False))
    return path


def bare_app(**config: Any) -> Flask:
    """A Flask app with bearer.py and nothing else of the service."""
    app = Flask("bearer_only")
    app.config.update({"APP_ENV": "test", "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE, **config})
    bearer.init_app(app)

    @app.get("/me")
    @bearer.require_scopes()
    def me() -> dict[str, Any]:
        principal = bearer.current_principal()
        return {"sub": principal.sub, "scopes": sorted(principal.scopes)}

    @app.route("/read", methods=["GET", "POST"])
    @bearer.require_scopes("items:read")
    def read() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/read-write")
    @bearer.require_scopes("items:read", "items:write")
    def read_write() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def make_client(public_key_file: Path) -> Callable[..., FlaskClient]:
    def build(**config: Any) -> FlaskClient:
        return bare_app(JWT_PUBLIC_KEY_FILE=str(public_key_file), **config).test_client()

    return build


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    return make_client()


def auth(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def challenge(response: TestResponse) -> dict[str, str]:
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def assert_refused(
    response: TestResponse, status: int, error: str | None, token: str | None = None
) -> dict[str, str]:
    """Status, RFC 6750 challenge, problem+json body; the token never comes back."""
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    params = challenge(response)
    assert params["realm"] == "api"
    if error is None:
        assert set(params) == {"realm"}
    else:
        assert params["error"] == error
        assert DESCRIPTION_CHARS.fullmatch(params["error_description"])
        assert params["error_description"] == body["detail"]
    if token is not None:
        assert token not in response.get_data(as_text=True)
        assert token not in str(response.headers)
    return params


# --------------------------------------------------------------------- accepted tokens


@pytest.mark.parametrize("library", LIBRARIES)
def test_valid_token_is_accepted(client: FlaskClient, our_key: RSAKey, library: str) -> None:
    token = mint(our_key, make_claims(scope="items:read items:write"), library=library)
    response = client.get("/me", headers=auth(token))
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice", "scopes": ["items:read", "items:write"]}


@pytest.mark.parametrize(
    "scheme", ["bearer", "BEARER", "bEaReR", "Bearer  ", "Bearer   "], ids=repr
)
def test_scheme_is_case_insensitive_and_allows_several_spaces(
    client: FlaskClient, our_key: RSAKey, scheme: str
) -> None:
    # RFC 6750 2.1: credentials = "Bearer" 1*SP b64token; RFC 9110: the scheme is case-insensitive.
    token = mint(our_key, make_claims())
    response = client.get("/read", headers={"Authorization": f"{scheme} {token}"})
    assert response.status_code == 200


def test_expired_within_leeway_is_accepted(client: FlaskClient, our_key: RSAKey) -> None:
    now = int(time.time())
    token = mint(our_key, make_claims(iat=now - 100, exp=now - 10))
    assert client.get("/read", headers=auth(token)).status_code == 200


def test_audience_list_containing_ours_is_accepted(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(aud=["https://other.test", AUDIENCE]))
    assert client.get("/read", headers=auth(token)).status_code == 200


@pytest.mark.parametrize(
    "scopes",
    [{"scp": ["items:read"]}, {"scp": "items:read other"}, {"scope": "a items:read b"}],
    ids=["scp-list", "scp-string", "scope-string"],
)
def test_scopes_come_from_scope_or_scp(
    client: FlaskClient, our_key: RSAKey, scopes: dict[str, Any]
) -> None:
    token = mint(our_key, make_claims(**{"scope": MISSING, **scopes}))
    assert client.get("/read", headers=auth(token)).status_code == 200


def test_principal_is_frozen_and_carries_claims(public_key_file: Path, our_key: RSAKey) -> None:
    app = bare_app(JWT_PUBLIC_KEY_FILE=str(public_key_file))
    seen: list[bearer.Principal] = []

    @app.get("/principal")
    @bearer.require_scopes()
    def principal_view() -> dict[str, str]:
        seen.append(bearer.current_principal())
        return {}

    token = mint(our_key, make_claims(scope="x y", client_id="cli"))
    assert app.test_client().get("/principal", headers=auth(token)).status_code == 200
    principal = seen[0]
    assert (principal.sub, principal.scopes, principal.client_id) == (
        "alice",
        frozenset({"x", "y"}),
        "cli",
    )
    assert principal.claims["iss"] == ISSUER
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.sub = "mallory"  # type: ignore[misc]
    with pytest.raises(TypeError):
        principal.claims["sub"] = "mallory"  # type: ignore[index]


def test_rfc9068_type_accepted_when_required(
    make_client: Callable[..., FlaskClient], our_key: RSAKey
) -> None:
    client = make_client(JWT_TOKEN_TYPE="at+jwt")
    for typ in ("at+jwt", "application/at+jwt", "AT+JWT"):
        token = mint(our_key, make_claims(), typ=typ)
        assert client.get("/read", headers=auth(token)).status_code == 200, typ


# --------------------------------------------------------------------- no credentials: 401


def test_no_credentials_gets_bare_challenge(client: FlaskClient) -> None:
    response = client.get("/read")
    assert_refused(response, 401, None)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "value",
    ["Basic dXNlcjpwYXNz", "DPoP abc", "Negotiate", "{token}"],
    ids=["basic", "dpop", "negotiate", "bare-jwt"],
)
def test_other_auth_scheme_counts_as_no_credentials(
    client: FlaskClient, our_key: RSAKey, value: str
) -> None:
    # RFC 6750 3.1: an unsupported authentication method gets no error code. A bare JWT is,
    # by RFC 9110 grammar, an auth-scheme of its own (dots are tchars): same answer.
    token = mint(our_key, make_claims())
    response = client.get("/read", headers={"Authorization": value.replace("{token}", token)})
    assert_refused(response, 401, None, token)


# --------------------------------------------------------------------- malformed requests: 400


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer\t{token}",
        "Bearer {token} extra",
        "Bearer {token},",
        "Bearer {token}\x00",
        "Bearer <{token}>",
        "Bearer: {token}",
        "",
    ],
    ids=[
        "scheme-without-token",
        "scheme-and-space-only",
        "tab-separator",
        "two-values",
        "trailing-comma",
        "nul-byte",
        "not-token68",
        "colon-after-scheme",
        "empty-header",
    ],
)
def test_malformed_authorization_header_is_invalid_request(
    client: FlaskClient, our_key: RSAKey, header: str
) -> None:
    token = mint(our_key, make_claims())
    value = header.replace("{token}", token)
    response = client.get("/read", headers={"Authorization": value})
    assert_refused(response, 400, "invalid_request", token)


def test_two_authorization_headers_are_invalid_request(
    client: FlaskClient, our_key: RSAKey
) -> None:
    token = mint(our_key, make_claims())
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    assert_refused(client.get("/read", headers=headers), 400, "invalid_request", token)


def test_token_in_query_string_is_invalid_request(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims())
    response = client.get("/read", query_string={"access_token": token})
    assert_refused(response, 400, "invalid_request", token)


def test_token_in_query_string_refused_even_with_header(
    client: FlaskClient, our_key: RSAKey
) -> None:
    token = mint(our_key, make_claims())
    response = client.get("/read", query_string={"access_token": token}, headers=auth(token))
    assert_refused(response, 400, "invalid_request", token)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_token_in_form_body_is_invalid_request(
    client: FlaskClient, our_key: RSAKey, content_type: str
) -> None:
    token = mint(our_key, make_claims())
    response = client.post("/read", data={"access_token": token}, content_type=content_type)
    assert_refused(response, 400, "invalid_request", token)


# --------------------------------------------------------------------- invalid tokens: 401


def test_oversized_token_is_invalid_token(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(padding="x" * 9000))
    response = client.get("/read", headers=auth(token))
    params = assert_refused(response, 401, "invalid_token", token)
    assert params["error_description"] == "The access token is too large"


def test_size_cap_is_configurable(make_client: Callable[..., FlaskClient], our_key: RSAKey) -> None:
    token = mint(our_key, make_claims())
    client = make_client(JWT_MAX_TOKEN_BYTES=len(token) - 1)
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_invalid_token(client: FlaskClient, our_key: RSAKey, alg: str) -> None:
    token = unsigned_token({"alg": alg, "typ": "JWT", "kid": our_key.thumbprint()}, make_claims())
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


def test_hs256_signed_with_public_key_pem_is_invalid_token(
    client: FlaskClient, our_key: RSAKey
) -> None:
    # The classic key-confusion attack: the public key is public, so anyone can HMAC with it.
    claims = make_claims()
    token = hs256_token(our_key.as_pem(private=False), {"alg": "HS256", "typ": "JWT"}, claims)
    params = assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)
    assert params["error_description"] == "The token signing algorithm is not allowed"


def test_asymmetric_alg_outside_allowlist_is_invalid_token(
    client: FlaskClient, our_key: RSAKey
) -> None:
    token = mint(our_key, make_claims(), alg="PS256")  # right key, algorithm not configured
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


@pytest.mark.parametrize("library", LIBRARIES)
def test_signature_by_other_key_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, attacker_key: RSAKey, library: str
) -> None:
    token = mint(attacker_key, make_claims(), library=library, kid=our_key.thumbprint())
    params = assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)
    assert params["error_description"] == "The access token signature is invalid"


def test_embedded_jwk_header_is_never_trusted(client: FlaskClient, attacker_key: RSAKey) -> None:
    token = mint(attacker_key, make_claims(), jwk=public_jwk(attacker_key))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


@pytest.mark.parametrize("header_name", ["jku", "x5u"])
def test_key_url_headers_are_never_fetched(
    make_client: Callable[..., FlaskClient], attacker_key: RSAKey, header_name: str
) -> None:
    attacker_jwks = JwksServer()
    try:
        attacker_jwks.publish(attacker_key)
        client = make_client()
        token = mint(attacker_key, make_claims(), **{header_name: attacker_jwks.url})
        assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)
        assert attacker_jwks.hits == 0
    finally:
        attacker_jwks.stop()


@pytest.mark.parametrize("library", LIBRARIES)
def test_expired_beyond_leeway_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, library: str
) -> None:
    now = int(time.time())
    token = mint(our_key, make_claims(iat=now - 600, exp=now - 31), library=library)
    params = assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)
    assert params["error_description"] == "The access token expired"


@pytest.mark.parametrize("library", LIBRARIES)
def test_nbf_in_future_is_invalid_token(client: FlaskClient, our_key: RSAKey, library: str) -> None:
    token = mint(our_key, make_claims(nbf=int(time.time()) + 120), library=library)
    params = assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)
    assert params["error_description"] == "The access token is not valid yet"


def test_iat_in_future_is_invalid_token(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(iat=int(time.time()) + 120))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


@pytest.mark.parametrize(
    "issuer",
    ["https://evil.test/", "https://issuer.test", "https://issuer.test/x", "HTTPS://ISSUER.TEST/"],
    ids=["other", "no-trailing-slash", "longer", "case"],
)
def test_wrong_issuer_is_invalid_token(client: FlaskClient, our_key: RSAKey, issuer: str) -> None:
    token = mint(our_key, make_claims(iss=issuer))
    params = assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)
    assert params["error_description"] == "The access token has the wrong issuer"


@pytest.mark.parametrize(
    "audience",
    ["https://other.test", ["https://other.test"], "https://api.test/", [], ""],
    ids=["other", "other-in-list", "near-miss", "empty-list", "empty"],
)
def test_wrong_audience_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, audience: Any
) -> None:
    token = mint(our_key, make_claims(aud=audience))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub"])
@pytest.mark.parametrize("library", LIBRARIES)
def test_missing_required_claim_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, claim: str, library: str
) -> None:
    token = mint(our_key, make_claims(**{claim: MISSING}), library=library)
    params = assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)
    assert params["error_description"] == f"The access token lacks the {claim} claim"


@pytest.mark.parametrize(
    "sub",
    [123, ["alice"], {"id": "alice"}, True, ""],
    ids=["int", "list", "object", "bool", "empty"],
)
def test_non_string_or_empty_sub_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, sub: Any
) -> None:
    token = mint(our_key, make_claims(sub=sub))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


@pytest.mark.parametrize(
    "claims",
    [{"exp": "9999999999"}, {"exp": True}, {"iat": "0"}, {"nbf": "0"}],
    ids=["exp-string", "exp-bool", "iat-string", "nbf-string"],
)
def test_non_numeric_dates_are_invalid_token(
    client: FlaskClient, our_key: RSAKey, claims: dict[str, Any]
) -> None:
    token = mint(our_key, make_claims(**claims))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


@pytest.mark.parametrize("scope", [{"scope": 7}, {"scp": [1, 2]}, {"scope": ["items:read"]}])
def test_malformed_scope_claim_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, scope: dict[str, Any]
) -> None:
    token = mint(our_key, make_claims(**{"scope": MISSING, **scope}))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


def signed_payload(key: RSAKey, payload: str) -> str:
    """A token whose payload is this exact JSON text, validly signed by key."""
    header = {"kid": key.thumbprint(), "typ": "at+jwt"}
    return jwt.api_jws.encode(
        payload.encode(), key.as_pem(private=True), algorithm="RS256", headers=header
    )


def payload_with(**raw: str) -> str:
    """Valid claims as JSON text, with some values replaced by raw JSON (numbers json.dumps
    cannot write: 400 digits, 1e400, NaN)."""
    claims = make_claims(**dict.fromkeys(raw, "@"))
    text = json.dumps(claims)
    for name, value in raw.items():
        text = text.replace(f'"{name}": "@"', f'"{name}": {value}')
    return text


HUGE = "1" + "0" * 400
ABSURD_NUMBERS = {
    "exp-400-digits": {"exp": HUGE},
    "exp-minus-400-digits": {"exp": "-" + HUGE},
    "exp-1e400": {"exp": "1e400"},
    "exp-minus-1e400": {"exp": "-1e400"},
    "exp-infinity": {"exp": "Infinity"},
    "exp-nan": {"exp": "NaN"},
    "exp-1e308": {"exp": "1e308"},
    "exp-year-10000": {"exp": "253402300800"},
    "iat-400-digits": {"iat": HUGE},
    "iat-minus-400-digits": {"iat": "-" + HUGE},
    "iat-1e400": {"iat": "1e400"},
    "iat-nan": {"iat": "NaN"},
    "iat-minus-infinity": {"iat": "-Infinity"},
    "nbf-400-digits": {"nbf": HUGE},
    "nbf-minus-1e400": {"nbf": "-1e400"},
    "nbf-nan": {"nbf": "NaN"},
    "nested-cnf": {"cnf": '{"jkt": ' + HUGE + "}"},
    "nested-deep-claim": {"ext": "[" * 50 + HUGE + "]" * 50},
}


@pytest.mark.parametrize("raw", list(ABSURD_NUMBERS.values()), ids=list(ABSURD_NUMBERS))
def test_absurd_numbers_in_a_signed_token_are_invalid_token_never_500(
    client: FlaskClient, our_key: RSAKey, raw: dict[str, str]
) -> None:
    token = signed_payload(our_key, payload_with(**raw))
    response = client.get("/read", headers=auth(token))
    if "ext" in raw:  # an unknown claim is ignored, whatever it holds
        assert response.status_code == 200
        return
    assert_refused(response, 401, "invalid_token", token)
    # Served from the verified-token cache the second time, if it ever got there.
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


def test_tampered_payload_is_invalid_token(client: FlaskClient, our_key: RSAKey) -> None:
    header, _, signature = mint(our_key, make_claims(scope="items:read")).split(".")
    forged = f"{header}.{segment(make_claims(scope='items:read admin'))}.{signature}"
    params = assert_refused(client.get("/read", headers=auth(forged)), 401, "invalid_token", forged)
    assert params["error_description"] == "The access token signature is invalid"


def test_tampered_signature_is_invalid_token(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims())
    last = "A" if token[-1] != "A" else "B"
    forged = token[:-1] + last
    assert_refused(client.get("/read", headers=auth(forged)), 401, "invalid_token", forged)


@pytest.mark.parametrize(
    "token",
    ["abc", "a.b", "a.b.c", "e30.e30.", "W10.e30.c2ln", "eyJhbGciOiJSUzI1NiJ9.bm90LWpzb24.c2ln"],
    ids=["one-part", "two-parts", "garbage", "empty-objects", "header-not-object", "body-not-json"],
)
def test_malformed_jwt_is_invalid_token(client: FlaskClient, token: str) -> None:
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token")


@pytest.mark.parametrize("part", ["header", "payload"])
def test_deeply_nested_json_is_invalid_token(client: FlaskClient, part: str) -> None:
    nested = b64url(b'{"alg":"RS256","x":' + b"[" * 2500 + b"]" * 2500 + b"}")
    normal = segment({"alg": "RS256"})
    token = f"{nested}.{segment(make_claims())}.c2ln"
    if part == "payload":
        token = f"{normal}.{nested}.c2ln"
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token")


@pytest.mark.parametrize("typ", [None, "JWT", "id_token+jwt", "dpop+jwt"], ids=str)
def test_wrong_token_type_is_invalid_token(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, typ: str | None
) -> None:
    client = make_client(JWT_TOKEN_TYPE="at+jwt")
    header = {"typ": typ} if typ else {}
    token = mint(our_key, make_claims(), library="pyjwt", **header)
    if typ is None:  # PyJWT writes typ JWT by default; build one without typ by hand
        token = mint(our_key, make_claims(), library="joserfc")
        token = token.replace(token.split(".")[0], segment({"alg": "RS256"}), 1)
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


def test_id_token_is_refused_by_default(client: FlaskClient, our_key: RSAKey) -> None:
    # An OpenID Connect ID token signed by the same key: typ JWT, nonce, auth_time. RFC 9068
    # section 4: only a JWT typed at+jwt is an access token, and that is checked unless opted out.
    claims = make_claims(nonce="n-0S6_WzA2Mj", auth_time=int(time.time()), at_hash="x")
    for typ in ("JWT", None):
        header = {"typ": typ} if typ else {}
        token = mint(our_key, claims, library="pyjwt", **header)
        if typ is None:
            token = token.replace(token.split(".")[0], segment({"alg": "RS256"}), 1)
        params = assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token")
        assert params["error_description"] == "The token type is not accepted"


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/AT+JWT"])
def test_access_token_types_are_accepted_by_default(
    client: FlaskClient, our_key: RSAKey, typ: str
) -> None:
    token = mint(our_key, make_claims(), typ=typ)
    assert client.get("/read", headers=auth(token)).status_code == 200


def test_token_type_check_can_be_turned_off(
    make_client: Callable[..., FlaskClient], our_key: RSAKey
) -> None:
    client = make_client(JWT_TOKEN_TYPE="any")
    token = mint(our_key, make_claims(), library="pyjwt", typ="JWT")
    assert client.get("/read", headers=auth(token)).status_code == 200


def test_crit_header_is_invalid_token(client: FlaskClient, our_key: RSAKey) -> None:
    header: dict[str, Any] = {"crit": ["exp-ext"], "exp-ext": 1}
    token = mint(our_key, make_claims(), library="pyjwt", **header)
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


# Both libraries rightly warn while we build the weak key on purpose.
@pytest.mark.filterwarnings("ignore::Warning")
def test_short_rsa_key_is_invalid_token(tmp_path: Path) -> None:
    weak = RSAKey.generate_key(1024)
    path = tmp_path / "weak.pem"
    path.write_bytes(weak.as_pem(private=False))
    client = bare_app(JWT_PUBLIC_KEY_FILE=str(path)).test_client()
    token = mint(weak, make_claims(), library="pyjwt")
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


def test_ec_token_against_rsa_key_is_invalid_token(
    make_client: Callable[..., FlaskClient],
) -> None:
    ec_key = ECKey.generate_key("P-256")
    client = make_client(JWT_ALGORITHMS=("RS256", "ES256"))
    token = mint(ec_key, make_claims(), alg="ES256")
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


# --------------------------------------------------------------------- scopes: 403


def test_missing_scope_is_insufficient_scope(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(scope="items:write"))
    params = assert_refused(
        client.get("/read", headers=auth(token)), 403, "insufficient_scope", token
    )
    assert params["scope"] == "items:read"


def test_every_listed_scope_is_needed(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(scope="items:read"))
    response = client.get("/read-write", headers=auth(token))
    params = assert_refused(response, 403, "insufficient_scope", token)
    assert params["scope"] == "items:read items:write"


@pytest.mark.parametrize(
    "scope", ["items:readonly", "items", "ITEMS:READ", "items:read,items:write"], ids=str
)
def test_scope_match_is_exact(client: FlaskClient, our_key: RSAKey, scope: str) -> None:
    token = mint(our_key, make_claims(scope=scope))
    assert_refused(client.get("/read", headers=auth(token)), 403, "insufficient_scope", token)


# RFC 6749 section 3.3: scope = scope-token *( SP scope-token ), scope-token = 1*( %x21 /
# %x23-5B / %x5D-7E ). str.split() would also split on these and let the pieces through.
BAD_SCOPE_SEPARATORS = {
    "no-break-space": "items:read\u00a0admin",
    "em-space": "items:read\u2003admin",
    "ideographic-space": "items:read\u3000admin",
    "tab": "items:read\tadmin",
    "newline": "items:read\nadmin",
    "vertical-tab": "items:read\x0badmin",
    "file-separator": "items:read\x1cadmin",
    "next-line": "items:read\x85admin",
    "two-spaces": "items:read  admin",
    "leading-space": " items:read",
    "trailing-space": "items:read ",
    "quote-in-scope": 'items:read "admin',
    "backslash-in-scope": "items:read adm\\in",
}


@pytest.mark.parametrize(
    "scope", list(BAD_SCOPE_SEPARATORS.values()), ids=list(BAD_SCOPE_SEPARATORS)
)
def test_scope_not_separated_by_single_spaces_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, scope: str
) -> None:
    token = mint(our_key, make_claims(scope=scope))
    params = assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)
    assert params["error_description"] == "The scope claim is malformed"


@pytest.mark.parametrize(
    "scp",
    [
        ["items:read", "items:read admin"],
        ["items:read", ""],
        ["items:read\u00a0x"],
        "items:read\tx",
    ],
    ids=["space-inside-list-item", "empty-list-item", "no-break-space-in-item", "tab-in-string"],
)
def test_malformed_scp_is_invalid_token(client: FlaskClient, our_key: RSAKey, scp: Any) -> None:
    token = mint(our_key, make_claims(scope=MISSING, scp=scp))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


def test_empty_scope_string_means_no_scopes(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(scope=""))
    assert client.get("/me", headers=auth(token)).get_json()["scopes"] == []


def test_no_scope_claim_passes_require_scopes_without_arguments(
    client: FlaskClient, our_key: RSAKey
) -> None:
    token = mint(our_key, make_claims(scope=MISSING))
    assert client.get("/me", headers=auth(token)).status_code == 200
    assert_refused(client.get("/read", headers=auth(token)), 403, "insufficient_scope", token)


# --------------------------------------------------------------------- verified-token cache


def test_cached_token_still_expires(
    make_client: Callable[..., FlaskClient], our_key: RSAKey
) -> None:
    client = make_client(JWT_LEEWAY_SECONDS=0)
    now = int(time.time())
    token = mint(our_key, make_claims(iat=now, exp=now + 2))
    assert client.get("/read", headers=auth(token)).status_code == 200
    assert client.get("/read", headers=auth(token)).status_code == 200  # served from the cache
    time.sleep(max(0.0, now + 2.1 - time.time()))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", token)


def test_cache_never_lets_other_scopes_through(client: FlaskClient, our_key: RSAKey) -> None:
    reader = mint(our_key, make_claims(scope="items:read"))
    assert client.get("/read", headers=auth(reader)).status_code == 200
    response = client.get("/read-write", headers=auth(reader))
    assert_refused(response, 403, "insufficient_scope", reader)


# --------------------------------------------------------------------- logging, wiring


def test_token_is_never_logged(
    client: FlaskClient, our_key: RSAKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = mint(our_key, make_claims())
    expired = mint(our_key, make_claims(exp=int(time.time()) - 3600, iat=0))
    client.get("/read", headers=auth(good))
    client.get("/read", headers=auth(expired))
    client.get("/read", query_string={"access_token": good})
    assert caplog.records  # refusals are logged ...
    for token in (good, expired):  # ... without the token or any of its three parts
        for part in token.split("."):
            assert part not in caplog.text


def test_readiness_check_is_registered(public_key_file: Path) -> None:
    app = bare_app(JWT_PUBLIC_KEY_FILE=str(public_key_file))
    assert app.extensions["readiness_checks"]["bearer_keys"]() is True


def test_current_principal_outside_protected_view_raises() -> None:
    with Flask("x").test_request_context(), pytest.raises(RuntimeError):
        bearer.current_principal()


def test_protected_view_without_init_app_fails_closed() -> None:
    app = Flask("no_init")
    app.config["TESTING"] = True

    @app.get("/read")
    @bearer.require_scopes("items:read")
    def read() -> str:
        return "leaked"

    with pytest.raises(RuntimeError, match="init_app"):
        app.test_client().get("/read", headers=auth("abc"))


def test_invalid_scope_name_is_refused_at_decoration() -> None:
    with pytest.raises(ValueError, match="scope"):
        bearer.require_scopes('items "read"')


# --------------------------------------------------------------------- configuration refused


@pytest.fixture
def config_error(public_key_file: Path) -> Callable[..., str]:
    def attempt(**config: Any) -> str:
        settings = {"JWT_PUBLIC_KEY_FILE": str(public_key_file), **config}
        with pytest.raises(bearer.BearerConfigError) as excinfo:
            bare_app(**settings)
        return str(excinfo.value)

    return attempt


@pytest.mark.parametrize(
    "algorithms",
    [("HS256",), ("RS256", "HS512"), "RS256,HS384", ("none",), ("RS256", "NONE"), ()],
    ids=["hs256", "mixed-hs512", "string-hs384", "none", "mixed-none", "empty"],
)
def test_symmetric_or_none_algorithms_are_refused_at_init(
    config_error: Callable[..., str], algorithms: Any
) -> None:
    assert "JWT_ALGORITHMS" in config_error(JWT_ALGORITHMS=algorithms)


@pytest.mark.parametrize("name", ["JWT_ISSUER", "JWT_AUDIENCE"])
def test_issuer_and_audience_are_required(config_error: Callable[..., str], name: str) -> None:
    assert name in config_error(**{name: ""})


def test_both_key_sources_are_refused(config_error: Callable[..., str]) -> None:
    assert "exactly one" in config_error(JWT_JWKS_URL="https://idp.test/jwks")


def test_no_key_source_is_refused(config_error: Callable[..., str]) -> None:
    assert "exactly one" in config_error(JWT_PUBLIC_KEY_FILE=None)


@pytest.mark.parametrize(
    ("url", "app_env"),
    [
        ("http://idp.example.com/jwks", "development"),
        ("http://127.0.0.1:9/jwks", "production"),
        ("http://localhost:9/jwks", "production"),
        ("file:///etc/passwd", "development"),
        ("ftp://idp.example.com/jwks", "development"),
    ],
    ids=["http-remote", "http-loopback-production", "http-localhost-production", "file", "ftp"],
)
def test_insecure_jwks_url_is_refused(
    config_error: Callable[..., str], url: str, app_env: str
) -> None:
    message = config_error(JWT_PUBLIC_KEY_FILE=None, JWT_JWKS_URL=url, APP_ENV=app_env)
    assert "JWT_JWKS_URL" in message


def test_private_key_as_public_key_file_is_refused(
    config_error: Callable[..., str], tmp_path: Path, our_key: RSAKey
) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(our_key.as_pem(private=True))
    assert "private key" in config_error(JWT_PUBLIC_KEY_FILE=str(path))


def test_unreadable_public_key_file_is_refused(
    config_error: Callable[..., str], tmp_path: Path
) -> None:
    assert "JWT_PUBLIC_KEY_FILE" in config_error(JWT_PUBLIC_KEY_FILE=str(tmp_path / "nope.pem"))


def test_key_that_fits_no_algorithm_is_refused(
    config_error: Callable[..., str], public_key_file: Path
) -> None:
    assert "JWT_ALGORITHMS" in config_error(JWT_ALGORITHMS=("ES256",))


@pytest.mark.parametrize("leeway", [-1, 301, "lots"])
def test_unreasonable_leeway_is_refused(config_error: Callable[..., str], leeway: Any) -> None:
    assert "JWT_LEEWAY_SECONDS" in config_error(JWT_LEEWAY_SECONDS=leeway)


# --------------------------------------------------------------------- stands alone


def test_module_imports_only_flask_pyjwt_and_stdlib() -> None:
    tree = ast.parse(Path(bearer.__file__).read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file must stand alone"
            roots.add((node.module or "").split(".")[0])
    third_party = roots - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"flask", "jwt"}


def test_module_works_copied_into_another_app(
    tmp_path: Path, our_key: RSAKey, public_key_file: Path
) -> None:
    (tmp_path / "bearer.py").write_text(Path(bearer.__file__).read_text())
    token = mint(our_key, make_claims())
    script = """
import sys
from flask import Flask
import bearer
token, issuer, audience, key_file, package = sys.argv[1:]
app = Flask("other")
app.config.update(JWT_ISSUER=issuer, JWT_AUDIENCE=audience, JWT_PUBLIC_KEY_FILE=key_file)
bearer.init_app(app)
app.add_url_rule("/x", "x", bearer.require_scopes("items:read")(lambda: "ok"))
response = app.test_client().get("/x", headers=dict(Authorization="Bearer " + token))
assert response.status_code == 200, response.status_code
assert package not in sys.modules, "the copy must not pull in the service package"
"""
    package = bearer.__name__.split(".")[0]
    arguments = [token, ISSUER, AUDIENCE, str(public_key_file), package]
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
