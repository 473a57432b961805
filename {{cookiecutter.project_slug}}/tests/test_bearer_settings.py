"""bearer.init_app's settings: each one with every spelling it accepts, values it must refuse
(the exact message, which names the setting), and each limit at its boundary and one past it.

Values arrive as strings from the environment (settings.py passes them on unchanged) or as
Python values from an app that copied bearer.py and fills app.config itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from joserfc.jwk import ECKey, RSAKey

from jose_helpers import (
    ALG_NOT_ALLOWED,
    AUDIENCE,
    ISSUER,
    RSA_KEYS,
    JwksServer,
    make_claims,
    mint,
    slug,
)
from {{ cookiecutter.package_name }} import bearer


@pytest.fixture
def our_key() -> RSAKey:
    return RSA_KEYS[0]


@pytest.fixture
def public_key_file(tmp_path: Path, our_key: RSAKey) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(our_key.as_pem(private=False))
    return path


@pytest.fixture
def jwks(our_key: RSAKey) -> Iterator[JwksServer]:
    server = JwksServer()
    server.publish(our_key)
    yield server
    server.stop()


@pytest.fixture
def make_app(public_key_file: Path) -> Callable[..., Flask]:
    """An app with bearer.py alone; a None value leaves that setting out of app.config."""

    def build(**changes: Any) -> Flask:
        config = {
            "APP_ENV": "test",
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "JWT_PUBLIC_KEY_FILE": str(public_key_file),
            **changes,
        }
        app = Flask("bearer_settings")
        app.config.update({name: value for name, value in config.items() if value is not None})
        bearer.init_app(app)

        @app.get("/read")
        @bearer.require_scopes("items:read")
        def read() -> str:
            return "ok"

        return app

    return build


@pytest.fixture
def refusal(make_app: Callable[..., Flask]) -> Callable[..., str]:
    def attempt(**changes: Any) -> str:
        with pytest.raises(bearer.BearerConfigError) as excinfo:
            make_app(**changes)
        setting = str(excinfo.value).partition(":")[0]
        assert excinfo.value.setting == setting
        return str(excinfo.value)

    return attempt


def status_of(app: Flask, token: str) -> int:
    return app.test_client().get("/read", headers={"Authorization": f"Bearer {token}"}).status_code


# --------------------------------------------------------------------- numbers


# name: (lowest, highest) allowed value.
LIMITS = {
    "JWT_LEEWAY_SECONDS": (0, 300),
    "JWT_MAX_TOKEN_BYTES": (256, 65_536),
    "JWT_JWKS_CACHE_SECONDS": (1, 86_400),
    "JWT_JWKS_COOLDOWN_SECONDS": (0, 3_600),
    "JWT_JWKS_TIMEOUT_SECONDS": (1, 60),
    "JWT_VERIFIED_CACHE_SIZE": (0, 1_000_000),
}


@pytest.mark.parametrize("name", list(LIMITS))
def test_numbers_at_their_limits_are_accepted(make_app: Callable[..., Flask], name: str) -> None:
    low, high = LIMITS[name]
    for value in (low, high, str(low), f" {high}\n", f"+{high}"):
        make_app(**{name: value})


@pytest.mark.parametrize("name", list(LIMITS))
def test_numbers_one_past_their_limits_are_refused(refusal: Callable[..., str], name: str) -> None:
    low, high = LIMITS[name]
    for value in (low - 1, high + 1, str(low - 1), str(high + 1)):
        assert refusal(**{name: value}) == (
            f"{name}: must be between {low} and {high}, got {value!r}"
        )


@pytest.mark.parametrize("name", list(LIMITS))
def test_numbers_that_are_not_whole_numbers_are_refused(
    refusal: Callable[..., str], name: str
) -> None:
    # True == 1 and int(2.5) == 2 would pass a range check: neither counts seconds or bytes.
    for value in ("lots", "1.5", "", "0x10", 2.5, 30.0, True, False, [5]):
        assert refusal(**{name: value}) == f"{name}: must be a whole number, got {value!r}"


def test_numbers_given_as_text_take_effect(make_app: Callable[..., Flask], our_key: RSAKey) -> None:
    token = mint(our_key, make_claims(padding="x" * 7000))  # over the default 8192 bytes
    assert status_of(make_app(JWT_MAX_TOKEN_BYTES=" 12000 "), token) == 200
    assert status_of(make_app(JWT_MAX_TOKEN_BYTES="8192"), token) == 401


def test_jwks_timings_reach_the_key_cache(make_app: Callable[..., Flask], jwks: JwksServer) -> None:
    app = make_app(
        JWT_PUBLIC_KEY_FILE=None,
        JWT_JWKS_URL=jwks.url,
        JWT_JWKS_CACHE_SECONDS="7",
        JWT_JWKS_COOLDOWN_SECONDS=8,
        JWT_JWKS_TIMEOUT_SECONDS="9",
    )
    keys = app.extensions["bearer"].keys
    assert (keys.max_age, keys.cooldown, keys.timeout) == (7, 8, 9)


def test_jwks_timings_have_defaults(make_app: Callable[..., Flask], jwks: JwksServer) -> None:
    keys = make_app(JWT_PUBLIC_KEY_FILE=None, JWT_JWKS_URL=jwks.url).extensions["bearer"].keys
    assert (keys.max_age, keys.cooldown, keys.timeout) == (300, 30, 5)


def test_verifier_settings_have_defaults(make_app: Callable[..., Flask]) -> None:
    verifier = make_app().extensions["bearer"]
    assert (verifier.leeway, verifier.max_token_bytes, verifier.cache.size) == (30, 8192, 4096)
    assert (verifier.algorithms, verifier.token_type, verifier.realm) == (
        ("RS256",),
        "at+jwt",
        "api",
    )


@pytest.mark.parametrize(
    "name", ["JWT_JWKS_CACHE_SECONDS", "JWT_JWKS_COOLDOWN_SECONDS", "JWT_JWKS_TIMEOUT_SECONDS"]
)
def test_jwks_timings_are_checked_with_a_key_file_too(
    refusal: Callable[..., str], name: str
) -> None:
    # A typo is reported before anyone switches to a JWKS and relies on it.
    assert refusal(**{name: "soon"}) == f"{name}: must be a whole number, got 'soon'"


# --------------------------------------------------------------------- algorithms


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (None, ["RS256"]),
        ("PS256", ["PS256"]),
        ("RS256,PS256", ["RS256", "PS256"]),
        ("RS256 PS256", ["RS256", "PS256"]),
        (" RS256 , PS256,", ["RS256", "PS256"]),
        ("PS256,PS256", ["PS256"]),
        (("RS256", "PS256"), ["RS256", "PS256"]),
        (["PS256", "RS256", "PS256"], ["PS256", "RS256"]),
    ],
    ids=slug,
)
def test_algorithm_spellings(
    make_app: Callable[..., Flask], our_key: RSAKey, value: Any, allowed: list[str]
) -> None:
    app = make_app(JWT_ALGORITHMS=value)
    assert app.extensions["bearer"].algorithms == tuple(allowed)
    for alg in ("RS256", "PS256", "RS512"):
        response = app.test_client().get(
            "/read", headers={"Authorization": f"Bearer {mint(our_key, make_claims(), alg=alg)}"}
        )
        if alg in allowed:
            assert response.status_code == 200, alg
        else:
            assert response.get_json()["detail"] == ALG_NOT_ALLOWED, alg


NO_ALGORITHM = "JWT_ALGORITHMS: give at least one algorithm, e.g. RS256"


@pytest.mark.parametrize("value", ["", " ", ",", (), [], 256, {"RS256"}, b"RS256"], ids=slug)
def test_no_algorithm_is_refused(refusal: Callable[..., str], value: Any) -> None:
    assert refusal(JWT_ALGORITHMS=value) == NO_ALGORITHM


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("HS256", "'HS256'"),
        ("RS256,HS384", "'HS384'"),
        (("RS256", "HS512"), "'HS512'"),
        ("none", "'none'"),
        (("RS256", "NONE"), "'NONE'"),
        ("rs256", "'rs256'"),
        ("RS256;PS256", "'RS256;PS256'"),
        (("RS256", 256), "256"),
        (("RS256", None), "None"),
    ],
    ids=slug,
)
def test_symmetric_none_or_unknown_algorithms_are_refused(
    refusal: Callable[..., str], value: Any, refused: str
) -> None:
    assert refusal(JWT_ALGORITHMS=value) == (
        f"JWT_ALGORITHMS: {refused} is not allowed; use asymmetric algorithms only (ES256, "
        "ES384, ES512, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512); HS* and none are "
        "refused (RFC 8725 section 3.1)"
    )


# --------------------------------------------------------------------- issuer, audience


@pytest.mark.parametrize("name", ["JWT_ISSUER", "JWT_AUDIENCE"])
@pytest.mark.parametrize("value", [None, "", "  ", "\t\n", 7, ["https://issuer.test/"]], ids=slug)
def test_issuer_and_audience_are_required(
    refusal: Callable[..., str], name: str, value: Any
) -> None:
    assert refusal(**{name: value}) == f"{name}: required"


# --------------------------------------------------------------------- key source


EXACTLY_ONE = "JWT_JWKS_URL: set exactly one of JWT_JWKS_URL and JWT_PUBLIC_KEY_FILE"


@pytest.mark.parametrize(
    ("url", "key_file"),
    [("https://idp.test/jwks", "keep"), (None, None), ("", None), ("", "")],
    ids=["both", "neither", "empty-url", "both-empty"],
)
def test_exactly_one_key_source(
    refusal: Callable[..., str], public_key_file: Path, url: str | None, key_file: str | None
) -> None:
    key = str(public_key_file) if key_file == "keep" else key_file
    assert refusal(JWT_JWKS_URL=url, JWT_PUBLIC_KEY_FILE=key) == EXACTLY_ONE


def test_an_empty_jwks_url_beside_a_key_file_counts_as_unset(
    make_app: Callable[..., Flask], our_key: RSAKey
) -> None:
    assert status_of(make_app(JWT_JWKS_URL=""), mint(our_key, make_claims())) == 200


def test_unreadable_public_key_file_is_refused(refusal: Callable[..., str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    assert refusal(JWT_PUBLIC_KEY_FILE=str(missing)) == (
        f"JWT_PUBLIC_KEY_FILE: cannot read {missing} (No such file or directory)"
    )


@pytest.mark.parametrize(
    "private_format",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "pkcs1"],
)
def test_private_key_as_public_key_file_is_refused(
    refusal: Callable[..., str], tmp_path: Path, our_key: RSAKey, private_format: Any
) -> None:
    path = tmp_path / "private.pem"
    private_key = our_key.private_key
    assert private_key is not None
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, private_format, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    assert refusal(JWT_PUBLIC_KEY_FILE=str(path)) == (
        "JWT_PUBLIC_KEY_FILE: holds a private key; give the public key only"
    )


@pytest.mark.parametrize(
    ("algorithms", "key"),
    [(("ES256",), "rsa"), (("RS256", "PS256"), "ec"), (("RS256",), "garbage")],
    ids=["rsa-key-es256", "ec-key-rsa-algs", "not-a-key"],
)
def test_key_that_fits_no_algorithm_is_refused(
    refusal: Callable[..., str], tmp_path: Path, our_key: RSAKey, algorithms: Any, key: str
) -> None:
    path = tmp_path / "key.pem"
    pems = {
        "rsa": our_key.as_pem(private=False),
        "ec": ECKey.generate_key("P-256").as_pem(private=False),
        "garbage": b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    }
    path.write_bytes(pems[key])
    assert refusal(JWT_PUBLIC_KEY_FILE=str(path), JWT_ALGORITHMS=algorithms) == (
        f"JWT_PUBLIC_KEY_FILE: the key fits none of JWT_ALGORITHMS ({', '.join(algorithms)})"
    )


def test_a_key_file_serves_the_algorithms_it_fits(
    make_app: Callable[..., Flask], our_key: RSAKey
) -> None:
    # An RSA key cannot verify ES256; the RSA algorithms configured beside it still work.
    app = make_app(JWT_ALGORITHMS="ES256 PS256")
    assert status_of(app, mint(our_key, make_claims(), alg="PS256")) == 200


# --------------------------------------------------------------------- JWKS URL and APP_ENV


HTTPS_ONLY = "JWT_JWKS_URL: must be an https URL (http only for a loopback host outside production)"
HTTPS_IN_PRODUCTION = "JWT_JWKS_URL: must use https in production"


@pytest.mark.parametrize(
    "url",
    ["http://idp.example.com/jwks", "http://10.0.0.1/jwks", "file:///etc/passwd",
     "ftp://idp.example.com/jwks", "https:///jwks", "http:///jwks", "idp.example.com/jwks"],
)  # fmt: skip
def test_jwks_url_must_be_https(refusal: Callable[..., str], url: str) -> None:
    for app_env in ("development", "production"):
        assert refusal(JWT_PUBLIC_KEY_FILE=None, JWT_JWKS_URL=url, APP_ENV=app_env) == HTTPS_ONLY


@pytest.mark.parametrize(
    "app_env",
    [None, "production", "Production", "PRODUCTION", " production", "prod", "staging", ""],
)
def test_http_jwks_on_loopback_is_refused_unless_development_or_test(
    refusal: Callable[..., str], jwks: JwksServer, app_env: str | None
) -> None:
    # Production unless the app says otherwise: a misspelt APP_ENV must not relax a rule.
    for url in (jwks.url, jwks.url.replace("127.0.0.1", "localhost")):
        message = refusal(JWT_PUBLIC_KEY_FILE=None, JWT_JWKS_URL=url, APP_ENV=app_env)
        assert message == HTTPS_IN_PRODUCTION


@pytest.mark.parametrize("app_env", ["development", "test"])
def test_http_jwks_on_loopback_is_allowed_in_development_and_test(
    make_app: Callable[..., Flask], jwks: JwksServer, our_key: RSAKey, app_env: str
) -> None:
    app = make_app(JWT_PUBLIC_KEY_FILE=None, JWT_JWKS_URL=jwks.url, APP_ENV=app_env)
    assert status_of(app, mint(our_key, make_claims())) == 200


# is_loopback is public (settings.py asks it about issuers and hosts-file lines): the spellings
# its callers may hand it as they are, and look-alikes that are other hosts.
@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost.", "LOCALHOST.", " localhost ", "[::1]", "[127.0.0.1]",
     "::ffff:127.0.0.1", "::127.0.0.1", "127.1", "0.0.0.0", "::"],  # noqa: S104
)  # fmt: skip
def test_is_loopback_knows_every_spelling_of_this_host(host: str) -> None:
    assert bearer.is_loopback(host) is True


@pytest.mark.parametrize(
    "host",
    # X around a loopback name is part of the name; ::1:7f00:1 is IPv6 (above the 32 bits of
    # the IPv4-compatible ::a.b.c.d), not 127.0.0.1. inet_aton() stops at a space and would
    # read "127.1 junk" as 127.0.0.1.
    [
        *("XLOCALHOST", "localhostX", "X127.0.0.1", "::1:7f00:1", "::2:0:0"),
        *("localhost.example", "", "127.1 junk"),
    ],
)
def test_is_loopback_refuses_other_hosts(host: str) -> None:
    assert bearer.is_loopback(host) is False


# --------------------------------------------------------------------- token type, realm


WRONG_TYPE_SETTING = "JWT_TOKEN_TYPE: must be a media type such as at+jwt, or any"


@pytest.mark.parametrize(
    "value", ["at jwt", "at+jwt;q=1", "/", "at+jwt\n", 'at"jwt', "é+jwt", 7, ["at+jwt"]], ids=slug
)
def test_token_type_that_is_no_media_type_is_refused(
    refusal: Callable[..., str], value: Any
) -> None:
    assert refusal(JWT_TOKEN_TYPE=value) == WRONG_TYPE_SETTING


WRONG_REALM = "JWT_REALM: must be printable ASCII without quotes or backslashes"


@pytest.mark.parametrize("value", ['my "api"', "a\\b", "", "tab\there", "é", 7], ids=slug)
def test_realm_that_cannot_be_quoted_is_refused(refusal: Callable[..., str], value: Any) -> None:
    assert refusal(JWT_REALM=value) == WRONG_REALM


@pytest.mark.parametrize(("value", "realm"), [(None, "api"), ("My API!", "My API!"), (" ", " ")])
def test_realm_is_announced_in_the_challenge(
    make_app: Callable[..., Flask], value: str | None, realm: str
) -> None:
    response = make_app(JWT_REALM=value).test_client().get("/read")
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{realm}"'
