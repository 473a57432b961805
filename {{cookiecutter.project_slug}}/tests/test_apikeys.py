"""API keys (apikeys.py): format, every refusal, the key file and its reloads, the commands.

The API routes take a token or a key through bearer.require_scopes; these tests call them with
keys on an app built from the service's own settings, with a key file of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import stat
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from {{ cookiecutter.package_name }} import apikeys, create_app, logs
from {{ cookiecutter.package_name }}.apikeys import (
    BASE62,
    ApiKeys,
    ApiKeysConfigError,
    KeyRecord,
    key_digest,
    new_key,
    read_key_file,
    write_key_file,
)
from {{ cookiecutter.package_name }}.commands import mint_dev_token
from {{ cookiecutter.package_name }}.redaction import RedactingFilter
from {{ cookiecutter.package_name }}.settings import load_settings

PACKAGE = apikeys.__name__.partition(".")[0]
PREFIX = apikeys.key_prefix(PACKAGE)
HTTPS = {"X-Forwarded-Proto": "https"}
EMPTY_FILE = '{"keys": []}\n'
# Reasons a refusal's log line gives.
FORMAT = "not in this service's key format"
UNREADABLE = "too long or not ASCII"
UNKNOWN = "unknown or revoked key id"


@dataclass(frozen=True)
class Issued:
    key_id: str
    key: str


class KeyFileFixture:
    """The test's API_KEYS_FILE, written the way `api-keys new` writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text(EMPTY_FILE)
        path.chmod(0o600)

    def records(self) -> dict[str, KeyRecord]:
        return dict(read_key_file(self.path)[1])

    def issue(
        self,
        scopes: str = "items:read",
        *,
        name: str = "test-client",
        expires_in: int | None = 3600,
    ) -> Issued:
        key_id, key = new_key(PREFIX)
        now = int(time.time())
        expires = None if expires_in is None else now + expires_in
        record = KeyRecord(key_id, name, frozenset(scopes.split()), now, expires, key_digest(key))
        write_key_file(self.path, [*self.records().values(), record])
        return Issued(key_id, key)

    def revoke(self, key_id: str) -> None:
        write_key_file(self.path, [r for r in self.records().values() if r.key_id != key_id])


@pytest.fixture
def key_file(tmp_path: Path) -> KeyFileFixture:
    return KeyFileFixture(tmp_path / "api-keys.json")


def sees_every_change(app: Flask) -> Flask:
    # Workers look at the file once a second; these tests change it between two requests.
    app.extensions["apikeys"].key_file.recheck_seconds = 0
    return app


@pytest.fixture
def keys_app(make_app: Callable[..., Flask], key_file: KeyFileFixture) -> Flask:
    return sees_every_change(make_app(API_KEYS_FILE=str(key_file.path)))


@pytest.fixture
def keys_client(keys_app: Flask) -> FlaskClient:
    client = keys_app.test_client()
    client.environ_base.update({"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "127.0.0.1"})
    return client


def with_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def problem_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json(force=True)
    assert body["status"] == status
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


# --------------------------------------------------------------------------- the format


def test_the_secret_has_at_least_256_bits() -> None:
    assert apikeys.SECRET_LENGTH * math.log2(62) >= 256
    assert 62**apikeys.CHECKSUM_LENGTH > 2**32


def test_the_checksum_is_crc32_in_base62() -> None:
    value, digits = zlib.crc32(b"abc"), ""
    while value:
        value, digit = divmod(value, 62)
        digits = BASE62[digit] + digits
    assert apikeys.checksum("abc") == digits.rjust(6, "0")


@given(prefix=st.from_regex(r"[a-z]{1,24}", fullmatch=True))
def test_new_keys_have_the_documented_shape(prefix: str) -> None:
    key_id, key = new_key(prefix)
    match = re.fullmatch(
        prefix + r"_(?P<id>[0-9A-Za-z]{10})_(?P<secret>[0-9A-Za-z]{43})(?P<sum>[0-9A-Za-z]{6})",
        key,
    )
    assert match is not None
    assert match["id"] == key_id
    assert match["sum"] == apikeys.checksum(key[:-6])
    assert ApiKeys(prefix, None).key_id_of(key) == key_id


@given(
    prefix=st.from_regex(r"[a-z]{1,12}", fullmatch=True),
    data=st.data(),
)
def test_any_one_changed_character_is_refused_without_a_lookup(
    prefix: str, data: st.DataObject
) -> None:
    _, key = new_key(prefix)
    position = data.draw(st.integers(0, len(key) - 1))
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != key[position]))
    changed = key[:position] + replacement + key[position + 1 :]
    # No key file at all: a lookup would have nothing to find, so only the format can refuse.
    with pytest.raises(apikeys._Refusal) as refused:
        ApiKeys(prefix, None).key_id_of(changed)
    assert refused.value.status == 401
    assert refused.value.detail == "The API key is malformed"


@given(prefix=st.from_regex(r"[a-z]{1,12}", fullmatch=True), cut=st.integers(1, 60))
def test_a_truncated_key_is_malformed(prefix: str, cut: int) -> None:
    _, key = new_key(prefix)
    with pytest.raises(apikeys._Refusal):
        ApiKeys(prefix, None).key_id_of(key[:-cut])


def shaped(key_id: str = "abc", secret_length: int = 43, prefix: str = PREFIX) -> str:
    """A key of this format with a right checksum but chosen lengths."""
    body = f"{prefix}_{key_id}_" + "s" * secret_length
    return body + apikeys.checksum(body)


def refusal_reason(key: str) -> str:
    # No key file: a well-formed key gets as far as the lookup, which finds nothing.
    with pytest.raises(apikeys._Refusal) as refused:
        ApiKeys(PREFIX, None).verify(key)
    return refused.value.reason


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        pytest.param(shaped(), UNKNOWN, id="shortest-secret"),
        pytest.param(shaped(secret_length=42), FORMAT, id="secret-one-short"),
        pytest.param(shaped("k" * 32), UNKNOWN, id="32-character-id"),
        pytest.param(shaped("k" * 33), FORMAT, id="33-character-id"),
        pytest.param(shaped("", 43), FORMAT, id="empty-id"),
        pytest.param(shaped(secret_length=245 - len(PREFIX)), UNKNOWN, id="256-characters"),
        pytest.param(shaped(secret_length=246 - len(PREFIX)), UNREADABLE, id="257-characters"),
        pytest.param(shaped(prefix=PREFIX + "x"), FORMAT, id="longer-prefix"),
        pytest.param("x" + shaped(), FORMAT, id="text-before"),
    ],
)
def test_key_lengths_at_their_limits(key: str, reason: str) -> None:
    assert len(shaped(secret_length=245 - len(PREFIX))) == apikeys.MAX_KEY_LENGTH
    assert refusal_reason(key) == reason


