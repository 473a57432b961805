"""bearer.py on a bare Flask app (nothing else of the service): RFC 6750, 8725 and 9068.

Tokens come from joserfc, an independent JOSE library, and from PyJWT, so that the module is
not only checked against the library it uses; hostile tokens are built by hand. Every refusal
is checked for its reason (error code and description), not only its status: a token refused
for another reason than the one under test fails the test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey, RSAKey
from werkzeug.test import TestResponse

from jose_helpers import (
    ALG_DOES_NOT_FIT,
    ALG_NOT_ALLOWED,
    AUDIENCE,
    BAD_BINDING,
    BAD_SCOPE_CLAIM,
    BAD_SIGNATURE,
    BOUND_AS_BEARER,
    EXPIRED,
    ISSUER,
    MALFORMED,
    MISSING,
    MISSING_SCOPE,
    NO_TOKEN,
    NOT_YET_VALID,
    RSA_KEYS,
    TOO_LARGE,
    WRONG_AUDIENCE,
    WRONG_ISSUER,
    WRONG_TYPE,
    JwksServer,
    b64url,
    hs256_token,
    make_claims,
    mint,
    private,
    public_jwk,
    segment,
    slug,
    unsigned_token,
)
from {{ cookiecutter.package_name }} import bearer

LIBRARIES = ["joserfc", "pyjwt"]
# RFC 6750 section 3: error_description is limited to these characters.
DESCRIPTION_CHARS = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
INVALID_REQUEST = "The Authorization header is malformed"
ONE_HEADER = "Send exactly one Authorization header"


@pytest.fixture
def our_key() -> RSAKey:
    return RSA_KEYS[0]


@pytest.fixture
def attacker_key() -> RSAKey:
    return RSA_KEYS[1]


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
    @bearer.require_scopes("items:read", "items:write", "items:read")
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
    response: TestResponse,
    status: int,
    error: str | None,
    description: str,
    token: str | None = None,
) -> dict[str, str]:
    """Refused for this reason: status, RFC 6750 challenge (error code and description) and
    problem+json body agree on it; the token never comes back."""
    assert (response.status_code, response.get_json()["detail"]) == (status, description)
    assert response.mimetype == "application/problem+json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"] == HTTPStatus(status).phrase
    params = challenge(response)
    assert params["realm"] == "api"
    if error is None:
        assert set(params) == {"realm"}
        assert "error" not in body
    else:
        assert body["error"] == params["error"] == error
        assert params["error_description"] == description
        assert DESCRIPTION_CHARS.fullmatch(description)
        if error != "insufficient_scope":
            assert "scope" not in params
    if token is not None:
        assert token not in response.get_data(as_text=True)
        assert token not in str(response.headers)
    return params


def token_of_length(key: RSAKey, length: int) -> str:
    """A valid token exactly `length` characters long (a claim pads it)."""
    base = len(mint(key, make_claims(padding="")))
    guess = max(0, (length - base) * 3 // 4)
    for extra in range(8):  # base64 skips some lengths; a longer kid shifts the header too
        for padding in range(max(0, guess - 12), guess + 5):
            token = mint(
                key, make_claims(padding="x" * padding), kid=key.thumbprint() + "k" * extra
            )
            if len(token) == length:
                return token
    raise AssertionError(f"no token of length {length}")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature bearer.py verifies (a cached token is not verified again)."""
    seen: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real_decode(token, *args, **kwargs)

    # The jwt module object is the one bearer.py calls, so this reaches its jwt.decode().
    monkeypatch.setattr(jwt, "decode", counting_decode)
    return seen


# --------------------------------------------------------------------- accepted tokens


@pytest.mark.parametrize("library", LIBRARIES)
def test_valid_token_is_accepted(client: FlaskClient, our_key: RSAKey, library: str) -> None:
    token = mint(our_key, make_claims(scope="items:read items:write"), library=library)
    response = client.get("/me", headers=auth(token))
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice", "scopes": ["items:read", "items:write"]}


