"""Transport security for a Flask app behind a TLS-terminating reverse proxy.

What it does, in the order a request meets it:

1. ``ProxyFix`` trusts exactly ``TRUSTED_PROXY_HOPS`` proxies for ``X-Forwarded-For``,
   ``-Proto`` and ``-Host``, so a client cannot claim another address or scheme by sending
   those headers itself (the proxy overwrites them; extra hops are ignored).
2. Any request that did not arrive over HTTPS is refused with ``403`` problem+json, except
   ``/healthz`` (container health checks ask the app directly over plain HTTP), before any
   view runs or anything reads the body. This is defence in depth: the proxy already refuses
   plain HTTP, but a misrouted or direct request must not be served either. It is refused
   rather than redirected because a credential sent over plain HTTP has already crossed the
   wire.
3. Every response gets the API security headers below; HTTPS responses also get
   ``Strict-Transport-Security`` (RFC 6797), never plain-HTTP ones (browsers ignore it there
   and it would advertise a policy an attacker on the path can strip anyway).

Configuration (``app.config``, read once in :func:`init_app`):

- ``TRUSTED_PROXY_HOPS`` (int, default 1): proxies in front of the app; 0 = directly exposed.
- ``HSTS_MAX_AGE`` (int seconds, default 63072000 = 2 years).
- ``HSTS_PRELOAD`` (bool or "true"/"false", default False): add ``preload``; only turn it on
  once every subdomain serves HTTPS, since preload lists are hard to leave.

Standalone on purpose: it imports only Flask, Werkzeug and the standard library, so the file
can be copied into any Flask app (``transport.init_app(app)``). Call it before any other
``init_app`` that registers ``before_request`` functions which should not see plain HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

# What init_app reads from app.config (and validates: nothing else checks these).
SETTINGS = ("TRUSTED_PROXY_HOPS", "HSTS_MAX_AGE", "HSTS_PRELOAD")
PLAIN_HTTP_ALLOWED_PATHS = frozenset({"/healthz"})
DEFAULT_TRUSTED_PROXY_HOPS = 1
DEFAULT_HSTS_MAX_AGE = 63_072_000
# hstspreload.org refuses a max-age below one year.
PRELOAD_MIN_MAX_AGE = 31_536_000
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})

SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


class TransportConfigError(ValueError):
    """An unusable setting; str() is one line starting with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


def init_app(app: Flask) -> None:
    """Install proxy trust, HTTPS enforcement and security headers on ``app``."""
    hops = _read_int(app.config, "TRUSTED_PROXY_HOPS", DEFAULT_TRUSTED_PROXY_HOPS)
    hsts = hsts_header_value(
        _read_int(app.config, "HSTS_MAX_AGE", DEFAULT_HSTS_MAX_AGE),
        _read_bool(app.config, "HSTS_PRELOAD", False),
    )
    # ProxyFix wraps the whole app, so the HTTPS check below sees the scheme the trusted proxy
    # reported, never one a client claimed.
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )

    def require_https() -> Response | None:
        if request.is_secure or request.path in PLAIN_HTTP_ALLOWED_PATHS:
            return None
        return _problem(403, "This API is only served over HTTPS.")

    app.before_request(require_https)

    def add_transport_headers(response: Response) -> Response:
        _set_missing(response, SECURITY_HEADERS.items())
        if request.is_secure:
            response.headers["Strict-Transport-Security"] = hsts
        return response

    app.after_request(add_transport_headers)


def hsts_header_value(max_age: int, preload: bool) -> str:
    """The ``Strict-Transport-Security`` value for this policy (RFC 6797 section 6.1)."""
    if max_age < 0:
        raise TransportConfigError("HSTS_MAX_AGE", "must be zero or positive")
    if preload and max_age < PRELOAD_MIN_MAX_AGE:
        raise TransportConfigError(
            "HSTS_PRELOAD", f"needs HSTS_MAX_AGE of at least {PRELOAD_MIN_MAX_AGE}"
        )
    value = f"max-age={max_age}; includeSubDomains"
    return f"{value}; preload" if preload else value


def _problem(status: int, detail: str) -> Response:
    """RFC 9457 problem+json with the request's id; built here so that this file stands alone."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if request_id := g.get("request_id"):
        body["request_id"] = request_id
    return Response(json.dumps(body), status, mimetype="application/problem+json")


def _set_missing(response: Response, headers: Iterable[tuple[str, str]]) -> None:
    # A view that deliberately sets one of these (e.g. a cacheable document) keeps its value.
    for name, value in headers:
        response.headers.setdefault(name, value)


def _read_int(config: Mapping[str, object], name: str, default: int) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TransportConfigError(name, "must be a whole number")
    try:
        number = int(value)
    except ValueError:
        raise TransportConfigError(name, f"must be a whole number, got {value!r}") from None
    if number < 0:
        raise TransportConfigError(name, f"must be zero or positive, got {number}")
    return number


def _read_bool(config: Mapping[str, object], name: str, default: bool) -> bool:
    value = config.get(name, default)
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise TransportConfigError(
        name, f"must be one of {', '.join(sorted(TRUE_WORDS | FALSE_WORDS - {''}))}"
    )
