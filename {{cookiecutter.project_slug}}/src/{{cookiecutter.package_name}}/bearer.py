"""OAuth 2.0 bearer access tokens for Flask: RFC 6750, RFC 8725 and RFC 9068.

This module stands alone (Flask, PyJWT and the standard library only) so that it can be
copied into any Flask app; see docs/patterns/bearer-tokens.md. DPoP-bound tokens (RFC 9449,
"Authorization: DPoP") are accepted when a proof checker is registered in
app.extensions["dpop"] (dpop.py, docs/patterns/dpop.md); a DPoP-bound token sent as a bearer
token is always refused.

    bearer.init_app(app)

    @app.get("/items")
    @bearer.require_scopes("items:read")
    def items():
        principal = bearer.current_principal()

Settings, read once from app.config by init_app():

    JWT_ISSUER                 exact "iss" expected (required)
    JWT_AUDIENCE               this API's identifier, must be in "aud" (required)
    JWT_JWKS_URL               JWKS of the authorization server; https, or http on a loopback
                               host outside production                         } exactly one
    JWT_PUBLIC_KEY_FILE        PEM public key (single-key setups, local dev)   } of these two
    JWT_ALGORITHMS             allowed "alg" values, tuple or comma separated; asymmetric only
                               (default ("RS256",)); HS* and "none" are refused here
    JWT_LEEWAY_SECONDS         clock skew allowed on exp/nbf/iat (default 30, at most 300)
    JWT_TOKEN_TYPE             the JOSE "typ" every token must carry (RFC 9068 section 4);
                               default "at+jwt" ("application/at+jwt" is the same type);
                               "any" turns the check off for providers that do not type tokens
    JWT_REALM                  realm of the WWW-Authenticate challenge (default "api")
    JWT_MAX_TOKEN_BYTES        longer tokens are refused before any parsing (default 8192)
    JWT_JWKS_CACHE_SECONDS     age after which the cached JWKS is refreshed (default 300)
    JWT_JWKS_COOLDOWN_SECONDS  minimum time between two JWKS fetches (default 30)
    JWT_JWKS_TIMEOUT_SECONDS   total deadline of one JWKS fetch, the longest an unknown kid
                               waits (default 5)
    JWT_VERIFIED_CACHE_SIZE    verified tokens remembered, keyed by their SHA-256 (default 4096;
                               0 turns the cache off)
    APP_ENV                    anything but "development" or "test" counts as production,
                               which forbids an http JWKS URL

Other credentials (API keys, ...) plug into the same decorator without this module importing
theirs: their init_app appends an object to app.extensions["credentials"] with

    present() -> bool                     the request carries this credential (in any form)
    authenticate(needed_scopes) -> caller an object with sub, scopes and client_id when the
                                          credential is valid and holds every needed scope,
                                          else the complete Response refusing the request

require_scopes hands a request carrying one of them to it, refuses one carrying two
credentials (one of them and a bearer token, or two of them) with 400 invalid_request, and
makes current_principal() answer a Principal (without claims) for the caller it got back.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, ParamSpec, Protocol
from urllib.parse import urlsplit

import jwt
from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue
from jwt.exceptions import InvalidSubjectError

__all__ = [
    "CREDENTIALS_KEY",
    "SETTINGS",
    "BearerConfigError",
    "Principal",
    "current_principal",
    "init_app",
    "is_loopback",
    "require_scopes",
]

logger = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub")
# What init_app reads from app.config (and validates: nothing else checks these).
SETTINGS: Final = (
    "APP_ENV",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_JWKS_URL",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_ALGORITHMS",
    "JWT_LEEWAY_SECONDS",
    "JWT_TOKEN_TYPE",
    "JWT_REALM",
    "JWT_MAX_TOKEN_BYTES",
    "JWT_JWKS_CACHE_SECONDS",
    "JWT_JWKS_COOLDOWN_SECONDS",
    "JWT_JWKS_TIMEOUT_SECONDS",
    "JWT_VERIFIED_CACHE_SIZE",
)
DEFAULT_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 (a media type, not a secret)
TOKEN_TYPE_ANY: Final = "any"  # noqa: S105
EXTENSION_KEY: Final = "bearer"
PROOF_EXTENSION_KEY: Final = "dpop"
# The scheme ("bearer" or "dpop") the current request's credentials came with.
_SCHEME_KEY: Final = "bearer_auth_scheme"
_PROOF_ERRORS: Final = frozenset({"invalid_dpop_proof", "invalid_token"})
READINESS_NAME: Final = "bearer_keys"
# Where other modules register the credentials require_scopes accepts besides a bearer token.
CREDENTIALS_KEY: Final = "credentials"

# The APP_ENV values that allow an http JWKS URL on a loopback host.
_RELAXED_ENVIRONMENTS: Final = ("development", "test")
_MAX_JWKS_BYTES: Final = 512 * 1024
_FORM_MIMETYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 9110 token: tells "another auth scheme" (401, no error) from garbage (400).
_HTTP_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6749 section 3.3 scope-token, which is also safe inside a quoted-string.
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_REALM: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")

# Hostile input must end as 401, never as a 500: what a parser may raise besides PyJWTError
# (OverflowError: a 400-digit number turned into a float).
_PARSE_ERRORS: Final = (ValueError, TypeError, RecursionError, OverflowError)
# The last second of year 9999. Later (or negative, infinite, NaN) dates are not a clock's:
# refused before anything does arithmetic with them, and every date below it is exact in a
# float, which the verified-token cache computes with.
_LATEST_DATE: Final = 253_402_300_799
# RFC 7638 SHA-256 thumbprint, base64url without padding (the cnf "jkt" of RFC 9449).
_THUMBPRINT: Final = re.compile(r"[A-Za-z0-9_-]{43}")

P = ParamSpec("P")


class BearerConfigError(ValueError):
    """Raised by init_app() for a setting that is missing, unsafe or unusable.

    str() is one line that starts with the setting's name: "JWT_ALGORITHMS: ...".
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Principal:
    """The verified caller: who (sub), for which client, allowed to do what (scopes)."""

    sub: str
    scopes: frozenset[str]
    client_id: str | None
    claims: Mapping[str, Any] = field(compare=False, hash=False, repr=False)