@pytest.mark.parametrize(
    "scheme", ["bearer", "BEARER", "bEaReR", "Bearer  ", "Bearer   ", " Bearer", "\tBearer"],
    ids=slug,
)  # fmt: skip
def test_scheme_is_case_insensitive_and_allows_several_spaces(
    client: FlaskClient, our_key: RSAKey, scheme: str
) -> None:
    # RFC 6750 2.1: credentials = "Bearer" 1*SP b64token; RFC 9110: the scheme is case-insensitive
    # and a field value's leading and trailing whitespace is not part of it.
    token = mint(our_key, make_claims())
    response = client.get("/read", headers={"Authorization": f"{scheme} {token} \t"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("value", "status", "error", "description"),
    [
        ("Bearer {token}\x0b", 400, "invalid_request", INVALID_REQUEST),
        ("\x0cBearer {token}", 400, "invalid_request", INVALID_REQUEST),
        ("Bearer {token}X", 401, "invalid_token", MALFORMED),
        ("XBearer {token}", 401, None, NO_TOKEN),  # another scheme
        ("Bearer \t{token}", 400, "invalid_request", INVALID_REQUEST),  # 1*SP, no tab
        ("Bearer X{token}", 401, "invalid_token", MALFORMED),
    ],
    ids=["vertical-tab-after", "form-feed-before", "letter-after", "letter-before",
         "tab-between", "letter-between"],
)  # fmt: skip
def test_only_spaces_and_tabs_around_the_credentials_are_trimmed(
    client: FlaskClient,
    our_key: RSAKey,
    *,
    value: str,
    status: int,
    error: str | None,
    description: str,
) -> None:
    token = mint(our_key, make_claims())
    response = client.get("/read", headers={"Authorization": value.format(token=token)})
    assert_refused(response, status, error, description, token)


def test_audience_list_containing_ours_is_accepted(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(aud=["https://other.test", AUDIENCE]))
    assert client.get("/read", headers=auth(token)).status_code == 200


@pytest.mark.parametrize(
    ("scopes", "granted"),
    [
        ({"scp": ["items:read"]}, ["items:read"]),
        ({"scp": "items:read other"}, ["items:read", "other"]),
        ({"scope": "a items:read b"}, ["a", "b", "items:read"]),
        # RFC 9068 names "scope"; "scp" is a provider's own, so "scope" wins when both come.
        ({"scope": "items:read", "scp": ["admin"]}, ["items:read"]),
    ],
    ids=["scp-list", "scp-string", "scope-string", "scope-before-scp"],
)
def test_scopes_come_from_scope_or_scp(
    client: FlaskClient, our_key: RSAKey, scopes: dict[str, Any], granted: list[str]
) -> None:
    token = mint(our_key, make_claims(**{"scope": MISSING, **scopes}))
    assert client.get("/read", headers=auth(token)).status_code == 200
    assert client.get("/me", headers=auth(token)).get_json()["scopes"] == granted


def protected_principal(app: Flask, token: str) -> bearer.Principal:
    seen: list[bearer.Principal] = []

    @app.get("/principal")
    @bearer.require_scopes()
    def principal_view() -> dict[str, str]:
        seen.append(bearer.current_principal())
        return {}

    assert app.test_client().get("/principal", headers=auth(token)).status_code == 200
    return seen[0]


def test_principal_is_frozen_and_carries_claims(public_key_file: Path, our_key: RSAKey) -> None:
    app = bare_app(JWT_PUBLIC_KEY_FILE=str(public_key_file))
    token = mint(our_key, make_claims(scope="x y", client_id="cli"))
    principal = protected_principal(app, token)
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


@pytest.mark.parametrize(
    ("claims", "client_id"),
    [
        ({"client_id": "cli"}, "cli"),
        ({"client_id": MISSING, "azp": "party"}, "party"),  # OpenID Connect's authorized party
        ({"client_id": "cli", "azp": "party"}, "cli"),  # RFC 9068 names client_id
        ({"client_id": MISSING}, None),
        ({"client_id": 7}, None),
    ],
    ids=["client_id", "azp", "client_id-first", "none", "not-a-string"],
)
def test_client_id_comes_from_client_id_or_azp(
    public_key_file: Path, our_key: RSAKey, claims: dict[str, Any], client_id: str | None
) -> None:
    app = bare_app(JWT_PUBLIC_KEY_FILE=str(public_key_file))
    assert protected_principal(app, mint(our_key, make_claims(**claims))).client_id == client_id


# --------------------------------------------------------------------- no credentials: 401


def test_no_credentials_gets_bare_challenge(client: FlaskClient) -> None:
    response = client.get("/read")
    assert_refused(response, 401, None, NO_TOKEN)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "value",
    ["Basic dXNlcjpwYXNz", "DPoP abc", "Negotiate", "{token}", "Bearer_ {token}"],
    ids=["basic", "dpop", "negotiate", "bare-jwt", "bearer-like"],
)
def test_other_auth_scheme_counts_as_no_credentials(
    client: FlaskClient, our_key: RSAKey, value: str
) -> None:
    # RFC 6750 3.1: an unsupported authentication method gets no error code. A bare JWT is,
    # by RFC 9110 grammar, an auth-scheme of its own (dots are tchars): same answer. Without
    # dpop.py registered, DPoP is one of those other schemes.
    token = mint(our_key, make_claims())
    response = client.get("/read", headers={"Authorization": value.replace("{token}", token)})
    assert_refused(response, 401, None, NO_TOKEN, token)


# --------------------------------------------------------------------- malformed requests: 400


@pytest.mark.parametrize(
    ("header", "description"),
    [
        ("Bearer", "The Authorization header has no token"),
        ("Bearer ", "The Authorization header has no token"),
        ("Bearer\t{token}", INVALID_REQUEST),
        ("Bearer {token} extra", INVALID_REQUEST),
        ("Bearer {token},", ONE_HEADER),
        ("Bearer {token}, Basic dXNlcjpwYXNz", ONE_HEADER),
        ("Bearer {token}\x00", INVALID_REQUEST),
        ("Bearer <{token}>", INVALID_REQUEST),
        ("Bearer: {token}", INVALID_REQUEST),
        ("Bearer {token}==x", INVALID_REQUEST),
        ("", INVALID_REQUEST),
    ],
    ids=[
        "scheme-without-token",
        "scheme-and-space-only",
        "tab-separator",
        "two-values",
        "trailing-comma",
        "folded-headers",
        "nul-byte",
        "not-token68",
        "colon-after-scheme",
        "text-after-padding",
        "empty-header",
    ],
)
def test_malformed_authorization_header_is_invalid_request(
    client: FlaskClient, our_key: RSAKey, header: str, description: str
) -> None:
    token = mint(our_key, make_claims())
    value = header.replace("{token}", token)
    response = client.get("/read", headers={"Authorization": value})
    assert_refused(response, 400, "invalid_request", description, token)


