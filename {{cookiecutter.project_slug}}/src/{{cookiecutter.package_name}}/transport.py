"""Transport security for a Flask app behind a TLS-terminating reverse proxy.

What it does, in the order a request meets it:

1. ``ProxyFix`` trusts exactly ``TRUSTED_PROXY_HOPS`` proxies for ``X-Forwarded-For``,
   ``-Proto`` and ``-Host``, so a client cannot claim another address or scheme by sending
   those headers itself (the proxy overwrites them; extra hops are ignored). It does so only
   for a request whose direct peer is a proxy (``FORWARDED_ALLOW_IPS``, gunicorn's setting of
   the same name and meaning): from any other peer, e.g. another container on the proxy's
   network, the forwarding headers are removed before anything reads them, so that peer cannot
   claim HTTPS or another client address either.
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
- ``FORWARDED_ALLOW_IPS`` (str, default ``127.0.0.1,::1``): comma separated addresses or
  networks (``10.0.0.0/8``) of those proxies, or ``*`` for any peer when the network alone lets
  only the proxy reach the app (e.g. a Kubernetes NetworkPolicy). A peer that is no IP address
  (a unix socket) always counts: the socket file's permissions are the fence there.
- ``HSTS_MAX_AGE`` (int seconds, default 63072000 = 2 years).
- ``HSTS_PRELOAD`` (bool or "true"/"false", default False): add ``preload``; only turn it on
  once every subdomain serves HTTPS, since preload lists are hard to leave.

Standalone on purpose: it imports only Flask, Werkzeug and the standard library, so the file
can be copied into any Flask app (``transport.init_app(app)``). Call it before any other
``init_app`` that registers ``before_request`` functions which should not see plain HTTP.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

OptExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
log = logging.getLogger(__name__)

# What init_app reads from app.config (and validates: nothing else checks these).
SETTINGS = ("TRUSTED_PROXY_HOPS", "FORWARDED_ALLOW_IPS", "HSTS_MAX_AGE", "HSTS_PRELOAD")
PLAIN_HTTP_ALLOWED_PATHS = frozenset({"/healthz"})
DEFAULT_TRUSTED_PROXY_HOPS = 1
# gunicorn's default: a proxy on this host.
DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1,::1"
# What a proxy tells the app about the client (WSGI names): ProxyFix reads the X-Forwarded-*
# ones; Forwarded (RFC 7239) goes too, so that no other code can be fooled by it.
FORWARDING_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
    "HTTP_FORWARDED",
)
DEFAULT_HSTS_MAX_AGE = 63_072_000
# hstspreload.org refuses a max-age below one year.
PRELOAD_MIN_MAX_AGE = 31_536_000
_DIGITS = re.compile(r"[0-9]+")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})

SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
HSTS_HEADER = "Strict-Transport-Security"
_HSTS = HSTS_HEADER.lower()


class TransportConfigError(ValueError):
    """An unusable setting; str() is one line starting with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class TrustedProxies:
    """The direct peers allowed to speak for the client, with gunicorn's forwarded_allow_ips
    semantics: addresses and networks, ``*`` for everyone, and any peer that has no IP address
    (a unix socket) always."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    everyone: bool = False

    @classmethod
    def parse(cls, value: str | Iterable[str]) -> TrustedProxies:
        entries = value.split(",") if isinstance(value, str) else list(value)
        entries = [entry.strip() for entry in entries if entry.strip()]
        if "*" in entries:
            return cls(everyone=True)
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError:
                raise TransportConfigError(
                    "FORWARDED_ALLOW_IPS",
                    f"{entry!r} is not an IP address or network (host names are not resolved)",
                ) from None
        return cls(networks=tuple(networks))

    def __contains__(self, peer: object) -> bool:
        return self.everyone or _trusted_peer(self.networks, str(peer))


# Asked on every request about the same few peers (the proxies themselves): parsing the address
# each time cost more than the rest of the proxy fix.
@functools.lru_cache(maxsize=1024)
def _trusted_peer(
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], peer: str
) -> bool:
    try:
        # A scoped IPv6 peer (fe80::1%eth0) parses with its scope and matches its network.
        address = ipaddress.ip_address(peer)
    except ValueError:
        # No IP address: a unix socket (gunicorn reports an empty peer; with none at all
        # this reads "None"), which only those the socket file's permissions let in can reach.
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # how a dual-stack socket reports an IPv4 peer
    return any(address in network for network in networks)


class TrustedProxyFix(ProxyFix):
    """``ProxyFix`` for requests whose direct peer is one of ``proxies``; from any other peer the
    forwarding headers are dropped, so that the request is seen exactly as it arrived."""

    def __init__(self, app: WSGIApplication, proxies: TrustedProxies, hops: int) -> None:
        super().__init__(app, x_for=hops, x_proto=hops, x_host=hops)
        self.proxies = proxies
        self._warned = False

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR")
        if peer in self.proxies:
            return super().__call__(environ, start_response)
        dropped = [name for name in FORWARDING_HEADERS if environ.pop(name, None) is not None]
        if dropped and not self._warned:
            # Once per process: a misconfigured proxy address shows up, a prober cannot flood.
            self._warned = True
            log.warning(
                "forwarding headers from %s ignored: not a proxy in FORWARDED_ALLOW_IPS", peer
            )
        return self.app(environ, start_response)


def init_app(app: Flask) -> None:
    """Install proxy trust, HTTPS enforcement and security headers on ``app``."""
    hops = _read_int(app.config, "TRUSTED_PROXY_HOPS", DEFAULT_TRUSTED_PROXY_HOPS)
    proxies = _read_proxies(app.config)
    hsts = hsts_header_value(
        _read_int(app.config, "HSTS_MAX_AGE", DEFAULT_HSTS_MAX_AGE),
        _read_bool(app.config, "HSTS_PRELOAD", False),
    )
    # Headers are added as the response starts: cheaper than editing Flask's header objects,
    # and they cover answers no Flask hook sees. The proxy fix wraps both, so the HTTPS check
    # below and the HSTS decision see the scheme the trusted proxy reported, never one a client
    # (or any other peer) claimed.
    app.wsgi_app = _SecurityHeaders(app.wsgi_app, hsts)  # type: ignore[method-assign]
    if hops:
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, proxies, hops)  # type: ignore[method-assign]

    def require_https() -> Response | None:
        if request.is_secure or request.path in PLAIN_HTTP_ALLOWED_PATHS:
            return None
        return _problem(403, "This API is only served over HTTPS.")

    app.before_request(require_https)


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


class _SecurityHeaders:
    """WSGI middleware adding the security headers (and HSTS over HTTPS) to every response."""

    def __init__(self, wsgi_app: WSGIApplication, hsts: str) -> None:
        self.wsgi_app = wsgi_app
        self.hsts = (HSTS_HEADER, hsts)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        secure = environ.get("wsgi.url_scheme") == "https"
        return self.wsgi_app(environ, self._adding_headers(start_response, secure))

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


def _read_int(config: Mapping[str, object], name: str, default: int) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TransportConfigError(name, "must be a whole number")
    # Plain ASCII digits only, as nginx reads the same variables: int() also takes "+100",
    # "1_000" and other scripts' digits, which a check elsewhere (production's HSTS floor,
    # nginx) would read differently or not at all.
    if isinstance(value, str) and not _DIGITS.fullmatch(value.strip()):
        raise TransportConfigError(name, f"must be a whole number, got {value!r}")
    number = int(value)
    if number < 0:
        raise TransportConfigError(name, f"must be zero or positive, got {number}")
    return number


def _read_proxies(config: Mapping[str, object]) -> TrustedProxies:
    value = config.get("FORWARDED_ALLOW_IPS", DEFAULT_FORWARDED_ALLOW_IPS)
    if isinstance(value, list | tuple) and all(isinstance(entry, str) for entry in value):
        return TrustedProxies.parse(value)
    if isinstance(value, str):
        return TrustedProxies.parse(value)
    raise TransportConfigError("FORWARDED_ALLOW_IPS", "must be a comma separated string")


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