class _Rejection(Exception):
    """An RFC 6750 section 3 outcome; description is fixed text, never token content."""

    def __init__(
        self,
        status: int,
        error: str | None,
        description: str,
        scope: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.description = description
        self.scope = scope


class _KeysUnavailable(Exception):
    """Something the verdict needs cannot answer (no signing key was ever fetched, the DPoP
    replay store is down), so no token can be judged: 503, never accept."""

    def __init__(self, description: str = "Token signing keys are temporarily unavailable"):
        self.description = description


class ProofVerifier(Protocol):
    """A DPoP proof checker (RFC 9449) that another module registers as
    app.extensions["dpop"] (dpop.py does). This file never imports it, so it still stands
    alone: without one, the DPoP scheme is simply not offered.

    verify_proof raises ValueError for a refused proof (str(): fixed text for the client;
    attribute error: the RFC 9449 error code, invalid_dpop_proof unless it says otherwise)
    and ConnectionError when its replay store cannot answer.
    """

    required: bool  # every token must be DPoP-bound (JWT_DPOP=required)
    algorithms: tuple[str, ...]  # proof algorithms, announced in the challenge's algs

    def verify_proof(self, access_token: str, bound_to: str, *, leeway: int) -> None: ...


def _invalid_request(description: str) -> _Rejection:
    return _Rejection(400, "invalid_request", description)


def _invalid_token(description: str) -> _Rejection:
    return _Rejection(401, "invalid_token", description)


# --------------------------------------------------------------------------- public API


def init_app(app: Flask) -> None:
    """Validate the JWT_* settings, load or fetch the keys, register the readiness check."""
    config = app.config
    algorithms = _algorithms_setting(config.get("JWT_ALGORITHMS", ("RS256",)))
    keys = _key_source(config, algorithms)
    verifier = _Verifier(
        issuer=_required_text(config, "JWT_ISSUER"),
        audience=_required_text(config, "JWT_AUDIENCE"),
        algorithms=algorithms,
        leeway=_int_setting(config, "JWT_LEEWAY_SECONDS", 30, low=0, high=300),
        token_type=_token_type_setting(config.get("JWT_TOKEN_TYPE")),
        realm=_realm_setting(config.get("JWT_REALM", "api")),
        max_token_bytes=_int_setting(config, "JWT_MAX_TOKEN_BYTES", 8192, low=256, high=65536),
        keys=keys,
        cache=_VerifiedCache(
            _int_setting(config, "JWT_VERIFIED_CACHE_SIZE", 4096, low=0, high=1_000_000)
        ),
    )
    app.extensions[EXTENSION_KEY] = verifier
    app.extensions.setdefault("readiness_checks", {})[READINESS_NAME] = keys.usable


def require_scopes(
    *scopes: str,
) -> Callable[[Callable[P, ResponseReturnValue]], Callable[P, ResponseReturnValue]]:
    """Let the view run only for a valid bearer token holding every scope listed.

    With no scope listed, any valid token is enough.
    """
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"not a valid OAuth scope: {scope!r}")
    needed = tuple(dict.fromkeys(scopes))

    def decorator(view: Callable[P, ResponseReturnValue]) -> Callable[P, ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            verifier = _current_verifier()
            others = _other_credentials()
            if others:
                outcome = _authenticate_other(others, needed)
                if isinstance(outcome, _Rejection):
                    return verifier.reject(outcome)
                if isinstance(outcome, Response):
                    return outcome
                g.bearer_principal = outcome
                return view(*args, **kwargs)
            try:
                principal = verifier.authenticate()
                # A stable name: access loggers read g.bearer_principal.sub without importing
                # us. Set before the scope check so that a 403 is still logged with its sub.
                g.bearer_principal = principal
                _check_scopes(principal, needed)
            except _Rejection as rejection:
                return verifier.reject(rejection)
            except _KeysUnavailable as unavailable:
                return verifier.keys_unavailable(unavailable)
            return view(*args, **kwargs)

        # Read by openapi.py, so the published document and the check share one list.
        wrapper.required_scopes = needed  # type: ignore[attr-defined]
        return wrapper

    return decorator


def current_principal() -> Principal:
    """The principal verified for this request by @require_scopes (token or other credential)."""
    principal = g.get("bearer_principal")
    if not isinstance(principal, Principal):
        raise RuntimeError("current_principal() is only usable inside a @require_scopes view")
    return principal


def _current_verifier() -> _Verifier:
    verifier = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(verifier, _Verifier):
        # Fail closed: a protected view without init_app must never run unprotected.
        raise RuntimeError("bearer.init_app(app) was not called")
    return verifier


def _other_credentials() -> list[Any]:
    """The credentials registered in app.extensions["credentials"] that this request carries."""
    registered = current_app.extensions.get(CREDENTIALS_KEY, ())
    return [credential for credential in registered if credential.present()]


def _authenticate_other(
    others: list[Any], needed: tuple[str, ...]
) -> Principal | Response | _Rejection:
    # One credential per request: with two, whose identity and scopes apply would be a guess.
    if len(others) > 1 or _bearer_token_sent():
        return _invalid_request("Send one credential, not several (e.g. a token and an API key)")
    caller = others[0].authenticate(needed)
    if isinstance(caller, Response):
        return caller  # the credential's own refusal: 400, 401 or 403 with its problem body
    if not isinstance(caller.sub, str) or not caller.sub:
        raise TypeError("a credential's caller needs a non-empty str sub")
    client_id = caller.client_id
    return Principal(
        sub=caller.sub,
        scopes=frozenset(caller.scopes),
        client_id=client_id if isinstance(client_id, str) else None,
        claims=MappingProxyType({}),
    )


def _bearer_token_sent() -> bool:
    """Any attempt at a bearer token: an Authorization header, or access_token in the URL/form."""
    if "Authorization" in request.headers:
        return True
    if request.query_string and "access_token" in request.args:
        return True
    return request.mimetype in _FORM_MIMETYPES and "access_token" in request.form


def _proof_verifier() -> ProofVerifier | None:
    verifier: ProofVerifier | None = current_app.extensions.get(PROOF_EXTENSION_KEY)
    return verifier


def _check_proof(proofs: ProofVerifier, token: str, bound_to: str, leeway: int) -> None:
    """RFC 9449 section 7.1: a DPoP-bound token needs a valid proof of its key, every time."""
    try:
        proofs.verify_proof(token, bound_to, leeway=leeway)
    except ConnectionError:
        raise _KeysUnavailable("The DPoP replay store is temporarily unavailable") from None
    except ValueError as refused:
        error = getattr(refused, "error", "invalid_dpop_proof")
        description = str(refused)
        # What reaches the challenge is fixed text of the proof checker's; anything else is
        # replaced rather than echoed.
        if error not in _PROOF_ERRORS or not _REALM.fullmatch(description):
            error, description = "invalid_dpop_proof", "The DPoP proof is invalid"
        raise _Rejection(401, error, description) from None


def _check_scopes(principal: Principal, needed: tuple[str, ...]) -> None:
    if not principal.scopes.issuperset(needed):
        raise _Rejection(
            403,
            "insufficient_scope",
            "The access token lacks a required scope",
            scope=" ".join(needed),
        )


# --------------------------------------------------------------------------- verification


class _Verifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        leeway: int,
        token_type: str | None,
        realm: str,
        max_token_bytes: int,
        keys: _StaticKey | _JwksKeys,
        cache: _VerifiedCache,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.leeway = leeway
        self.token_type = token_type
        self.realm = realm
        self.max_token_bytes = max_token_bytes
        self.keys = keys
        self.cache = cache

    def authenticate(self) -> Principal:
        proofs = _proof_verifier()
        schemes = ("bearer",) if proofs is None else ("bearer", "dpop")
        credentials = _credentials_from_request(self.max_token_bytes, schemes)
        if credentials is None:
            raise _Rejection(401, None, "An access token is required")
        scheme, token = credentials
        principal = self.verify(token)
        bound_to = _confirmation_from(principal.claims)
        if scheme == "dpop" and proofs is not None:
            if bound_to is None:
                raise _invalid_token(
                    "The access token is not DPoP-bound; send it as a Bearer token"
                )
            _check_proof(proofs, token, bound_to, self.leeway)
            return principal
        # RFC 9449 section 7.2: a DPoP-bound token sent as a bearer token is a downgrade.
        if bound_to is not None:
            raise _invalid_token("A DPoP-bound token must be sent with the DPoP scheme")
        if proofs is not None and proofs.required:
            # Only the DPoP challenge is offered then, so it carries this error (_challenges).
            raise _invalid_token("This API accepts DPoP-bound tokens only")
        return principal

    def verify(self, token: str) -> Principal:
        self.keys.refresh_if_stale()
        digest = hashlib.sha256(token.encode()).digest()
        cached = self.cache.get(digest, self.keys.generation)
        if cached is not None:
            return cached
        header = self._checked_header(token)
        key, generation = self.keys.key_for(header["alg"], header.get("kid"))
        claims = self._decoded_claims(token, key, header["alg"])
        principal = _principal_from(claims)
        # Cached under the generation the key came from, never the one current now: a refresh
        # that retired the key during decode() must void this entry, not adopt it.
        # PyJWT accepts while exp > now - leeway; the cache must not stretch that.
        self.cache.put(digest, principal, float(claims["exp"]) + self.leeway, generation)
        return principal

    def _checked_header(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, *_PARSE_ERRORS):
            raise _invalid_token("The access token is malformed") from None
        alg = header.get("alg")
        # RFC 8725 section 3.1: the allowlist comes from configuration, never from the token.
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _invalid_token("The token signing algorithm is not allowed")
        if self.token_type is not None and not _same_media_type(header.get("typ"), self.token_type):
            raise _invalid_token("The token type is not accepted")
        return header

    def _decoded_claims(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise _invalid_token(_describe(exc)) from None
        except _PARSE_ERRORS:
            raise _invalid_token("The access token is malformed") from None
        _check_claim_types(claims)
        return claims

    def reject(self, rejection: _Rejection) -> Response:
        scheme = g.get(_SCHEME_KEY)
        logger.info(
            "%s token refused: status=%s error=%s reason=%s",
            "DPoP" if scheme == "dpop" else "bearer",
            rejection.status,
            rejection.error or "none",
            rejection.description,
        )
        extra = {"error": rejection.error} if rejection.error else {}
        response = _problem(rejection.status, rejection.description, **extra)
        response.headers["WWW-Authenticate"] = _challenges(
            self.realm, rejection, scheme, _proof_verifier()
        )
        return response

    def keys_unavailable(self, unavailable: _KeysUnavailable | None = None) -> Response:
        description = (unavailable or _KeysUnavailable()).description
        logger.warning("access token not judged: %s", description)
        response = _problem(503, description)
        response.headers["Retry-After"] = str(max(1, round(self.keys.cooldown)))
        return response


# Most specific first: ExpiredSignatureError is an InvalidTokenError, and so on.
_DESCRIPTIONS: Final[tuple[tuple[type[jwt.PyJWTError], str], ...]] = (
    (jwt.ExpiredSignatureError, "The access token expired"),
    (jwt.ImmatureSignatureError, "The access token is not valid yet"),
    (jwt.InvalidIssuerError, "The access token has the wrong issuer"),
    (jwt.InvalidAudienceError, "The access token is not meant for this API"),
    (InvalidSubjectError, "The sub claim must be a string"),
    (jwt.InvalidSignatureError, "The access token signature is invalid"),
    (jwt.InvalidAlgorithmError, "The token signing algorithm does not fit the key"),
    (jwt.InvalidKeyError, "The token signing algorithm does not fit the key"),
    (jwt.DecodeError, "The access token is malformed"),
)


def _describe(exc: jwt.PyJWTError) -> str:
    """Fixed, short text per failure class (RFC 6750 error_description); never exception text."""
    # PyJWT names only the claims we require (options "require", and aud and iss).
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The access token lacks the {exc.claim} claim"
    for exception_class, description in _DESCRIPTIONS:
        if isinstance(exc, exception_class):
            return description
    return "The access token is invalid"


def _check_claim_types(claims: Mapping[str, Any]) -> None:
    # PyJWT passes int("123") and True as dates; RFC 7519 wants a JSON number. It made sure
    # that exp and iat are there; nbf is optional.
    for name, value in [(name, claims[name]) for name in ("exp", "iat", "nbf") if name in claims]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid_token(f"The {name} claim must be a number")
        # Compared, never converted: a comparison holds for any int, NaN fails it.
        if not 0 <= value <= _LATEST_DATE:
            raise _invalid_token(f"The {name} claim is out of range")
    if not claims["sub"]:
        raise _invalid_token("The sub claim must not be empty")
    _confirmation_from(claims)


def _confirmation_from(claims: Mapping[str, Any]) -> str | None:
    """The RFC 7638 thumbprint a DPoP-bound token is bound to (cnf.jkt), None if unbound.

    A token bound by any other method (cnf.x5t#S256 of mutual TLS, RFC 8705) cannot be checked
    here, so it is refused rather than accepted as if it were a bearer token.
    """
    if "cnf" not in claims:
        return None
    confirmation = claims["cnf"]
    thumbprint = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if not isinstance(thumbprint, str) or not _THUMBPRINT.fullmatch(thumbprint):
        raise _invalid_token("The token is bound to a key in a way this API cannot check")
    return thumbprint


def _principal_from(claims: dict[str, Any]) -> Principal:
    client_id = claims.get("client_id", claims.get("azp"))
    return Principal(
        sub=claims["sub"],
        scopes=_scopes_from(claims),
        client_id=client_id if isinstance(client_id, str) else None,
        claims=MappingProxyType(claims),
    )


def _scopes_from(claims: Mapping[str, Any]) -> frozenset[str]:
    """RFC 9068 "scope" (space separated string), else "scp" (list, or string as Entra ID)."""
    if "scope" in claims:
        raw, list_allowed = claims["scope"], False
    else:
        raw, list_allowed = claims.get("scp", ""), True
    if isinstance(raw, str):
        # RFC 6749 section 3.3: scope-tokens separated by single spaces. str.split() would
        # also split on tabs, U+00A0, U+2003 and control characters and let the pieces pass.
        items: list[Any] = raw.split(" ") if raw else []
    elif list_allowed and isinstance(raw, list):
        items = raw
    else:
        raise _invalid_token("The scope claim is malformed")
    if not all(isinstance(item, str) and _SCOPE_TOKEN.fullmatch(item) for item in items):
        raise _invalid_token("The scope claim is malformed")
    return frozenset(items)


def _same_media_type(value: object, expected: str) -> bool:
    """RFC 7515 section 4.1.9: compare case-insensitively, "application/" may be omitted."""
    if not isinstance(value, str):
        return False

    def bare(media_type: str) -> str:
        lowered = media_type.lower()
        return lowered.removeprefix("application/")

    return bare(value) == bare(expected)


# --------------------------------------------------------------------------- request parsing


def _credentials_from_request(
    max_token_bytes: int, schemes: tuple[str, ...]
) -> tuple[str, str] | None:
    """(scheme, token) of the Authorization header for one of schemes (lower case), None when
    no such credentials came."""
    # RFC 6750 sections 2.2 and 2.3: tokens in URLs end up in logs and caches; refuse them
    # even when a header is also present (clients MUST NOT use more than one method).
    if request.query_string and "access_token" in request.args:
        raise _invalid_request("Access tokens are not accepted in the query string")
    if request.mimetype in _FORM_MIMETYPES and "access_token" in request.form:
        raise _invalid_request("Access tokens are not accepted in the request body")
    # WSGI gives one value per field name: the server joined repeated fields with commas,
    # which _credentials refuses.
    value = request.headers.get("Authorization")
    if value is None:
        return None
    return _credentials(value, max_token_bytes, schemes)


def _credentials(
    value: str, max_token_bytes: int, schemes: tuple[str, ...]
) -> tuple[str, str] | None:
    # Field values carry no leading/trailing whitespace (RFC 9110 section 5.5).
    scheme, _, credentials = value.strip(" \t").partition(" ")
    scheme = scheme.lower()
    if scheme not in schemes:
        if _HTTP_TOKEN.fullmatch(scheme):
            return None  # another scheme (Basic, ...): RFC 6750 3.1, no error code
        raise _invalid_request("The Authorization header is malformed")
    if "," in credentials:
        # Several Authorization fields folded into one by the server: which scheme the client
        # meant is unknown, so the error goes into every challenge.
        raise _invalid_request("Send exactly one Authorization header")
    g.setdefault(_SCHEME_KEY, scheme)
    # RFC 6750 2.1: "Bearer" 1*SP b64token; RFC 9449 7.1: "DPoP" 1*SP token68, the same.
    token = credentials.lstrip(" ")
    if not token:
        raise _invalid_request("The Authorization header has no token")
    if len(token) > max_token_bytes:
        raise _invalid_token("The access token is too large")
    if not _B64TOKEN.fullmatch(token):
        # Also catches several Authorization headers folded into one by the server.
        raise _invalid_request("The Authorization header is malformed")
    return scheme, token


# --------------------------------------------------------------------------- responses


def _challenges(
    realm: str, rejection: _Rejection, used: str | None, proofs: ProofVerifier | None
) -> str:
    """The WWW-Authenticate value: a Bearer challenge (unless DPoP is required) and, where
    proofs are checked, a DPoP one with its algs (RFC 9449 section 7.1). The error goes into the
    challenge of the scheme the client used, into both when that is unknown (section 7.2)."""
    offered = [] if proofs is not None and proofs.required else ["bearer"]
    if proofs is not None:
        offered.append("dpop")
    carrier = used if used in offered else None
    challenges = []
    for scheme in offered:
        params = [f'realm="{realm}"']
        if rejection.error is not None and carrier in (scheme, None):
            params.append(f'error="{rejection.error}"')
            params.append(f'error_description="{rejection.description}"')
            if rejection.scope is not None:
                params.append(f'scope="{rejection.scope}"')
        if scheme == "dpop" and proofs is not None:
            params.append(f'algs="{" ".join(proofs.algorithms)}"')
        challenges.append(("Bearer " if scheme == "bearer" else "DPoP ") + ", ".join(params))
    return ", ".join(challenges)


def _problem(status: int, detail: str, **extensions: str) -> Response:
    """RFC 9457 problem+json with the request's id; built here so that this file stands alone."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    if request_id := g.get("request_id"):
        body["request_id"] = request_id
    response = Response(json.dumps(body), status, mimetype="application/problem+json")
    response.headers["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- keys


class _StaticKey:
    """One PEM public key, parsed once per algorithm (re-parsing costs ~50 us a request)."""

    cooldown = 0.0
    generation = 0

    def __init__(self, pem: bytes, algorithms: tuple[str, ...]) -> None:
        self._by_alg: dict[str, Any] = {}
        for alg in algorithms:
            try:
                self._by_alg[alg] = jwt.get_algorithm_by_name(alg).prepare_key(pem)
            except (jwt.PyJWTError, ValueError, TypeError, NotImplementedError):
                continue
        if not self._by_alg:
            raise BearerConfigError(
                "JWT_PUBLIC_KEY_FILE",
                f"the key fits none of JWT_ALGORITHMS ({', '.join(algorithms)})",
            )

    def key_for(self, alg: str, kid: object) -> tuple[Any, int]:
        key = self._by_alg.get(alg)
        if key is None:
            raise _invalid_token("The token signing algorithm does not fit the key")
        return key, self.generation

    def refresh_if_stale(self) -> None:
        return None

    def usable(self) -> bool:
        return True


@dataclass(frozen=True)
class _Jwk:
    key: Any
    alg: str | None  # the provider's binding of this key to one algorithm, when it gives one


class _JwksError(Exception):
    pass


# The keys and the generation that names them, swapped as one tuple: a reader gets the old
# pair or the new pair, never new keys under an old generation (or the reverse).
_KeySnapshot = tuple[Mapping[str, _Jwk], int]


class _JwksKeys:
    """Process-wide cache of one JWKS URL.

    Fetched once at start-up; refreshed in the background when older than max_age; an unknown
    kid asks for a refetch at most once per cooldown (so random kids cannot make us hammer the
    provider) and waits for it at most `timeout` seconds, the fetch's total deadline; a failed
    fetch keeps the keys we have, so a provider outage never breaks tokens already trusted.
    A request that a cached key can answer never waits on a fetch: fetches run on a thread of
    their own, one at a time per process.
    """

    def __init__(self, url: str, *, max_age: float, cooldown: float, timeout: float) -> None:
        self.url = url
        self.max_age = max_age
        self.cooldown = cooldown
        self.timeout = timeout
        self._snapshot: _KeySnapshot = (MappingProxyType({}), 0)
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self.reset_after_fork()

    def reset_after_fork(self) -> None:
        # Locks and threads do not survive fork() (gunicorn builds the app in its master, then
        # forks the workers): a lock the parent's fetch thread held would stay held in the
        # child forever, and that thread's fetch would never finish there.
        self._lock = threading.Lock()
        self._fetch_done = threading.Condition(self._lock)
        self._fetching = False

    @property
    def generation(self) -> int:
        """Bumped whenever the key set changes; verified tokens are cached per generation."""
        return self._snapshot[1]

    def key_for(self, alg: str, kid: object) -> tuple[Any, int]:
        """The key for kid and the generation of the key set it was found in."""
        keys, generation = self._snapshot
        if not isinstance(kid, str) or not kid:
            if not keys:
                raise _KeysUnavailable
            raise _invalid_token("The access token has no key id")
        entry = keys.get(kid)
        if entry is None:
            self.refresh(wait=True)
            keys, generation = self._snapshot
            entry = keys.get(kid)
        if entry is None:
            if not keys:
                raise _KeysUnavailable
            raise _invalid_token("The access token was signed by an unknown key")
        # RFC 8725 section 3.1: a key published for one algorithm is used with that one only.
        if entry.alg is not None and entry.alg != alg:
            raise _invalid_token("The token signing algorithm does not fit the key")
        return entry.key, generation

    def refresh_if_stale(self) -> None:
        fetched_at = self._fetched_at
        if fetched_at is None or time.monotonic() - fetched_at >= self.max_age:
            self.refresh(wait=False)

    def usable(self) -> bool:
        # Generation 0 is "no key set fetched yet": a fetch that succeeds holds a key.
        if self.generation == 0:
            self.refresh(wait=True)
        return self.generation > 0

    def refresh(self, *, wait: bool) -> None:
        """Start a fetch unless one is running or the cooldown forbids it; with wait, wait for
        the running fetch (this one or another's) for at most the fetch deadline."""
        give_up_at = time.monotonic() + self.timeout
        with self._lock:
            if not self._fetching:
                if not self._cooldown_over():
                    return
                self._attempted_at = time.monotonic()
                self._fetching = True
                threading.Thread(target=self._fetch, name="jwks-fetch", daemon=True).start()
            if wait:
                self._fetch_done.wait_for(lambda: not self._fetching, give_up_at - time.monotonic())

    def _fetch(self) -> None:
        fetched: dict[str, _Jwk] | None = None
        try:
            fetched = _parse_jwks(_download_jwks(self.url, self.timeout))
        except (_JwksError, *_PARSE_ERRORS) as exc:
            # Whatever the document holds, it costs this fetch only: at start-up the app
            # still starts (503 until keys arrive), later the cached keys stay in use.
            reason = str(exc) if isinstance(exc, _JwksError) else type(exc).__name__
            logger.warning("JWKS fetch from %s failed (%s); keeping cached keys", self.url, reason)
        finally:
            with self._lock:
                if fetched is not None:
                    keys, generation = self._snapshot
                    if fetched != keys:
                        self._snapshot = (MappingProxyType(fetched), generation + 1)
                    self._fetched_at = self._attempted_at
                self._fetching = False
                self._fetch_done.notify_all()

    def _cooldown_over(self) -> bool:
        attempted_at = self._attempted_at
        return attempted_at is None or time.monotonic() - attempted_at >= self.cooldown


_JWKS_CLIENTS: dict[tuple[str, float, float, float], _JwksKeys] = {}
_JWKS_CLIENTS_LOCK = threading.Lock()


def _shared_jwks(url: str, *, max_age: float, cooldown: float, timeout: float) -> _JwksKeys:
    """One cache per URL and process, so several apps or blueprints never fetch twice."""
    with _JWKS_CLIENTS_LOCK:
        signature = (url, max_age, cooldown, timeout)
        client = _JWKS_CLIENTS.get(signature)
        if client is None:
            client = _JwksKeys(url, max_age=max_age, cooldown=cooldown, timeout=timeout)
            _JWKS_CLIENTS[signature] = client
    if client.generation == 0:
        client.refresh(wait=True)
    return client


def _reset_jwks_clients_after_fork() -> None:
    global _JWKS_CLIENTS_LOCK  # noqa: PLW0603 (a lock held at fork time must be replaced)
    _JWKS_CLIENTS_LOCK = threading.Lock()
    for client in _JWKS_CLIENTS.values():
        client.reset_after_fork()


os.register_at_fork(after_in_child=_reset_jwks_clients_after_fork)


def _download_jwks(url: str, timeout: float) -> Any:
    """GET the JWKS within a total deadline of `timeout` seconds: connection, TLS handshake,
    headers and body together. A timeout per socket read alone lets a provider that trickles
    one byte a second hold a fetch for as long as it likes. No redirect is followed: it could
    downgrade https to http or leave the configured host."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        # The scheme was checked by init_app (https, or http to loopback outside production).
        port = parts.port or (443 if https else 80)
        sock = socket.create_connection((host, port), timeout=_time_left(deadline))
        try:
            if https:
                sock.settimeout(_time_left(deadline))  # the whole handshake, not each read
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
            connection = connection_class(host, port)
            connection.sock = sock  # connected above, within the deadline
            sock.settimeout(_time_left(deadline))
            connection.request("GET", target, headers={"Accept": "application/json"})
            # Read through a file whose every read is bounded by what is left of the deadline.
            response = http.client.HTTPResponse(_DeadlineSocket(sock, deadline), method="GET")  # type: ignore[arg-type]
            response.begin()
            if response.status != 200:
                raise _JwksError(f"HTTP {response.status}")
            body = response.read(_MAX_JWKS_BYTES + 1)
        finally:
            sock.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _JwksError(type(exc).__name__) from None
    if len(body) > _MAX_JWKS_BYTES:
        raise _JwksError("document too large")
    try:
        return json.loads(body)
    except ValueError:
        raise _JwksError("not JSON") from None
    except RecursionError:
        # "[" * 200000 fits the size limit; the C parser then gives up with RecursionError.
        raise _JwksError("JSON nested too deeply") from None


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:  # never 0 for settimeout(), which would make the socket non-blocking
        raise TimeoutError("JWKS fetch deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """Socket reads that end, all together, at one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(_time_left(self._deadline))
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """What http.client.HTTPResponse reads from: makefile() only."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


def _parse_jwks(document: Any) -> dict[str, _Jwk]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _JwksError("not a JWK Set")
    keys: dict[str, _Jwk] = {}
    for item in document["keys"]:
        entry = _usable_jwk(item)
        if entry is not None and item["kid"] not in keys:
            keys[item["kid"]] = entry
    if not keys:
        raise _JwksError("no usable signing key")
    return keys


def _usable_jwk(item: Any) -> _Jwk | None:
    """A public signing key with a kid, or None for anything else (enc keys, secrets, junk)."""
    if not isinstance(item, dict) or not isinstance(item.get("kid"), str) or not item["kid"]:
        return None
    if item.get("kty") not in ("RSA", "EC", "OKP") or "d" in item:
        return None
    if item.get("use", "sig") != "sig":
        return None
    alg = item.get("alg")
    # isinstance first: an unhashable alg (a list) would make the set lookup raise TypeError.
    if alg is not None and (not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS):
        return None
    try:
        key = jwt.PyJWK(item).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    return _Jwk(key=key, alg=alg)


# --------------------------------------------------------------------------- verified tokens


class _VerifiedCache:
    """Bounded LRU of verified tokens, keyed by SHA-256 of the token.

    An entry lives no longer than the token's exp (+ leeway, as PyJWT) and dies with any
    change of the key set, so it skips the RSA verification without skipping a check.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[Principal, float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes, generation: int) -> Principal | None:
        if self.size == 0:
            return None
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            principal, expires_at, entry_generation = entry
            if entry_generation != generation or time.time() >= expires_at:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return principal

    def put(self, digest: bytes, principal: Principal, expires_at: float, generation: int) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._entries[digest] = (principal, expires_at, generation)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


# --------------------------------------------------------------------------- settings


def _algorithms_setting(value: object) -> tuple[str, ...]:
    names = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise BearerConfigError("JWT_ALGORITHMS", "give at least one algorithm, e.g. RS256")
    for name in names:
        if not isinstance(name, str) or name not in ASYMMETRIC_ALGORITHMS:
            raise BearerConfigError(
                "JWT_ALGORITHMS",
                f"{name!r} is not allowed; use asymmetric algorithms only "
                f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); HS* and none are refused "
                "(RFC 8725 section 3.1)",
            )
    return tuple(dict.fromkeys(names))


def _key_source(config: Mapping[str, Any], algorithms: tuple[str, ...]) -> _StaticKey | _JwksKeys:
    jwks_url = config.get("JWT_JWKS_URL") or None
    key_file = config.get("JWT_PUBLIC_KEY_FILE") or None
    if (jwks_url is None) == (key_file is None):
        raise BearerConfigError(
            "JWT_JWKS_URL", "set exactly one of JWT_JWKS_URL and JWT_PUBLIC_KEY_FILE"
        )
    # Checked even for a static key, so that a typo is reported before someone relies on it.
    max_age = _int_setting(config, "JWT_JWKS_CACHE_SECONDS", 300, low=1, high=86400)
    cooldown = _int_setting(config, "JWT_JWKS_COOLDOWN_SECONDS", 30, low=0, high=3600)
    timeout = _int_setting(config, "JWT_JWKS_TIMEOUT_SECONDS", 5, low=1, high=60)
    if key_file is not None:
        return _StaticKey(_public_pem(str(key_file)), algorithms)
    # Fail safe: a misspelt APP_ENV ("Production", "prod") must not relax a production rule.
    production = config.get("APP_ENV") not in _RELAXED_ENVIRONMENTS
    return _shared_jwks(
        _jwks_url_setting(str(jwks_url), production=production),
        max_age=max_age,
        cooldown=cooldown,
        timeout=timeout,
    )


def _public_pem(path: str) -> bytes:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise BearerConfigError(
            "JWT_PUBLIC_KEY_FILE", f"cannot read {path} ({exc.strerror})"
        ) from None
    if b"PRIVATE KEY" in pem:
        raise BearerConfigError(
            "JWT_PUBLIC_KEY_FILE", "holds a private key; give the public key only"
        )
    return pem


def _jwks_url_setting(url: str, *, production: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        if production:
            raise BearerConfigError("JWT_JWKS_URL", "must use https in production")
        return url
    raise BearerConfigError(
        "JWT_JWKS_URL", "must be an https URL (http only for a loopback host outside production)"
    )


# What distributions name loopback in /etc/hosts besides localhost (Debian, Red Hat, ...).
_LOOPBACK_NAMES: Final = frozenset(
    {
        "localhost.localdomain",
        "localhost4",
        "localhost4.localdomain4",
        "localhost6",
        "localhost6.localdomain6",
        "ip6-localhost",
        "ip6-loopback",
    }
)


def is_loopback(host: str) -> bool:
    """True for every spelling of this machine: localhost and *.localhost (RFC 6761), with or
    without a trailing dot, the distributions' aliases (ip6-localhost, localhost.localdomain),
    127/8, ::1, IPv4-mapped ::ffff:127.x and IPv4-compatible ::127.x, the unspecified addresses
    (a connection to 0.0.0.0 reaches this host) and legacy IPv4 forms such as 127.1."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost") or name in _LOOPBACK_NAMES:
        return True
    address = _ip_address(name)
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_loopback or address.is_unspecified:
            return True
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif int(address) >> 32 == 0:  # ::a.b.c.d, the deprecated IPv4-compatible form
            address = ipaddress.IPv4Address(int(address))
    return address is not None and (address.is_loopback or address.is_unspecified)


def _ip_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    # inet_aton() (what resolvers use) also takes 127.1, 2130706433 and 0x7f.1.
    if not name or not all(part.isalnum() for part in name.split(".")):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None


def _required_text(config: Mapping[str, Any], name: str) -> str:
    value = config.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BearerConfigError(name, "required")
    return value


def _int_setting(config: Mapping[str, Any], name: str, default: int, *, low: int, high: int) -> int:
    value = config.get(name, default)
    number = _whole_number(value)
    if number is None:
        raise BearerConfigError(name, f"must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise BearerConfigError(name, f"must be between {low} and {high}, got {value!r}")
    return number


def _whole_number(value: object) -> int | None:
    """An int, or the text of one; None for anything else. True is an int to Python and int()
    cuts 2.5 down to 2, but neither is a count of seconds or bytes."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _token_type_setting(value: object) -> str | None:
    """The typ to require; None (from "any") checks nothing."""
    if value is None or value == "":
        # RFC 9068 section 4: without this check an ID token signed by the same provider,
        # with the same iss and aud, passes as an access token.
        return DEFAULT_TOKEN_TYPE
    if isinstance(value, str) and value.lower() == TOKEN_TYPE_ANY:
        return None
    if not isinstance(value, str) or not _HTTP_TOKEN.fullmatch(value.replace("/", "")):
        raise BearerConfigError(
            "JWT_TOKEN_TYPE", f"must be a media type such as at+jwt, or {TOKEN_TYPE_ANY}"
        )
    return value


def _realm_setting(value: object) -> str:
    if not isinstance(value, str) or not _REALM.fullmatch(value):
        raise BearerConfigError(
            "JWT_REALM", "must be printable ASCII without quotes or backslashes"
        )
    return value
