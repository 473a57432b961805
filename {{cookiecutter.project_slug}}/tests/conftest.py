"""Shared fixtures: a test configuration with its own throwaway keys, an app and a client."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

import stack
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.settings import Settings, load_settings

TEST_ISSUER = "https://issuer.test/"
TEST_AUDIENCE = "https://api.test"

# The real nginx + gunicorn stack (tests/stack.py), shared by every test module.
live_stack = stack.live_stack
mozilla_stack = stack.mozilla_stack
start_stack = stack.start_stack


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    private_file: Path
    public_file: Path


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def write_key_pair(directory: Path) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "private.pem").write_bytes(private_pem)
    (directory / "public.pem").write_bytes(public_pem)
    return KeyPair(private_pem, public_pem, directory / "private.pem", directory / "public.pem")


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return write_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def base_env(signing_keys: KeyPair) -> dict[str, str]:
    """A complete, valid environment for APP_ENV=test; tests change single entries."""
    return {
        "APP_ENV": "test",
        "JWT_ISSUER": TEST_ISSUER,
        "JWT_AUDIENCE": TEST_AUDIENCE,
        "JWT_PUBLIC_KEY_FILE": str(signing_keys.public_file),
        "JWT_DEV_PRIVATE_KEY_FILE": str(signing_keys.private_file),
        "WEBHOOK_SECRET": new_webhook_secret(),
        "REPLAY_STORE_URL": "memory://",
        "WEB_CONCURRENCY": "1",
    }


@pytest.fixture
def make_app(base_env: dict[str, str]) -> Callable[..., Flask]:
    """Build an app from the test environment with some variables changed (None removes one)."""

    def build(**changes: str | None) -> Flask:
        env = {**base_env, **changes}
        settings: Settings = load_settings({k: v for k, v in env.items() if v is not None})
        return create_app(settings)

    return build


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    # Requests arrive as nginx forwards them: HTTPS from the one trusted proxy. The scheme
    # travels in X-Forwarded-Proto (read by transport's ProxyFix): werkzeug's test client
    # overwrites a wsgi.url_scheme given in environ_base.
    with app.test_client() as test_client:
        test_client.environ_base.update(
            {"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "127.0.0.1"}
        )
        yield test_client