def test_key_id_of_alone_refuses_a_key_one_past_the_length_limit() -> None:
    keys = ApiKeys(PREFIX, None)
    assert keys.key_id_of(shaped("k" * 32, 245 - 32 + 3 - len(PREFIX))) == "k" * 32
    with pytest.raises(apikeys._Refusal) as refused:
        keys.key_id_of(shaped("k" * 32, 246 - 32 + 3 - len(PREFIX)))
    assert refused.value.reason == "too long"


def test_a_key_of_another_service_with_a_right_checksum_is_not_this_service_s() -> None:
    assert refusal_reason(shaped(prefix="other")) == FORMAT


def test_the_well_formed_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Made-up keys of the right shape must not grow a worker's memory without end.
    monkeypatch.setattr(apikeys, "FORMAT_CACHE_SIZE", 8)
    keys = ApiKeys(PREFIX, None)
    for number in range(8):
        refusal_reason_with(keys, shaped(f"k{number}"))
    assert len(keys._well_formed) == 8
    refusal_reason_with(keys, shaped("k8"))
    assert len(keys._well_formed) == 1
    # A malformed key is never remembered.
    refusal_reason_with(keys, shaped("k9")[:-1] + "!")
    assert len(keys._well_formed) == 1


def refusal_reason_with(keys: ApiKeys, key: str) -> str:
    with pytest.raises(apikeys._Refusal) as refused:
        keys.verify(key)
    return refused.value.reason


def test_a_remembered_key_is_checked_against_its_record_all_the_same(
    key_file: KeyFileFixture,
) -> None:
    issued = key_file.issue()
    keys = ApiKeys(PREFIX, apikeys.KeyFile(key_file.path))
    keys.key_file.recheck_seconds = 0  # type: ignore[union-attr]
    assert keys.verify(issued.key).key_id == issued.key_id
    key_file.revoke(issued.key_id)
    assert refusal_reason_with(keys, issued.key) == UNKNOWN


def test_expiry_is_at_the_second_it_names() -> None:
    record = KeyRecord("abc", "c", frozenset(), 0, 100, bytes(32))
    assert not record.expired(99.999)
    assert record.expired(100)
    assert not KeyRecord("abc", "c", frozenset(), 0, None, bytes(32)).expired(2**40)


@pytest.mark.parametrize(
    ("import_name", "prefix"),
    [
        ("billing_service.app", "billingservice"),
        ("Billing2Go", "billinggo"),
        ("a", "a"),
        ("Zebra_z.app", "zebraz"),
    ],
)
def test_the_prefix_is_the_package_name_s_letters(import_name: str, prefix: str) -> None:
    assert apikeys.key_prefix(import_name) == prefix


def test_a_package_name_without_letters_makes_no_prefix() -> None:
    with pytest.raises(ValueError, match=r"^'_42' has no letters to make an API key prefix from$"):
        apikeys.key_prefix("_42")


@pytest.mark.parametrize("prefix", ["Acme", "acme1", "", "ac_me", "acmé"])
def test_init_app_refuses_a_prefix_that_is_not_lower_case_letters(prefix: str) -> None:
    with pytest.raises(ValueError, match="lower-case letters only"):
        apikeys.init_app(Flask("x"), prefix=prefix)


def test_two_keys_never_share_a_secret() -> None:
    keys = {new_key(PREFIX)[1].rsplit("_", 1)[1] for _ in range(200)}
    assert len(keys) == 200


# --------------------------------------------------------------------------- accepted


