"""bearer.require_scopes and other credentials registered in app.extensions["credentials"].

A fake credential (an `X-Test-Credential` header) stands for any other module, so these tests
pin the contract itself: the one decorator hands a request carrying another credential to it,
passes its refusals through unchanged, refuses two credentials at once, and makes
current_principal() (and so the logs' sub) work for the caller it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey
from werkzeug.test import TestResponse

from jose_helpers import RSA_KEYS, make_claims, mint
from {{ cookiecutter.package_name }} import bearer

ISSUER = "https://issuer.test/"
AUDIENCE = "https://api.test"
HEADER = "X-Test-Credential"


@dataclass(frozen=True)
class Caller:
    sub: Any
    scopes: Any
    client_id: Any


SEVERAL = "Send one credential, not several (e.g. a token and an API key)"


class FakeCredential:
    """Accepts `X-Test-Credential: good`, refuses anything else with its own 401 or 403."""

    def __init__(self, caller: Caller | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.caller = caller or Caller("fake:1", frozenset({"items:read"}), "fake-client")

    def present(self) -> bool:
        return HEADER in request.headers

    def authenticate(self, needed_scopes: tuple[str, ...]) -> Caller | Response:
        self.calls.append(needed_scopes)
        if request.headers[HEADER] != "good":
            return Response('{"detail": "fake refusal"}', 401, mimetype="application/problem+json")
        caller = self.caller
        if not set(caller.scopes).issuperset(needed_scopes):
            return Response('{"detail": "fake scope"}', 403, mimetype="application/problem+json")
        return caller


@pytest.fixture
def our_key() -> RSAKey:
    return RSA_KEYS[0]


@pytest.fixture
def make_client(tmp_path: Path, our_key: RSAKey) -> Callable[..., FlaskClient]:
    public_key_file = tmp_path / "public.pem"
    public_key_file.write_bytes(our_key.as_pem(private=False))

    def build(*credentials: Any) -> FlaskClient:
        app = Flask("credentials_test")
        app.config.update(
            APP_ENV="test",
            JWT_ISSUER=ISSUER,
            JWT_AUDIENCE=AUDIENCE,
            JWT_PUBLIC_KEY_FILE=str(public_key_file),
        )
        bearer.init_app(app)
        app.extensions.setdefault(bearer.CREDENTIALS_KEY, []).extend(credentials)

        @app.route("/me", methods=["GET", "POST"])
        @bearer.require_scopes()
        def me() -> dict[str, Any]:
            principal = bearer.current_principal()
            return {
                "sub": principal.sub,
                "scopes": sorted(principal.scopes),
                "client_id": principal.client_id,
                "claims": dict(principal.claims),
            }

        @app.get("/write")
        @bearer.require_scopes("items:write")
        def write() -> dict[str, str]:
            return {"status": "written"}

        return app.test_client()

    return build


def assert_several(response: TestResponse) -> None:
    body = response.get_json()
    assert (response.status_code, body["error"], body["detail"]) == (
        400,
        "invalid_request",
        SEVERAL,
    )
    assert response.mimetype == "application/problem+json"
    challenge = response.headers["WWW-Authenticate"]
    assert (
        challenge == f'Bearer realm="api", error="invalid_request", error_description="{SEVERAL}"'
    )


def token(key: RSAKey) -> str:
    return mint(key, make_claims(iss=ISSUER, aud=AUDIENCE, scope="items:read"))


def test_the_other_credential_authenticates_and_current_principal_sees_its_caller(
    make_client: Callable[..., FlaskClient],
) -> None:
    fake = FakeCredential()
    response = make_client(fake).get("/me", headers={HEADER: "good"})
    assert response.status_code == 200
    assert response.get_json() == {
        "sub": "fake:1",
        "scopes": ["items:read"],
        "client_id": "fake-client",
        "claims": {},  # another credential has no token, so no claims
    }
    assert fake.calls == [()]


@pytest.mark.parametrize(
    ("path", "value", "status", "detail"),
    [("/me", "bad", 401, "fake refusal"), ("/write", "good", 403, "fake scope")],
    ids=["refused", "missing-scope"],
)
def test_the_other_credentials_refusal_is_passed_through_unchanged(
    make_client: Callable[..., FlaskClient], path: str, value: str, status: int, detail: str
) -> None:
    fake = FakeCredential()
    response = make_client(fake).get(path, headers={HEADER: value})
    assert response.status_code == status
    assert response.get_json(force=True) == {"detail": detail}
    assert "WWW-Authenticate" not in response.headers
    assert fake.calls == [("items:write",) if path == "/write" else ()]


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/me", {"Authorization": "Bearer {token}"}),
        ("/me", {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("/me?access_token={token}", {}),
    ],
    ids=["bearer-header", "other-authorization-scheme", "token-in-query"],
)
def test_a_token_and_another_credential_together_are_invalid_request(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, url: str, headers: dict[str, str]
) -> None:
    fake = FakeCredential()
    minted = token(our_key)
    response = make_client(fake).get(
        url.format(token=minted),
        headers={HEADER: "good", **{k: v.format(token=minted) for k, v in headers.items()}},
    )
    assert_several(response)
    assert fake.calls == []  # refused before either credential was looked at


def test_two_other_credentials_together_are_invalid_request(
    make_client: Callable[..., FlaskClient],
) -> None:
    first, second = FakeCredential(), FakeCredential()
    response = make_client(first, second).get("/me", headers={HEADER: "good"})
    assert_several(response)
    assert first.calls == second.calls == []


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_token_in_the_form_body_and_another_credential_are_invalid_request(
    make_client: Callable[..., FlaskClient], our_key: RSAKey, content_type: str
) -> None:
    fake = FakeCredential()
    response = make_client(fake).post(
        "/me", data={"access_token": token(our_key)}, content_type=content_type,
        headers={HEADER: "good"},
    )  # fmt: skip
    assert_several(response)
    assert fake.calls == []


def test_other_parameters_and_bodies_beside_another_credential_are_no_token(
    make_client: Callable[..., FlaskClient], our_key: RSAKey
) -> None:
    client = make_client(FakeCredential())
    assert client.get("/me?page=2", headers={HEADER: "good"}).status_code == 200
    assert client.post("/me", data={"name": "x"}, headers={HEADER: "good"}).status_code == 200
    json_body = client.post("/me", json={"access_token": token(our_key)}, headers={HEADER: "good"})
    assert json_body.status_code == 200


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        (Caller("fake:2", ["b", "a", "b"], 7), {"sub": "fake:2", "scopes": ["a", "b"],
                                                "client_id": None}),
        (Caller("fake:3", (), None), {"sub": "fake:3", "scopes": [], "client_id": None}),
    ],
    ids=["scopes-list-client-id-number", "no-scopes"],
)  # fmt: skip
def test_the_callers_fields_are_taken_as_the_principal(
    make_client: Callable[..., FlaskClient], caller: Caller, expected: dict[str, Any]
) -> None:
    response = make_client(FakeCredential(caller)).get("/me", headers={HEADER: "good"})
    assert response.get_json() == expected | {"claims": {}}


@pytest.mark.parametrize("sub", ["", None, 7], ids=["empty", "none", "number"])
def test_a_caller_without_a_usable_sub_is_a_programming_error(
    make_client: Callable[..., FlaskClient], sub: Any
) -> None:
    client = make_client(FakeCredential(Caller(sub, frozenset(), None)))
    client.application.testing = True  # let the exception through instead of a 500
    with pytest.raises(TypeError) as raised:
        client.get("/me", headers={HEADER: "good"})
    assert str(raised.value) == "a credential's caller needs a non-empty str sub"


def test_without_the_other_credential_tokens_work_as_before(
    make_client: Callable[..., FlaskClient], our_key: RSAKey
) -> None:
    fake = FakeCredential()
    client = make_client(fake)
    answer = client.get("/me", headers={"Authorization": f"Bearer {token(our_key)}"})
    assert answer.status_code == 200
    assert answer.get_json()["sub"] == "alice"
    assert client.get("/me").headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert fake.calls == []
