"""Each security module works when copied alone into another Flask app (docs/patterns/).

For every standalone module, the test copies only that file into an empty folder, writes a
minimal Flask app wired as the pattern page says, and runs that pattern's essential checks in a
fresh interpreter whose import path is that folder plus the installed libraries: nothing of this
service can be imported there. A second test reads each module's imports (ast) and allows only
Flask/Werkzeug, the standard library and the module's one library.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from {{ cookiecutter.package_name }} import apikeys, bearer, dpop, redaction, transport, webhooks

# module -> the one third-party library it may use besides Flask/Werkzeug (None: stdlib only,
# without even Flask, as redaction.py promises).
STANDALONE: dict[ModuleType, set[str]] = {
    transport: {"flask", "werkzeug"},
    bearer: {"flask", "werkzeug", "jwt"},
    # click: Flask's own CLI library, always installed with it.
    apikeys: {"flask", "werkzeug", "click"},
    dpop: {"flask", "werkzeug", "jwt"},
    webhooks: {"flask", "werkzeug", "redis", "cryptography"},
    redaction: set(),
}
# Typing-only stubs of the standard library (imported under TYPE_CHECKING).
STDLIB = set(sys.stdlib_module_names) | {"_typeshed"}
SERVICE_PACKAGE = transport.__name__.partition(".")[0]
# Appended to every check.py: the copy must have run without any module of this service.
NOTHING_OF_THE_SERVICE_IMPORTED = """
import sys

