"""redaction.py: each secret pattern, each place a secret hides in a record, no false positives."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gunicorn.glogging import SafeAtoms  # type: ignore[import-untyped, unused-ignore]
from werkzeug.datastructures import ImmutableMultiDict

from {{ cookiecutter.package_name }}.redaction import (
    MARKER,
    RedactingFilter,
    RedactingFormatter,
    Redactor,
    install,
    main,
    redact,
)

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImF1ZCI6Imh0dHBzOi8vYXBpIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2Nzg5MA"
)
OPAQUE = "8f14e45fceea167a5a36dedd4bea2543tok"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_SIG = "K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
GITHUB_SIG = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
STRIPE_V1 = "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
STRIPE_V0 = "6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
PASSWORD = "hunter2-Correct-Horse"
NESTED_SECRET = {"secret": "s"}
NESTED_REDACTED = {"secret": MARKER}
BASIC = base64.b64encode(b"svc-user:s3cret pass").decode()
PEM_BODY = "\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKj\n"


def pem(label: str) -> str:
    return f"-----BEGIN {label}-----{PEM_BODY}-----END {label}-----"


def pem_redacted(label: str) -> str:
    return f"-----BEGIN {label}-----{MARKER}-----END {label}-----"


REDACTED_EXACTLY = {
    "authorization header line": (
        f"Authorization: Bearer {JWT}\r\nHost: api.example.com",
        f"Authorization: {MARKER}\r\nHost: api.example.com",
    ),
    "proxy-authorization basic": (
        "Proxy-Authorization: Basic dXNlcjpwYXNz",
        f"Proxy-Authorization: {MARKER}",
    ),
    "cookie header keeps the next line": (
        "Cookie: session=abc123; theme=dark\nAccept: */*",
        f"Cookie: {MARKER}\nAccept: */*",
    ),
    "set-cookie header": (
        "Set-Cookie: sid=31d4d96e407aad42; Path=/; Secure; HttpOnly",
        f"Set-Cookie: {MARKER}",
    ),
    "headers as a dict repr": (
        repr({"Authorization": f"Bearer {OPAQUE}", "Cookie": "sid=1", "Accept": "*/*"}),
        repr({"Authorization": MARKER, "Cookie": MARKER, "Accept": "*/*"}),
    ),
    "headers as a list of pairs (werkzeug/gunicorn repr)": (
        repr([("AUTHORIZATION", f"Bearer {OPAQUE}"), ("HOST", "localhost")]),
        f"[('AUTHORIZATION', '{MARKER}'), ('HOST', 'localhost')]",
    ),
    "WSGI environ keys": (
        repr({"HTTP_AUTHORIZATION": "Bearer abc", "HTTP_COOKIE": "a=b", "PATH_INFO": "/x"}),
        repr({"HTTP_AUTHORIZATION": MARKER, "HTTP_COOKIE": MARKER, "PATH_INFO": "/x"}),
    ),
    "bytes header value": (
        repr({"Authorization": b"Bearer abc"}),
        repr({"Authorization": MARKER.encode()}),
    ),
    "x-api-key header": ("X-Api-Key: 0123456789abcdef", f"X-Api-Key: {MARKER}"),
    "bearer token in prose": (
        f"token refused: Bearer {OPAQUE} expired",
        f"token refused: Bearer {MARKER} expired",
    ),
    "bare JWT": (f"got {JWT} from client", f"got {MARKER} from client"),
    "unsecured JWT with empty signature": (
        "alg none: eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end",
        f"alg none: {MARKER} end",
    ),
    "JWE (five parts)": (
        "jwe eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXYtaXYtaXY.Y2lwaGVy.dGFn end",
        f"jwe {MARKER} end",
    ),
    "whsec secret": (f"loaded {WHSEC} ok", f"loaded {MARKER} ok"),
    "stripe secret key": ("sk_live_51H8abcDEFghiJKL", MARKER),
    "github token": ("ghp_" + "a1B2" * 9, MARKER),
    "standard webhooks signature header (rotation: two values)": (
        f"webhook-signature: v1,{STANDARD_SIG} v1,{STANDARD_SIG}",
        f"webhook-signature: {MARKER}",
    ),
    "standard webhooks signature alone": (
        f"bad signature v1,{STANDARD_SIG} for msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        f"bad signature v1,{MARKER} for msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    ),
    "github signature header": (
        f"X-Hub-Signature-256: sha256={GITHUB_SIG}",
        f"X-Hub-Signature-256: {MARKER}",
    ),
    "github signature alone": (f"got sha256={GITHUB_SIG}", f"got sha256={MARKER}"),
    "stripe signature keeps the timestamp": (
        f"t=1492774577,v1={STRIPE_V1},v0={STRIPE_V0}",
        f"t=1492774577,v1={MARKER},v0={MARKER}",
    ),
    "url with several query parameters": (
        f"GET /api/v1/items?page=2&access_token={JWT}&sort=name&api_key=k-123&x=1 HTTP/1.1",
        f"GET /api/v1/items?page=2&access_token={MARKER}&sort=name&api_key={MARKER}&x=1 HTTP/1.1",
    ),
    "oauth callback": (
        "/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=af0ifjsldkj",
        f"/callback?code={MARKER}&state=af0ifjsldkj",
    ),
    "form body": (
        f"username=bob&password={PASSWORD}&remember=1",
        f"username=bob&password={MARKER}&remember=1",
    ),
    "keys are case-insensitive": (
        "PASSWORD=a Access_Token=b CLIENT-SECRET=c",
        f"PASSWORD={MARKER} Access_Token={MARKER} CLIENT-SECRET={MARKER}",
    ),
    "compound names ending in a sensitive word": (
        "csrf_token=abc db-password: pw github_webhook_secret=s",
        f"csrf_token={MARKER} db-password: {MARKER} github_webhook_secret={MARKER}",
    ),
    "url inside a url (percent-encoded)": (
        "next=%2Flogin%3Fid_token%3Dabc123",
        f"next=%2Flogin%3Fid_token%3D{MARKER}",
    ),
    "json body stays json": (
        json.dumps({"username": "bob", "password": PASSWORD, "code": 123, "n": NESTED_SECRET}),
        json.dumps({"username": "bob", "password": MARKER, "code": MARKER, "n": NESTED_REDACTED}),
    ),
    "json inside a json string": (
        json.dumps({"body": json.dumps({"refresh_token": OPAQUE, "user": "bob"})}),
        json.dumps({"body": json.dumps({"refresh_token": MARKER, "user": "bob"})}),
    ),
    "short ambiguous keys as quoted keys or key=value": (
        "{'key': 'abc', 'signature': 'xyz'} key=k1",
        repr({"key": MARKER, "signature": MARKER}) + f" key={MARKER}",
    ),
    "repr(request.args)": (
        repr(ImmutableMultiDict([("access_token", "opaqueTok123"), ("page", "2")])),
        f"ImmutableMultiDict([('access_token', '{MARKER}'), ('page', '2')])",
    ),
    "repr(request.form)": (
        repr(ImmutableMultiDict([("username", "bob"), ("password", "hunter2")])),
        f"ImmutableMultiDict([('username', 'bob'), ('password', '{MARKER}')])",
    ),
    "oauth callback as repr(request.args)": (
        repr(ImmutableMultiDict([("code", "SplxlOBeZQQYbYS6WxSbIA"), ("state", "af0ifjsldkj")])),
        f"ImmutableMultiDict([('code', '{MARKER}'), ('state', 'af0ifjsldkj')])",
    ),
    "repr(list(request.form.lists()))": (
        repr(list(ImmutableMultiDict([("password", "a"), ("password", "b")]).lists())),
        f"[('password', ['{MARKER}'])]",
    ),
    "parse_qs output": (
        str(parse_qs("access_token=opaqueTok123&password=hunter2&page=2")),
        repr({"access_token": [MARKER], "password": [MARKER], "page": ["2"]}),
    ),
    "json array of secrets stays json": (
        json.dumps({"password": ["a", "b,c"], "ids": [1, 2]}),
        json.dumps({"password": [MARKER], "ids": [1, 2]}),
    ),
    "header values as lists": (
        repr({"Cookie": ["a=1", "b=2"], "Accept": ["*/*"]}),
        repr({"Cookie": [MARKER], "Accept": ["*/*"]}),
    ),
    "basic credentials without the header name": (
        "Basic dXNlcjpwYXNzd29yZA==",
        f"Basic {MARKER}",
    ),
    "basic credentials in prose, unpadded": (
        f"retrying with basic {BASIC.rstrip('=')} after 401",
        f"retrying with basic {MARKER} after 401",
    ),
    "password in a redis url": ("redis://:pw@host", f"redis://:{MARKER}@host"),
    "password in a postgres url": (
        "postgres://user:pw@db/x",
        f"postgres://user:{MARKER}@db/x",
    ),
    "password in an https url": ("https://user:pw@host/", f"https://user:{MARKER}@host/"),
    "url password with an unescaped @": (
        "smtp://bob@example.com:p@ss:w0rd@mail:587 and a@b",
        f"smtp://bob@example.com:{MARKER}@mail:587 and a@b",
    ),
    "url with credentials in a settings repr": (
        repr({"REPLAY_STORE_URL": "redis://default:s3cr:et@cache:6379/0", "x": "a@b"}),
        repr({"REPLAY_STORE_URL": f"redis://default:{MARKER}@cache:6379/0", "x": "a@b"}),
    ),
    "pkcs8 private key": (
        f"key: {pem('PRIVATE KEY')}\nnext",
        f"key: {pem_redacted('PRIVATE KEY')}\nnext",
    ),
    "rsa private key": (pem("RSA PRIVATE KEY"), pem_redacted("RSA PRIVATE KEY")),
    "ec private key": (pem("EC PRIVATE KEY"), pem_redacted("EC PRIVATE KEY")),
    "encrypted private key": (pem("ENCRYPTED PRIVATE KEY"), pem_redacted("ENCRYPTED PRIVATE KEY")),
    "openssh private key": (pem("OPENSSH PRIVATE KEY"), pem_redacted("OPENSSH PRIVATE KEY")),
    "private key inside a json string": (
        json.dumps({"pem": pem("PRIVATE KEY"), "n": 1}),
        json.dumps({"pem": pem_redacted("PRIVATE KEY"), "n": 1}),
    ),
    "private key as a key=value": (
        f"private_key={pem('EC PRIVATE KEY')} loaded",
        f"private_key={MARKER} loaded",
    ),
    "truncated private key is redacted to the end": (
        f"-----BEGIN PRIVATE KEY-----{PEM_BODY}MIIE",
        f"-----BEGIN PRIVATE KEY-----{MARKER}",
    ),
    "short all-letter bearer token": ("Bearer abcdefghij", f"Bearer {MARKER}"),
    "very short bearer token in prose": (
        "rejected Bearer abc, expired",
        f"rejected Bearer {MARKER}, expired",
    ),
    # Names count normalised: case, separators and camelCase do not matter.
    "camelCase names in JSON": (
        json.dumps(
            {"accessToken": OPAQUE, "clientSecret": "s", "refreshToken": "r", "newPassword": "p"}
            | {"privateKey": "k", "userName": "bob"}
        ),
        json.dumps(
            {"accessToken": MARKER, "clientSecret": MARKER, "refreshToken": MARKER}
            | {"newPassword": MARKER, "privateKey": MARKER, "userName": "bob"}
        ),
    ),
    "camelCase names in text": (
        "accessToken=abc newPassword: p x-Api-Key=k",
        f"accessToken={MARKER} newPassword: {MARKER} x-Api-Key={MARKER}",
    ),
    "a secret's word anywhere in a name": (
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG password_hash=x",
        f"aws_secret_access_key={MARKER} password_hash={MARKER}",
    ),
    "AWS credentials as JSON": (
        json.dumps({"AccessKeyId": "AKIA0EX", "SecretAccessKey": "wJ/K7", "SessionToken": "F"}),
        json.dumps({"AccessKeyId": "AKIA0EX", "SecretAccessKey": MARKER, "SessionToken": MARKER}),
    ),
    # The whole value under a secret's name, whatever it holds.
    "object under a secret's name": (
        json.dumps({"secret": {"value": "abc", "n": [1, {"x": "}"}]}, "ok": 1}),
        json.dumps({"secret": MARKER, "ok": 1}),
    ),
    "dict repr under a secret's name": (
        repr({"credentials": {"user": "bob", "pass": "pw"}, "ok": 1}),
        repr({"credentials": MARKER, "ok": 1}),
    ),
    "list of numbers under a secret's name": (
        '{"password": [1, 2, 3], "n": 1}',
        '{"password": "' + MARKER + '", "n": 1}',
    ),
    "unclosed object under a secret's name, to the end": (
        '{"secret": {"a": "b", "c',
        '{"secret": "' + MARKER + '"',
    ),
    "password with a semicolon and spaces": (
        "password=a;b c d user=bob",
        f"password={MARKER} user=bob",
    ),
    "password with commas": ("login password=a,b,c", f"login password={MARKER}"),
    "session id": ("sessionid=abc123; path=/", f"sessionid={MARKER} path=/"),
    # URL-encoded and escaped text is looked at decoded.
    "URL-encoded bearer token": (
        "Authorization%3A%20Bearer%20opaque-Tok3n",
        f"Authorization: {MARKER}",
    ),
    "encoded ; before a path parameter": (
        "/api/v1/me%3Bpassword%3Dhunter2 200",
        f"/api/v1/me%3Bpassword%3D{MARKER} 200",
    ),
    "encoded twice": (
        "next=%252Fme%253Faccess_token%253Dabc123",
        f"next=/me?access_token={MARKER}",
    ),
    "URL-encoded bearer token in a path": (
        f"GET /x%20Bearer%20{OPAQUE} HTTP/1.1",
        f"GET /x Bearer {MARKER} HTTP/1.1",
    ),
    "snake_case AWS key in JSON": (
        json.dumps({"aws_access_key_id": "AKIA0EX", "aws_secret_access_key": "wJ/K7 x;y"}),
        json.dumps({"aws_access_key_id": "AKIA0EX", "aws_secret_access_key": MARKER}),
    ),
    "camelCase names in a dict repr": (
        repr({"privateKey": "k", "refreshToken": "r", "page": 2}),
        repr({"privateKey": MARKER, "refreshToken": MARKER, "page": 2}),
    ),
    "password with spaces in a quoted JSON value": (
        json.dumps({"newPassword": "a b; c", "user": "bob"}),
        json.dumps({"newPassword": MARKER, "user": "bob"}),
    ),
    "encoded letters of the secret's word": ("/cb?t%6Fken=abc123 x", f"/cb?token={MARKER} x"),
    "encoded letters of a name": ("/cb?%61ccess_token=abc123 x", f"/cb?access_token={MARKER} x"),
    "JWT after a byte repr() escaped": (
        f"Invalid HTTP request line: 'GET /\\x80{JWT} HTTP/1.1'",
        f"Invalid HTTP request line: 'GET /\\x80{MARKER} HTTP/1.1'",
    ),
    "JWT after a unicode escape": (
        json.dumps(f"/\xff{JWT}"),
        f'"/\\u00ff{MARKER}"',
    ),
    "decoded text keeps its other bytes percent-encoded": (
        # Ā is the first character past Latin-1; \udc80 is how os.fsdecode() keeps a byte.
        "GET /caf%C3%A9?%61ccess_token=abc123 \u20ac \u0100 \udc80",
        "GET /caf%C3%A9?access_token=" + MARKER + " %E2%82%AC %C4%80 %ED%B2%80",
    ),
    "secret's name right after a query's ?": ("?token=abc def", f"?token={MARKER} def"),
    "quoted name before a bare scalar": (
        '{"n": 1, "code": 123}',
        '{"n": 1, "code": "' + MARKER + '"}',
    ),
    "quoted name before a bare PEM block": (
        f"'private_key': {pem('EC PRIVATE KEY')} loaded",
        f"'private_key': '{MARKER}' loaded",
    ),
    "spaced JSON list under a secret's name": (
        '{"password": [ "a", "b" ], "n": 1}',
        '{"password": ["' + MARKER + '"], "n": 1}',
    ),
    "unclosed list under a secret's name": (
        '{"password": ["a", "b',
        '{"password": "' + MARKER + '"',
    ),
    "list of bytes under a secret's name": (
        repr({"password": [b"a", b"b c"]}),
        repr({"password": [MARKER.encode()]}),
    ),
    "bytes with spaces under a secret's name": (
        repr({"password": b"a b", "secret": b"it's x"}),
        "{'password': b'" + MARKER + "', 'secret': b\"" + MARKER + '"}',
    ),
    "escaped quotes in JSON inside JSON": (
        json.dumps({"body": json.dumps({"password": "a, b", "user": "bob"})}),
        json.dumps({"body": json.dumps({"password": MARKER, "user": "bob"})}),
    ),
    "empty quoted value in prose": ('password="" user=bob', f'password="{MARKER}" user=bob'),
    "object with an escaped quote under a secret's name": (
        json.dumps({"secret": {"a": 'x"}y'}, "ok": 1}),
        json.dumps({"secret": MARKER, "ok": 1}),
    ),
    "object with a value ending in an escaped quote": (
        json.dumps({"secret": {"a": 'x"'}, "ok": 1}),
        json.dumps({"secret": MARKER, "ok": 1}),
    ),
    "call-shaped repr under a secret's name": (
        "{'secret': SecretValue('abc', n=(1, 2)), 'n': 1}",
        "{'secret': '" + MARKER + "', 'n': 1}",
    ),
    "quoted name, value cut at &": ('"code": abc&state=s1 ok', f'"code": "{MARKER}"&state=s1 ok'),
    "header names written with underscores": (
        "SET_COOKIE: sid=31d4d96e407aad42; Path=/; Secure",
        f"SET_COOKIE: {MARKER}",
    ),
    "object in prose under a secret's name": ("secret={X} after", f"secret={MARKER} after"),
    # Base64 that wraps a JWT, at any offset, standard or URL-safe.
    "base64 of a JWT": (
        f"blob {base64.b64encode(JWT.encode()).decode()} end",
        f"blob {MARKER} end",
    ),
    "base64 of JSON holding a JWT": (
        "state=" + base64.b64encode(json.dumps({"next": "/x", "token": JWT}).encode()).decode(),
        f"state={MARKER}",
    ),
    "base64 of a JWT glued to a letter": (
        f"blob {base64.b64encode(b'x' + JWT.encode()).decode()} end",
        f"blob {MARKER} end",
    ),
    "base64 of a JWT, the run starting inside its blob": (
        f"blob QUJ{base64.b64encode(JWT.encode() + b'!').decode()} end",
        f"blob {MARKER} end",
    ),
    "unpadded URL-safe base64 of a JWT": (
        "v " + base64.urlsafe_b64encode(b"\xfb" + JWT.encode() + b"\xff").decode().rstrip("="),
        f"v {MARKER}",
    ),
    "another base64 run next to a wrapped JWT": (
        f"{base64.b64encode(JWT.encode()).decode()} "
        + base64.b64encode(b"password=hunter2 and more text").decode(),
        f"{MARKER} {MARKER}",
    ),
    "base64 that wraps no JWT stays closed, as the quick look cannot see into it": (
        "token=abc&state=" + base64.b64encode(b"password=hunter2 and more text").decode(),
        f"token={MARKER}&state=" + base64.b64encode(b"password=hunter2 and more text").decode(),
    ),
    "URL-safe base64 of a JWT glued to other bytes": (
        "v " + base64.urlsafe_b64encode(b"\xfb\xff" + JWT.encode()).decode(),
        f"v {MARKER}",
    ),
}


@pytest.mark.parametrize(("text", "expected"), REDACTED_EXACTLY.values(), ids=REDACTED_EXACTLY)
def test_secret_is_replaced_and_the_rest_kept(text: str, expected: str) -> None:
    assert redact(text) == expected
    # A Redactor built now, not only the module's default one built at import.
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(
    "text", [text for text, _ in REDACTED_EXACTLY.values()], ids=REDACTED_EXACTLY
)
def test_the_quick_look_sees_every_secret(text: str) -> None:
    # logs.JsonFormatter writes a record without redacting it when this says no: a way of
    # writing a secret that redact() knows but this does not is a leak.
    assert Redactor().might_hold_secrets(text) is True


UNTOUCHED = {
    "uuid": "user 550e8400-e29b-41d4-a716-446655440000 created",
    "sha256 of a file": "etag 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "git sha": "deployed 2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e",
    "api path": "GET /api/v1/items/42 200",
    "webhook path and ids": "POST /webhooks/github delivery=72d3162e-cc78-11e3-81ab-4c9367dc0958",
    "message id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W accepted",
    "status code in prose": "upstream returned status code: 503, exit code: 1",
    "status_code field": "status_code=500 error_code=E42",
    "keys that merely contain a sensitive word": "monkey=3 keyboard=us key_id=k1 tokens=5",
    "not secret names ending in key/code": "sort_key=name public_key=pk zip-code=12345",
    "token type": "token_type=Bearer expires_in=3600",
    "bearer challenge": 'WWW-Authenticate: Bearer realm="api", error="invalid_token"',
    "bearer in prose": "Bearer tokens are required; send a bearer token",
    "api version list": "routes /api/v1, /api/v2 and /webhooks/events",
    "authorization in prose": "Authorization failed for alice",
    "already redacted": f"token={MARKER} Authorization: {MARKER}",
    "iso time and ip": "2026-11-22T05:23:29.123Z 203.0.113.7 ::1",
    "basic in prose": "basic auth is off; Basic authentication only, basic Only",
    "basic challenge": 'WWW-Authenticate: Basic realm="admin", charset="UTF-8"',
    "basicConfig": "logging.basicConfig(level=logging.INFO)",
    "bearer prose with punctuation": "Bearer tokens. Bearer token-based auth; Bearer JWTs",
    "bearer challenge with an error": 'Bearer error="invalid_token", error_description="x"',
    "bearer at the end of a line": "expected scheme Bearer\nGET /api/v1/items 200",
    "tuples of field names": "('token', 'access_token', 'password') missing ('password', 'email')",
    "multidict without secrets": "ImmutableMultiDict([('page', '2'), ('sort', 'name')])",
    "lists without secrets": "{'page': ['2'], 'ids': ['a', 'b']}",
    "urls without credentials": (
        "https://api.example.com:8443/v1?x=1 redis://localhost:6379/0 http://[::1]:8000/"
    ),
    "url with a user but no password": "ssh://git@github.com/org/repo.git",
    "nginx upstream on a unix socket": 'upstream: "http://unix:/run/app.sock:/api/v1/items"',
    "url and an email in compact json": '{"url":"http://host:8080","mail":"a@b.example"}',
    "@ in a url path": "GET http://host:8080/users/@alice 200",
    "certificate and public key": (
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"
    ),
    "private key in prose": "no private key configured; set JWT_PRIVATE_KEY_FILE",
    "camelCase names that hold no secret": (
        "keyId=k1 sortKey=name statusCode=500 tokenType=Bearer publicKey=pk"
    ),
    "short words as names in prose": "exit code: 1, session: started, credentials: missing",
    "percent-encoded path without a secret": "GET /caf%C3%A9/x%20y?page=2 200",
    "base64 of text without a JWT": (
        "blob " + base64.b64encode(b"eyJ is how JSON starts in base64. Nothing else").decode()
    ),
    # Only base64 that wraps a JWT is opened: the quick look (might_hold_secrets) sees no
    # further into base64, and redact() must not see more than it.
    "base64 of a password, no JWT": base64.b64encode(b"password=hunter2 and more text").decode(),
    "basic and base64 of text without a colon": "Basic dXNlcm5hbWU= is not user:password",
}


@pytest.mark.parametrize("text", UNTOUCHED.values(), ids=UNTOUCHED)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact(text) == text
    assert Redactor().redact(text) == text


def test_headers_and_keys_of_ones_own_whatever_their_separators() -> None:
    custom = Redactor(headers=("X-Custom-Auth",), extra_keys=("one-time-pin",))
    assert custom.redact("X-Custom-Auth: abc") == f"X-Custom-Auth: {MARKER}"
    assert custom.redact("X_CUSTOM_AUTH: abc") == f"X_CUSTOM_AUTH: {MARKER}"
    assert custom.redact("one_time_pin=1234&ok=1") == f"one_time_pin={MARKER}&ok=1"
    assert custom.redact("oneTimePin: 1234") == f"oneTimePin: {MARKER}"


def test_main_scrubs_stdin_line_by_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = pem("RSA PRIVATE KEY")
    text = (
        f"otp=123456\nloaded {key} ok\n"
        "old -----END PRIVATE KEY----- new -----BEGIN PRIVATE KEY-----\nMIIE\n"
        "-----END PRIVATE KEY-----\n-----BEGIN PRIVATE KEY-----\nMIIE\n"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    main(["otp"])
    assert capsys.readouterr().out == (
        f"otp={MARKER}\nloaded -----BEGIN RSA PRIVATE KEY-----{MARKER}\n"
        "-----END RSA PRIVATE KEY----- ok\n"
        f"old -----END PRIVATE KEY----- new -----BEGIN PRIVATE KEY-----{MARKER}\n"
        f"-----END PRIVATE KEY-----\n-----BEGIN PRIVATE KEY-----{MARKER}\n"
    )
    monkeypatch.setattr(sys, "argv", ["redaction", "otp"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("otp=1 pin=2\n"))
    main()
    assert capsys.readouterr().out == f"otp={MARKER} pin=2\n"


def test_redaction_is_idempotent() -> None:
    once = redact(
        f"Authorization: Bearer {JWT} token={OPAQUE} {WHSEC} Basic {BASIC} Bearer abc"
        f" redis://:pw@host {pem('PRIVATE KEY')} "
        + str(parse_qs("password=a&token=b"))
        + repr(ImmutableMultiDict([("password", "a")]))
    )
    assert redact(once) == once


PLAIN = serialization.NoEncryption()
ENCRYPTED = serialization.BestAvailableEncryption(b"passphrase")


@pytest.mark.parametrize(
    ("encoding", "encryption"),
    [
        (serialization.PrivateFormat.PKCS8, PLAIN),
        (serialization.PrivateFormat.PKCS8, ENCRYPTED),
        (serialization.PrivateFormat.TraditionalOpenSSL, PLAIN),
        (serialization.PrivateFormat.TraditionalOpenSSL, ENCRYPTED),  # Proc-Type, DEK-Info lines
        (serialization.PrivateFormat.OpenSSH, PLAIN),
    ],
    ids=["pkcs8", "pkcs8-encrypted", "sec1", "sec1-encrypted", "openssh"],
)
@pytest.mark.parametrize("written", [str, repr], ids=["as-is", "repr"])
def test_real_private_keys_are_redacted(
    encoding: serialization.PrivateFormat,
    encryption: serialization.KeySerializationEncryption,
    written: Callable[[str], str],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = key.private_bytes(serialization.Encoding.PEM, encoding, encryption).decode()
    body_lines = text.split("-----")[2].split()
    redacted = redact(f"loaded signing key {written(text)} from disk")
    assert not [line for line in body_lines if line in redacted]
    assert MARKER in redacted
    assert redacted.endswith(" from disk")


def test_extra_keys_are_configurable() -> None:
    custom = Redactor(extra_keys=("ssn", "x-tenant-secret-header"))
    assert custom.redact("ssn=123-45-6789 name=bob") == f"ssn={MARKER} name=bob"
    assert custom.redact('{"SSN": "123"}') == json.dumps({"SSN": MARKER})
    assert redact("ssn=123-45-6789") == "ssn=123-45-6789"


def test_marker_is_configurable() -> None:
    assert Redactor(marker="***").redact("password=x") == "password=***"


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("password", True),
        ("Access_Token", True),
        ("csrf-token", True),
        ("authorization", True),
        ("HTTP_COOKIE", True),
        ("{authorization}i", True),
        ("{set-cookie}o", True),
        ("{password", True),  # not a gunicorn atom: nothing is cut off
        ("code", True),
        ("accessToken", True),
        ("clientSecret", True),
        ("refreshToken", True),
        ("privateKey", True),
        ("aws_secret_access_key", True),
        ("credentials", True),
        ("SecretAccessKey", True),
        ("x-amz-security-token", True),
        ("newPassword", True),
        ("sessionid", True),
        ("publicKey", False),
        ("keyId", False),
        ("tokenType", False),
        ("request_id", False),
        ("status_code", False),
        ("sub", False),
        ("path", False),
        ("{x-request-id}i", False),
    ],
)
def test_sensitive_field_names(name: str, sensitive: bool) -> None:
    assert Redactor().is_sensitive_key(name) is sensitive
    if not name.startswith("{"):  # gunicorn's atoms are field names only
        # One rule for names: a field of that name and `name=value` in text agree.
        assert (redact(f"{name}=v4lue") != f"{name}=v4lue") is sensitive


# --- the filter on real log records ----------------------------------------------------------


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing "message | extra | exception" through an installed filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s|%(extra_field)s"))
    logger = logging.getLogger(f"test_redaction.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    install(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_secret_in_percent_s_arguments(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info("login %s with %s", "bob", f"password={PASSWORD}", extra={"extra_field": 1})
    assert stream.getvalue() == f"login bob with password={MARKER}|1\n"


def test_secret_split_between_format_and_argument(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("Authorization: %s", f"Bearer {OPAQUE}", extra={"extra_field": 1})
    assert stream.getvalue() == f"Authorization: {MARKER}|1\n"


def test_headers_dict_as_argument(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    headers = {"Authorization": f"Bearer {JWT}", "Cookie": "sid=abc", "Accept": "*/*"}
    logger.info("headers: %s", headers, extra={"extra_field": 1})
    assert OPAQUE not in stream.getvalue()
    assert JWT not in stream.getvalue()
    assert "sid=abc" not in stream.getvalue()
    assert "'Accept': '*/*'" in stream.getvalue()
    assert headers["Authorization"] == f"Bearer {JWT}", "the caller's dict must not change"


def test_mapping_arguments(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    values = {"user": "bob", "password": PASSWORD, "url": f"/x?token={OPAQUE}&a=1"}
    logger.info("%(user)s %(password)s %(url)s", values, extra={"extra_field": 1})
    assert stream.getvalue() == f"bob {MARKER} /x?token={MARKER}&a=1|1\n"
    assert values["password"] == PASSWORD


def test_extra_fields(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, _ = logged

    class Request:
        def __str__(self) -> str:
            return f"<Request /cb?code=abc Authorization: Bearer {OPAQUE}>"

    capture = ListHandler()
    install(capture)
    logger.addHandler(capture)
    logger.info(
        "event",
        extra={
            "extra_field": {"headers": {"Authorization": f"Bearer {JWT}"}, "n": 2},
            "password": PASSWORD,
            "callback": "/cb?state=s1&code=c0de",
            "request": Request(),
            "count": 3,
        },
    )
    logger.removeHandler(capture)
    fields = capture.records[0].__dict__
    assert fields["extra_field"] == {"headers": {"Authorization": MARKER}, "n": 2}
    assert fields["password"] == MARKER
    assert fields["callback"] == f"/cb?state=s1&code={MARKER}"
    # A header value runs to the end of the line: over-redacting beats guessing where it ends.
    assert fields["request"] == f"<Request /cb?code={MARKER} Authorization: {MARKER}"
    assert fields["count"] == 3


def test_nested_extra_fields_lose_everything_under_a_secrets_name() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "login", (), None)
    record.__dict__["oauth"] = {
        "clientId": "app-1",
        "clientSecret": {"current": "s1", "next": ["s2", 3]},
        "tokens": {"accessToken": OPAQUE, "expiresIn": 3600},
    }
    record.__dict__["credentials"] = [{"user": "bob", "pass": PASSWORD}]
    RedactingFilter().filter(record)
    assert record.__dict__["oauth"] == {
        "clientId": "app-1",
        "clientSecret": MARKER,
        "tokens": {"accessToken": MARKER, "expiresIn": 3600},
    }
    assert record.__dict__["credentials"] == MARKER


def test_containers_deeper_than_four_levels_are_written_whole_and_redacted() -> None:
    deep = {"a": [{"b": {"c": {"d": {"password": "p"}}}}]}
    assert Redactor().redact_value(deep) == {"a": [{"b": {"c": repr({"d": {"password": MARKER}})}}]}
    lists = [[[[[f"token={OPAQUE}"]]]]]
    assert Redactor().redact_value(lists) == [[[[repr([f"token={MARKER}"])]]]]


def test_a_secret_named_field_is_redacted_whatever_its_type() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "login", (), None)
    record.__dict__.update(password=1234, pin_code=None, count=2)
    RedactingFilter().filter(record)
    assert record.__dict__["password"] == MARKER
    assert record.__dict__["count"] == 2


def test_private_fields_are_left_and_the_others_all_scrubbed() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "event", (), None)
    private = {f"_internal{n}": f"token={OPAQUE}" for n in range(12)}
    record.__dict__.update(private, callback=f"/cb?code={OPAQUE}", note=f"Bearer {OPAQUE}")
    RedactingFilter().filter(record)
    assert record.__dict__["callback"] == f"/cb?code={MARKER}"
    assert record.__dict__["note"] == f"Bearer {MARKER}"
    assert {name: record.__dict__[name] for name in private} == private


def test_a_record_with_only_an_exception_text_is_scrubbed() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
    record.exc_text = f"ValueError: password={PASSWORD}"
    RedactingFilter().filter(record)
    assert record.exc_text == f"ValueError: password={MARKER}"


def test_a_record_passes_the_same_filter_twice() -> None:
    redacting = RedactingFilter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", (OPAQUE,), None)
    assert redacting.filter(record) is True
    assert redacting.filter(record) is True
    assert record.getMessage() == f"token={MARKER}"


def test_exception_message_and_cause(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    try:
        try:
            raise KeyError(f"client_secret={OPAQUE}")
        except KeyError as cause:
            raise RuntimeError(f"call to /token?refresh_token={OPAQUE} failed: {JWT}") from cause
    except RuntimeError:
        logger.exception("upstream failed", extra={"extra_field": 1})
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: call to /token?refresh_token=" + MARKER in text
    assert f"client_secret={MARKER}" in text
    assert OPAQUE not in text
    assert JWT not in text


def test_exception_text_rendered_by_another_handler_first() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
    record.exc_text = f"Traceback ...\nValueError: password={PASSWORD}"
    record.stack_info = f"Stack (most recent call last):\n  token = '{OPAQUE}'"
    RedactingFilter().filter(record)
    assert record.exc_text == f"Traceback ...\nValueError: password={MARKER}"
    assert record.stack_info == f"Stack (most recent call last):\n  token = '{MARKER}'"


def test_format_errors_do_not_leak_arguments() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "%d items", (f"token={OPAQUE}",), None
    )
    RedactingFilter().filter(record)
    # The format and its arguments are kept, scrubbed: what the call meant to say stays.
    assert record.getMessage() == f"%d items ('token={MARKER}',)"


def test_non_string_message() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, {"password": PASSWORD}, (), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == repr({"password": MARKER})


def test_gunicorn_access_atoms_keep_their_mapping() -> None:
    atoms = SafeAtoms(
        {
            "h": "10.0.0.2",
            "r": f"GET /api/v1/me?access_token={OPAQUE} HTTP/1.1",
            "q": f"access_token={OPAQUE}&x=1",
            "{authorization}i": f"Bearer {JWT}",
            "{cookie}i": "sid=1",
            "{x-request-id}i": "4bf92f3577b34da6a3ce929d0e0e4736",
            "s": "200",
            "B": 42,
        }
    )
    record = logging.LogRecord(
        "gunicorn.access",
        logging.INFO,
        __file__,
        1,
        '%(h)s "%(r)s" %(s)s %(B)d %({authorization}i)s %({cookie}i)s %(a)s',
        (atoms,),
        None,
    )
    RedactingFilter().filter(record)
    assert isinstance(record.args, Mapping)
    assert record.args["{x-request-id}i"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record.args["{authorization}i"] == MARKER
    assert record.args["{unknown}i"] == "-", "gunicorn's answer for a missing atom is kept"
    assert record.getMessage() == (
        f'10.0.0.2 "GET /api/v1/me?access_token={MARKER} HTTP/1.1" 200 42 {MARKER} {MARKER} -'
    )
    assert atoms["{authorization}i"] == f"Bearer {JWT}"


def test_a_mapping_argument_without_secrets_stays_a_mapping() -> None:
    # Formatters read single atoms from it (gunicorn's access format), secret or not.
    atoms = {"h": "10.0.0.2", "s": "200"}
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, "%(h)s", (atoms,), None
    )
    RedactingFilter().filter(record)
    assert isinstance(record.args, Mapping)
    assert record.args["s"] == "200"
    assert record.getMessage() == "10.0.0.2"


def test_install_on_the_root_logger_covers_child_loggers() -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        redacting = install()
        assert redacting in handler.filters
        child = logging.getLogger("test_redaction.child.deeper")
        child.warning("leaked? %s", f"api_key={OPAQUE}")
    finally:
        root.removeHandler(handler)
    assert stream.getvalue() == f"leaked? api_key={MARKER}\n"


def test_install_twice_adds_one_filter() -> None:
    handler = logging.NullHandler()
    install(handler)
    install(handler)
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1


def test_install_with_extra_keys() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install(handler, extra_keys=("otp",))
    logger = logging.getLogger("test_redaction.otp")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning("otp=123456 password=x")
    logger.removeHandler(handler)
    assert stream.getvalue() == f"otp={MARKER} password={MARKER}\n"


def test_redacting_formatter_scrubs_the_final_line() -> None:
    formatter = RedactingFormatter("%(levelname)s %(message)s %(url)s")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("bob",), None)
    record.url = f"/x?token={OPAQUE}"
    assert formatter.format(record) == f"INFO hello bob /x?token={MARKER}"


def test_redacting_formatter_takes_the_formatters_arguments_and_a_redactor() -> None:
    formatter = RedactingFormatter(
        "{levelname} {message}", style="{", redactor=Redactor(extra_keys=("otp",))
    )
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "otp=%s", ("123456",), None)
    assert formatter.format(record) == f"INFO otp={MARKER}"


def test_filter_keeps_every_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", (), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == "plain"


def test_pipe_mode_scrubs_other_programs_logs() -> None:
    nginx_error = (
        "2026/11/22 05:00:00 [error] 7#7: *5 upstream prematurely closed connection while reading"
        " response header from upstream, client: 203.0.113.7, server: api.example.com, request:"
        f' "GET /api/v1/items?access_token={OPAQUE}&page=2 HTTP/1.1", upstream:'
        f' "http://unix:/run/app.sock:/api/v1/items?access_token={OPAQUE}&page=2"\n'
        "otp=123456 plain line\n"
    )
    piped = run_as_pipe(nginx_error, "otp")
    assert OPAQUE not in piped
    # A value in prose runs to the next name=, "&" or the end of the line: it may hold spaces.
    assert piped == nginx_error.replace(OPAQUE, MARKER).replace("123456 plain line", MARKER)


def test_pipe_mode_drops_the_body_of_a_private_key_split_over_lines() -> None:
    key = pem("RSA PRIVATE KEY")
    text = f"2026/11/22 loaded {key} ok\nnext {key}\n-----BEGIN PRIVATE KEY-----\nMIIE\n"
    piped = run_as_pipe(text)
    assert piped == (
        f"2026/11/22 loaded -----BEGIN RSA PRIVATE KEY-----{MARKER}\n"
        f"-----END RSA PRIVATE KEY----- ok\n"
        f"next -----BEGIN RSA PRIVATE KEY-----{MARKER}\n"
        f"-----END RSA PRIVATE KEY-----\n"
        f"-----BEGIN PRIVATE KEY-----{MARKER}\n"
    )


def run_as_pipe(text: str, *extra_keys: str) -> str:
    """`python -m <package>.redaction [extra_key ...]` with text on its stdin."""
    source = Path(sys.modules[RedactingFilter.__module__].__file__ or "").parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        [sys.executable, "-m", RedactingFilter.__module__, *extra_keys],
        input=text,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return completed.stdout


def test_a_handler_with_more_keys_scrubs_again() -> None:
    first, second = io.StringIO(), io.StringIO()
    plain = logging.StreamHandler(first)
    stricter = logging.StreamHandler(second)
    install(plain)
    install(stricter, extra_keys=("otp",))
    logger = logging.getLogger("test_redaction.two_handlers")
    logger.propagate = False
    logger.addHandler(plain)
    logger.addHandler(stricter)
    logger.warning("otp=123456 password=x")
    logger.removeHandler(plain)
    logger.removeHandler(stricter)
    assert first.getvalue() == f"otp=123456 password={MARKER}\n"
    assert second.getvalue() == f"otp={MARKER} password={MARKER}\n"


PATHOLOGICAL = {
    "dotted run": "eyJ" + "a." * 50_000,
    "base64url run of JWT starts": "eyJ" * 33_000,
    "compound-name run": "a_" * 50_000 + "token",
    "unclosed quoted value": '"password": "' + "\\\\" * 50_000,
    "key then spaces": "token" + " " * 100_000,
    "signature prefixes": "v1," * 33_000,
    "url separators": "://" * 33_000,
    "url schemes": "a://" * 25_000,
    "url password without @": "http://u:" + "p" * 100_000,
    "pem begin lines": "-----BEGIN" * 10_000,
    "pem words": "-----BEGIN " + "PRIVATE KEY " * 8_000,
    "pem end lines": "-----BEGIN PRIVATE KEY-----" + "-----END" * 12_000,
    "basic prefixes": "basic " * 16_000,
    "basic base64 run": "basic " + "QUJD" * 25_000 + ".",
    "bearer prefixes": "bearer a" * 12_000,
    "unclosed list": '"password": [' + '"a", ' * 20_000,
    "tuple starts": "('password', " * 8_000,
    "escaped bytes before JWT starts": "\\x80eyJ" * 12_000,
    "percent escapes": "%3F" * 30_000 + "token=",
    "base64 of JWT starts": "ZXlK" * 25_000,
    "brackets under a secret's name": '"secret": ' + "{" * 100_000,
    "words after a secret's name": "password=" + "a " * 50_000,
    "names without separators": "password" * 12_000,
}


@pytest.mark.parametrize("text", PATHOLOGICAL.values(), ids=PATHOLOGICAL)
def test_cost_stays_linear_on_hostile_input(text: str) -> None:
    # 100 kB in well under a second; a quadratic pattern takes minutes on these.
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 5


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("broken __str__")

    __repr__ = __str__


def test_a_broken_extra_value_does_not_break_logging() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    record.__dict__["thing"] = Unprintable()
    RedactingFilter().filter(record)
    assert record.__dict__["thing"] == "<unprintable Unprintable>"
    assert record.getMessage() == "hello"


def test_a_record_that_cannot_be_scrubbed_is_blanked_not_leaked() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, Unprintable(), (f"token={OPAQUE}",), None
    )
    record.__dict__["url"] = f"/x?token={OPAQUE}"
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == f"{MARKER} (this log record could not be scrubbed)"
    assert record.__dict__["url"] == MARKER


# --- API keys, recognised by their prefix ----------------------------------------------------

API_KEY_ID = "k3Y9xQ2aZm"
API_KEY_SECRET = "Qm4Zr7Tn2Vb8Xc1Lp5Hs9Jd3Kf6Gw0Ye4Ua7Io2PeXXXXXX"
API_KEY = f"myservice_{API_KEY_ID}_{API_KEY_SECRET}"
KEPT = f"myservice_{API_KEY_ID}_{MARKER}"
API_KEY_PLACES = {
    "message": (f"calling with {API_KEY} now", f"calling with {KEPT} now"),
    "path segment": (f"GET /items/{API_KEY}/x 404", f"GET /items/{KEPT}/x 404"),
    "json value": (json.dumps({"note": API_KEY}), json.dumps({"note": KEPT})),
    "percent-encoded underscores": (
        f"/x/myservice%5F{API_KEY_ID}%5f{API_KEY_SECRET}",
        f"/x/myservice%5F{API_KEY_ID}%5f{MARKER}",
    ),
    "after an underscore": (f"KEY_{API_KEY}", f"KEY_{KEPT}"),
    "truncated": (f"myservice_{API_KEY_ID}_{API_KEY_SECRET[:16]}", KEPT),
}


@pytest.mark.parametrize("place", list(API_KEY_PLACES))
def test_api_keys_of_a_configured_prefix_lose_their_secret(place: str) -> None:
    text, expected = API_KEY_PLACES[place]
    assert Redactor(key_prefixes=("myservice",)).redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        API_KEY,  # no prefix configured: not recognisable as a key
        "myservice_config_loaded",  # too short to be a key's secret
        f"notmyservice_{API_KEY_ID}_{API_KEY_SECRET}",  # another word that ends like the prefix
    ],
)
def test_only_keys_of_the_configured_prefixes_are_redacted(text: str) -> None:
    configured = Redactor(key_prefixes=("myservice",)) if text != API_KEY else Redactor()
    assert configured.redact(text) == text


def test_several_prefixes() -> None:
    both = Redactor(key_prefixes=("other", "myservice"))
    assert both.redact(API_KEY) == KEPT
    assert both.redact(f"other_{API_KEY_ID}_{API_KEY_SECRET}") == f"other_{API_KEY_ID}_{MARKER}"


def test_install_takes_key_prefixes() -> None:
    handler = logging.StreamHandler(io.StringIO())
    install(handler, key_prefixes=("myservice",), extra_keys=("otp",))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s otp=1", (API_KEY,), None)
    handler.filter(record)
    assert record.getMessage() == f"key {KEPT} otp={MARKER}"
