"""Transport security for a Flask app behind a TLS-terminating reverse proxy.

What it does, in the order a request meets it:

1. ``ProxyFix`` trusts exactly ``TRUSTED_PROXY_HOPS`` proxies for ``X-Forwarded-For``,
   ``-Proto`` and ``-Host``, so a client cannot claim another address or scheme by sending
   those headers itself (the proxy overwrites them; extra hops are ignored).
2. Any request that did not arrive over HTTPS is refused with ``403`` problem+json, except
   ``/healthz`` (container health checks ask the app directly over plain HTTP). This is
   defence in depth: the proxy already refuses plain HTTP, but a misrouted or direct request
   must not be served either. It is refused rather than redirected because a credential sent
   over plain HTTP has already crossed the wire.
3. Every response gets the API security headers below; HTTPS responses also get
   ``Strict-Transport-Security`` (RFC 6797), never plain-HTTP ones (browsers ignore it there
   and it would advertise a policy an attacker on the path can strip anyway).

Configuration (``app.config``, read once in :func:`init_app`):

- ``TRUSTED_PROXY_HOPS`` (int, default 1): proxies in front of the app; 0 = directly exposed.
- ``HSTS_MAX_AGE`` (int seconds, default 63072000 = 2 years).
- ``HSTS_PRELOAD`` (bool or "true"/"false", default False): add ``preload``; only turn it on
  once every subdomain serves HTTPS, since preload lists are hard to leave.

Standalone on purpose: it imports only Flask, Werkzeug and the standard library, so the file
can be copied into any Flask app (``transport.init_app(app)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from flask import Flask, Response
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

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
_HSTS = "strict-transport-security"


def init_app(app: Flask) -> None:
    """Install proxy trust, HTTPS enforcement and security headers on ``app``."""
    hops = _read_hops(app.config.get("TRUSTED_PROXY_HOPS", DEFAULT_TRUSTED_PROXY_HOPS))
    hsts = hsts_header_value(
        _read_int("HSTS_MAX_AGE", app.config.get("HSTS_MAX_AGE", DEFAULT_HSTS_MAX_AGE)),
        _read_bool("HSTS_PRELOAD", app.config.get("HSTS_PRELOAD", False)),
    )
    # ProxyFix runs first (outermost), so the HTTPS check sees the scheme the trusted proxy
    # reported, never one a client claimed.
    wsgi_app: WSGIApplication = _RequireHttps(app.wsgi_app, hsts)
    if hops:
        wsgi_app = ProxyFix(wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.wsgi_app = wsgi_app  # type: ignore[method-assign, assignment]


def hsts_header_value(max_age: int, preload: bool) -> str:
    """The ``Strict-Transport-Security`` value for this policy (RFC 6797 section 6.1)."""
    if max_age < 0:
        raise ValueError("HSTS_MAX_AGE must be zero or positive")
    if preload and max_age < PRELOAD_MIN_MAX_AGE:
        raise ValueError(f"HSTS_PRELOAD needs HSTS_MAX_AGE of at least {PRELOAD_MIN_MAX_AGE}")
    value = f"max-age={max_age}; includeSubDomains"
    return f"{value}; preload" if preload else value


class _RequireHttps:
    """WSGI middleware: runs before Flask, so no view, hook or body parsing sees plain HTTP.

    It also adds the security headers to every response, as the response starts: cheaper
    than editing Flask's header objects, and it covers answers no Flask hook sees.
    """

    def __init__(self, wsgi_app: WSGIApplication, hsts: str) -> None:
        self.wsgi_app = wsgi_app
        self.hsts = ("Strict-Transport-Security", hsts)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        secure = environ.get("wsgi.url_scheme") == "https"
        with_headers = self._adding_headers(start_response, secure)
        if secure or environ.get("PATH_INFO", "") in PLAIN_HTTP_ALLOWED_PATHS:
            return self.wsgi_app(environ, with_headers)
        return _problem(403, "This API is only served over HTTPS.")(environ, with_headers)

    def _adding_headers(self, start_response: StartResponse, secure: bool) -> StartResponse:
        def start(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            present = {name.lower() for name, _ in headers}
            # A view that deliberately sets one of these (e.g. a cacheable document) keeps it.
            added = [item for item in SECURITY_HEADERS.items() if item[0].lower() not in present]
            if secure:
                # Exactly one, this policy's, whatever the view sent.
                headers = [item for item in headers if item[0].lower() != _HSTS]
                added.append(self.hsts)
            return start_response(status, [*headers, *added], exc_info)

        return start


def _problem(status: int, detail: str) -> Response:
    # Built here rather than imported from the app's error handlers so this file stands alone.
    body = {
        "type": "about:blank",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    return Response(json.dumps(body), status=status, mimetype="application/problem+json")


def _read_hops(value: object) -> int:
    hops = _read_int("TRUSTED_PROXY_HOPS", value)
    if hops < 0:
        raise ValueError("TRUSTED_PROXY_HOPS must be zero or positive")
    return hops


def _read_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{name} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


def _read_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{name} must be true or false")
