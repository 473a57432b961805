"""The service describes itself: an OpenAPI 3.1 document built from the running app.

Paths and methods come from the app's URL map (every rule, every method but HEAD and OPTIONS,
which Flask adds on its own), so a route cannot be served without being described, nor
described without being served. The scopes of each operation come from the attribute
`required_scopes` that `bearer.require_scopes` puts on the view it protects: the document and
the check read the same tuple. When API keys are on (API_KEYS_FILE), those operations list the
`apiKey` scheme (header X-API-Key) as the alternative to a bearer token, with the same scopes.
A webhook view made by `webhooks.Receiver.as_view` carries its sender (`webhook_sender`): the
headers it signs, their formats and its description are read from that record, the one
webhooks.py verifies with. What code cannot tell (the shape of
bodies) is kept in the table below, and tests/test_openapi.py proves it matches the URL map.

`servers` lists one https URL only: the scheme and host of JWT_AUDIENCE when that setting is an
https URL (the bake sets it to https://<domain_name>, this API's public identifier), else
https://localhost:8443, the native dev stack. It is deliberately not derived from the request's
Host header, which a client chooses: the document must say the same thing to everyone.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, jsonify
from werkzeug.routing import Rule

from .apikeys import HEADER as API_KEY_HEADER
from .apikeys import ApiKeys
from .webhooks import Sender, SignedHeader

OPENAPI_VERSION: Final = "3.1.0"
PROBLEM_JSON: Final = "application/problem+json"
FALLBACK_SERVER_URL: Final = "https://localhost:8443"
SECURITY_SCHEME: Final = "bearerAuth"
API_KEY_SCHEME: Final = "apiKeyAuth"
DPOP_SECURITY_SCHEME: Final = "dpopAuth"
# Flask answers these by itself for every rule; they are not operations of the API.
IMPLICIT_METHODS: Final = frozenset({"HEAD", "OPTIONS"})
# nginx rate-limits these prefixes (limit_req), so only their operations can answer 429.
RATE_LIMITED_PREFIXES: Final = ("/api/", "/webhooks/")

blueprint = Blueprint("openapi", __name__)


@blueprint.get("/openapi.json")
def openapi_document() -> Response:
    """This OpenAPI 3.1 document."""
    return jsonify(build_document(current_app))


# --------------------------------------------------------------------------- what code can't say


@dataclass(frozen=True)
class Described:
    """How one operation answers when it succeeds, and what it accepts."""

    summary: str
    status: int
    schema: str
    request_body: str | None = None
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"


DESCRIBED: Final[Mapping[tuple[str, str], Described]] = {
    ("GET", "/"): Described("Where to start: links to this API's description", 200, "Home"),
    ("GET", "/docs"): Described(
        "This document as a readable page", 200, "HtmlPage", media_type="text/html"
    ),
    ("GET", "/healthz"): Described("Liveness: the process answers", 200, "Health"),
    ("GET", "/readyz"): Described(
        "Readiness: signing keys and replay store are usable", 200, "Ready", errors=(503,)
    ),
    ("GET", "/openapi.json"): Described("This OpenAPI 3.1 document", 200, "OpenApiDocument"),
    ("GET", "/api/v1/me"): Described("The caller, as its access token says", 200, "Me"),
    ("GET", "/api/v1/items"): Described("List the items", 200, "ItemList"),
    ("POST", "/api/v1/items"): Described(
        "Create an item", 201, "Item", request_body="NewItem", errors=(413, 415, 422)
    ),
    ("POST", "/webhooks/events"): Described(
        "Receive a Standard Webhooks delivery", 200, "WebhookAck", "WebhookPayload"
    ),
    ("POST", "/webhooks/github"): Described(
        "Receive a GitHub webhook delivery", 200, "WebhookAck", "WebhookPayload"
    ),
    ("POST", "/webhooks/stripe"): Described(
        "Receive a Stripe webhook event", 200, "WebhookAck", "WebhookPayload"
    ),
}

ERROR_DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "Malformed request (e.g. bad Authorization header, a token and an API key together, "
    "a credential in the URL, missing signature header, bad JSON).",
    401: "No valid credentials: missing, invalid or expired token or API key, or a bad signature.",
    403: "The token or API key lacks a required scope (error insufficient_scope for tokens).",
    404: "Not found (a webhook route whose secret is not configured answers 404).",
    405: "Method not allowed on this path; the Allow header lists the methods that are.",
    409: "The same delivery is being processed by another worker; retry after Retry-After.",
    413: "Request body larger than 1 MiB.",
    415: "Unsupported media type: send application/json.",
    422: "The JSON body is well formed but does not match the schema.",
    429: "Too many requests from this client address (nginx limit_req).",
    500: "A webhook handler failed: the delivery is not acknowledged, so the sender retries it.",
    503: "A dependency (signing keys, replay store) is unavailable; nothing was accepted.",
}

_CONVERTER: Final = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_CONVERTER_SCHEMAS: Final[Mapping[str, dict[str, Any]]] = {
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}


# --------------------------------------------------------------------------- the document


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of `app`."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": _info(app),
        "servers": [{"url": server_url(app.config), "description": "HTTPS only"}],
        "security": [],
        "paths": _paths(app),
        "components": _components(app),
    }


def server_url(config: Mapping[str, Any]) -> str:
    """https://<host of JWT_AUDIENCE> if the audience is an https URL, else the dev stack."""
    audience = config.get("JWT_AUDIENCE")
    if isinstance(audience, str):
        parts = urlsplit(audience)
        if parts.scheme == "https" and parts.netloc and not parts.username:
            return f"https://{parts.netloc}"
    return FALLBACK_SERVER_URL