leaked = [name for name in sys.modules if name.partition(".")[0] == "{package}"]
assert not leaked, leaked
"""
ISSUER = "https://issuer.example/"
AUDIENCE = "https://copy.example"


def run_copied(
    module: ModuleType,
    tmp_path: Path,
    app_source: str,
    files: dict[str, str],
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Copy the module alone next to app.py and run check.py there, in a clean interpreter."""
    source = Path(str(module.__file__))
    shutil.copy(source, tmp_path / source.name)
    (tmp_path / "app.py").write_text(textwrap.dedent(app_source))
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    with (tmp_path / "check.py").open("a") as check:
        check.write(NOTHING_OF_THE_SERVICE_IMPORTED.format(package=SERVICE_PACKAGE))
    clean_env = {
        "PATH": os.environ.get("PATH", ""),
        # Only the folder: PYTHONPATH=src of this test run must not leak into the copy's run.
        "PYTHONPATH": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(tmp_path),
        **(env or {}),
    }
    finished = subprocess.run(
        [sys.executable, "-s", "check.py"],
        cwd=tmp_path,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return finished


def printed(finished: subprocess.CompletedProcess[str]) -> Any:
    """What check.py printed last, as JSON."""
    return json.loads(finished.stdout.splitlines()[-1])


# --------------------------------------------------------------------------- the pages


PATTERN_PAGES = Path(__file__).resolve().parents[1] / "docs" / "patterns"


def test_every_pattern_page_is_indexed_and_says_what_it_defends_and_how_to_copy() -> None:
    index = (PATTERN_PAGES / "README.md").read_text()
    pages = sorted(path for path in PATTERN_PAGES.glob("*.md") if path.name != "README.md")
    assert {page.name for page in pages} >= {
        "https-hsts.md",
        "nginx-tls.md",
        "bearer-tokens.md",
        "api-keys.md",
        "webhooks.md",
        "log-redaction.md",
        "dpop.md",
    }
    for page in pages:
        assert f"]({page.name})" in index, page.name
        headings = [line.lower() for line in page.read_text().splitlines() if line.startswith("#")]
        assert any("defend" in heading for heading in headings), page.name
        assert any("copying" in heading or "reusing" in heading for heading in headings), page.name


# --------------------------------------------------------------------------- imports


@pytest.mark.parametrize("module", list(STANDALONE), ids=lambda module: module.__name__)
def test_a_standalone_module_imports_only_flask_the_stdlib_and_its_library(
    module: ModuleType,
) -> None:
    tree = ast.parse(Path(str(module.__file__)).read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in {module.__name__}"
            assert node.module is not None
            roots.add(node.module.partition(".")[0])
    assert roots - STDLIB - {"__future__"} <= STANDALONE[module]


# --------------------------------------------------------------------------- transport.py


TRANSPORT_APP = """
from flask import Flask, request

import transport

app = Flask(__name__)
app.config["TRUSTED_PROXY_HOPS"] = 1
transport.init_app(app)


@app.get("/hello")
def hello():
    return {"client": request.remote_addr, "scheme": request.scheme}
"""

TRANSPORT_CHECK = """
import json

from app import app

HSTS = "Strict-Transport-Security"
client = app.test_client()
plain = client.get("/hello")
secure = client.get(
    "/hello",
    headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9, 198.51.100.7"},
)
print(json.dumps({
    "plain": [plain.status_code, plain.mimetype, plain.headers.getlist(HSTS)],
    "secure": [secure.status_code, secure.headers.getlist(HSTS)],
    "secure_body": secure.get_json(),
    "nosniff": secure.headers.get("X-Content-Type-Options"),
}))
"""


def test_transport_copied_alone_refuses_plain_http_and_sends_hsts(tmp_path: Path) -> None:
    seen = printed(run_copied(transport, tmp_path, TRANSPORT_APP, {"check.py": TRANSPORT_CHECK}))
    assert seen["plain"] == [403, "application/problem+json", []]
    assert seen["secure"] == [200, ["max-age=63072000; includeSubDomains"]]
    # One trusted proxy: its address for the client, whatever the client wrote before it.
    assert seen["secure_body"] == {"client": "198.51.100.7", "scheme": "https"}
    assert seen["nosniff"] == "nosniff"


# --------------------------------------------------------------------------- bearer.py


BEARER_APP = """
from flask import Flask

import bearer

app = Flask(__name__)
app.config.update(
    JWT_ISSUER="https://issuer.example/",
    JWT_AUDIENCE="https://copy.example",
    JWT_PUBLIC_KEY_FILE="public.pem",
    APP_ENV="production",
)
bearer.init_app(app)


@app.get("/items")
@bearer.require_scopes("items:read")
def items():
    return {"sub": bearer.current_principal().sub}
"""

BEARER_CHECK = """
import json

from app import app

client = app.test_client()
tokens = json.load(open("tokens.json"))
seen = {}
for name, token in tokens.items():
    headers = {"Authorization": "Bearer " + token} if token else {}
    response = client.get("/items", headers=headers)
    seen[name] = [response.status_code, response.headers.get("WWW-Authenticate", "")]
print(json.dumps(seen))
"""


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_bearer_copied_alone_checks_tokens_and_scopes(tmp_path: Path) -> None:
    key, stranger = new_rsa_key(), new_rsa_key()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "public.pem").write_bytes(public_pem)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
    typed = {"typ": "at+jwt"}  # RFC 9068 access tokens, as bearer.py requires by default
    tokens = {
        "valid": jwt.encode({**claims, "scope": "items:read"}, key, "RS256", typed),
        "missing_scope": jwt.encode({**claims, "scope": "items:write"}, key, "RS256", typed),
        "bad_signature": jwt.encode({**claims, "scope": "items:read"}, stranger, "RS256", typed),
        "expired": jwt.encode(
            {**claims, "scope": "items:read", "iat": now - 900, "exp": now - 600},
            key,
            "RS256",
            typed,
        ),
        "id_token": jwt.encode({**claims, "scope": "items:read", "nonce": "n"}, key, "RS256"),
        "none": "",
    }
    files = {"check.py": BEARER_CHECK, "tokens.json": json.dumps(tokens)}
    seen = printed(run_copied(bearer, tmp_path, BEARER_APP, files))
    assert seen["valid"] == [200, ""]
    assert seen["missing_scope"][0] == 403
    assert 'error="insufficient_scope"' in seen["missing_scope"][1]
    assert 'scope="items:read"' in seen["missing_scope"][1]
    for name in ("bad_signature", "expired", "id_token"):
        assert seen[name][0] == 401, name
        assert 'error="invalid_token"' in seen[name][1], name
    assert seen["none"] == [401, 'Bearer realm="api"']


# --------------------------------------------------------------------------- apikeys.py


APIKEYS_APP = """
import os

from flask import Flask

import apikeys

app = Flask(__name__)
app.config["API_KEYS_FILE"] = os.environ.get("API_KEYS_FILE")
apikeys.init_app(app, prefix="copyservice")


@app.get("/reports")
@apikeys.require_scopes("reports:read")
def reports():
    return {"sub": apikeys.current_principal().sub}
"""

APIKEYS_CHECK = """
import json

from app import app

# Each change of the key file at once (a running app sees it within a second).
app.extensions["apikeys"].key_file.recheck_seconds = 0
runner = app.test_cli_runner()
made = runner.invoke(args=["api-keys", "new", "--name", "copy", "--scope", "reports:read"])
assert made.exit_code == 0, made.output
key = made.stdout.strip()
other = runner.invoke(args=["api-keys", "new", "--name", "other", "--scope", "reports:write"])
other_key = other.stdout.strip()
client = app.test_client()


def get(path, key=None):
    response = client.get(path, headers={"X-API-Key": key} if key else {})
    return [response.status_code, response.mimetype, response.headers.get("WWW-Authenticate")]


seen = {
    "valid": get("/reports", key) + [client.get("/reports", headers={"X-API-Key": key}).json],
    "missing_scope": get("/reports", other_key),
    "none": get("/reports"),
    "in_query": get("/reports?api_key=" + key),
    "bad_checksum": get("/reports", key[:-1] + ("0" if key[-1] != "0" else "1")),
    "key": key,
    "listed": runner.invoke(args=["api-keys", "list"]).output,
}
key_id = key.split("_")[1]
assert runner.invoke(args=["api-keys", "revoke", key_id]).exit_code == 0
seen["revoked"] = get("/reports", key)
print(json.dumps(seen))
"""


def test_apikeys_copied_alone_issues_checks_and_revokes_keys(tmp_path: Path) -> None:
    key_file = tmp_path / "api-keys.json"
    key_file.write_text('{"keys": []}')
    key_file.chmod(0o600)
    env = {"API_KEYS_FILE": str(key_file)}
    seen = printed(run_copied(apikeys, tmp_path, APIKEYS_APP, {"check.py": APIKEYS_CHECK}, env))
    key = seen["key"]
    assert key.startswith("copyservice_")
    key_id = key.split("_")[1]
    assert seen["valid"] == [200, "application/json", None, {"sub": f"apikey:{key_id}"}]
    assert seen["missing_scope"][:2] == [403, "application/problem+json"]
    challenge = 'ApiKey realm="api"'
    assert seen["none"] == [401, "application/problem+json", challenge]
    assert seen["in_query"][:2] == [400, "application/problem+json"]
    assert seen["bad_checksum"] == [401, "application/problem+json", challenge]
    assert seen["revoked"] == [401, "application/problem+json", challenge]
    assert key_id in seen["listed"]
    assert key not in seen["listed"]
    assert key not in key_file.read_text()


# --------------------------------------------------------------------------- dpop.py


DPOP_APP = """
from flask import Flask, jsonify

import dpop


class Store:  # one process here; a real app shares the webhooks replay store
    def __init__(self):
        self.seen = set()

    def claim(self, key, lease_seconds, owner):
        if key in self.seen:
            return "processing"
        self.seen.add(key)
        return "claimed"


app = Flask(__name__)
dpop.init_app(app, store=Store())


@app.route("/items", methods=["GET", "POST"])
def items():
    # What bearer.py does for a DPoP-bound token: the token's cnf.jkt is passed along.
    from flask import request

    token, bound_to = request.headers["X-Token"], request.headers["X-Bound-To"]
    try:
        app.extensions["dpop"].verify_proof(token, bound_to, leeway=30)
    except ValueError as refused:
        return jsonify(error=refused.error), 401
    return jsonify(ok=True)
"""

DPOP_CHECK = """
import json

from app import app

client = app.test_client()
cases = json.load(open("cases.json"))
seen = {}
for name, case in cases.items():
    response = client.open("/items", method=case["method"], headers=case["headers"],
                           base_url="https://copy.example")
    seen[name] = [response.status_code, response.get_json()]
print(json.dumps(seen))
"""


def test_dpop_copied_alone_checks_proofs(tmp_path: Path) -> None:
    key, stranger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    token = "an-access-token"
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()

    def public_jwk(private_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
        jwk: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(
            private_key.public_key(), as_dict=True
        )
        return jwk

    def proof(private_key: ec.EllipticCurvePrivateKey, method: str) -> str:
        claims = {"jti": secrets.token_hex(8), "htm": method, "htu": "https://copy.example/items",
                  "iat": int(time.time()), "ath": ath}  # fmt: skip
        headers = {"typ": "dpop+jwt", "jwk": public_jwk(private_key)}
        return jwt.encode(claims, private_key, algorithm="ES256", headers=headers)

    jkt = dpop.jwk_thumbprint(public_jwk(key))

    def case(method: str, value: str) -> dict[str, Any]:
        return {"method": method, "headers": {"X-Token": token, "X-Bound-To": jkt, "DPoP": value}}

    first = proof(key, "GET")
    cases = {
        "valid": case("GET", first),
        "replayed": case("GET", first),
        "other_method": case("POST", proof(key, "GET")),
        "other_key": case("GET", proof(stranger, "GET")),
    }
    files = {"check.py": DPOP_CHECK, "cases.json": json.dumps(cases)}
    seen = printed(run_copied(dpop, tmp_path, DPOP_APP, files))
    assert seen["valid"] == [200, {"ok": True}]
    assert seen["replayed"] == [401, {"error": "invalid_dpop_proof"}]
    assert seen["other_method"] == [401, {"error": "invalid_dpop_proof"}]
    assert seen["other_key"] == [401, {"error": "invalid_token"}]


# --------------------------------------------------------------------------- webhooks.py


WEBHOOKS_APP = """
import os

from flask import Blueprint, Flask

import webhooks

app = Flask(__name__, instance_path=os.path.abspath("instance"))
app.config["WEBHOOK_SECRET"] = os.environ["WEBHOOK_SECRET"]
app.config["REPLAY_STORE_URL"] = os.environ.get("REPLAY_STORE_URL")  # None: SQLite file
webhooks.init_app(app)

bp = Blueprint("webhooks", __name__)
incoming = webhooks.Receiver(webhooks.STANDARD_WEBHOOKS)
processed = []


@incoming.on("invoice.paid")
def invoice_paid(event):
    processed.append(event.delivery_id)


@bp.post("/webhooks/events")
def receive():
    return incoming.receive()


app.register_blueprint(bp)
"""

WEBHOOKS_CHECK = """
import json

from app import app, processed

client = app.test_client()
deliveries = json.load(open("deliveries.json"))
seen = {}
for name, delivery in deliveries.items():
    response = client.post(
        "/webhooks/events", data=delivery["body"].encode(), headers=delivery["headers"]
    )
    seen[name] = [response.status_code, response.get_json(), response.mimetype]
seen["processed"] = processed
print(json.dumps(seen))
"""


def standard_webhook(secret: str, message_id: str, body: str) -> dict[str, Any]:
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
        "Content-Type": "application/json",
    }
    return {"body": body, "headers": headers}


def test_webhooks_copied_alone_verify_and_refuse_replays(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    body = json.dumps({"type": "invoice.paid", "data": {"id": "in_1"}})
    valid = standard_webhook(secret, "msg_copy_1", body)
    forged = standard_webhook("whsec_" + base64.b64encode(b"x" * 32).decode(), "msg_copy_2", body)
    tampered = {**valid, "body": body.replace("in_1", "in_2")}
    deliveries = {"first": valid, "replay": valid, "forged": forged, "tampered": tampered}
    files = {"check.py": WEBHOOKS_CHECK, "deliveries.json": json.dumps(deliveries)}
    env = {"WEBHOOK_SECRET": secret}
    seen = printed(run_copied(webhooks, tmp_path, WEBHOOKS_APP, files, env))
    assert seen["first"] == [200, {"status": "accepted"}, "application/json"]
    assert seen["replay"] == [200, {"status": "duplicate"}, "application/json"]
    assert seen["forged"][0::2] == [401, "application/problem+json"]
    assert seen["tampered"][0::2] == [401, "application/problem+json"]
    assert seen["processed"] == ["msg_copy_1"]
    # The default store, as the page says: a SQLite file in the app's instance folder.
    assert (tmp_path / "instance" / "webhook-replay.sqlite3").exists()


# --------------------------------------------------------------------------- redaction.py


REDACTION_APP = """
import logging

from flask import Flask, request

import redaction

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
redaction.install()

app = Flask(__name__)


@app.get("/login")
def login():
    app.logger.info("request %s with headers %s", request.full_path, dict(request.headers))
    return {"ok": True}
"""

REDACTION_CHECK = """
import json
import os

from app import app

token = os.environ["LEAKY_TOKEN"]
response = app.test_client().get(
    "/login?password=" + os.environ["LEAKY_PASSWORD"] + "&page=2",
    headers={"Authorization": "Bearer " + token},
)
print(json.dumps({"status": response.status_code}))
"""


def test_redaction_copied_alone_scrubs_secrets_from_log_lines(tmp_path: Path) -> None:
    token = jwt.encode({"sub": "alice"}, new_rsa_key(), algorithm="RS256")
    password = "hunter2-" + secrets.token_hex(8)
    env = {"LEAKY_TOKEN": token, "LEAKY_PASSWORD": password}
    finished = run_copied(redaction, tmp_path, REDACTION_APP, {"check.py": REDACTION_CHECK}, env)
    assert printed(finished) == {"status": 200}
    log = finished.stderr
    assert "INFO request /login?" in log
    assert token not in log
    assert token.split(".")[1] not in log
    assert password not in log
    assert "[REDACTED]" in log
    assert "page=2" in log  # the rest of the line stays readable