def test_two_authorization_headers_are_invalid_request(
    client: FlaskClient, our_key: RSAKey
) -> None:
    token = mint(our_key, make_claims())
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = client.get("/read", headers=headers)
    assert_refused(response, 400, "invalid_request", ONE_HEADER, token)


IN_QUERY = "Access tokens are not accepted in the query string"
IN_BODY = "Access tokens are not accepted in the request body"


@pytest.mark.parametrize("with_header", [False, True], ids=["alone", "with-header"])
def test_token_in_query_string_is_invalid_request(
    client: FlaskClient, our_key: RSAKey, with_header: bool
) -> None:
    # Refused even beside a header: clients MUST NOT use more than one method (RFC 6750 2).
    token = mint(our_key, make_claims())
    headers = auth(token) if with_header else {}
    response = client.get("/read", query_string={"access_token": token}, headers=headers)
    assert_refused(response, 400, "invalid_request", IN_QUERY, token)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data"]
)
@pytest.mark.parametrize("with_header", [False, True], ids=["alone", "with-header"])
def test_token_in_form_body_is_invalid_request(
    client: FlaskClient, our_key: RSAKey, content_type: str, with_header: bool
) -> None:
    token = mint(our_key, make_claims())
    headers = auth(token) if with_header else {}
    response = client.post(
        "/read", data={"access_token": token}, content_type=content_type, headers=headers
    )
    assert_refused(response, 400, "invalid_request", IN_BODY, token)


def test_other_parameters_and_bodies_are_no_token(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims())
    # Only the access_token parameter is a token sent another way (RFC 6750 2.2, 2.3); a JSON
    # body is no form, whatever it holds.
    assert client.get("/read", query_string={"page": "2"}, headers=auth(token)).status_code == 200
    form = client.post("/read", data={"name": "x"}, headers=auth(token))
    assert form.status_code == 200
    json_body = client.post("/read", json={"access_token": token}, headers=auth(token))
    assert json_body.status_code == 200


# --------------------------------------------------------------------- size limit


def test_token_at_the_default_size_limit_is_accepted_one_byte_more_is_not(
    client: FlaskClient, our_key: RSAKey
) -> None:
    at_limit = token_of_length(our_key, 8192)
    assert client.get("/read", headers=auth(at_limit)).status_code == 200
    over = token_of_length(our_key, 8193)
    assert_refused(client.get("/read", headers=auth(over)), 401, "invalid_token", TOO_LARGE, over)


def test_size_limit_is_configurable(
    make_client: Callable[..., FlaskClient], our_key: RSAKey
) -> None:
    token = mint(our_key, make_claims())
    assert (
        make_client(JWT_MAX_TOKEN_BYTES=len(token)).get("/read", headers=auth(token)).status_code
        == 200
    )
    client = make_client(JWT_MAX_TOKEN_BYTES=len(token) - 1)
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", TOO_LARGE, token)


def test_oversized_garbage_is_refused_for_its_size(client: FlaskClient) -> None:
    # The size is checked before the syntax: the answer says what is wrong first.
    garbage = "<" * 9000
    assert_refused(client.get("/read", headers=auth(garbage)), 401, "invalid_token", TOO_LARGE)


# --------------------------------------------------------------------- algorithms: 401


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_invalid_token(client: FlaskClient, our_key: RSAKey, alg: str) -> None:
    token = unsigned_token(
        {"alg": alg, "typ": "at+jwt", "kid": our_key.thumbprint()}, make_claims()
    )
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", ALG_NOT_ALLOWED, token)


@pytest.mark.parametrize("alg", [None, 256, ["RS256"]], ids=["missing", "number", "list"])
def test_alg_that_is_no_name_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, alg: Any
) -> None:
    header = {"typ": "at+jwt", "kid": our_key.thumbprint()}
    if alg is not None:
        header["alg"] = alg
    token = f"{segment(header)}.{segment(make_claims())}.c2ln"
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", ALG_NOT_ALLOWED, token)


def test_hs256_signed_with_public_key_pem_is_invalid_token(
    client: FlaskClient, our_key: RSAKey
) -> None:
    # The classic key-confusion attack: the public key is public, so anyone can HMAC with it.
    secret = our_key.as_pem(private=False)
    token = hs256_token(secret, {"alg": "HS256", "typ": "at+jwt"}, make_claims())
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", ALG_NOT_ALLOWED, token)


@pytest.mark.parametrize("library", LIBRARIES)
def test_signature_by_other_key_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, attacker_key: RSAKey, library: str
) -> None:
    token = mint(attacker_key, make_claims(), library=library, kid=our_key.thumbprint())
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", BAD_SIGNATURE, token)