def documented_operations(app: Flask) -> Iterator[tuple[str, str, Rule]]:
    """(method, OpenAPI path, rule) for every operation the app serves."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            yield method, openapi_path(rule.rule), rule


def openapi_path(rule: str) -> str:
    """/items/<int:item_id> -> /items/{item_id}"""
    return _CONVERTER.sub(lambda match: "{" + match["name"] + "}", rule)


def required_scopes(app: Flask, rule: Rule) -> tuple[str, ...] | None:
    """The scopes the view's @require_scopes checks, or None for a view without bearer auth."""
    scopes = getattr(app.view_functions[rule.endpoint], "required_scopes", None)
    return None if scopes is None else tuple(scopes)


def security(app: Flask, rule: Rule) -> list[dict[str, list[str]]]:
    """The alternatives (any one suffices) that authorise the operation; [] for a public one."""
    scopes = required_scopes(app, rule)
    if scopes is None:
        return []
    view = app.view_functions[rule.endpoint]
    if getattr(view, "api_key_only", False):
        return [{API_KEY_SCHEME: list(scopes)}]
    # Alternatives: any one scheme offered, with the same scopes.
    requirements = [{name: list(scopes)} for name in _schemes(app)]
    if api_keys_enabled(app):
        requirements.append({API_KEY_SCHEME: list(scopes)})
    return requirements


def api_keys_enabled(app: Flask) -> bool:
    keys = app.extensions.get("apikeys")
    return isinstance(keys, ApiKeys) and keys.enabled


def webhook_sender(app: Flask, rule: Rule) -> Sender | None:
    """The webhook format a view made by Receiver.as_view verifies, or None."""
    sender = getattr(app.view_functions[rule.endpoint], "webhook_sender", None)
    return sender if isinstance(sender, Sender) else None


def _schemes(app: Flask) -> list[str]:
    """The token schemes the app offers: bearer unless JWT_DPOP=required, DPoP where proofs
    are checked (dpop.init_app registered its checker, which says whether it is required)."""
    proofs = app.extensions.get("dpop")
    required = bool(getattr(proofs, "required", False))
    return ([] if required else [SECURITY_SCHEME]) + ([DPOP_SECURITY_SCHEME] if proofs else [])


def _info(app: Flask) -> dict[str, Any]:
    package = app.import_name.partition(".")[0]
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "0.0.0"  # running from a source tree that was not installed
    return {
        "title": package,
        "version": version,
        "description": (
            "Errors are RFC 9457 problem details (application/problem+json). Access tokens: "
            "RFC 6750 bearer JWTs (RFC 9068); webhooks are authenticated by their signatures."
        ),
    }


