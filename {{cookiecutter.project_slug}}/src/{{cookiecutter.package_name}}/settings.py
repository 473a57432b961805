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
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from . import apikeys, bearer, commands, logs, transport, webhooks

ENVIRONMENTS = ("production", "development", "test")
MAX_BODY_BYTES = 1024 * 1024
# Every setting a module reads from app.config, declared by the module that validates it.
MODULE_SETTINGS: tuple[str, ...] = (
    *bearer.SETTINGS,
    *apikeys.SETTINGS,
    *webhooks.SETTINGS,
    *transport.SETTINGS,
    *logs.SETTINGS,
    *commands.SETTINGS,
)
# Flask's own reading of FLASK_DEBUG (flask.helpers.get_debug_flag): anything else is "on".
FLASK_DEBUG_OFF = ("", "0", "false", "no")


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
        require_webhook_secret(values)
        refuse_weak_webhook_secrets(values)
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
    if environ.get("FLASK_DEBUG", "").strip().lower() not in FLASK_DEBUG_OFF:
        raise ConfigError("FLASK_DEBUG", "must be off in production (the debugger executes code)")


def refuse_local_issuer(issuer: str) -> None:
    # The bake's .env trusts a local dev issuer whose private key sits in keys/: a production
    # start that picked that file up would accept tokens anyone on this host can mint.
    host = (urlsplit(issuer.strip()).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost") or bearer.is_loopback(host):
        raise ConfigError("JWT_ISSUER", "is a local development issuer; use your provider's")


def require_webhook_secret(values: Mapping[str, str]) -> None:
    if "WEBHOOK_SECRET" not in values:
        raise ConfigError(
            "WEBHOOK_SECRET", "required in production (whsec_... for /webhooks/events)"
        )


def refuse_weak_webhook_secrets(values: Mapping[str, str]) -> None:
    # Development and tests may use short, readable secrets; production may not. Each format
    # says how long a key must be, and decodes its secrets (the values never reach a message).
    for sender in webhooks.SENDERS:
        if any(len(key) < sender.strong_key_bytes for key in sender.secrets_from(values)):
            raise ConfigError(
                sender.setting, f"each secret needs at least {sender.strong_key_bytes} bytes"
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