def test_embedded_jwk_header_is_never_trusted(client: FlaskClient, attacker_key: RSAKey) -> None:
    token = mint(attacker_key, make_claims(), jwk=public_jwk(attacker_key))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", BAD_SIGNATURE, token)


@pytest.fixture
def attacker_jwks(attacker_key: RSAKey) -> Iterator[JwksServer]:
    server = JwksServer()
    server.publish(attacker_key)
    yield server
    server.stop()


@pytest.mark.parametrize("header_name", ["jku", "x5u"])
def test_key_url_headers_are_never_fetched(
    client: FlaskClient, attacker_key: RSAKey, attacker_jwks: JwksServer, header_name: str
) -> None:
    token = mint(attacker_key, make_claims(), **{header_name: attacker_jwks.url})
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", BAD_SIGNATURE, token)
    assert attacker_jwks.hits == 0


# Both libraries rightly warn while we build the weak key on purpose.
@pytest.mark.filterwarnings("ignore::Warning")
def test_short_rsa_key_is_invalid_token(tmp_path: Path) -> None:
    weak = RSAKey.generate_key(1024)
    path = tmp_path / "weak.pem"
    path.write_bytes(weak.as_pem(private=False))
    client = bare_app(JWT_PUBLIC_KEY_FILE=str(path)).test_client()
    token = mint(weak, make_claims(), library="pyjwt")
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", ALG_DOES_NOT_FIT, token)


def test_ec_token_against_rsa_key_is_invalid_token(
    make_client: Callable[..., FlaskClient],
) -> None:
    ec_key = ECKey.generate_key("P-256")
    client = make_client(JWT_ALGORITHMS=("RS256", "ES256"))
    token = mint(ec_key, make_claims(), alg="ES256")
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", ALG_DOES_NOT_FIT, token)


# --------------------------------------------------------------------- dates: 401


def assert_leeway(client: FlaskClient, key: RSAKey, leeway: int) -> None:
    """A token is accepted while exp + leeway is later than now, in whole seconds (RFC 7519
    NumericDate, as PyJWT compares it). The accepted token keeps a second in hand for a slow
    machine; the refused one sits on the boundary, where one more second of leeway accepts it."""
    now = int(time.time())
    within = mint(key, make_claims(iat=0, exp=now - leeway + 2))
    assert client.get("/read", headers=auth(within)).status_code == 200
    beyond = mint(key, make_claims(iat=0, exp=now - leeway))
    assert_refused(client.get("/read", headers=auth(beyond)), 401, "invalid_token", EXPIRED, beyond)


def test_expiry_leeway_is_30_seconds_by_default(client: FlaskClient, our_key: RSAKey) -> None:
    assert_leeway(client, our_key, 30)


@pytest.mark.parametrize("leeway", [0, 5, "300"])
def test_expiry_leeway_is_configurable(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, leeway: int | str
) -> None:
    assert_leeway(make_client(JWT_LEEWAY_SECONDS=leeway), our_key, int(leeway))


@pytest.mark.parametrize("library", LIBRARIES)
def test_expired_beyond_leeway_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, library: str
) -> None:
    now = int(time.time())
    token = mint(our_key, make_claims(iat=now - 600, exp=now - 31), library=library)
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", EXPIRED, token)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("library", LIBRARIES)
def test_token_from_the_future_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, library: str, claim: str
) -> None:
    token = mint(our_key, make_claims(**{claim: int(time.time()) + 120}), library=library)
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", NOT_YET_VALID, token)


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_dates_from_0_to_the_end_of_year_9999_are_accepted(
    client: FlaskClient, our_key: RSAKey, claim: str
) -> None:
    # Every date a clock can show; exp at the last second of 9999, iat and nbf at the epoch.
    value = 253_402_300_799 if claim == "exp" else 0
    token = mint(our_key, make_claims(**{claim: value}))
    assert client.get("/read", headers=auth(token)).status_code == 200
    assert client.get("/read", headers=auth(token)).status_code == 200  # from the cache


@pytest.mark.parametrize(
    ("claims", "claim"),
    [({"exp": 253_402_300_800}, "exp"), ({"exp": 1e300}, "exp"), ({"iat": -1}, "iat"),
     ({"nbf": -1}, "nbf"), ({"iat": -0.5}, "iat")],
    ids=["exp-year-10000", "exp-1e300", "iat-before-1970", "nbf-before-1970", "iat-fraction"],
)  # fmt: skip
def test_dates_outside_a_clock_are_invalid_token(
    client: FlaskClient, our_key: RSAKey, claims: dict[str, int], claim: str
) -> None:
    token = mint(our_key, make_claims(**claims))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", f"The {claim} claim is out of range", token)


# --------------------------------------------------------------------- claims: 401


@pytest.mark.parametrize(
    "issuer",
    ["https://evil.test/", "https://issuer.test", "https://issuer.test/x", "HTTPS://ISSUER.TEST/"],
    ids=["other", "no-trailing-slash", "longer", "case"],
)
def test_wrong_issuer_is_invalid_token(client: FlaskClient, our_key: RSAKey, issuer: str) -> None:
    token = mint(our_key, make_claims(iss=issuer))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", WRONG_ISSUER, token)