def _paths(app: Flask) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, rule in documented_operations(app):
        paths.setdefault(path, {})[method.lower()] = _operation(app, method, path, rule)
    return paths


def _operation(app: Flask, method: str, path: str, rule: Rule) -> dict[str, Any]:
    described = DESCRIBED.get((method, path))
    scopes = required_scopes(app, rule)
    sender = webhook_sender(app, rule)
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{rule.endpoint.replace('.', '_')}",
        "summary": described.summary if described else rule.endpoint,
        "tags": [rule.endpoint.partition(".")[0] if "." in rule.endpoint else "app"],
        "security": security(app, rule),
    }
    parameters = _path_parameters(rule.rule)
    if sender is not None:
        parameters += [_header_parameter(header) for header in sender.headers]
        operation["description"] = sender.description
    if parameters:
        operation["parameters"] = parameters
    if described and described.request_body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref("schemas", described.request_body)}},
        }
    operation["responses"] = _responses(path, described, scopes, sender)
    return operation


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    return [
        {
            "name": match["name"],
            "in": "path",
            "required": True,
            "schema": dict(_CONVERTER_SCHEMAS.get(match["converter"] or "", {"type": "string"})),
        }
        for match in _CONVERTER.finditer(rule)
    ]


def _header_parameter(header: SignedHeader) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if header.pattern is not None:
        # The verifier matches the whole value (fullmatch); JSON Schema patterns are unanchored.
        schema = {"type": "string", "pattern": f"^{header.pattern.pattern}$"}
    return {
        "name": header.name,
        "in": "header",
        "required": True,
        "description": header.description,
        "schema": schema,
    }


def _responses(
    path: str, described: Described | None, scopes: tuple[str, ...] | None, sender: Sender | None
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if described is None:
        responses["200"] = {"description": "Success"}
    else:
        responses[str(described.status)] = {
            "description": HTTPStatus(described.status).phrase,
            "content": {described.media_type: {"schema": _ref("schemas", described.schema)}},
        }
    for status in sorted(_error_statuses(path, described, scopes, sender)):
        responses[str(status)] = _ref("responses", _error_component(status, sender))
    return responses


def _error_statuses(
    path: str, described: Described | None, scopes: tuple[str, ...] | None, sender: Sender | None
) -> set[int]:
    statuses = {405, *(described.errors if described else ())}
    if "{" in path:
        statuses.add(404)  # nothing behind this value of a path parameter
    if scopes is not None:
        statuses |= {400, 401, 503}
    if scopes:
        statuses.add(403)  # insufficient_scope: only where a scope is required
    if sender is not None:
        statuses |= {400, 401, 404, 409, 413, 500, 503}
    if path.startswith(RATE_LIMITED_PREFIXES):
        statuses.add(429)
    return statuses


def _error_component(status: int, sender: Sender | None) -> str:
    # A webhook's 401 carries no WWW-Authenticate challenge: it is not a bearer endpoint.
    if status == 401 and sender is not None:
        return "SignatureRejected"
    return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


# --------------------------------------------------------------------------- components


def _components(app: Flask) -> dict[str, Any]:
    schemes: dict[str, Any] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "OAuth 2.0 access token (RFC 9068 JWT) sent as `Authorization: Bearer`. "
                "Each operation lists the scopes it requires (`scope` or `scp` claim). A "
                "DPoP-bound token (`cnf.jkt`) is refused with this scheme."
            ),
        },
        DPOP_SECURITY_SCHEME: {
            "type": "http",
            "scheme": "DPoP",
            "description": (
                "DPoP-bound JWT access token (RFC 9449: `cnf.jkt` names the client's key) sent as "
                "`Authorization: DPoP <token>`, with a fresh proof in the `DPoP` header: a JWT "
                "typed `dpop+jwt`, signed with one of the algorithms the 401 challenge lists "
                "(`algs`) by the key in its `jwk`, with `htm` (the method), `htu` (this URL "
                "without query), `iat`, a single-use `jti` and `ath` (base64url SHA-256 of "
                "the token). Same scopes as the bearer scheme."
            ),
        },
        API_KEY_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": API_KEY_HEADER,
            "description": (
                "API key for machine clients, issued with `flask api-keys new`; the scopes an "
                "operation lists are the ones the key must hold. Never in the URL or a form "
                "body (400), never together with an Authorization header (400)."
            ),
        },
    }
    offered = _schemes(app) + ([API_KEY_SCHEME] if api_keys_enabled(app) else [])
    return {
        "securitySchemes": {name: schemes[name] for name in offered},
        "schemas": _schemas(),
        "responses": _error_responses(),
    }