def test_a_key_reads_and_its_caller_is_apikey_and_its_id(
    keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    issued = key_file.issue("items:read", name="nightly-export")
    assert keys_client.get("/api/v1/items", headers=with_key(issued.key)).status_code == 200
    me = keys_client.get("/api/v1/me", headers=with_key(issued.key))
    assert me.get_json() == {
        "sub": f"apikey:{issued.key_id}",
        "scopes": ["items:read"],
        "client_id": "nightly-export",
    }


def test_a_key_with_the_write_scope_creates_items(
    keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    issued = key_file.issue("items:write")
    created = keys_client.post("/api/v1/items", headers=with_key(issued.key), json={"name": "x"})
    assert created.status_code == 201
    assert created.get_json()["created_by"] == f"apikey:{issued.key_id}"


def test_tokens_still_work_on_an_app_with_api_keys(
    keys_app: Flask, keys_client: FlaskClient, signing_keys: Any
) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    private_key = serialization.load_pem_private_key(signing_keys.private_pem, password=None)
    token = mint_dev_token(
        private_key,
        issuer=keys_app.config["JWT_ISSUER"],
        audience=keys_app.config["JWT_AUDIENCE"],
        sub="alice",
        scope="items:read",
        ttl=60,
    )
    answer = keys_client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.get_json()["sub"] == "alice"


# --------------------------------------------------------------------------- refused


@dataclass(frozen=True)
class Refused:
    """One way to get a key wrong: how the request is made, the answer it must get, and the
    reason the refusal's log line gives (None: refused before the key check, by bearer.py)
    with whether it names the key's id (only a key whose checksum proved it well formed)."""

    request: Callable[[FlaskClient, KeyFileFixture], Any]
    status: int
    detail: str
    reason: str | None = None
    names_the_key: bool = False


def get_items(client: FlaskClient, key: str) -> Any:
    return client.get("/api/v1/items", headers=with_key(key))


def other_prefix_key(_: KeyFileFixture) -> str:
    return new_key("otherservice")[1]


def bad_checksum(keys: KeyFileFixture) -> str:
    key = keys.issue().key
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


def unknown_id(_: KeyFileFixture) -> str:
    return new_key(PREFIX)[1]


def wrong_secret(keys: KeyFileFixture) -> str:
    # Well formed, checksum right, the id of a real key: only the hash comparison can refuse.
    return new_key(PREFIX, key_id=keys.issue().key_id)[1]


def expired(keys: KeyFileFixture) -> str:
    return keys.issue(expires_in=-1).key


def revoked(keys: KeyFileFixture) -> str:
    issued = keys.issue()
    keys.revoke(issued.key_id)
    return issued.key


MALFORMED = "The API key is malformed"
NOT_VALID = "The API key is not valid"
IN_URL = "API keys are not accepted in the query string or form body: use X-API-Key"
ONE_HEADER = "Send exactly one X-API-Key header"
IN_URL_REASON = "key in URL or form"


def in_query(name: str, value: str = "x") -> Callable[[FlaskClient, KeyFileFixture], Any]:
    return lambda c, k: c.get("/api/v1/items", query_string={name: value})


REFUSED: dict[str, Refused] = {
    "empty": Refused(lambda c, k: get_items(c, ""), 401, MALFORMED, FORMAT),
    "garbage": Refused(lambda c, k: get_items(c, "let-me-in"), 401, MALFORMED, FORMAT),
    "not-ascii": Refused(lambda c, k: get_items(c, k.issue().key[:-1] + "é"), 401, MALFORMED,
                         UNREADABLE),
    "too-long": Refused(lambda c, k: get_items(c, k.issue().key + "a" * 300), 401, MALFORMED,
                        UNREADABLE),
    "another-prefix": Refused(lambda c, k: get_items(c, other_prefix_key(k)), 401, MALFORMED,
                              FORMAT),
    "bad-checksum": Refused(lambda c, k: get_items(c, bad_checksum(k)), 401, MALFORMED,
                            "bad checksum"),
    "unknown-id": Refused(lambda c, k: get_items(c, unknown_id(k)), 401, NOT_VALID, UNKNOWN, True),
    "wrong-secret": Refused(lambda c, k: get_items(c, wrong_secret(k)), 401, NOT_VALID,
                            "wrong secret", True),
    "expired": Refused(lambda c, k: get_items(c, expired(k)), 401, "The API key expired",
                       "expired", True),
    "revoked": Refused(lambda c, k: get_items(c, revoked(k)), 401, NOT_VALID, UNKNOWN, True),
    "missing-scope": Refused(
        lambda c, k: c.post("/api/v1/items", headers=with_key(k.issue("items:read").key),
                            json={"name": "x"}),
        403, "The API key lacks a required scope", "missing scope", True,
    ),
    "key-in-query": Refused(
        lambda c, k: c.get(f"/api/v1/items?api_key={k.issue().key}"), 400, IN_URL, IN_URL_REASON
    ),
    "key-in-any-parameter": Refused(
        lambda c, k: c.get(f"/api/v1/items?q={k.issue().key}"), 400, IN_URL, IN_URL_REASON
    ),
    "key-upper-case-in-a-value": Refused(
        lambda c, k: c.get(f"/api/v1/items?q={PREFIX.upper()}_ABC"), 400, IN_URL, IN_URL_REASON
    ),
    "prefix-in-a-parameter-name": Refused(in_query(f"x{PREFIX}_abc"), 400, IN_URL, IN_URL_REASON),
    "prefix-upper-case-in-a-name": Refused(in_query(f"{PREFIX.upper()}_X"), 400, IN_URL,
                                           IN_URL_REASON),
    **{
        f"parameter-{name}": Refused(in_query(name), 400, IN_URL, IN_URL_REASON)
        for name in ("api_key", "apikey", "api-key", "x-api-key", "x_api_key", "API_KEY",
                     "X-Api-Key")
    },
    "key-in-query-and-header": Refused(
        lambda c, k: c.get(f"/api/v1/me?x={(key := k.issue().key)}", headers=with_key(key)),
        400, IN_URL, IN_URL_REASON,
    ),
    "key-in-form": Refused(
        lambda c, k: c.post("/api/v1/items", data={"note": k.issue("items:write").key}),
        400, IN_URL, IN_URL_REASON,
    ),
    "key-in-multipart-form": Refused(
        lambda c, k: c.post("/api/v1/items", data={"note": k.issue("items:write").key},
                            content_type="multipart/form-data"),
        400, IN_URL, IN_URL_REASON,
    ),
    "key-as-a-second-value-in-query": Refused(
        lambda c, k: c.get(f"/api/v1/items?q=harmless&q={k.issue().key}"), 400, IN_URL,
        IN_URL_REASON,
    ),
    "key-as-a-second-value-in-form": Refused(
        lambda c, k: c.post("/api/v1/items",
                            data=MultiDict([("note", "harmless"),
                                           ("note", k.issue("items:write").key)])),
        400, IN_URL, IN_URL_REASON,
    ),
    "key-parameter-in-form": Refused(
        lambda c, k: c.post("/api/v1/items", data={"x_api_key": "x"}), 400, IN_URL, IN_URL_REASON
    ),
    "two-keys-in-one-header": Refused(
        lambda c, k: get_items(c, f"{k.issue().key},{k.issue().key}"), 400, ONE_HEADER,
        "several keys",
    ),
    "two-key-headers": Refused(
        lambda c, k: c.get("/api/v1/items",
                           headers=[("X-API-Key", k.issue().key), ("X-API-Key", k.issue().key)]),
        400, ONE_HEADER, "several keys",
    ),
    "key-and-token": Refused(
        lambda c, k: c.get("/api/v1/items", headers={**with_key(k.issue().key),
                                                     "Authorization": "Bearer x.y.z"}),
        400, "Send one credential, not several (e.g. a token and an API key)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_every_wrong_key_is_refused(
    keys_client: FlaskClient,
    key_file: KeyFileFixture,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    refused = REFUSED[case]
    with caplog.at_level(logging.INFO, logger=apikeys.__name__):
        response = refused.request(keys_client, key_file)
    body = problem_of(response, refused.status)
    assert body["detail"] == refused.detail
    text = response.get_data(as_text=True)
    assert PREFIX + "_" not in text, "a key was echoed back"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("api key ")]
    if refused.reason is None:
        assert lines == []
        return
    if refused.status == 401:
        assert response.headers["WWW-Authenticate"] == 'ApiKey realm="api"'
    else:
        assert "WWW-Authenticate" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    key_id = r"[0-9A-Za-z]{10}" if refused.names_the_key else "-"
    (line,) = lines
    expected = rf"api key refused: status={refused.status} reason={re.escape(refused.reason)}"
    assert re.fullmatch(rf"{expected} key_id={key_id}", line), line


def test_a_key_with_blanks_around_it_is_read(
    keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    issued = key_file.issue()
    assert get_items(keys_client, f" \t{issued.key} \t").status_code == 200
    # Only blanks go: a key that ends in a letter keeps it.
    key_id, key = new_key(PREFIX)
    while key[-1] != "X":
        key_id, key = new_key(PREFIX)
    now = int(time.time())
    record = KeyRecord(key_id, "x-ending", frozenset({"items:read"}), now, None, key_digest(key))
    write_key_file(key_file.path, [*key_file.records().values(), record])
    assert get_items(keys_client, f" {key}\t").status_code == 200


def test_other_query_parameters_and_form_fields_are_no_key(
    keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    issued = key_file.issue("items:read items:write")
    listed = keys_client.get("/api/v1/items?page=2&sort=name", headers=with_key(issued.key))
    assert listed.status_code == 200
    form = keys_client.post("/api/v1/items", headers=with_key(issued.key), data={"name": "x"})
    assert form.status_code != 400, form.get_json()


def test_other_control_characters_around_a_key_are_not_blanks(
    keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    issued = key_file.issue()
    assert problem_of(get_items(keys_client, issued.key + "\x0c"), 401)["detail"] == MALFORMED


def test_a_key_in_a_json_body_is_data_not_a_credential(
    keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    # Only the query string and form bodies are searched: JSON is the API's own data.
    issued = key_file.issue("items:write")
    response = keys_client.post(
        "/api/v1/items", headers=with_key(issued.key), json={"name": f"{PREFIX}_x"}
    )
    assert response.status_code == 201


def test_the_missing_scope_is_named(keys_client: FlaskClient, key_file: KeyFileFixture) -> None:
    key = key_file.issue("items:read").key
    response = keys_client.post("/api/v1/items", headers=with_key(key), json={"name": "x"})
    assert problem_of(response, 403)["scope"] == "items:write"


def test_with_api_keys_off_a_key_is_refused_not_ignored(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=apikeys.__name__):
        response = client.get("/api/v1/me", headers=with_key(new_key(PREFIX)[1]))
    body = problem_of(response, 401)
    assert body["detail"] == "API keys are not accepted by this service"
    assert response.headers["WWW-Authenticate"] == 'ApiKey realm="api"'
    assert [r.getMessage() for r in caplog.records if r.name == apikeys.__name__] == [
        "api key refused: status=401 reason=API keys are off key_id=-"
    ]


def test_with_api_keys_off_a_key_in_the_url_is_still_refused(client: FlaskClient) -> None:
    response = client.get(f"/api/v1/items?api_key={new_key(PREFIX)[1]}")
    assert problem_of(response, 400)["detail"] == IN_URL


def test_a_malformed_key_is_refused_before_any_lookup(
    keys_app: Flask, keys_client: FlaskClient, key_file: KeyFileFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    keys = keys_app.extensions["apikeys"]
    lookups: list[str] = []
    real_records = keys.key_file.records

    def counted_records() -> Any:
        lookups.append("x")
        return real_records()

    monkeypatch.setattr(keys.key_file, "records", counted_records)
    assert get_items(keys_client, bad_checksum(key_file)).status_code == 401
    assert lookups == []
    assert get_items(keys_client, unknown_id(key_file)).status_code == 401
    assert lookups == ["x"]


def test_hashes_are_compared_in_constant_time(
    keys_client: FlaskClient, key_file: KeyFileFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(f"{apikeys.__name__}.hmac.compare_digest", spy)
    # The unknown id is compared too (against a dummy), so both cost the same.
    for key in (wrong_secret(key_file), unknown_id(key_file), key_file.issue().key):
        get_items(keys_client, key)
    assert len(compared) == 3
    assert all(len(a) == len(b) == 32 for a, b in compared)


# ------------------------------------------------------- apikeys.require_scopes (no bearer.py)


@pytest.fixture
def key_only_client(key_file: KeyFileFixture) -> FlaskClient:
    """An app with only this module, as a copy into another project uses it."""
    app = Flask("key_only")
    app.config["API_KEYS_FILE"] = str(key_file.path)
    apikeys.init_app(app, prefix=PREFIX)
    sees_every_change(app)

    @app.get("/items")
    @apikeys.require_scopes("items:read", "items:read")
    def items() -> dict[str, Any]:
        caller = apikeys.current_principal()
        return {"sub": caller.sub, "client_id": caller.client_id}

    @app.post("/items")
    @apikeys.require_scopes("items:read", "items:write")
    def add_item() -> str:
        return "added"

    return app.test_client()


def test_the_key_only_decorator_lets_a_key_with_the_scope_through(
    key_only_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    issued = key_file.issue("items:read", name="cron")
    response = key_only_client.get("/items", headers=with_key(issued.key))
    assert response.get_json() == {"sub": f"apikey:{issued.key_id}", "client_id": "cron"}


def without_request_id(response: Any) -> dict[str, Any]:
    # The log line of the refusal gives the request an id (logs.py), which the body carries.
    body: dict[str, Any] = response.get_json()
    body.pop("request_id", None)
    return body


def test_the_key_only_decorator_refuses_no_key_and_a_missing_scope(
    key_only_client: FlaskClient, key_file: KeyFileFixture, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=apikeys.__name__):
        none = key_only_client.get("/items")
        short = key_only_client.get("/items", headers=with_key(key_file.issue("other").key))
    assert none.status_code == 401
    assert without_request_id(none) == {
        "type": "about:blank", "title": "Unauthorized", "status": 401,
        "detail": "An API key is required",
    }  # fmt: skip
    assert none.headers["WWW-Authenticate"] == 'ApiKey realm="api"'
    # Nothing between client and service may keep a refusal (nor, here, anything else).
    assert none.headers["Cache-Control"] == "no-store"
    assert short.status_code == 403
    assert without_request_id(short) == {
        "type": "about:blank", "title": "Forbidden", "status": 403,
        "detail": "The API key lacks a required scope", "scope": "items:read",
    }  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("api key ")]
    assert lines[0] == "api key refused: status=401 reason=no key key_id=-"
    assert re.fullmatch(r"api key refused: status=403 reason=missing scope key_id=\w{10}", lines[1])


def test_every_missing_scope_is_named(
    key_only_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    response = key_only_client.post("/items", headers=with_key(key_file.issue("other").key))
    assert response.status_code == 403
    assert response.get_json()["scope"] == "items:read items:write"


def test_times_are_written_in_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        record = KeyRecord("abc", "c", frozenset(), 0, 86400, bytes(32))
        assert record.to_json()["created"] == "1970-01-01T00:00:00Z"
        assert record.to_json()["expires"] == "1970-01-02T00:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_file_is_replaced_by_a_hidden_temporary_beside_it(
    key_file: KeyFileFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rename within the directory is atomic (readers see the old file or the new one whole),
    # and a temporary left by a crash is hidden and named after the file it was for.
    renamed: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(source: str, target: str) -> None:
        renamed.append((source, str(target)))
        real_replace(source, target)

    monkeypatch.setattr(f"{apikeys.__name__}.os.replace", spy)
    key_file.issue()
    ((source, target),) = renamed
    assert target == str(key_file.path)
    assert Path(source).parent == key_file.path.parent
    assert Path(source).name.startswith(f".{key_file.path.name}.")


def test_the_key_only_decorator_marks_the_view_for_the_api_description() -> None:
    @apikeys.require_scopes("b:write", "a:read", "b:write")
    def view() -> str:
        return ""

    assert view.required_scopes == ("b:write", "a:read")  # type: ignore[attr-defined]
    assert view.api_key_only is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("scope", ["", "two words", 'a"b', "back\\slash"])
def test_the_key_only_decorator_refuses_a_scope_that_cannot_be_one(scope: str) -> None:
    with pytest.raises(ValueError, match="not a valid scope"):
        apikeys.require_scopes(scope)


def test_a_protected_view_without_init_app_fails_closed() -> None:
    app = Flask("forgot_init_app")

    @app.get("/items")
    @apikeys.require_scopes("items:read")
    def items() -> str:
        return "never"

    with (
        app.test_request_context("/items", headers={"X-API-Key": "x"}),
        pytest.raises(RuntimeError, match=r"^apikeys.init_app\(app\) was not called$"),
    ):
        items()


def test_keys_are_enabled_only_with_a_key_file(
    make_app: Callable[..., Flask], key_file: KeyFileFixture
) -> None:
    assert make_app().extensions["apikeys"].enabled is False
    assert make_app(API_KEYS_FILE=str(key_file.path)).extensions["apikeys"].enabled is True


# --------------------------------------------------------------------------- the key file


def test_only_hashes_are_stored(key_file: KeyFileFixture) -> None:
    issued = key_file.issue()
    text = key_file.path.read_text()
    secret = issued.key.rsplit("_", 1)[1]
    assert issued.key not in text
    assert secret[:20] not in text
    (record,) = json.loads(text)["keys"]
    assert record["sha256"] == hashlib.sha256(issued.key.encode()).hexdigest()
    assert set(record) == {"id", "name", "scopes", "created", "expires", "sha256"}
    # People read and review this file: indented, one field a line, ending in a newline.
    assert text == json.dumps({"keys": [record]}, indent=2) + "\n"


def test_a_revocation_takes_effect_without_a_restart(
    keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    issued = key_file.issue()
    assert get_items(keys_client, issued.key).status_code == 200
    key_file.revoke(issued.key_id)
    assert get_items(keys_client, issued.key).status_code == 401
    newcomer = key_file.issue()
    assert get_items(keys_client, newcomer.key).status_code == 200


def test_each_worker_looks_at_the_file_once_a_second_and_a_revocation_lands_within_it(
    make_app: Callable[..., Flask], key_file: KeyFileFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(API_KEYS_FILE=str(key_file.path))
    assert app.extensions["apikeys"].key_file.recheck_seconds == 1.0
    client = app.test_client()
    client.environ_base.update({"HTTP_X_FORWARDED_PROTO": "https"})
    issued = key_file.issue()

    def status_within(seconds: float, wanted: int) -> float:
        started = time.monotonic()
        while get_items(client, issued.key).status_code != wanted:
            assert time.monotonic() - started < seconds, f"still not {wanted}"
            time.sleep(0.05)
        return time.monotonic() - started

    status_within(1.5, 200)
    stats: list[object] = []
    real_stat = os.stat

    def counted_stat(*args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(args)
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(f"{apikeys.__name__}.os.stat", counted_stat)
    key_file.revoke(issued.key_id)
    took = status_within(1.5, 401)
    # A request every 50 ms until then: one stat per second, not one per request.
    assert len(stats) <= 2, f"{len(stats)} stat calls in {took:.2f} s"
    stats.clear()
    for _ in range(10):  # within the second after the last look: no look at all
        get_items(client, issued.key)
    assert stats == []


DAMAGES: dict[str, tuple[Callable[[Path], object], str]] = {
    "not-json": (lambda path: path.write_text("{not json"), "{path} is not valid JSON"),
    "bad-record": (
        lambda path: path.write_text('{"keys": [{"id": "x"}]}'),
        "{path}: key 1 must have exactly created, expires, id, name, scopes, sha256",
    ),
    "deleted": (lambda path: path.unlink(), "cannot read it (No such file or directory)"),
    "world-writable": (
        lambda path: path.chmod(0o666),
        "{path} is writable by every user (chmod 600 it)",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_broken_file_keeps_the_last_good_keys_and_says_so_once(
    keys_client: FlaskClient,
    key_file: KeyFileFixture,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    damage, problem = DAMAGES[case]
    issued = key_file.issue()
    assert get_items(keys_client, issued.key).status_code == 200
    damage(key_file.path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=apikeys.__name__):
        for _ in range(3):
            # Never "no keys, so everything goes": an unknown key stays refused.
            assert get_items(keys_client, issued.key).status_code == 200
            assert get_items(keys_client, unknown_id(key_file)).status_code == 401
    reports = [r for r in caplog.records if r.name == apikeys.__name__ and "keeping" in r.message]
    assert len(reports) == 1
    assert reports[0].levelno == logging.ERROR
    problem = problem.replace("{path}", str(key_file.path))
    assert reports[0].getMessage() == (
        f"API_KEYS_FILE {key_file.path}: {problem}; keeping the 1 key(s) loaded before"
    )
    # Repaired: the file is read again, and a revocation in it counts.
    key_file.path.unlink(missing_ok=True)
    key_file.path.write_text(EMPTY_FILE)
    key_file.path.chmod(0o600)
    assert get_items(keys_client, issued.key).status_code == 401


def test_a_reload_is_logged_with_its_count(
    keys_client: FlaskClient, key_file: KeyFileFixture, caplog: pytest.LogCaptureFixture
) -> None:
    first = key_file.issue()
    get_items(keys_client, first.key)
    key_file.issue()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=apikeys.__name__):
        get_items(keys_client, first.key)
        get_items(keys_client, first.key)  # unchanged since: not read again
    assert [r.getMessage() for r in caplog.records if r.name == apikeys.__name__] == [
        f"API keys reloaded from {key_file.path}: 2 key(s)"
    ]


def test_a_failure_is_reported_again_after_the_file_was_usable_between(
    keys_app: Flask, keys_client: FlaskClient, key_file: KeyFileFixture,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    issued = key_file.issue()
    get_items(keys_client, issued.key)
    real_stat = os.stat
    failing = [True, True, False, True]  # fails twice, recovers unchanged, fails again

    def flaky_stat(*args: Any, **kwargs: Any) -> os.stat_result:
        if failing.pop(0):
            raise PermissionError(13, "Permission denied")
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(f"{apikeys.__name__}.os.stat", flaky_stat)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=apikeys.__name__):
        for _ in range(4):
            assert get_items(keys_client, issued.key).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.name == apikeys.__name__] == [
        f"API_KEYS_FILE {key_file.path}: cannot read it (Permission denied); keeping the 1 key(s)"
        " loaded before",
    ] * 2


def record_json(**changes: Any) -> str:
    record = {
        "id": "abc123",
        "name": "client",
        "scopes": ["items:read"],
        "created": "2030-01-01T00:00:00Z",
        "expires": None,
        "sha256": "0" * 64,
        **changes,
    }
    return json.dumps({"keys": [{k: v for k, v in record.items() if v is not ...}]})


FIELDS = "created, expires, id, name, scopes, sha256"
ID_RULE = "{path}: key 1: id must be 1 to 32 base62 characters"
NAME_RULE = "{path}: key 1: name must be 1 to 64 of A-Z a-z 0-9 . _ -"
SCOPES_RULE = "{path}: key 1: scopes must be a list of scope names"
HASH_RULE = "{path}: key 1: sha256 must be 64 lower-case hex digits"
TIME_RULE = "must be an ISO 8601 time with its offset, e.g. 2030-01-31T12:00:00Z"
CREATED_RULE = "{path}: key 1: created " + TIME_RULE
EXPIRES_RULE = "{path}: key 1: expires " + TIME_RULE
NOT_JSON = "{path} is not valid JSON"
ONE_OBJECT = '{path} must hold one JSON object: {"keys": [...]}'
# What start-up says about each unusable file, whole ("{path}" stands for the file's path).
UNUSABLE_FILES: dict[str, tuple[str | None, str]] = {
    "missing": (None, "cannot read {path} (No such file or directory)"),
    "empty": ("", NOT_JSON),
    "not-json": ("{", NOT_JSON),
    "deeply-nested": ("[" * 100_000, NOT_JSON),
    "a-list": ("[]", ONE_OBJECT),
    "other-members": ('{"keys": [], "extra": 1}', ONE_OBJECT),
    "no-members": ("{}", ONE_OBJECT),
    "keys-not-a-list": ('{"keys": {}}', '{path}: "keys" must be a list'),
    "missing-field": (record_json(expires=...), "{path}: key 1 must have exactly " + FIELDS),
    "misspelt-field": (record_json(expires=..., expiry=None),
                       "{path}: key 1 must have exactly " + FIELDS),
    "record-not-an-object": ('{"keys": [[]]}', "{path}: key 1 must have exactly " + FIELDS),
    "bad-id": (record_json(id="a_b"), ID_RULE),
    "id-of-33": (record_json(id="i" * 33), ID_RULE),
    "id-empty": (record_json(id=""), ID_RULE),
    "id-a-number": (record_json(id=12), ID_RULE),
    "bad-name": (record_json(name="two words"), NAME_RULE),
    "name-of-65": (record_json(name="n" * 65), NAME_RULE),
    "name-dash-first": (record_json(name="-x"), NAME_RULE),
    "name-a-number": (record_json(name=7), NAME_RULE),
    "scope-with-quote": (record_json(scopes=['items"read']), SCOPES_RULE),
    "scopes-a-string": (record_json(scopes="items:read"), SCOPES_RULE),
    "scope-a-number": (record_json(scopes=[7]), SCOPES_RULE),
    "short-hash": (record_json(sha256="ab"), HASH_RULE),
    "hash-upper-case": (record_json(sha256="A" * 64), HASH_RULE),
    "hash-a-number": (record_json(sha256=0), HASH_RULE),
    "naive-time": (record_json(created="2030-01-01T00:00:00"), CREATED_RULE),
    "created-a-number": (record_json(created=0), CREATED_RULE),
    "created-not-a-time": (record_json(created="soon"), CREATED_RULE),
    "expires-a-number": (record_json(expires=1_900_000_000), EXPIRES_RULE),
    "expires-naive": (record_json(expires="2030-01-01T00:00:00"),
                      EXPIRES_RULE),
    "duplicate-id": (
        json.dumps({"keys": [json.loads(record_json())["keys"][0]] * 2}),
        "{path}: key 2 repeats the id abc123",
    ),
    "over-8-mib": ('{"keys": []}' + " " * (8 * 1024 * 1024 - 11), "{path} is larger than 8 MiB"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(UNUSABLE_FILES))
def test_an_unusable_key_file_stops_start_up_naming_the_setting(
    make_app: Callable[..., Flask], tmp_path: Path, case: str
) -> None:
    text, problem = UNUSABLE_FILES[case]
    path = tmp_path / "keys.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ApiKeysConfigError) as refused:
        make_app(API_KEYS_FILE=str(path))
    assert str(refused.value) == "API_KEYS_FILE: " + problem.replace("{path}", str(path))
    assert refused.value.setting == "API_KEYS_FILE"


def test_a_huge_key_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with path.open("wb") as handle:
        handle.truncate(2**40)  # a terabyte, sparse: only the first 8 MiB + 1 may be read
    path.chmod(0o600)
    with pytest.raises(apikeys.KeyFileError, match=r"is larger than 8 MiB$"):
        read_key_file(path)


def test_parse_key_file_names_its_input_when_told_nothing_else() -> None:
    with pytest.raises(apikeys.KeyFileError, match=r"^the key file is not valid JSON$"):
        apikeys.parse_key_file(b"{")


def test_the_largest_fields_and_file_are_read(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    text = record_json(id="i" * 32, name="n" * 64, expires="2031-01-01T00:00:00+01:00")
    path.write_text(text + " " * (8 * 1024 * 1024 - len(text)))
    assert path.stat().st_size == apikeys.MAX_FILE_BYTES
    path.chmod(0o600)
    (record,) = read_key_file(path)[1].values()
    assert (record.key_id, record.name) == ("i" * 32, "n" * 64)
    assert (record.created, record.expires) == (1893456000, 1924992000 - 3600)
    assert record.scopes == {"items:read"}
    assert record.sha256 == bytes(32)


@pytest.mark.parametrize("setting", ["", "  "])
def test_a_blank_setting_means_api_keys_are_off(
    make_app: Callable[..., Flask], setting: str
) -> None:
    assert make_app(API_KEYS_FILE=setting).extensions["apikeys"].key_file is None


def test_a_setting_that_is_no_path_stops_start_up() -> None:
    app = Flask("x")
    app.config["API_KEYS_FILE"] = 42
    with pytest.raises(ApiKeysConfigError) as refused:
        apikeys.init_app(app)
    assert str(refused.value) == "API_KEYS_FILE: must be a file path"


def test_a_path_object_is_a_path(key_file: KeyFileFixture) -> None:
    app = Flask("x")
    app.config["API_KEYS_FILE"] = key_file.path
    assert apikeys.init_app(app).key_file.path == key_file.path  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("directory", "cannot read {path} (Is a directory)"),
        ("device", "{path} is not a regular file"),
        ("world-writable", "{path} is writable by every user (chmod 600 it)"),
    ],
)
def test_a_key_file_that_is_no_file_or_writable_by_all_stops_start_up(
    make_app: Callable[..., Flask], tmp_path: Path, kind: str, problem: str
) -> None:
    path = tmp_path / "keys.json"
    if kind == "directory":
        path.mkdir()
    elif kind == "device":
        path = Path(os.devnull)
    else:
        path.write_text(EMPTY_FILE)
        path.chmod(0o646)
    with pytest.raises(ApiKeysConfigError) as refused:
        make_app(API_KEYS_FILE=str(path))
    assert str(refused.value) == "API_KEYS_FILE: " + problem.replace("{path}", str(path))


# --------------------------------------------------------------------------- the commands


def cli(app: Flask, *arguments: str) -> Result:
    return app.test_cli_runner().invoke(args=["api-keys", *arguments])


def file_state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_ino


def test_new_prints_the_key_once_and_only_its_hash_is_kept(
    keys_app: Flask, keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    made = cli(keys_app, "new", "--name", "nightly-export", "--scope", "items:read  items:write")
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert made.stdout == key + "\n"
    (record,) = key_file.records().values()
    assert made.stderr == (
        f"api-keys: added {record.key_id} (nightly-export; items:read items:write; expires "
        f"{apikeys._iso(record.created + 90 * 86400)}) to {key_file.path}. The key above is shown"
        " only this once: store it now.\n"
    )
    (record,) = key_file.records().values()
    assert record.sha256 == key_digest(key)
    assert record.scopes == {"items:read", "items:write"}
    assert key not in key_file.path.read_text()
    assert stat.S_IMODE(key_file.path.stat().st_mode) == 0o600
    assert get_items(keys_client, key).status_code == 200
    listed = cli(keys_app, "list")
    created, expires = apikeys._iso(record.created), apikeys._iso(record.created + 90 * 86400)
    assert listed.output.splitlines() == [
        "ID          NAME            SCOPES                  CREATED               EXPIRES",
        f"{record.key_id}  nightly-export  items:read items:write  {created}  {expires}",
    ]


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("90d", 90 * 86400), ("never", None),
     ("1s", 1), ("3650d", 3650 * 86400), ("5256000m", 3650 * 86400), ("9999999s", 9999999)],
)  # fmt: skip
def test_new_takes_lifetimes_in_seconds_minutes_hours_and_days(
    keys_app: Flask, key_file: KeyFileFixture, expires_in: str, seconds: int | None
) -> None:
    made = cli(keys_app, "new", "--name", "c", "--scope", "x", "--expires-in", expires_in)
    assert made.exit_code == 0, made.output
    (record,) = key_file.records().values()
    if seconds is None:
        assert record.expires is None
    else:
        assert record.expires is not None
        assert abs(record.expires - record.created - seconds) <= 1


def test_new_draws_another_id_when_one_is_taken(
    keys_app: Flask, key_file: KeyFileFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = key_file.issue()
    drawn = [new_key(PREFIX, key_id=taken.key_id), new_key(PREFIX, key_id="fresh")]
    monkeypatch.setattr(apikeys, "new_key", lambda prefix: drawn.pop(0))
    made = cli(keys_app, "new", "--name", "c", "--scope", "x")
    assert made.exit_code == 0, made.output
    assert sorted(key_file.records()) == sorted([taken.key_id, "fresh"])
    assert made.stdout.startswith(f"{PREFIX}_fresh_")


def test_list_orders_keys_by_creation_then_id(keys_app: Flask, key_file: KeyFileFixture) -> None:
    now = int(time.time())
    records = [
        KeyRecord(key_id, "c", frozenset({"x"}), created, None, bytes(32))
        for key_id, created in [("b", now), ("c", now - 10), ("a", now)]
    ]
    write_key_file(key_file.path, records)
    rows = cli(keys_app, "list").output.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["c", "a", "b"]


def test_a_key_that_never_expires_says_so(keys_app: Flask, key_file: KeyFileFixture) -> None:
    made = cli(keys_app, "new", "--name", "c", "--scope", "x", "--expires-in", "never")
    (record,) = key_file.records().values()
    assert made.stderr.startswith(f"api-keys: added {record.key_id} (c; x; never expires) to ")


def test_list_of_an_empty_file(keys_app: Flask, key_file: KeyFileFixture) -> None:
    assert cli(keys_app, "list").output == f"no API keys in {key_file.path}\n"


def test_new_keys_expire_after_90_days_unless_told(
    keys_app: Flask, key_file: KeyFileFixture
) -> None:
    assert cli(keys_app, "new", "--name", "c", "--scope", "x").exit_code == 0
    (record,) = key_file.records().values()
    assert record.expires == record.created + 90 * 86400


NAME_HELP = "Invalid value for --name: use 1 to 64 of A-Z a-z 0-9 . _ - (a letter or digit first)"
NO_SCOPE = "Invalid value for --scope: give at least one scope, e.g. items:read"
LIFETIME_HELP = (
    "Invalid value for --expires-in: use a number and s, m, h or d (e.g. 90d; at most 3650d),"
    " or never"
)
BAD_NEW = {
    "name-with-space": (["--name", "two words", "--scope", "x"], NAME_HELP),
    "name-empty": (["--name", "", "--scope", "x"], NAME_HELP),
    "name-of-65": (["--name", "n" * 65, "--scope", "x"], NAME_HELP),
    "name-dash-first": (["--name", "-x", "--scope", "x"], NAME_HELP),
    "no-scope": (["--name", "c", "--scope", "  "], NO_SCOPE),
    "scope-with-quote": (["--name", "c", "--scope", 'a"b'],
                         "Invalid value for --scope: 'a\"b' is not a scope name"),
    "second-scope-bad": (["--name", "c", "--scope", "x a\\b"],
                         "Invalid value for --scope: 'a\\\\b' is not a scope name"),
    **{
        case: (["--name", "c", "--scope", "x", "--expires-in", lifetime], LIFETIME_HELP)
        for case, lifetime in [
            ("zero-lifetime", "0d"), ("years", "5y"), ("too-long", "3651d"),
            ("a-minute-too-long", "5256001m"), ("eight-digits", "12345678s"), ("no-unit", "90"),
            ("upper-case-unit", "90D"), ("upper-case-never", "Never"), ("negative", "-1d"),
        ]
    },
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_NEW))
def test_bad_input_to_new_changes_nothing(
    keys_app: Flask, key_file: KeyFileFixture, case: str
) -> None:
    key_file.issue()
    before = file_state(key_file.path)
    arguments, message = BAD_NEW[case]
    made = cli(keys_app, "new", *arguments)
    assert made.exit_code == 2, made.output
    assert made.output.endswith(f"\nError: {message}\n"), made.output
    assert PREFIX + "_" not in made.output
    assert file_state(key_file.path) == before


def test_new_refuses_to_touch_a_malformed_file(keys_app: Flask, key_file: KeyFileFixture) -> None:
    key_file.path.write_text('{"keys": [{"id": 1}]}')
    before = file_state(key_file.path)
    made = cli(keys_app, "new", "--name", "c", "--scope", "x")
    assert made.exit_code == 1
    assert made.output == (
        f"Error: API_KEYS_FILE: {key_file.path}: key 1 must have exactly created, expires, id,"
        " name, scopes, sha256; nothing changed\n"
    )
    assert file_state(key_file.path) == before


def test_a_failed_write_leaves_the_file_and_no_temporary_behind(
    keys_app: Flask, key_file: KeyFileFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file.issue()
    before = file_state(key_file.path)

    def full_disk(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(f"{apikeys.__name__}.os.replace", full_disk)
    made = cli(keys_app, "new", "--name", "c", "--scope", "x")
    assert made.exit_code == 1
    # No key printed for a record that was never written.
    assert (
        made.output
        == f"Error: cannot write {key_file.path} (No space left on device); nothing changed\n"
    )
    assert file_state(key_file.path) == before
    assert sorted(p.name for p in key_file.path.parent.iterdir()) == [key_file.path.name]


def test_revoke_removes_the_record_and_the_key_stops_working(
    keys_app: Flask, keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    kept, gone = key_file.issue(), key_file.issue()
    revoked_now = cli(keys_app, "revoke", gone.key_id)
    assert revoked_now.exit_code == 0, revoked_now.output
    assert revoked_now.output == (
        f"api-keys: revoked {gone.key_id} (test-client) in {key_file.path}; refused within a"
        " second\n"
    )
    assert set(key_file.records()) == {kept.key_id}
    assert get_items(keys_client, gone.key).status_code == 401
    assert get_items(keys_client, kept.key).status_code == 200
    assert sorted(p.name for p in key_file.path.parent.iterdir()) == [key_file.path.name]


def test_revoking_an_unknown_id_changes_nothing(keys_app: Flask, key_file: KeyFileFixture) -> None:
    key_file.issue()
    before = file_state(key_file.path)
    revoked_now = cli(keys_app, "revoke", "nosuchid")
    assert revoked_now.exit_code == 1
    assert revoked_now.output == (
        f"Error: no key with id 'nosuchid' in {key_file.path}; nothing changed\n"
    )
    assert file_state(key_file.path) == before


def test_list_marks_expired_keys(keys_app: Flask, key_file: KeyFileFixture) -> None:
    key_file.issue(expires_in=-5, name="lapsed")
    key_file.issue(expires_in=None, name="forever")
    header, *rows = cli(keys_app, "list").output.splitlines()
    assert header.split() == ["ID", "NAME", "SCOPES", "CREATED", "EXPIRES"]
    by_name = {row.split()[1]: row for row in rows}
    assert by_name["lapsed"].endswith("(expired)")
    assert by_name["forever"].endswith("never")


def test_the_commands_say_when_api_keys_are_off(app: Flask) -> None:
    for arguments in (["new", "--name", "c", "--scope", "x"], ["list"], ["revoke", "x"]):
        result = cli(app, *arguments)
        assert result.exit_code == 1
        assert result.output == (
            "Error: API_KEYS_FILE is not set, so API keys are off: set it to the key file's path"
            ' (a new one holds {"keys": []}) and run the command again\n'
        )


# --------------------------------------------------------------------------- logs and wiring


def test_the_log_names_the_caller_and_never_the_key(
    key_file: KeyFileFixture, base_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(load_settings({**base_env, "API_KEYS_FILE": str(key_file.path)}))
    client = sees_every_change(app).test_client()
    issued = key_file.issue("items:read")
    capsys.readouterr()
    client.get("/api/v1/items", headers={**HTTPS, **with_key(issued.key)})
    client.post("/api/v1/items", headers={**HTTPS, **with_key(issued.key)}, json={"name": "x"})
    client.get(f"/api/v1/items?api_key={issued.key}", headers=HTTPS)
    client.get(f"/nowhere/{issued.key}", headers=HTTPS)
    text = capsys.readouterr().err
    secret = issued.key.rsplit("_", 1)[1]
    assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    access = [line for line in lines if line["logger"].endswith(".access")]
    assert [line["sub"] for line in access[:2]] == [f"apikey:{issued.key_id}"] * 2
    assert [line["status"] for line in access] == [200, 403, 400, 404]
    refusals = [line for line in lines if line["message"].startswith("api key refused")]
    assert f"key_id={issued.key_id}" in refusals[0]["message"]
    # A key as a path segment is cut whole, like any credential-shaped segment (logs.py).
    assert access[3]["path"] == "/nowhere/[REDACTED]"


def test_the_json_line_names_a_key_caller_as_gunicorn_writes_it(
    keys_client: FlaskClient, key_file: KeyFileFixture
) -> None:
    # The filters in gunicorn's order (logs.gunicorn_logconfig_dict): context, then redaction.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestContextFilter())
    handler.addFilter(RedactingFilter(logs.REDACTOR))
    handler.setFormatter(logs.JsonFormatter())
    logs.access_logger.addHandler(handler)
    try:
        issued = key_file.issue()
        get_items(keys_client, issued.key)
        keys_client.get(f"/nowhere/{issued.key}")
    finally:
        logs.access_logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["sub"] == f"apikey:{issued.key_id}"
    assert second["path"] == "/nowhere/[REDACTED]"
    assert issued.key not in stream.getvalue()


def test_current_principal_outside_an_accepted_request_raises() -> None:
    with (
        Flask("x").test_request_context(),
        pytest.raises(
            RuntimeError,
            match=r"^current_principal\(\) is only usable after an API key was accepted$",
        ),
    ):
        apikeys.current_principal()


def test_a_second_init_app_replaces_the_first_registration(keys_app: Flask) -> None:
    apikeys.init_app(keys_app)
    registered = keys_app.extensions["credentials"]
    assert [type(credential) for credential in registered] == [ApiKeys]


def test_keys_are_read_from_the_file_the_setting_names(
    make_app: Callable[..., Flask], key_file: KeyFileFixture
) -> None:
    app = make_app(API_KEYS_FILE=str(key_file.path))
    assert app.extensions["apikeys"].key_file.path == key_file.path
    assert app.extensions["apikeys"].prefix == PREFIX