@pytest.mark.parametrize(
    ("audience", "description"),
    [
        ("https://other.test", WRONG_AUDIENCE),
        (["https://other.test"], WRONG_AUDIENCE),
        ("https://api.test/", WRONG_AUDIENCE),
        ([], "The access token lacks the aud claim"),
        ("", "The access token lacks the aud claim"),
    ],
    ids=["other", "other-in-list", "near-miss", "empty-list", "empty"],
)
def test_wrong_audience_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, audience: Any, description: str
) -> None:
    token = mint(our_key, make_claims(aud=audience))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", description, token)


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub"])
@pytest.mark.parametrize("library", LIBRARIES)
def test_missing_required_claim_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, claim: str, library: str
) -> None:
    token = mint(our_key, make_claims(**{claim: MISSING}), library=library)
    response = client.get("/read", headers=auth(token))
    assert_refused(
        response, 401, "invalid_token", f"The access token lacks the {claim} claim", token
    )


@pytest.mark.parametrize(
    ("sub", "description"),
    [
        (123, "The sub claim must be a string"),
        (["alice"], "The sub claim must be a string"),
        ({"id": "alice"}, "The sub claim must be a string"),
        (True, "The sub claim must be a string"),
        ("", "The sub claim must not be empty"),
    ],
    ids=["int", "list", "object", "bool", "empty"],
)
def test_non_string_or_empty_sub_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, sub: Any, description: str
) -> None:
    token = mint(our_key, make_claims(sub=sub))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", description, token)


@pytest.mark.parametrize(
    ("claims", "claim"),
    [({"exp": "9999999999"}, "exp"), ({"iat": "0"}, "iat"), ({"nbf": "0"}, "nbf"),
     ({"nbf": False}, "nbf"), ({"iat": True}, "iat")],
    ids=["exp-string", "iat-string", "nbf-string", "nbf-false", "iat-true"],
)  # fmt: skip
def test_non_numeric_dates_are_invalid_token(
    client: FlaskClient, our_key: RSAKey, claims: dict[str, Any], claim: str
) -> None:
    token = mint(our_key, make_claims(**claims))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", f"The {claim} claim must be a number", token)


@pytest.mark.parametrize(
    "scope",
    [{"scope": 7}, {"scp": [1, 2]}, {"scope": ["items:read"]}, {"scp": 7}, {"scope": None}],
    ids=["scope-number", "scp-numbers", "scope-list", "scp-number", "scope-null"],
)
def test_malformed_scope_claim_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, scope: dict[str, Any]
) -> None:
    token = mint(our_key, make_claims(**{"scope": MISSING, **scope}))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", BAD_SCOPE_CLAIM, token)


def signed_payload(key: RSAKey, payload: str) -> str:
    """A token whose payload is this exact JSON text, validly signed by key."""
    header = {"kid": key.thumbprint(), "typ": "at+jwt"}
    return jwt.api_jws.encode(payload.encode(), private(key), algorithm="RS256", headers=header)


def payload_with(**raw: str) -> str:
    """Valid claims as JSON text, with some values replaced by raw JSON (numbers json.dumps
    cannot write: 400 digits, 1e400, NaN)."""
    claims = make_claims(**dict.fromkeys(raw, "@"))
    text = json.dumps(claims)
    for name, value in raw.items():
        text = text.replace(f'"{name}": "@"', f'"{name}": {value}')
    return text


HUGE = "1" + "0" * 400
OUT_OF_RANGE = "The {} claim is out of range"
INVALID = "The access token is invalid"  # what PyJWT says of an iat it cannot read
# Each absurd value and the refusal it gets: PyJWT's own checks (int() of a date) answer some,
# bearer.py's range check the others; none may end as a 500.
ABSURD_NUMBERS: dict[str, tuple[dict[str, str], str]] = {
    "exp-400-digits": ({"exp": HUGE}, OUT_OF_RANGE.format("exp")),
    "exp-minus-400-digits": ({"exp": "-" + HUGE}, EXPIRED),
    "exp-1e400": ({"exp": "1e400"}, MALFORMED),
    "exp-minus-1e400": ({"exp": "-1e400"}, MALFORMED),
    "exp-infinity": ({"exp": "Infinity"}, MALFORMED),
    "exp-nan": ({"exp": "NaN"}, MALFORMED),
    "exp-1e308": ({"exp": "1e308"}, OUT_OF_RANGE.format("exp")),
    "exp-year-10000": ({"exp": "253402300800"}, OUT_OF_RANGE.format("exp")),
    "iat-400-digits": ({"iat": HUGE}, NOT_YET_VALID),
    "iat-minus-400-digits": ({"iat": "-" + HUGE}, OUT_OF_RANGE.format("iat")),
    "iat-1e400": ({"iat": "1e400"}, INVALID),
    "iat-nan": ({"iat": "NaN"}, INVALID),
    "iat-minus-infinity": ({"iat": "-Infinity"}, INVALID),
    "nbf-400-digits": ({"nbf": HUGE}, NOT_YET_VALID),
    "nbf-minus-400-digits": ({"nbf": "-" + HUGE}, OUT_OF_RANGE.format("nbf")),
    "nbf-minus-1e400": ({"nbf": "-1e400"}, MALFORMED),
    "nbf-nan": ({"nbf": "NaN"}, MALFORMED),
    "nested-cnf": ({"cnf": '{"jkt": ' + HUGE + "}"}, BAD_BINDING),
}