def _error_responses() -> dict[str, Any]:
    text = {"type": "string"}
    responses = {
        _error_component(status, None): _problem_response(description)
        for status, description in ERROR_DESCRIPTIONS.items()
    }
    responses["SignatureRejected"] = _problem_response(
        "Bad signature, timestamp outside the tolerance, or unknown secret."
    )
    challenge = {
        "description": (
            "RFC 6750 challenge: realm, and error/error_description/scope if any "
            '(`ApiKey realm="api"` when an API key was refused).'
        ),
        "schema": {"type": "string"},
    }
    responses["Unauthorized"]["headers"] = {"WWW-Authenticate": {**challenge, "required": True}}
    responses["Forbidden"]["headers"] = {"WWW-Authenticate": challenge}
    responses["MethodNotAllowed"]["headers"] = {
        "Allow": {"required": True, "schema": {"type": "string"}}
    }
    responses["Conflict"]["headers"] = {
        "Retry-After": {"required": True, "schema": {"type": "string"}}
    }
    responses["TooManyRequests"]["headers"] = {
        "Retry-After": {"required": True, "description": "Seconds to wait.", "schema": text}
    }
    responses["ServiceUnavailable"]["headers"] = {
        "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}
    }
    return responses


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": _ref("schemas", "Problem")}},
    }


def _schemas() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "Problem": {
            "description": "RFC 9457 problem details; extension members may follow.",
            "type": "object",
            "required": ["type", "title", "status"],
            "properties": {
                "type": {"type": "string", "format": "uri-reference"},
                "title": text,
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": text,
                "instance": text,
                "request_id": text,
                "error": {"description": "RFC 6750 error code, on bearer errors.", **text},
            },
            "additionalProperties": True,
        },
        "Home": {
            **_closed(
                {
                    "name": text,
                    "version": text,
                    "links": _closed(
                        {
                            "openapi": {"const": "/openapi.json"},
                            "docs": {"const": "/docs"},
                            "health": {"const": "/healthz"},
                        }
                    ),
                }
            ),
            "description": (
                "Relative links; also sent as RFC 8288 Link headers with the RFC 8631 "
                "relations service-desc, service-doc and status."
            ),
        },
        "HtmlPage": {"description": "An HTML document without scripts or styles.", **text},
        "Health": _closed({"status": {"const": "ok"}}),
        "Ready": _closed(
            {"status": {"const": "ready"}, "checks": {"type": "array", "items": text}}
        ),
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"const": OPENAPI_VERSION}},
        },
        "Me": _closed(
            {
                "sub": text,
                "scopes": {"type": "array", "items": text},
                "client_id": {"type": ["string", "null"]},
            }
        ),
        "Item": _closed(
            {"id": {"type": "string", "format": "uuid"}, "name": text, "created_by": text}
        ),
        "ItemList": _closed({"items": {"type": "array", "items": _ref("schemas", "Item")}}),
        "NewItem": _closed(
            {
                "name": {
                    "description": "Trimmed; no control characters.",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "pattern": "\\S",
                }
            }
        ),
        "WebhookPayload": {
            "description": "The sender's event, verified on the raw bytes before parsing.",
            "type": "object",
        },
        "WebhookAck": _closed({"status": {"enum": ["accepted", "duplicate"]}}),
    }


def _closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }
