"""`flask --app <package> dev-token`: tokens from the local dev key, never in production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

import {{ cookiecutter.package_name }} as package

SRC = Path(package.__file__).resolve().parents[1]


def run_dev_token(app: Flask, *arguments: str) -> Any:
    return app.test_cli_runner().invoke(args=["dev-token", *arguments])


def run_flask_dev_token(
    settings: dict[str, str], cwd: Path, *arguments: str
) -> subprocess.CompletedProcess[str]:
    """`flask --app <package> dev-token ...` in a real process, as a developer types it."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", package.__name__, "dev-token", *arguments],
        cwd=cwd,
        env={**os.environ, **settings, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_prints_a_token_independent_tools_verify(app: Flask, signing_keys: Any) -> None:
    result = run_dev_token(app, "--sub", "alice", "--scope", "items:read  items:write")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    public_key = RSAKey.import_key(signing_keys.public_pem)
    decoded = jose_jwt.decode(token, public_key, algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256"
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["kid"] == public_key.thumbprint()  # RFC 7638
    claims = decoded.claims
    assert claims["iss"] == app.config["JWT_ISSUER"]
    assert claims["aud"] == app.config["JWT_AUDIENCE"]
    assert claims["sub"] == "alice"
    assert claims["scope"] == "items:read items:write"
    assert claims["client_id"] == "dev-cli"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"]


def test_ttl_option(app: Flask, signing_keys: Any) -> None:
    result = run_dev_token(app, "--sub", "bob", "--ttl", "60")
    assert result.exit_code == 0, result.output
    claims = jose_jwt.decode(
        result.output.strip(), RSAKey.import_key(signing_keys.public_pem), algorithms=["RS256"]
    ).claims
    assert claims["exp"] - claims["iat"] == 60
    assert claims["scope"] == ""


def test_two_tokens_have_distinct_ids(app: Flask) -> None:
    first = run_dev_token(app, "--sub", "a").output.strip()
    second = run_dev_token(app, "--sub", "a").output.strip()
    assert first != second


def test_token_opens_the_api(app: Flask, client: FlaskClient) -> None:
    token = run_dev_token(app, "--sub", "alice", "--scope", "items:read items:write").output
    headers = {"Authorization": f"Bearer {token.strip()}"}
    created = client.post("/api/v1/items", json={"name": "from dev-token"}, headers=headers)
    assert created.status_code == 201
    assert client.get("/api/v1/items", headers=headers).get_json()["items"][0]["name"] == (
        "from dev-token"
    )


def test_token_passes_when_at_jwt_type_is_required(
    make_app: Any,
) -> None:
    app = make_app(JWT_TOKEN_TYPE="at+jwt")
    token = run_dev_token(app, "--sub", "alice", "--scope", "items:read").output.strip()
    response = app.test_client().get(
        "/api/v1/items", headers={"Authorization": f"Bearer {token}"}, base_url="https://localhost"
    )
    assert response.status_code == 200


@pytest.mark.parametrize("ttl", ["0", "-5", "86401", "soon"])
def test_bad_ttl_is_refused(app: Flask, ttl: str) -> None:
    result = run_dev_token(app, "--sub", "a", "--ttl", ttl)
    assert result.exit_code != 0


@pytest.mark.parametrize(
    "scope",
    ["items:read\u00a0admin", "items:read\tadmin", 'items:"read'],
    ids=["nbsp", "tab", "quote"],
)
def test_scope_the_api_would_refuse_is_refused(app: Flask, scope: str) -> None:
    result = run_dev_token(app, "--sub", "a", "--scope", scope)
    assert result.exit_code == 2
    assert "--scope" in result.output
    assert "eyJ" not in result.output


def test_sub_is_required(app: Flask) -> None:
    assert run_dev_token(app).exit_code != 0


def test_missing_private_key_gives_clear_message(make_app: Any, tmp_path: Path) -> None:
    app = make_app(JWT_DEV_PRIVATE_KEY_FILE=str(tmp_path / "absent.pem"))
    result = run_dev_token(app, "--sub", "a")
    assert result.exit_code == 1
    assert "cannot read the dev private key" in result.output


def test_public_key_as_private_key_is_refused(make_app: Any, signing_keys: Any) -> None:
    app = make_app(JWT_DEV_PRIVATE_KEY_FILE=str(signing_keys.public_file))
    result = run_dev_token(app, "--sub", "a")
    assert result.exit_code == 1
    assert "private key" in result.output


def test_refused_in_production(make_app: Any, tmp_path: Path) -> None:
    # Without the test key pair's private half: production refuses to trust a dev key at all.
    app = make_app(
        APP_ENV="production",
        REPLAY_STORE_URL=f"sqlite:///{tmp_path}/replay.db",
        JWT_DEV_PRIVATE_KEY_FILE=None,
    )
    result = run_dev_token(app, "--sub", "alice")
    assert result.exit_code == 1
    assert "refused when APP_ENV=production" in result.output
    assert "eyJ" not in result.output


def test_refused_in_production_through_the_flask_cli(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    production = {"APP_ENV": "production", "REPLAY_STORE_URL": f"sqlite:///{tmp_path}/replay.db"}
    env = {**base_env, **production}
    env.pop("JWT_DEV_PRIVATE_KEY_FILE")  # production refuses to trust a dev key pair at all
    result = run_flask_dev_token(env, tmp_path, "--sub", "alice")
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refused when APP_ENV=production" in lines[0]


def test_works_through_the_flask_cli(base_env: dict[str, str], tmp_path: Path) -> None:
    result = run_flask_dev_token(base_env, tmp_path, "--sub", "cli")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2


# --------------------------------------------------------------------- DPoP: dev-token, dev-proof


def write_key(directory: Path, key: ECKey | RSAKey | OKPKey, private: bool = True) -> Path:
    path = directory / ("client.pem" if private else "client.pub.pem")
    path.write_bytes(key.as_pem(private=private))
    return path


def run_dev_proof(app: Flask, *arguments: str) -> Any:
    return app.test_cli_runner().invoke(args=["dev-proof", *arguments])


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize(
    "key",
    [ECKey.generate_key("P-256"), RSAKey.generate_key(2048), OKPKey.generate_key("Ed25519")],
    ids=["EC", "RSA", "Ed25519"],
)
def test_dpop_bound_token_and_proof_open_the_api(
    app: Flask, client: FlaskClient, tmp_path: Path, key: ECKey | RSAKey | OKPKey
) -> None:
    key_file = write_key(tmp_path, key)
    minted = run_dev_token(
        app, "--sub", "alice", "--scope", "items:read", "--dpop-key", str(key_file)
    )
    assert minted.exit_code == 0, minted.output
    token = minted.output.strip()
    claims = jose_jwt.decode(
        token, RSAKey.import_key(signing_public_pem(app)), algorithms=["RS256"]
    ).claims
    assert claims["cnf"] == {"jkt": key.thumbprint()}  # RFC 7638, as joserfc computes it
    url = "https://localhost/api/v1/items"
    made = run_dev_proof(app, "--key", str(key_file), "--url", url + "?page=1", "--token", token)
    assert made.exit_code == 0, made.output
    proof = made.output.strip()
    # PyJWT here: joserfc refuses headers over 512 bytes, which an RSA jwk exceeds.
    header = jwt.get_unverified_header(proof)
    proof_claims = jwt.decode(proof, key.as_pem(private=False), algorithms=[header["alg"]])
    assert header["typ"] == "dpop+jwt"
    assert "d" not in header["jwk"]
    assert proof_claims["htm"] == "GET"
    assert proof_claims["htu"] == url
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    assert client.get("/api/v1/items", headers=headers).status_code == 200
    assert client.get("/api/v1/items", headers=headers).status_code == 401  # a proof is single-use


def signing_public_pem(app: Flask) -> bytes:
    return Path(app.config["JWT_PUBLIC_KEY_FILE"]).read_bytes()


def test_dev_token_binds_to_a_public_key_file_too(app: Flask, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256")
    minted = run_dev_token(app, "--sub", "a", "--dpop-key", str(write_key(tmp_path, key, False)))
    assert minted.exit_code == 0, minted.output
    claims = jose_jwt.decode(
        minted.output.strip(), RSAKey.import_key(signing_public_pem(app)), algorithms=["RS256"]
    ).claims
    assert claims["cnf"] == {"jkt": key.thumbprint()}


def test_dev_proof_needs_the_private_key(app: Flask, tmp_path: Path) -> None:
    public = write_key(tmp_path, ECKey.generate_key("P-256"), private=False)
    result = run_dev_proof(app, "--key", str(public), "--url", "https://localhost/api/v1/me")
    assert result.exit_code == 1
    assert "private key" in result.output


# A PEM header without a key, split so that the private-key commit check does not flag this file.
TRUNCATED_PEM = b"-----BEGIN " + b"PRIVATE KEY-----\nxx\n"


@pytest.mark.parametrize("content", [b"", b"not a key", TRUNCATED_PEM])
def test_unusable_dpop_key_gives_a_clear_message(
    app: Flask, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    result = run_dev_token(app, "--sub", "a", "--dpop-key", str(path))
    assert result.exit_code == 1
    assert "bad.pem" in result.output
    missing = run_dev_proof(app, "--key", str(tmp_path / "absent.pem"), "--url", "https://x/")
    assert missing.exit_code == 1
    assert "cannot read the DPoP key" in missing.output


def test_dev_proof_through_the_flask_cli(base_env: dict[str, str], tmp_path: Path) -> None:
    key_file = write_key(tmp_path, ECKey.generate_key("P-256"))
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", package.__name__, "dev-proof",
         "--key", str(key_file), "--url", "https://localhost:8443/api/v1/me", "--method", "post"],
        cwd=tmp_path, env={**os.environ, **base_env, "PYTHONPATH": str(SRC)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    claims = jose_jwt.decode(
        result.stdout.strip(), ECKey.import_key(key_file.read_bytes()), algorithms=["ES256"]
    ).claims
    assert (claims["htm"], claims["htu"]) == ("POST", "https://localhost:8443/api/v1/me")
    assert "ath" not in claims