@pytest.mark.parametrize("case", list(ABSURD_NUMBERS.values()), ids=list(ABSURD_NUMBERS))
def test_absurd_numbers_in_a_signed_token_are_invalid_token_never_500(
    client: FlaskClient, our_key: RSAKey, case: tuple[dict[str, str], str]
) -> None:
    raw, description = case
    token = signed_payload(our_key, payload_with(**raw))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", description, token)
    # Never served from the verified-token cache the second time.
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", description, token)


@pytest.mark.parametrize("error", [OverflowError, ValueError, TypeError, RecursionError])
def test_a_parse_error_that_escapes_pyjwt_is_a_malformed_token_never_500(
    client: FlaskClient, our_key: RSAKey, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    # PyJWT 2.15 turns every one into DecodeError; older releases let int(1e400)'s
    # OverflowError through, and a future one may again: bearer.py must not depend on it.
    def decode(*args: Any, **kwargs: Any) -> Any:
        raise error("from inside the JWT library")

    monkeypatch.setattr(jwt, "decode", decode)
    token = mint(our_key, make_claims(scope="items:read"))
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", MALFORMED, token)


def test_absurd_unknown_claim_is_ignored(client: FlaskClient, our_key: RSAKey) -> None:
    token = signed_payload(our_key, payload_with(ext="[" * 50 + HUGE + "]" * 50))
    assert client.get("/read", headers=auth(token)).status_code == 200


def test_tampered_payload_is_invalid_token(client: FlaskClient, our_key: RSAKey) -> None:
    header, _, signature = mint(our_key, make_claims(scope="items:read")).split(".")
    forged = f"{header}.{segment(make_claims(scope='items:read admin'))}.{signature}"
    response = client.get("/read", headers=auth(forged))
    assert_refused(response, 401, "invalid_token", BAD_SIGNATURE, forged)


def test_tampered_signature_is_invalid_token(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims())
    at = len(token) - 20  # inside the signature, away from its last, partly unused character
    forged = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    response = client.get("/read", headers=auth(forged))
    assert_refused(response, 401, "invalid_token", BAD_SIGNATURE, forged)


@pytest.mark.parametrize(
    ("token", "description"),
    [
        ("abc", MALFORMED),
        ("a.b", MALFORMED),
        ("a.b.c", MALFORMED),
        ("W10.e30.c2ln", MALFORMED),
        # An empty header has no alg: refused by the allowlist before anything looks further.
        ("e30.e30.", ALG_NOT_ALLOWED),
    ],
    ids=["one-part", "two-parts", "garbage", "header-not-object", "empty-objects"],
)
def test_malformed_jwt_is_invalid_token(client: FlaskClient, token: str, description: str) -> None:
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", description)


NESTED = '{"alg":"RS256","x":' + "[" * 2500 + "]" * 2500 + "}"


@pytest.mark.parametrize("payload", ["not-json", "[1, 2]", '"text"', NESTED],
                         ids=["not-json", "array", "string", "deeply-nested"])  # fmt: skip
def test_signed_payload_that_is_no_claims_object_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, payload: str
) -> None:
    token = signed_payload(our_key, payload)
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", MALFORMED, token)


def test_deeply_nested_header_is_invalid_token(client: FlaskClient) -> None:
    token = f"{b64url(NESTED.encode())}.{segment(make_claims())}.c2ln"
    assert_refused(client.get("/read", headers=auth(token)), 401, "invalid_token", MALFORMED)


def test_crit_header_is_invalid_token(client: FlaskClient, our_key: RSAKey) -> None:
    header: dict[str, Any] = {"crit": ["exp-ext"], "exp-ext": 1}
    token = mint(our_key, make_claims(), library="pyjwt", **header)
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", MALFORMED, token)


# --------------------------------------------------------------------- token type (typ)


def typed(key: RSAKey, claims: dict[str, Any], typ: Any) -> str:
    """A token signed by key with this typ header, whatever it is; None leaves typ out (PyJWT
    and joserfc write one, and joserfc refuses to write one that is not a string)."""
    return jwt.api_jws.encode(
        json.dumps(claims).encode(), private(key), algorithm="RS256",
        headers={"kid": key.thumbprint(), "typ": typ},
    )  # fmt: skip


def without_typ(key: RSAKey, claims: dict[str, Any]) -> str:
    return typed(key, claims, None)


