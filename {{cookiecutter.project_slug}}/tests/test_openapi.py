"""GET /openapi.json: a valid OpenAPI 3.1 document that says exactly what the app does."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from {{ cookiecutter.package_name }} import apikeys, openapi, webhooks
from {{ cookiecutter.package_name }}.commands import mint_dev_token

HTTPS = {"X-Forwarded-Proto": "https"}
ERROR_STATUSES = (400, 401, 403, 404, 405, 413, 415, 429, 503)
# Flask adds a /static/<path:filename> rule to every app; no other route may go undescribed.
FLASK_BUILTIN_OPERATIONS = {("GET", "/static/{filename}")}


@pytest.fixture
def webhook_app(make_app: Callable[..., Flask]) -> Flask:
    # GitHub and Stripe routes answer 404 until their secret is set.
    return make_app(GITHUB_WEBHOOK_SECRET="github test secret", STRIPE_WEBHOOK_SECRET="whsec_t")


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    return body


@pytest.fixture
def token_with(app: Flask, signing_keys: Any) -> Callable[[str], str]:
    private_key = serialization.load_pem_private_key(signing_keys.private_pem, password=None)

    def mint(scope: str) -> str:
        return mint_dev_token(
            private_key,
            issuer=app.config["JWT_ISSUER"],
            audience=app.config["JWT_AUDIENCE"],
            sub="openapi-test",
            scope=scope,
            ttl=300,
        )

    return mint


def served_operations(app: Flask) -> set[tuple[str, str]]:
    """(method, path) of every rule of the URL map, read independently of openapi.py."""
    operations = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in {"HEAD", "OPTIONS"}:
                operations.add((method, path))
    return operations


def documented_operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def operation_of(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method.lower()]
    return operation


# --------------------------------------------------------------------------- coverage


def test_the_document_covers_exactly_the_url_map(app: Flask, document: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in documented_operations(document)}
    assert documented == served_operations(app)


def test_the_spec_routes_are_all_there(document: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in documented_operations(document)}
    assert documented >= {
        ("GET", "/"),
        ("GET", "/docs"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/items"),
        ("POST", "/api/v1/items"),
        ("POST", "/webhooks/events"),
        ("POST", "/webhooks/github"),
        ("POST", "/webhooks/stripe"),
        ("GET", "/openapi.json"),
    }


def test_a_route_added_later_is_documented_too(app: Flask) -> None:
    @app.put("/api/v1/items/<uuid:item_id>")
    def replace_item(item_id: str) -> str:
        return item_id

    document = openapi.build_document(app)
    operation = operation_of(document, "PUT", "/api/v1/items/{item_id}")
    uuid_schema = {"type": "string", "format": "uuid"}
    assert operation["parameters"] == [
        {"name": "item_id", "in": "path", "required": True, "schema": uuid_schema}
    ]
    assert operation["security"] == []


def test_the_docs_page_is_documented_as_html(client: FlaskClient, document: dict[str, Any]) -> None:
    (success,) = (
        response
        for status, response in operation_of(document, "GET", "/docs")["responses"].items()
        if status == "200"
    )
    assert list(success["content"]) == ["text/html"]
    assert client.get("/docs").mimetype == "text/html"


def test_every_operation_of_the_service_has_a_described_success(document: dict[str, Any]) -> None:
    undescribed = {
        (method, path)
        for method, path, _ in documented_operations(document)
        if (method, path) not in openapi.DESCRIBED
    }
    assert undescribed <= FLASK_BUILTIN_OPERATIONS
    # And the table describes nothing the app does not serve.
    documented = {(method, path) for method, path, _ in documented_operations(document)}
    assert set(openapi.DESCRIBED) <= documented


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in documented_operations(document)]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- security


def test_scopes_are_the_ones_the_decorators_check(app: Flask, document: dict[str, Any]) -> None:
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            security = operation_of(document, method, path)["security"]
            if hasattr(view, "required_scopes"):
                scopes = list(view.required_scopes)
                assert security == [{"bearerAuth": scopes}, {"dpopAuth": scopes}], path
            else:
                assert security == [], path


def test_the_documented_scopes_are_the_spec_scopes(document: dict[str, Any]) -> None:
    for method, path, scopes in [
        ("GET", "/api/v1/me", []),
        ("GET", "/api/v1/items", ["items:read"]),
        ("POST", "/api/v1/items", ["items:write"]),
    ]:
        security = operation_of(document, method, path)["security"]
        assert security == [{"bearerAuth": scopes}, {"dpopAuth": scopes}], path
    for path in ("/", "/docs", "/healthz", "/readyz", "/openapi.json"):
        assert operation_of(document, "GET", path)["security"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/me"), ("GET", "/api/v1/items"), ("POST", "/api/v1/items")],
)
def test_the_documented_scopes_are_enough_and_each_one_is_needed(
    client: FlaskClient,
    document: dict[str, Any],
    token_with: Callable[[str], str],
    method: str,
    path: str,
) -> None:
    requirement = operation_of(document, method, path)["security"][0]
    scopes: list[str] = requirement["bearerAuth"]
    body = {"name": "probe"} if method == "POST" else None

    def call(scope_list: list[str]) -> int:
        token = token_with(" ".join(scope_list))
        headers = {"Authorization": f"Bearer {token}"}
        return client.open(path, method=method, headers=headers, json=body).status_code

    assert call(scopes) in (200, 201)
    for missing in scopes:
        assert call([scope for scope in scopes if scope != missing]) == 403
    assert client.open(path, method=method, json=body).status_code == 401


def test_the_security_schemes_are_bearer_and_dpop_jwts(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"bearerAuth", "dpopAuth"}
    assert schemes["bearerAuth"]["type"] == schemes["dpopAuth"]["type"] == "http"
    # HTTP authentication scheme names, as registered with IANA (RFC 6750, RFC 9449).
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["dpopAuth"]["scheme"] == "DPoP"
    assert schemes["bearerAuth"]["bearerFormat"] == "JWT"  # OpenAPI allows it for bearer only


def test_dpop_required_documents_the_dpop_scheme_only(make_app: Callable[..., Flask]) -> None:
    document = openapi.build_document(make_app(JWT_DPOP="required"))
    assert set(document["components"]["securitySchemes"]) == {"dpopAuth"}
    security = operation_of(document, "GET", "/api/v1/items")["security"]
    assert security == [{"dpopAuth": ["items:read"]}]


# --------------------------------------------------------------------------- API keys


@pytest.fixture
def keys_app(make_app: Callable[..., Flask], tmp_path: Path) -> Flask:
    key_file = tmp_path / "api-keys.json"
    key_file.write_text('{"keys": []}')
    app = make_app(API_KEYS_FILE=str(key_file))
    # Keys are issued between two requests; the app must see each at once, not within a second.
    app.extensions["apikeys"].key_file.recheck_seconds = 0
    return app


def document_of(app: Flask) -> dict[str, Any]:
    body: dict[str, Any] = app.test_client().get("/openapi.json", headers=HTTPS).get_json()
    return body


def issue_key(app: Flask, scopes: list[str]) -> str:
    keys = app.extensions["apikeys"]
    key_id, key = apikeys.new_key(keys.prefix)
    record = apikeys.KeyRecord(
        key_id, "openapi-test", frozenset(scopes), int(time.time()), None, apikeys.key_digest(key)
    )
    path = keys.key_file.path
    apikeys.write_key_file(path, [*apikeys.read_key_file(path)[1].values(), record])
    return key


def test_with_api_keys_on_secured_operations_take_a_token_or_a_key(keys_app: Flask) -> None:
    document = document_of(keys_app)
    for rule in keys_app.url_map.iter_rules():
        view = keys_app.view_functions[rule.endpoint]
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            security = operation_of(document, method, path)["security"]
            if hasattr(view, "required_scopes"):
                scopes = list(view.required_scopes)
                assert security == [
                    {"bearerAuth": scopes},
                    {"dpopAuth": scopes},
                    {"apiKeyAuth": scopes},
                ], path
            else:
                assert security == [], path
    scheme = document["components"]["securitySchemes"]["apiKeyAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")


def test_the_document_with_api_keys_validates_as_openapi_3_1(keys_app: Flask) -> None:
    schemathesis.openapi.from_dict(document_of(keys_app)).validate()


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/me"), ("GET", "/api/v1/items"), ("POST", "/api/v1/items")],
)
def test_the_documented_key_scopes_are_enough_and_each_one_is_needed(
    keys_app: Flask, method: str, path: str
) -> None:
    security = operation_of(document_of(keys_app), method, path)["security"]
    [scopes] = [
        requirement["apiKeyAuth"] for requirement in security if "apiKeyAuth" in requirement
    ]
    client = keys_app.test_client()
    body = {"name": "probe"} if method == "POST" else None

    def call(scope_list: list[str]) -> int:
        # A key holds at least one scope: "unrelated" stands in for "none of the needed ones".
        headers = {**HTTPS, "X-API-Key": issue_key(keys_app, scope_list or ["unrelated"])}
        return client.open(path, method=method, headers=headers, json=body).status_code

    assert call(scopes) in (200, 201)
    for missing in scopes:
        assert call([scope for scope in scopes if scope != missing]) == 403


def test_a_route_that_takes_only_api_keys_lists_only_that_scheme(keys_app: Flask) -> None:
    @keys_app.get("/keys-only")
    @apikeys.require_scopes("reports:read")
    def keys_only() -> dict[str, str]:
        return {}

    document = document_of(keys_app)
    assert operation_of(document, "GET", "/keys-only")["security"] == [
        {"apiKeyAuth": ["reports:read"]}
    ]


def test_with_api_keys_off_no_key_scheme_is_offered(document: dict[str, Any]) -> None:
    assert "apiKeyAuth" not in document["components"]["securitySchemes"]


def test_servers_are_https_only(document: dict[str, Any]) -> None:
    assert [server["url"] for server in document["servers"]] == ["https://api.test"]


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        ("https://api.example.com", "https://api.example.com"),
        ("https://api.example.com:8443/v1/", "https://api.example.com:8443"),
        ("http://api.example.com", "https://localhost:8443"),
        ("urn:example:api", "https://localhost:8443"),
    ],
)
def test_the_server_comes_from_the_audience_and_is_never_plain_http(
    audience: str, expected: str
) -> None:
    assert openapi.server_url({"JWT_AUDIENCE": audience}) == expected


def test_the_server_does_not_follow_the_clients_host_header(client: FlaskClient) -> None:
    response = client.get("/openapi.json", headers={"Host": "evil.example"})
    assert response.get_json()["servers"] == [
        {"url": "https://api.test", "description": "HTTPS only"}
    ]


# --------------------------------------------------------------------------- webhooks


WEBHOOK_PATHS = ("/webhooks/events", "/webhooks/github", "/webhooks/stripe")


def test_every_webhook_route_documents_its_sender(webhook_app: Flask) -> None:
    rules = [r for r in webhook_app.url_map.iter_rules() if r.rule.startswith("/webhooks/")]
    assert sorted(rule.rule for rule in rules) == sorted(WEBHOOK_PATHS)
    senders = [openapi.webhook_sender(webhook_app, rule) for rule in rules]
    assert sorted(sender.name for sender in senders if sender) == sorted(
        sender.name for sender in webhooks.SENDERS
    )


def test_webhook_operations_require_their_signature_headers(
    webhook_app: Flask, document: dict[str, Any]
) -> None:
    for rule in webhook_app.url_map.iter_rules():
        sender = openapi.webhook_sender(webhook_app, rule)
        if sender is None:
            continue
        operation = operation_of(document, "POST", rule.rule)
        parameters = {(p["name"], p["in"], p["required"]) for p in operation["parameters"]}
        assert parameters == {(header.name, "header", True) for header in sender.headers}
        assert operation["security"] == []
        assert operation["description"] == sender.description


def well_formed_but_unsigned(path: str) -> dict[str, str]:
    now = str(int(time.time()))
    return {
        "/webhooks/events": {
            "webhook-id": "msg_probe",
            "webhook-timestamp": now,
            "webhook-signature": "v1,AAAA",
        },
        "/webhooks/github": {
            "X-Hub-Signature-256": "sha256=00",
            "X-GitHub-Delivery": "probe",
            "X-GitHub-Event": "push",
        },
        "/webhooks/stripe": {"Stripe-Signature": f"t={now},v1=00"},
    }[path]


def documented_headers(document: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    operation = operation_of(document, "POST", path)
    return {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "header"}


@pytest.mark.parametrize("path", WEBHOOK_PATHS)
def test_each_documented_header_is_required_and_no_other_is(
    webhook_app: Flask, document: dict[str, Any], path: str
) -> None:
    client = webhook_app.test_client()
    headers = well_formed_but_unsigned(path)
    assert set(headers) == set(documented_headers(document, path))
    # All documented headers present: the signature is judged (and found wrong).
    assert client.post(path, data=b"{}", headers={**HTTPS, **headers}).status_code == 401
    for name in headers:
        partial = {key: value for key, value in headers.items() if key != name}
        response = client.post(path, data=b"{}", headers={**HTTPS, **partial})
        assert response.status_code == 400, name


# Values around the edges of the documented header formats: the receiver must refuse exactly
# what the published pattern refuses, so that a client validating against the document and
# the service agree.
HEADER_PROBES = ("x" * 256, "x" * 257, "a b", "caf\u00e9", "0", "1" * 15, "1" * 16, "-1", "~!")


@pytest.mark.parametrize("path", WEBHOOK_PATHS)
def test_documented_header_patterns_are_the_ones_enforced(
    webhook_app: Flask, document: dict[str, Any], path: str
) -> None:
    client = webhook_app.test_client()
    base = well_formed_but_unsigned(path)
    patterned = {
        name: schema["pattern"]
        for name, schema in documented_headers(document, path).items()
        if "pattern" in schema
    }
    if path != "/webhooks/stripe":
        assert patterned, "ids and timestamps have a documented format"
    for name, pattern in patterned.items():
        for value in HEADER_PROBES:
            response = client.post(path, data=b"{}", headers={**HTTPS, **base, name: value})
            documented_ok = re.search(pattern, value) is not None
            detail = response.get_json()["detail"]
            refused_for_format = response.status_code == 400 and f"invalid {name}" in detail
            assert refused_for_format != documented_ok, (name, value, response.status_code, detail)


# --------------------------------------------------------------------------- shape


def test_the_document_validates_as_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # the OpenAPI 3.1 meta-schema (jsonschema-rs), raises on any error
    assert len(list(schema.get_all_operations())) == sum(1 for _ in documented_operations(document))


def test_every_schema_is_valid_json_schema_2020_12(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        # No $schema member: OpenAPI 3.1's default dialect, JSON Schema 2020-12.
        assert "$schema" not in schema, name
        jsonschema_rs.meta.validate(schema)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    def references(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from references(value)
        elif isinstance(node, list):
            for item in node:
                yield from references(item)

    refs = set(references(document))
    assert refs
    for ref in refs:
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict), ref


def test_error_responses_are_problem_json(document: dict[str, Any]) -> None:
    responses = document["components"]["responses"]
    for status in ERROR_STATUSES:
        name = HTTPStatus(status).phrase.replace(" ", "")
        content = responses[name]["content"]
        assert content == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    for method, path, operation in documented_operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["$ref"].startswith("#/components/responses/"), (method, path)


def test_each_operation_lists_the_errors_it_can_answer(document: dict[str, Any]) -> None:
    def statuses(method: str, path: str) -> set[int]:
        return {int(code) for code in operation_of(document, method, path)["responses"]}

    assert statuses("POST", "/api/v1/items") >= {201, 400, 401, 403, 405, 413, 415, 422, 429, 503}
    assert statuses("GET", "/api/v1/items") >= {200, 400, 401, 403, 405, 429, 503}
    assert statuses("GET", "/api/v1/me") == {200, 400, 401, 405, 429, 503}  # no scope: no 403
    assert statuses("POST", "/webhooks/github") >= {200, 400, 401, 404, 409, 413, 429, 500, 503}
    assert statuses("GET", "/readyz") == {200, 405, 503}
    assert statuses("GET", "/healthz") == {200, 405}
    assert statuses("GET", "/") == {200, 405}


def test_the_request_and_response_schemas_match_real_answers(
    client: FlaskClient, token_with: Callable[[str], str], document: dict[str, Any]
) -> None:
    schemas = document["components"]["schemas"]

    def check(instance: Any, name: str) -> None:
        # The components travel along so that $ref inside a schema resolves.
        validator = jsonschema_rs.Draft202012Validator(
            {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
        )
        validator.validate(instance)

    headers = {"Authorization": "Bearer " + token_with("items:read items:write")}
    created = client.post("/api/v1/items", json={"name": "a"}, headers=headers)
    check({"name": "a"}, "NewItem")
    check(created.get_json(), "Item")
    check(client.get("/api/v1/items", headers=headers).get_json(), "ItemList")
    check(client.get("/api/v1/me", headers=headers).get_json(), "Me")
    check(client.get("/").get_json(), "Home")
    check(client.get("/healthz").get_json(), "Health")
    check(client.get("/readyz").get_json(), "Ready")
    check(client.get("/api/v1/items").get_json(), "Problem")
