"""Flask CLI commands of the service: `flask --app <package> dev-token ...` and `dev-proof`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import click
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask import Flask, current_app
from flask.cli import with_appcontext

from .dpop import jwk_thumbprint

# What the commands read from app.config.
SETTINGS = ("JWT_DEV_PRIVATE_KEY_FILE",)
DEFAULT_DEV_PRIVATE_KEY_FILE = "keys/dev_jwt_private.pem"
DEV_CLIENT_ID = "dev-cli"
# RFC 6749 section 3.3 scope-token.
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def register_commands(app: Flask) -> None:
    app.cli.add_command(dev_token)
    app.cli.add_command(dev_proof)


@click.command("dev-token")
@click.option("--sub", required=True, help="Subject (user id) of the token.")
@click.option("--scope", default="", help='Space separated scopes, e.g. "items:read items:write".')
@click.option(
    "--ttl",
    default=900,
    show_default=True,
    type=click.IntRange(1, 86400),
    help="Lifetime in seconds.",
)
@click.option(
    "--dpop-key",
    type=click.Path(dir_okay=False),
    default=None,
    help="Bind the token to this client key (PEM, private or public; RFC 9449 cnf.jkt): send "
    "it as 'Authorization: DPoP <token>' with a proof from `flask dev-proof`.",
)
@with_appcontext
def dev_token(sub: str, scope: str, ttl: int, dpop_key: str | None) -> None:
    """Print an access token signed with this checkout's dev key (never in production)."""
    config = current_app.config
    if config.get("APP_ENV", "production") == "production":
        raise click.ClickException(
            "dev-token is refused when APP_ENV=production: "
            "production tokens come from your authorization server"
        )
    private_key = _load_private_key(
        str(config.get("JWT_DEV_PRIVATE_KEY_FILE") or DEFAULT_DEV_PRIVATE_KEY_FILE)
    )
    click.echo(
        mint_dev_token(
            private_key,
            issuer=str(config["JWT_ISSUER"]),
            audience=str(config["JWT_AUDIENCE"]),
            sub=sub,
            scope=_scope_setting(scope),
            ttl=ttl,
            jkt=None if dpop_key is None else jwk_thumbprint(_client_key(dpop_key)[1]),
        )
    )


@click.command("dev-proof")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The client's private key (PEM: EC P-256/P-384/P-521, RSA or Ed25519).",
)
@click.option(
    "--url", required=True, help="The URL you will call, e.g. https://localhost:8443/api/v1/me"
)
@click.option("--method", default="GET", show_default=True, help="The HTTP method you will use.")
@click.option("--token", default=None, help="The access token the proof goes with (its ath).")
def dev_proof(key_file: str, url: str, method: str, token: str | None) -> None:
    """Print a DPoP proof (RFC 9449) for one request: send it as the DPoP header, once."""
    private_key, jwk, alg = _client_key(key_file, private=True)
    # RFC 9449 section 4.2: htu is the URL without query and fragment.
    htu = url.partition("#")[0].partition("?")[0]
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method.upper(),
        "htu": htu,
        "iat": int(time.time()),
    }
    if token is not None:
        digest = hashlib.sha256(token.strip().encode("ascii")).digest()
        claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    headers = {"typ": "dpop+jwt", "jwk": jwk}
    click.echo(jwt.encode(claims, private_key, algorithm=alg, headers=headers))


# The proof algorithm for each kind of client key (RSA: PSS rather than PKCS#1 v1.5).
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def _client_key(path: str, *, private: bool = False) -> tuple[Any, dict[str, Any], str]:
    """(key, public JWK, proof alg) of a DPoP client key file."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read the DPoP key {path} ({exc.strerror})") from None
    try:
        key: Any = serialization.load_pem_private_key(pem, password=None)
        public_key = key.public_key()
    except (ValueError, TypeError):
        if private:
            raise click.ClickException(
                f"{path} is not an unencrypted private key in PEM form"
            ) from None
        try:
            key = public_key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise click.ClickException(f"{path} is not a key in PEM form") from None
    jwk: dict[str, Any]
    if (
        isinstance(public_key, ec.EllipticCurvePublicKey)
        and public_key.curve.name in _EC_ALGORITHMS
    ):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public_key, as_dict=True)
        alg = _EC_ALGORITHMS[public_key.curve.name]
    elif isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048:
        jwk, alg = jwt.algorithms.RSAAlgorithm.to_jwk(public_key, as_dict=True), "PS256"
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        jwk, alg = jwt.algorithms.OKPAlgorithm.to_jwk(public_key, as_dict=True), "EdDSA"
    else:
        raise click.ClickException(
            f"{path}: use an EC P-256/P-384/P-521, RSA (2048 bits or more) or Ed25519 key"
        )
    return key, jwk, alg


def _scope_setting(scope: str) -> str:
    # The scopes as the API will read them (RFC 6749 section 3.3: single spaces between
    # scope-tokens). Runs of spaces are forgiven here; any other character is refused, since
    # the token would only be refused later, with less to go on.
    tokens = [token for token in scope.split(" ") if token]
    for token in tokens:
        if not SCOPE_TOKEN.fullmatch(token):
            raise click.BadParameter(
                f"{token!r} is not a scope: use printable ASCII without quotes or backslashes, "
                "separated by spaces",
                param_hint="--scope",
            )
    return " ".join(tokens)


def mint_dev_token(
    private_key: Any,
    *,
    issuer: str,
    audience: str,
    sub: str,
    scope: str,
    ttl: int,
    jkt: str | None = None,
) -> str:
    """An RFC 9068 shaped access token, as a real authorization server would issue it."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "scope": scope,
        "client_id": DEV_CLIENT_ID,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}  # RFC 9449 section 6.1: bound to the client's key
    headers = {"kid": rsa_thumbprint(private_key.public_key()), "typ": "at+jwt"}
    return jwt.encode(claims, private_key, algorithm="RS256", headers=headers)


def rsa_thumbprint(public_key: Any) -> str:
    """RFC 7638 JWK thumbprint (SHA-256): the kid a JWKS would publish for this key."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public_key, as_dict=True)
    members = {name: jwk[name] for name in ("e", "kty", "n")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _load_private_key(path: str) -> Any:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise click.ClickException(
            f"cannot read the dev private key {path} ({exc.strerror}); "
            "set JWT_DEV_PRIVATE_KEY_FILE or run from the project directory"
        ) from None
    try:
        key = jwt.get_algorithm_by_name("RS256").prepare_key(pem)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise click.ClickException(f"{path} is not an RSA private key in PEM form") from None
    if not hasattr(key, "private_numbers"):
        raise click.ClickException(f"{path} holds a public key; dev-token needs the private key")
    return key