@pytest.mark.parametrize("typ", [None, "JWT", "id_token+jwt", "dpop+jwt", "jwt+at", 7, ["at+jwt"]])
@pytest.mark.parametrize("setting", [None, "", "at+jwt", "application/at+jwt", "AT+JWT"])
def test_other_token_types_are_invalid_token(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, typ: Any, setting: str | None
) -> None:
    # Unset or empty, the setting means at+jwt: without the check an ID token signed by the
    # same provider, with the same iss and aud, would pass as an access token.
    client = make_client(**({} if setting is None else {"JWT_TOKEN_TYPE": setting}))
    claims = make_claims(nonce="n-0S6_WzA2Mj", auth_time=int(time.time()))
    token = typed(our_key, claims, typ)
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", WRONG_TYPE, token)


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/AT+JWT"])
@pytest.mark.parametrize("setting", [None, "", "at+jwt", "application/at+jwt", "AT+JWT"])
def test_access_token_types_are_accepted(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, typ: str, setting: str | None
) -> None:
    # RFC 7515 section 4.1.9: compared case-insensitively, "application/" may be left out.
    client = make_client(**({} if setting is None else {"JWT_TOKEN_TYPE": setting}))
    token = mint(our_key, make_claims(), typ=typ)
    assert client.get("/read", headers=auth(token)).status_code == 200


@pytest.mark.parametrize("setting", ["any", "ANY", "Any"])
def test_token_type_check_can_be_turned_off(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, setting: str
) -> None:
    client = make_client(JWT_TOKEN_TYPE=setting)
    for token in (mint(our_key, make_claims(), typ="JWT"), without_typ(our_key, make_claims())):
        assert client.get("/read", headers=auth(token)).status_code == 200


def test_a_provider_specific_token_type_can_be_required(
    make_client: Callable[..., FlaskClient], our_key: RSAKey
) -> None:
    client = make_client(JWT_TOKEN_TYPE="application/vnd.example+jwt")
    for typ in ("vnd.example+jwt", "application/VND.example+JWT"):
        assert (
            client.get("/read", headers=auth(mint(our_key, make_claims(), typ=typ))).status_code
            == 200
        )
    token = mint(our_key, make_claims())  # at+jwt is not that type
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", WRONG_TYPE, token)


# --------------------------------------------------------------------- DPoP binding (cnf)


@pytest.mark.parametrize(
    "cnf",
    [{"jkt": "A" * 42}, {"jkt": "A" * 44}, {"jkt": "A" * 42 + "="}, {"jkt": 12},
     {"x5t#S256": "A" * 43}, "A" * 43, None],
    ids=["jkt-42", "jkt-44", "jkt-padded", "jkt-number", "mtls", "string", "null"],
)  # fmt: skip
def test_token_bound_in_a_way_this_api_cannot_check_is_invalid_token(
    client: FlaskClient, our_key: RSAKey, cnf: Any
) -> None:
    token = mint(our_key, make_claims(cnf=cnf))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", BAD_BINDING, token)


@pytest.mark.parametrize("jkt", ["A" * 43, "0123456789_-" * 3 + "abcdefg"])
def test_dpop_bound_token_is_refused_as_a_bearer_token(
    client: FlaskClient, our_key: RSAKey, jkt: str
) -> None:
    # RFC 9449 section 7.2: without dpop.py, a DPoP-bound token is never accepted: sent as a
    # bearer token it would be a stolen token's way around its proof.
    token = mint(our_key, make_claims(cnf={"jkt": jkt}))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", BOUND_AS_BEARER, token)


# --------------------------------------------------------------------- scopes: 403


def test_missing_scope_is_insufficient_scope(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(scope="items:write"))
    response = client.get("/read", headers=auth(token))
    params = assert_refused(response, 403, "insufficient_scope", MISSING_SCOPE, token)
    assert params["scope"] == "items:read"


def test_every_listed_scope_is_needed(client: FlaskClient, our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(scope="items:read"))
    response = client.get("/read-write", headers=auth(token))
    params = assert_refused(response, 403, "insufficient_scope", MISSING_SCOPE, token)
    # Each scope once, in the order the view lists them.
    assert params["scope"] == "items:read items:write"
    both = mint(our_key, make_claims(scope="items:write items:read"))
    assert client.get("/read-write", headers=auth(both)).status_code == 200


@pytest.mark.parametrize(
    "scope", ["items:readonly", "items", "ITEMS:READ", "items:read,items:write"], ids=str
)
def test_scope_match_is_exact(client: FlaskClient, our_key: RSAKey, scope: str) -> None:
    token = mint(our_key, make_claims(scope=scope))
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 403, "insufficient_scope", MISSING_SCOPE, token)


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
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", BAD_SCOPE_CLAIM, token)


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
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 401, "invalid_token", BAD_SCOPE_CLAIM, token)


@pytest.mark.parametrize("scopes", [{"scope": ""}, {"scp": ""}, {"scp": []}], ids=str)
def test_empty_scope_means_no_scopes(
    client: FlaskClient, our_key: RSAKey, scopes: dict[str, Any]
) -> None:
    token = mint(our_key, make_claims(**{"scope": MISSING, **scopes}))
    assert client.get("/me", headers=auth(token)).get_json()["scopes"] == []


def test_no_scope_claim_passes_require_scopes_without_arguments(
    client: FlaskClient, our_key: RSAKey
) -> None:
    token = mint(our_key, make_claims(scope=MISSING))
    assert client.get("/me", headers=auth(token)).get_json()["scopes"] == []
    response = client.get("/read", headers=auth(token))
    assert_refused(response, 403, "insufficient_scope", MISSING_SCOPE, token)


