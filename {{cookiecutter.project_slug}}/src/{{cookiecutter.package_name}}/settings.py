"""The service's settings: read from the environment (and `.env`), handed to the modules.

Each security module validates its own settings in its `init_app` (a module copied into
another app has to), so a rule lives in one place only. This file keeps what no single module
can judge: the environment the service runs in, and the refusals that only make sense in
production or that span several parts (the replay store against gunicorn's worker count).

Every problem is reported as one line that starts with the setting's name; the service then
refuses to start rather than run half-protected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives import serialization
from dotenv import dotenv_values

from . import apikeys, bearer, commands, dpop, logs, transport, webhooks

ENVIRONMENTS = ("production", "development", "test")
MAX_BODY_BYTES = 1024 * 1024
# Every setting a module reads from app.config, declared by the module that validates it.
MODULE_SETTINGS: tuple[str, ...] = (
    *bearer.SETTINGS,
    *apikeys.SETTINGS,
    *dpop.SETTINGS,
    *webhooks.SETTINGS,
    *transport.SETTINGS,
    *logs.SETTINGS,
    *commands.SETTINGS,
)
# Flask's own reading of FLASK_DEBUG (flask.helpers.get_debug_flag): unset, empty or one of
# these words, compared without stripping (" 0" is on); anything else is "on".
FLASK_DEBUG_OFF = ("0", "false", "no")
HOSTS_FILE = Path("/etc/hosts")
# Browsers' preload lists and the HSTS guidance (RFC 6797 section 11.2, hstspreload.org): a
# shorter policy lapses between two visits and leaves the first request open to stripping.
MIN_PRODUCTION_HSTS_MAX_AGE = 31_536_000


class ConfigError(ValueError):
    """A setting is missing or unsafe. str() is one line that starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Settings:
    app_env: str
    web_concurrency: int
    # The raw values of the modules' settings, as the environment gave them. Not in repr():
    # they include webhook secrets and a Redis URL that may carry a password.
    module_values: Mapping[str, str] = field(repr=False)

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    def flask_config(self) -> dict[str, Any]:
        """Flask config: every module setting under its environment name, plus fixed policy."""
        return {
            **self.module_values,
            "APP_ENV": self.app_env,
            "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
            "DEBUG": False,
            "PROPAGATE_EXCEPTIONS": False,
        }


