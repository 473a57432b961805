"""A DPoP proof names its own key, so its key's cost is the sender's choice: an RSA key with a
public exponent as large as its modulus takes a full modular exponentiation to check (about
10 ms at 2048 bits, 30 ms at 3072, against 0.1 ms with e = 65537), and one of 16384 bits about
20 ms. Whoever holds any DPoP-bound token (a stolen one does: the signature is checked before
the key is compared with the token's cnf.jkt) could have every request cost that. Such keys
are refused before any signature work."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey, RSAKey
from werkzeug.test import TestResponse

from jose_helpers import (
    AUDIENCE,
    ISSUER,
    access_token_hash,
    bound_to,
    dpop_proof,
    make_claims,
    mint,
)
from {{ cookiecutter.package_name }} import bearer, dpop, webhooks

READ_URL = "https://api.test/read"
COSTLY_KEY = "The DPoP proof jwk must be an RSA key of at most 4096 bits, exponent below 2**32"
BAD_SIGNATURE = "The DPoP proof signature does not verify with its jwk"


@pytest.fixture(scope="module")
def issuer_key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture
def client(tmp_path: Path, issuer_key: RSAKey) -> FlaskClient:
    (tmp_path / "public.pem").write_bytes(issuer_key.as_pem(private=False))
    app = Flask("dpop_costly_keys")
    app.config.update(
        APP_ENV="test",
        JWT_ISSUER=ISSUER,
        JWT_AUDIENCE=AUDIENCE,
        JWT_PUBLIC_KEY_FILE=str(tmp_path / "public.pem"),
    )
    bearer.init_app(app)
    dpop.init_app(app, store=webhooks.MemoryReplayStore())

    @app.get("/read")
    @bearer.require_scopes("items:read")
    def read() -> dict[str, Any]:
        return {"sub": bearer.current_principal().sub}

    return app.test_client()


def call(client: FlaskClient, token: str, proof: str) -> TestResponse:
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof)]
    return client.get("/read", headers=headers, base_url="https://api.test")


def refusal(response: TestResponse) -> str:
    """The description of a 401 invalid_dpop_proof (problem body and challenge agree)."""
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"] == "invalid_dpop_proof"
    assert f'error_description="{body["detail"]}"' in response.headers["WWW-Authenticate"]
    return str(body["detail"])


def b64url_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def rsa_jwk(bits: int, exponent: int) -> dict[str, str]:
    """A public RSA key nobody holds the private half of: a checker only learns that by doing
    the work. Any odd modulus will do."""
    modulus = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return {"kty": "RSA", "n": b64url_int(modulus), "e": b64url_int(exponent)}


def costly_jwk(bits: int, exponent_bits: int) -> dict[str, str]:
    return rsa_jwk(bits, (1 << (exponent_bits - 1)) | 1 if exponent_bits > 17 else 65537)


def proof_with(jwk: dict[str, str], token: str) -> str:
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}
    claims = {"jti": uuid.uuid4().hex, "htm": "GET", "htu": READ_URL, "iat": int(time.time()),
              "ath": access_token_hash(token)}  # fmt: skip
    signature = base64.urlsafe_b64encode(secrets.token_bytes(len(jwk["n"]) * 3 // 4))
    return f"{segment(header)}.{segment(claims)}.{signature.rstrip(b'=').decode()}"


COSTLY = [
    pytest.param(2048, 2047, id="2048-bit-e-near-n"),
    pytest.param(3072, 3000, id="3072-bit-e-near-n"),
    pytest.param(4096, 64, id="4096-bit-64-bit-e"),
    pytest.param(16384, 17, id="16384-bit"),
]


@pytest.mark.parametrize(("bits", "exponent_bits"), COSTLY)
def test_costly_rsa_key_of_a_stolen_token_holder_is_refused_unchecked(
    client: FlaskClient, issuer_key: RSAKey, bits: int, exponent_bits: int
) -> None:
    stolen = mint(issuer_key, make_claims(**bound_to(ECKey.generate_key("P-256"))))
    description = refusal(call(client, stolen, proof_with(costly_jwk(bits, exponent_bits), stolen)))
    assert description == COSTLY_KEY


@pytest.mark.parametrize(("bits", "exponent_bits"), COSTLY)
def test_token_bound_to_a_costly_rsa_key_is_refused_unchecked(
    client: FlaskClient, issuer_key: RSAKey, bits: int, exponent_bits: int
) -> None:
    jwk = costly_jwk(bits, exponent_bits)
    token = mint(issuer_key, make_claims(cnf={"jkt": dpop.jwk_thumbprint(jwk)}))
    description = refusal(call(client, token, proof_with(jwk, token)))
    assert description == COSTLY_KEY


@pytest.mark.parametrize(
    ("bits", "exponent", "expected"),
    [
        (4096, 65537, BAD_SIGNATURE),  # the largest modulus is checked (and this one fails)
        (4097, 65537, COSTLY_KEY),
        (2048, 2**32 - 1, BAD_SIGNATURE),  # the largest exponent
        (2048, 2**32 + 1, COSTLY_KEY),  # the next odd one (an even exponent is no RSA key)
    ],
    ids=["4096-bits", "4097-bits", "e-2**32-1", "e-2**32+1"],
)
def test_rsa_key_limits_at_the_boundary(
    client: FlaskClient, issuer_key: RSAKey, bits: int, exponent: int, expected: str
) -> None:
    stolen = mint(issuer_key, make_claims(**bound_to(ECKey.generate_key("P-256"))))
    assert refusal(call(client, stolen, proof_with(rsa_jwk(bits, exponent), stolen))) == expected


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_ordinary_rsa_client_keys_still_work(
    client: FlaskClient, issuer_key: RSAKey, bits: int
) -> None:
    key = RSAKey.generate_key(bits)
    token = mint(issuer_key, make_claims(**bound_to(key)))
    assert call(client, token, dpop_proof(key, "GET", READ_URL, token)).status_code == 200
