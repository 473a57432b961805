"""Flask CLI commands of the service: `flask --app <package> dev-token ...`."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

import click
import jwt
from flask import Flask, current_app
from flask.cli import with_appcontext

# What the commands read from app.config.
SETTINGS = ("JWT_DEV_PRIVATE_KEY_FILE",)
DEFAULT_DEV_PRIVATE_KEY_FILE = "keys/dev_jwt_private.pem"
DEV_CLIENT_ID = "dev-cli"


def register_commands(app: Flask) -> None:
    app.cli.add_command(dev_token)


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
@with_appcontext
def dev_token(sub: str, scope: str, ttl: int) -> None:
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
            scope=" ".join(scope.split()),
            ttl=ttl,
        )
    )


def mint_dev_token(
    private_key: Any, *, issuer: str, audience: str, sub: str, scope: str, ttl: int
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
