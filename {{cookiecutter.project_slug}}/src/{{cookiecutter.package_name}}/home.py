"""Where an API user starts: the root names the service and links to its description.

GET / answers with the service's name and version and relative links to the OpenAPI document,
to the same document as a readable page and to the liveness probe, in the JSON body and as
RFC 8288 `Link` headers with the relations of RFC 8631 (service-desc, service-doc, status), so
that a person with curl and a client that follows links both find their way.

GET /docs is that readable page: HTML rendered on the server from the OpenAPI document, so it
says what /openapi.json says and nothing else. It has no script and no style, which the
service's Content-Security-Policy (`default-src 'none'`) would refuse, and every value in it
is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from html import escape
from typing import Any, Final

from flask import Blueprint, Response, current_app, jsonify

from .openapi import build_document

LINKS: Final = (
    # (name in the body, RFC 8631 relation, target)
    ("openapi", "service-desc", "/openapi.json"),
    ("docs", "service-doc", "/docs"),
    ("health", "status", "/healthz"),
)

blueprint = Blueprint("home", __name__)


@blueprint.get("/")
def home() -> Response:
    info = build_document(current_app)["info"]
    response = jsonify(
        name=info["title"],
        version=info["version"],
        links={name: target for name, _, target in LINKS},
    )
    response.headers["Link"] = ", ".join(
        f'<{target}>; rel="{relation}"' for _, relation, target in LINKS
    )
    return response


@blueprint.get("/docs")
def docs() -> Response:
    page = render_reference(build_document(current_app))
    return Response(page, mimetype="text/html")


def render_reference(document: Mapping[str, Any]) -> str:
    """The OpenAPI document as one HTML page: operations, then the schemas they name."""
    info = document["info"]
    title = f"{info['title']} {info['version']}"
    servers = ", ".join(f"<code>{escape(server['url'])}</code>" for server in document["servers"])
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><title>' + escape(title) + " API reference</title></head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(info['description'])}</p>",
        f"<p>Base URL: {servers}. Machine-readable (OpenAPI {escape(document['openapi'])}): "
        '<a href="/openapi.json">/openapi.json</a>.</p>',
        "<h2>Authentication</h2>",
    ]
    for name, scheme in document["components"]["securitySchemes"].items():
        lines.append(f"<p><code>{escape(name)}</code>: {escape(scheme['description'])}</p>")
    lines.append("<h2>Operations</h2>")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            lines.extend(_operation(method, path, operation, document["components"]))
    lines.append("<h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        lines.append(f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>')
        lines.append(f"<pre>{escape(json.dumps(schema, indent=2))}</pre>")
    lines.extend(["</body>", "</html>", ""])
    return "\n".join(lines)


def _operation(
    method: str, path: str, operation: Mapping[str, Any], components: Mapping[str, Any]
) -> Iterator[str]:
    yield f'<section id="{escape(operation["operationId"])}">'
    yield f"<h3><code>{escape(method.upper())} {escape(path)}</code></h3>"
    yield f"<p>{escape(operation['summary'])}</p>"
    if "description" in operation:
        yield f"<p>{escape(operation['description'])}</p>"
    yield f"<p>Access: {_access(operation['security'])}</p>"
    parameters = operation.get("parameters", [])
    if parameters:
        yield "<p>Parameters:</p><ul>"
        for parameter in parameters:
            required = ", required" if parameter.get("required") else ""
            detail = parameter.get("description", "")
            yield (
                f"<li><code>{escape(parameter['name'])}</code> ({escape(parameter['in'])}"
                f"{required}) {escape(detail)}</li>"
            )
        yield "</ul>"
    if "requestBody" in operation:
        for media_type, content in operation["requestBody"]["content"].items():
            yield f"<p>Body ({escape(media_type)}): {_schema_link(content['schema'])}</p>"
    yield "<p>Responses:</p><dl>"
    for status, response in operation["responses"].items():
        resolved = _resolve(response, components)
        content = resolved.get("content", {})
        shapes = " ".join(
            f"{escape(media_type)} {_schema_link(body['schema'])}"
            for media_type, body in content.items()
        )
        yield f"<dt>{escape(status)}</dt><dd>{escape(resolved['description'])} {shapes}</dd>"
    yield "</dl>"
    yield "</section>"


def _access(security: list[Mapping[str, list[str]]]) -> str:
    # The schemes are named as in the Authentication section, which says what each one is.
    if not security:
        return "open to anyone"
    requirements = []
    for requirement in security:
        for scheme, scopes in requirement.items():
            needed = ", ".join(f"<code>{escape(scope)}</code>" for scope in scopes)
            scope_text = f" with scope {needed}" if needed else ""
            requirements.append(f"<code>{escape(scheme)}</code>{scope_text}")
    return " or ".join(requirements)


def _schema_link(schema: Mapping[str, Any]) -> str:
    reference = schema.get("$ref", "")
    if not reference:
        return f"<code>{escape(json.dumps(schema))}</code>"
    name = reference.rpartition("/")[2]
    return f'<a href="#schema-{escape(name)}"><code>{escape(name)}</code></a>'


def _resolve(node: Mapping[str, Any], components: Mapping[str, Any]) -> Mapping[str, Any]:
    reference = node.get("$ref")
    if not reference:
        return node
    kind, _, name = reference.removeprefix("#/components/").partition("/")
    resolved: Mapping[str, Any] = components[kind][name]
    return resolved
