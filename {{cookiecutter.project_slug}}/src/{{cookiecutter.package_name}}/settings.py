"""One typed settings object, read from the environment (and `.env`), checked once at start-up.

The service refuses to start with an unsafe or incomplete configuration rather than running
half-protected: every problem is reported as one line naming the setting.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

ENVIRONMENTS = ("production", "development", "test")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
REPLAY_STORE_SCHEMES = ("sqlite", "redis", "rediss", "memory")
TRUTHY = ("1", "true", "yes", "on")
FALSY = ("", "0", "false", "no", "off")
# Browsers' preload list rejects anything shorter than a year.
HSTS_PRELOAD_MIN_AGE = 31536000
MAX_BODY_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """A setting is missing or unsafe. str() is one line that starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Settings:
    app_env: str
    jwt_issuer: str
    jwt_audience: str
    jwt_jwks_url: str | None
    jwt_public_key_file: str | None
    jwt_algorithms: tuple[str, ...]
    jwt_leeway_seconds: int
    jwt_token_type: str | None
    jwt_jwks_cache_seconds: int
    jwt_jwks_cooldown_seconds: int
    jwt_dev_private_key_file: str | None
    webhook_tolerance_seconds: int
    trusted_proxy_hops: int
    hsts_max_age: int
    hsts_preload: bool
    web_concurrency: int
    log_level: str
    # Secrets never appear in repr(), so a settings object can be logged or printed safely.
    webhook_secret: tuple[str, ...] = field(repr=False)
    github_webhook_secret: str | None = field(repr=False)
    stripe_webhook_secret: str | None = field(repr=False)
    # A redis:// URL may carry a password.
    replay_store_url: str | None = field(repr=False)

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    def flask_config(self) -> dict[str, Any]:
        """The settings as Flask config keys, named like their environment variables."""
        return {
            "APP_ENV": self.app_env,
            "JWT_ISSUER": self.jwt_issuer,
            "JWT_AUDIENCE": self.jwt_audience,
            "JWT_JWKS_URL": self.jwt_jwks_url,
            "JWT_PUBLIC_KEY_FILE": self.jwt_public_key_file,
            "JWT_ALGORITHMS": self.jwt_algorithms,
            "JWT_LEEWAY_SECONDS": self.jwt_leeway_seconds,
            "JWT_TOKEN_TYPE": self.jwt_token_type,
            "JWT_JWKS_CACHE_SECONDS": self.jwt_jwks_cache_seconds,
            "JWT_JWKS_COOLDOWN_SECONDS": self.jwt_jwks_cooldown_seconds,
            "JWT_DEV_PRIVATE_KEY_FILE": self.jwt_dev_private_key_file,
            "WEBHOOK_SECRET": self.webhook_secret,
            "GITHUB_WEBHOOK_SECRET": self.github_webhook_secret,
            "STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret,
            "WEBHOOK_TOLERANCE_SECONDS": self.webhook_tolerance_seconds,
            "REPLAY_STORE_URL": self.replay_store_url,
            "TRUSTED_PROXY_HOPS": self.trusted_proxy_hops,
            "HSTS_MAX_AGE": self.hsts_max_age,
            "HSTS_PRELOAD": self.hsts_preload,
            "LOG_LEVEL": self.log_level,
            "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
            "DEBUG": False,
            "PROPAGATE_EXCEPTIONS": False,
        }