# --------------------------------------------------------------------- verified-token cache


def test_a_verified_token_is_not_verified_again(
    client: FlaskClient, our_key: RSAKey, decodes: list[str]
) -> None:
    # Cached until exp plus the leeway, even when that is less than the leeway from now.
    token = mint(our_key, make_claims(exp=int(time.time()) + 5))
    for _ in range(3):
        assert client.get("/read", headers=auth(token)).status_code == 200
    assert decodes == [token]


def test_cache_size_zero_verifies_every_time(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, decodes: list[str]
) -> None:
    client = make_client(JWT_VERIFIED_CACHE_SIZE=0)
    token = mint(our_key, make_claims())
    for _ in range(2):
        assert client.get("/read", headers=auth(token)).status_code == 200
    assert decodes == [token, token]


def test_cache_keeps_the_most_recently_used_tokens(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, decodes: list[str]
) -> None:
    client = make_client(JWT_VERIFIED_CACHE_SIZE=2)
    a, b, c = (mint(our_key, make_claims(jti=name)) for name in "abc")
    for token in (a, b, a, c):  # a was used after b: c's entry evicts b, the least recent
        assert client.get("/read", headers=auth(token)).status_code == 200
    assert decodes == [a, b, c]
    for token in (a, c, b):
        assert client.get("/read", headers=auth(token)).status_code == 200
    assert decodes == [a, b, c, b]


def test_a_cache_of_one_token_holds_exactly_one(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, decodes: list[str]
) -> None:
    # 1 is the smallest cache, not a second way to turn it off (0 does that).
    client = make_client(JWT_VERIFIED_CACHE_SIZE=1)
    a, b = (mint(our_key, make_claims(jti=name)) for name in "ab")
    for token in (a, a, b, b, a):
        assert client.get("/read", headers=auth(token)).status_code == 200
    assert decodes == [a, b, a]


def test_the_cache_answers_until_exp_plus_leeway_and_no_longer(
    make_client: Callable[..., FlaskClient],
    our_key: RSAKey,
    decodes: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(JWT_LEEWAY_SECONDS=5)
    now = int(time.time())
    token = mint(our_key, make_claims(exp=now + 100))
    assert client.get("/read", headers=auth(token)).status_code == 200
    # The cache's clock moves on (PyJWT keeps reading the real one, so the token stays valid
    # for it): until exp + leeway the cache answers, from then on the token is verified again,
    # as PyJWT refuses it from that second on.
    monkeypatch.setattr(time, "time", lambda: now + 104.999)
    assert client.get("/read", headers=auth(token)).status_code == 200
    assert decodes == [token]
    monkeypatch.setattr(time, "time", lambda: now + 105)
    assert client.get("/read", headers=auth(token)).status_code == 200
    assert decodes == [token, token]


def test_cache_never_lets_other_scopes_through(client: FlaskClient, our_key: RSAKey) -> None:
    reader = mint(our_key, make_claims(scope="items:read"))
    assert client.get("/read", headers=auth(reader)).status_code == 200
    response = client.get("/read-write", headers=auth(reader))
    assert_refused(response, 403, "insufficient_scope", MISSING_SCOPE, reader)


# --------------------------------------------------------------------- logging, wiring


def test_each_refusal_is_logged_with_its_reason(
    client: FlaskClient, our_key: RSAKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=bearer.__name__)
    expired = mint(our_key, make_claims(exp=int(time.time()) - 3600, iat=0))
    client.get("/read", headers=auth(expired))
    client.get("/read")
    client.get("/read", headers=auth(mint(our_key, make_claims(scope=""))))
    assert [record.getMessage() for record in caplog.records] == [
        f"bearer token refused: status=401 error=invalid_token reason={EXPIRED}",
        f"bearer token refused: status=401 error=none reason={NO_TOKEN}",
        f"bearer token refused: status=403 error=insufficient_scope reason={MISSING_SCOPE}",
    ]


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
    with Flask("x").test_request_context(), pytest.raises(RuntimeError) as raised:
        bearer.current_principal()
    assert str(raised.value) == "current_principal() is only usable inside a @require_scopes view"


def test_protected_view_without_init_app_fails_closed() -> None:
    app = Flask("no_init")
    app.config["TESTING"] = True

    @app.get("/read")
    @bearer.require_scopes("items:read")
    def read() -> str:
        return "leaked"

    with pytest.raises(RuntimeError) as raised:
        app.test_client().get("/read", headers=auth("abc"))
    assert str(raised.value) == "bearer.init_app(app) was not called"


@pytest.mark.parametrize("scope", ['items "read"', "items read", "", "items\\read", "é"], ids=slug)
def test_invalid_scope_name_is_refused_at_decoration(scope: str) -> None:
    with pytest.raises(ValueError, match="not a valid OAuth scope"):
        bearer.require_scopes("items:read", scope)


def test_views_publish_the_scopes_they_require() -> None:
    # openapi.py documents each route's security from this attribute.
    view = bearer.require_scopes("b", "a", "b")(lambda: "x")
    assert view.required_scopes == ("b", "a")  # type: ignore[attr-defined]