def read_environment(dotenv_path: str | os.PathLike[str] = ".env") -> dict[str, str]:
    """The process environment over the `.env` file: a real variable always wins."""
    from_file = {
        key: value for key, value in dotenv_values(dotenv_path).items() if value is not None
    }
    return {**from_file, **os.environ}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings and apply the rules that span modules; raise ConfigError if unsafe."""
    environ = read_environment() if environ is None else environ
    app_env = read_app_env(environ)
    web_concurrency = read_web_concurrency(environ)
    values = {name: environ[name] for name in MODULE_SETTINGS if environ.get(name, "").strip()}
    if app_env == "production":
        refuse_debug(environ)
        refuse_local_issuer(values.get("JWT_ISSUER", ""))
        refuse_dev_signing_key(values)
        require_webhook_secret(values)
        refuse_weak_webhook_secrets(values)
        refuse_short_hsts(values.get("HSTS_MAX_AGE", ""))
    check_replay_store(values.get("REPLAY_STORE_URL", ""), app_env, web_concurrency)
    return Settings(app_env=app_env, web_concurrency=web_concurrency, module_values=values)


def read_app_env(environ: Mapping[str, str]) -> str:
    app_env = environ.get("APP_ENV", "").strip() or "production"
    if app_env not in ENVIRONMENTS:
        raise ConfigError("APP_ENV", f"must be one of {', '.join(ENVIRONMENTS)}, got {app_env!r}")
    return app_env


def read_web_concurrency(environ: Mapping[str, str]) -> int:
    """gunicorn's worker count; gunicorn.conf.py reads it through here too."""
    raw = environ.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return os.cpu_count() or 1
    if not raw.isdecimal() or int(raw) < 1:
        raise ConfigError("WEB_CONCURRENCY", f"must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def refuse_debug(environ: Mapping[str, str]) -> None:
    # The Werkzeug debugger runs arbitrary code for whoever reaches it. Judged the way Flask
    # itself reads the variable, so that no spelling Flask takes for "on" passes here.
    value = environ.get("FLASK_DEBUG")
    if value and value.lower() not in FLASK_DEBUG_OFF:
        raise ConfigError("FLASK_DEBUG", "must be off in production (the debugger executes code)")


def refuse_local_issuer(issuer: str, hosts_file: Path = HOSTS_FILE) -> None:
    # The bake's .env trusts a local dev issuer whose private key sits in keys/: a production
    # start that picked that file up would accept tokens anyone on this host can mint. URL
    # parsers decode %-escapes in a host name, so this does too.
    host = unquote(urlsplit(issuer.strip()).hostname or "").rstrip(".").lower()
    if bearer.is_loopback(host) or host in loopback_host_names(hosts_file):
        raise ConfigError("JWT_ISSUER", "is a local development issuer; use your provider's")


def loopback_host_names(hosts_file: Path = HOSTS_FILE) -> frozenset[str]:
    """Names this machine's hosts file gives a loopback address (its own name, often)."""
    try:
        # UTF-8 whatever the locale; a stray byte spoils its own name only.
        lines = hosts_file.read_bytes().decode(errors="replace").splitlines()
    except OSError:
        return frozenset()
    names: set[str] = set()
    for line in lines:
        fields = line.partition("#")[0].split()
        if fields and bearer.is_loopback(fields[0]):
            names.update(name.rstrip(".").lower() for name in fields[1:])
    return frozenset(names)


def refuse_dev_signing_key(values: Mapping[str, str]) -> None:
    # `flask dev-token` signs with a private key kept on this host (keys/ by default). Trusting
    # its public half in production, e.g. because the development .env filled it in under a
    # real issuer's name, would accept tokens minted by anyone who can read that file.
    if "JWT_PUBLIC_KEY_FILE" not in values:
        return  # keys from a JWKS URL: no file to compare
    public_file = values["JWT_PUBLIC_KEY_FILE"].strip()
    dev_private_file = (
        values.get("JWT_DEV_PRIVATE_KEY_FILE", "").strip() or commands.DEFAULT_DEV_PRIVATE_KEY_FILE
    )
    if _is_public_half_of(public_file, dev_private_file):
        raise ConfigError(
            "JWT_PUBLIC_KEY_FILE",
            f"is the public half of the development key {dev_private_file}; use your provider's",
        )


def _is_public_half_of(public_file: str, private_file: str) -> bool:
    # Unreadable or malformed files are not a match; bearer.py reports a bad public key itself.
    try:
        public = serialization.load_pem_public_key(Path(public_file).read_bytes())
        private = serialization.load_pem_private_key(Path(private_file).read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return False
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public.public_bytes(*spki) == private.public_key().public_bytes(*spki)


def refuse_short_hsts(raw_max_age: str) -> None:
    # transport.py parses HSTS_MAX_AGE and refuses what is not a number; only the production
    # floor is judged here. nginx's copy of the header is held to the same floor by
    # deploy/nginx/10-derive-settings.envsh.
    max_age = raw_max_age.strip()
    if max_age.isdecimal() and int(max_age) < MIN_PRODUCTION_HSTS_MAX_AGE:
        raise ConfigError(
            "HSTS_MAX_AGE",
            f"must be at least {MIN_PRODUCTION_HSTS_MAX_AGE} (one year) in production",
        )


def require_webhook_secret(values: Mapping[str, str]) -> None:
    # /webhooks/events verifies with either kind of key: an HMAC secret or (v1a) a public key.
    if not {"WEBHOOK_SECRET", "WEBHOOK_PUBLIC_KEY"} & values.keys():
        raise ConfigError(
            "WEBHOOK_SECRET",
            "required in production (whsec_... for /webhooks/events), unless "
            "WEBHOOK_PUBLIC_KEY (whpk_...) is set",
        )


def refuse_weak_webhook_secrets(values: Mapping[str, str]) -> None:
    # Development and tests may use short, readable secrets; production may not. Each format
    # says how long a key must be, and decodes its keys (the values never reach a message).
    for sender in webhooks.SENDERS:
        for signing in sender.keys:
            if any(len(key) < signing.strong_key_bytes for key in signing.keys_from(values)):
                raise ConfigError(
                    signing.setting, f"each secret needs at least {signing.strong_key_bytes} bytes"
                )


def check_replay_store(url: str, app_env: str, web_concurrency: int) -> None:
    if urlsplit(url.strip()).scheme != "memory":
        return
    if app_env == "production":
        raise ConfigError("REPLAY_STORE_URL", "memory:// is for tests only, not production")
    if web_concurrency > 1:
        raise ConfigError(
            "REPLAY_STORE_URL",
            "memory:// is per process: with WEB_CONCURRENCY above 1 replays would pass",
        )
