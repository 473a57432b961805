"""The example API (/api/v1) through create_app: bearer tokens, scopes, body validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey
from werkzeug.test import TestResponse

from jose_helpers import make_claims, mint


@pytest.fixture
def token_for(app: Flask, signing_keys: Any) -> Any:
    """Mint a token the app accepts (joserfc, the conftest key pair, the app's iss/aud)."""
    key = RSAKey.import_key(signing_keys.private_pem)

    def mint_token(scope: str = "items:read items:write", **claims: Any) -> str:
        return mint(
            key,
            make_claims(
                **{
                    "iss": app.config["JWT_ISSUER"],
                    "aud": app.config["JWT_AUDIENCE"],
                    "scope": scope,
                    **claims,
                }
            ),
        )

    return mint_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status
    assert body["detail"]
    return body


# --------------------------------------------------------------------- /me


def test_me_returns_the_principal(client: FlaskClient, token_for: Any) -> None:
    response = client.get("/api/v1/me", headers=bearer(token_for("b a", client_id="cli-1")))
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice", "scopes": ["a", "b"], "client_id": "cli-1"}


def test_me_needs_a_token(client: FlaskClient) -> None:
    response = client.get("/api/v1/me")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="api", DPoP realm="api", algs="ES256 RS256 PS256 EdDSA"'
    )


def test_me_with_invalid_token(client: FlaskClient, token_for: Any) -> None:
    response = client.get("/api/v1/me", headers=bearer(token_for(iss="https://evil.test/")))
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# --------------------------------------------------------------------- GET /items


def test_list_items_needs_items_read(client: FlaskClient, token_for: Any) -> None:
    response = client.get("/api/v1/items", headers=bearer(token_for("items:write")))
    assert_problem(response, 403)
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="items:read"' in challenge


def test_list_items(client: FlaskClient, token_for: Any) -> None:
    response = client.get("/api/v1/items", headers=bearer(token_for("items:read")))
    assert response.status_code == 200
    assert response.get_json() == {"items": []}


# --------------------------------------------------------------------- POST /items


def test_create_item_then_list_it(client: FlaskClient, token_for: Any) -> None:
    token = token_for()
    response = client.post("/api/v1/items", json={"name": "  first  "}, headers=bearer(token))
    assert response.status_code == 201
    item = response.get_json()
    assert item["name"] == "first"
    assert item["created_by"] == "alice"
    assert item["id"]
    listed = client.get("/api/v1/items", headers=bearer(token)).get_json()
    assert listed == {"items": [item]}


def test_create_item_needs_items_write(client: FlaskClient, token_for: Any) -> None:
    response = client.post(
        "/api/v1/items", json={"name": "x"}, headers=bearer(token_for("items:read"))
    )
    assert_problem(response, 403)
    assert 'scope="items:write"' in response.headers["WWW-Authenticate"]


def test_authorization_comes_before_body_validation(client: FlaskClient) -> None:
    response = client.post("/api/v1/items", data="not json", content_type="text/plain")
    assert_problem(response, 401)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"name": "x"}', "text/plain"),
        ("name=x", "application/x-www-form-urlencoded"),
        ('{"name": "x"}', None),
    ],
    ids=["text-plain", "form", "no-content-type"],
)
def test_non_json_body_is_415(
    client: FlaskClient, token_for: Any, data: str, content_type: str | None
) -> None:
    response = client.post(
        "/api/v1/items", data=data, content_type=content_type, headers=bearer(token_for())
    )
    assert_problem(response, 415)


@pytest.mark.parametrize(
    "data",
    ['{"name": "x"', "{name: 'x'}", "", b'{"name": "\xff"}'],
    ids=["truncated", "not-json", "empty", "not-utf8"],
)
def test_malformed_json_is_400(client: FlaskClient, token_for: Any, data: str | bytes) -> None:
    response = client.post(
        "/api/v1/items", data=data, content_type="application/json", headers=bearer(token_for())
    )
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        [],
        "x",
        None,
        {},
        {"name": 5},
        {"name": None},
        {"name": ["x"]},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "bad\u0000name"},
        {"name": "line\nbreak"},
        {"name": "x", "admin": True},
    ],
    ids=[
        "list",
        "string",
        "null",
        "empty-object",
        "number",
        "null-name",
        "list-name",
        "empty-name",
        "blank-name",
        "too-long",
        "nul-char",
        "newline",
        "extra-member",
    ],
)
def test_bad_shape_is_422(client: FlaskClient, token_for: Any, body: Any) -> None:
    response = client.post(
        "/api/v1/items",
        data=json.dumps(body),
        content_type="application/json",
        headers=bearer(token_for()),
    )
    assert_problem(response, 422)
    assert client.get("/api/v1/items", headers=bearer(token_for())).get_json() == {"items": []}


def test_oversized_body_is_413(client: FlaskClient, token_for: Any) -> None:
    response = client.post(
        "/api/v1/items", json={"name": "x" * (2 * 1024 * 1024)}, headers=bearer(token_for())
    )
    assert_problem(response, 413)


def test_items_are_per_app(make_app: Any, token_for: Any) -> None:
    headers = bearer(token_for())
    first, second = make_app().test_client(), make_app().test_client()
    https = "https://localhost"
    created = first.post("/api/v1/items", json={"name": "x"}, headers=headers, base_url=https)
    assert created.status_code == 201
    listed = second.get("/api/v1/items", headers=headers, base_url=https)
    assert listed.get_json() == {"items": []}


def test_readiness_includes_signing_keys(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert "bearer_keys" in response.get_json()["checks"]