class _Reader:
    """Typed access to raw environment values; every failure names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or default

    def required(self, name: str, why: str = "required") -> str:
        value = self.text(name)
        if value is None:
            raise ConfigError(name, why)
        return value

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(name, f"must be at least {minimum}, got {value}")
        return value

    def flag(self, name: str) -> bool:
        raw = (self.text(name) or "").lower()
        if raw in TRUTHY:
            return True
        if raw in FALSY:
            return False
        raise ConfigError(name, f"must be one of {', '.join(TRUTHY + FALSY[1:])}, got {raw!r}")

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name, default) or default
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def words(self, name: str, separator: str | None = None) -> tuple[str, ...]:
        raw = self.text(name) or ""
        return tuple(word.strip() for word in raw.split(separator) if word.strip())


def read_environment(dotenv_path: str | os.PathLike[str] = ".env") -> dict[str, str]:
    """The process environment over the `.env` file: a real variable always wins."""
    from_file = {
        key: value for key, value in dotenv_values(dotenv_path).items() if value is not None
    }
    return {**from_file, **os.environ}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise ConfigError naming the first bad one."""
    reader = _Reader(read_environment() if environ is None else environ)
    app_env = reader.choice("APP_ENV", ENVIRONMENTS, "production")
    production = app_env == "production"
    refuse_debug_in_production(reader, production)
    jwks_url, public_key_file = read_key_source(reader, production)
    web_concurrency = reader.integer("WEB_CONCURRENCY", os.cpu_count() or 1, minimum=1)
    hsts_max_age = reader.integer("HSTS_MAX_AGE", 63072000)
    hsts_preload = reader.flag("HSTS_PRELOAD")
    if hsts_preload and hsts_max_age < HSTS_PRELOAD_MIN_AGE:
        raise ConfigError("HSTS_PRELOAD", f"needs HSTS_MAX_AGE of at least {HSTS_PRELOAD_MIN_AGE}")
    return Settings(
        app_env=app_env,
        jwt_issuer=read_issuer(reader, production),
        jwt_audience=reader.required("JWT_AUDIENCE", "required: this API's identifier in `aud`"),
        jwt_jwks_url=jwks_url,
        jwt_public_key_file=public_key_file,
        jwt_algorithms=read_algorithms(reader),
        jwt_leeway_seconds=reader.integer("JWT_LEEWAY_SECONDS", 30),
        jwt_token_type=reader.text("JWT_TOKEN_TYPE"),
        # How long JWKS keys are reused before a refresh, and the least time between two
        # fetches, so that tokens with unknown `kid`s cannot make us hammer the provider.
        jwt_jwks_cache_seconds=reader.integer("JWT_JWKS_CACHE_SECONDS", 300, minimum=1),
        jwt_jwks_cooldown_seconds=reader.integer("JWT_JWKS_COOLDOWN_SECONDS", 30, minimum=1),
        jwt_dev_private_key_file=reader.text("JWT_DEV_PRIVATE_KEY_FILE"),
        webhook_secret=read_webhook_secrets(reader, production),
        github_webhook_secret=reader.text("GITHUB_WEBHOOK_SECRET"),
        stripe_webhook_secret=reader.text("STRIPE_WEBHOOK_SECRET"),
        webhook_tolerance_seconds=reader.integer("WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1),
        replay_store_url=read_replay_store_url(reader, production, web_concurrency),
        trusted_proxy_hops=reader.integer("TRUSTED_PROXY_HOPS", 1),
        hsts_max_age=hsts_max_age,
        hsts_preload=hsts_preload,
        web_concurrency=web_concurrency,
        log_level=reader.choice("LOG_LEVEL", LOG_LEVELS, "INFO").upper(),
    )


def refuse_debug_in_production(reader: _Reader, production: bool) -> None:
    # The Werkzeug debugger runs arbitrary code for whoever reaches it.
    if production and reader.flag("FLASK_DEBUG"):
        raise ConfigError("FLASK_DEBUG", "must be off in production (the debugger executes code)")


def read_issuer(reader: _Reader, production: bool) -> str:
    issuer = reader.required("JWT_ISSUER", "required: the exact `iss` of accepted tokens")
    host = urlsplit(issuer).hostname or ""
    # The bake's .env trusts a local dev issuer whose private key sits in keys/: a production
    # start that picked that file up would accept tokens anyone on this host can mint.
    if production and (host.endswith(".localhost") or is_loopback(host)):
        raise ConfigError("JWT_ISSUER", "is a local development issuer; use your provider's")
    return issuer


def read_algorithms(reader: _Reader) -> tuple[str, ...]:
    algorithms = reader.words("JWT_ALGORITHMS", ",") or ("RS256",)
    for algorithm in algorithms:
        if algorithm.upper().startswith("HS") or algorithm.lower() == "none":
            raise ConfigError(
                "JWT_ALGORITHMS",
                f"{algorithm} is refused: only asymmetric algorithms (RFC 8725 section 3.1)",
            )
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            allowed = ", ".join(ASYMMETRIC_ALGORITHMS)
            raise ConfigError("JWT_ALGORITHMS", f"unknown algorithm {algorithm!r}; use {allowed}")
    return algorithms


def read_key_source(reader: _Reader, production: bool) -> tuple[str | None, str | None]:
    jwks_url = reader.text("JWT_JWKS_URL")
    public_key_file = reader.text("JWT_PUBLIC_KEY_FILE")
    if jwks_url and public_key_file:
        raise ConfigError(
            "JWT_JWKS_URL", "set either JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE, not both"
        )
    if jwks_url:
        check_jwks_url(jwks_url, production)
    elif public_key_file:
        check_readable_file("JWT_PUBLIC_KEY_FILE", public_key_file)
    else:
        raise ConfigError("JWT_JWKS_URL", "required: set JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE")
    return jwks_url, public_key_file


def check_jwks_url(url: str, production: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and not production and is_loopback(parts.hostname):
        return
    raise ConfigError(
        "JWT_JWKS_URL", "must be an https:// URL (http only for a loopback host outside production)"
    )


def is_loopback(hostname: str | None) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname or "").is_loopback
    except ValueError:
        return False


def check_readable_file(name: str, path: str) -> None:
    try:
        Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(name, f"cannot read {path}: {error.strerror}") from None


def read_webhook_secrets(reader: _Reader, production: bool) -> tuple[str, ...]:
    secrets = reader.words("WEBHOOK_SECRET")
    if production and not secrets:
        raise ConfigError(
            "WEBHOOK_SECRET", "required in production (whsec_... for /webhooks/events)"
        )
    for secret in secrets:
        if not secret.startswith("whsec_") or len(secret) < len("whsec_") + 24:
            # The value itself is never echoed: it is a secret.
            raise ConfigError("WEBHOOK_SECRET", "each secret must be whsec_ followed by base64")
    return secrets


def read_replay_store_url(reader: _Reader, production: bool, web_concurrency: int) -> str | None:
    url = reader.text("REPLAY_STORE_URL")
    if url is None:
        return None
    scheme = urlsplit(url).scheme
    if scheme not in REPLAY_STORE_SCHEMES:
        raise ConfigError(
            "REPLAY_STORE_URL", "must start with sqlite:///, redis://, rediss:// or memory://"
        )
    if scheme == "memory" and production:
        raise ConfigError("REPLAY_STORE_URL", "memory:// is for tests only, not production")
    if scheme == "memory" and web_concurrency > 1:
        raise ConfigError(
            "REPLAY_STORE_URL",
            "memory:// is per process: with WEB_CONCURRENCY above 1 replays would pass",
        )
    return url
