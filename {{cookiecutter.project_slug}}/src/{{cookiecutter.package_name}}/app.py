"""The application factory: reads like a table of contents of the service."""

from __future__ import annotations

from flask import Flask

from . import (
    api,
    apikeys,
    bearer,
    commands,
    dpop,
    events,
    health,
    home,
    logs,
    openapi,
    transport,
    webhooks,
)
from .problems import register_error_handlers
from .settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; with no settings given, read them from the environment and `.env`."""
    settings = settings or load_settings()
    # An API serves no static files: without the default /static route there is nothing to
    # document, fuzz or accidentally expose.
    app = Flask(__name__, static_folder=None)
    # Each module validates its own settings in init_app: a bad one stops the start here.
    app.config.from_mapping(settings.flask_config())
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    # First: request ids and redacted JSON logs cover everything the others log.
    logs.init_app(app)
    # ProxyFix, HTTPS-only (except /healthz) and security headers, before any view runs.
    transport.init_app(app)
    bearer.init_app(app)
    # Registers itself with bearer.require_scopes: the API's routes take a token or a key.
    apikeys.init_app(app)
    webhooks.init_app(app)
    # DPoP proofs: their jti are remembered in the replay store webhooks.init_app opened.
    dpop.init_app(app)


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(home.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(events.blueprint)
    app.register_blueprint(openapi.blueprint)


def register_errorhandlers(app: Flask) -> None:
    register_error_handlers(app)


def register_commands(app: Flask) -> None:
    commands.register_commands(app)
