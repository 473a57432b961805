"""Test helpers for bearer tokens: tokens minted by joserfc (an independent JOSE library) or
PyJWT, hand-built hostile tokens, and a real JWKS server on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

ISSUER = "https://issuer.test/"
AUDIENCE = "https://api.test"
MISSING = object()  # as a claim value: leave the claim out

JoseKey = RSAKey | ECKey | OKPKey

# RSA keys for every test of this process, made once at import: generating one takes a good
# fraction of a second, and the tests only need a few that differ from each other.
RSA_KEYS = tuple(RSAKey.generate_key(2048) for _ in range(3))

# bearer.py's refusals (RFC 6750 error_description, also the problem's detail): a test names the
# reason it expects, so that a token refused for another reason fails it.
NO_TOKEN = "An access token is required"
MALFORMED = "The access token is malformed"
TOO_LARGE = "The access token is too large"
ALG_NOT_ALLOWED = "The token signing algorithm is not allowed"
ALG_DOES_NOT_FIT = "The token signing algorithm does not fit the key"
BAD_SIGNATURE = "The access token signature is invalid"
EXPIRED = "The access token expired"
NOT_YET_VALID = "The access token is not valid yet"
WRONG_ISSUER = "The access token has the wrong issuer"
WRONG_AUDIENCE = "The access token is not meant for this API"
WRONG_TYPE = "The token type is not accepted"
NO_KID = "The access token has no key id"
UNKNOWN_KID = "The access token was signed by an unknown key"
BAD_SCOPE_CLAIM = "The scope claim is malformed"
MISSING_SCOPE = "The access token lacks a required scope"
BAD_BINDING = "The token is bound to a key in a way this API cannot check"
BOUND_AS_BEARER = "A DPoP-bound token must be sent with the DPoP scheme"
KEYS_UNAVAILABLE = "Token signing keys are temporarily unavailable"


def slug(value: object) -> str:
    """A test id of letters, digits and dashes. make mutation hands test ids back to pytest as
    arguments, and one with quotes, spaces or backslashes may then match no test."""
    return re.sub(r"[^A-Za-z0-9]+", "-", str(value)).strip("-") or "empty"


def make_claims(**changes: Any) -> dict[str, Any]:
    """Valid access-token claims for ISSUER/AUDIENCE; MISSING removes a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "scope": "items:read",
        "client_id": "test-client",
        "jti": "t-1",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not MISSING}


def mint(
    key: JoseKey,
    claims: dict[str, Any],
    *,
    library: str = "joserfc",
    alg: str = "RS256",
    kid: str | None = None,
    **header: Any,
) -> str:
    """Sign claims with key, by joserfc or PyJWT; kid defaults to the key's RFC 7638 thumbprint
    and typ to at+jwt, the RFC 9068 access token type the service requires by default."""
    protected = {"alg": alg, "kid": kid or key.thumbprint(), "typ": "at+jwt", **header}
    if library == "joserfc":
        return jose_jwt.encode(protected, claims, key, algorithms=[alg])
    if library == "pyjwt":
        extra = {name: value for name, value in protected.items() if name != "alg"}
        return jwt.encode(claims, private(key), algorithm=alg, headers=extra)
    raise ValueError(library)


def private(key: JoseKey) -> Any:
    """The key's private half as a cryptography object, which PyJWT signs with directly (from a
    PEM it would parse and check the key again for every token, a hundred times slower)."""
    private_key = key.private_key
    assert private_key is not None
    return private_key


def bound_to(key: JoseKey) -> dict[str, Any]:
    """The cnf claim of a token bound to key (RFC 9449 section 6.1), thumbprint by joserfc."""
    return {"cnf": {"jkt": key.thumbprint()}}


def access_token_hash(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


DPOP_ALGORITHMS = {"EC": "ES256", "RSA": "PS256", "OKP": "EdDSA"}


def dpop_proof(
    key: JoseKey,
    method: str,
    url: str,
    token: str | None,
    *,
    library: str = "joserfc",
    alg: str | None = None,
    header: dict[str, Any] | None = None,
    signer: JoseKey | None = None,
    **claims: Any,
) -> str:
    """An RFC 9449 proof for (method, url) and the access token, signed with key (or signer,
    to forge one), by joserfc or PyJWT. header and claims change or (MISSING) drop members."""
    alg = alg or DPOP_ALGORITHMS[key.key_type]
    protected = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    protected.update(header or {})
    payload = {"jti": uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(time.time())}
    if token is not None:
        payload["ath"] = access_token_hash(token)
    payload.update(claims)
    protected = {name: value for name, value in protected.items() if value is not MISSING}
    payload = {name: value for name, value in payload.items() if value is not MISSING}
    signing_key = signer or key
    if library == "joserfc":
        return jose_jwt.encode(protected, payload, signing_key, algorithms=[alg])
    if library == "pyjwt":
        extra = {name: value for name, value in protected.items() if name != "alg"}
        return jwt.encode(payload, private(signing_key), algorithm=alg, headers=extra)
    raise ValueError(library)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unsigned_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An alg "none" style token: no signature at all."""
    return f"{segment(header)}.{segment(claims)}."


def hs256_token(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """HMAC-signed by hand (PyJWT refuses a PEM as an HMAC secret, an attacker does not)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def public_jwk(key: JoseKey, **members: Any) -> dict[str, Any]:
    jwk = key.as_dict(private=False)
    jwk["kid"] = key.thumbprint()
    jwk.update(members)
    return jwk


def serve_in_thread(httpd: ThreadingHTTPServer) -> threading.Thread:
    """Serve httpd on a daemon thread. It polls for shutdown every 50 ms instead of the default
    500 ms: every test that stops a server waits for that poll."""
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return thread


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 in a thread; tests change document/status and read hits."""

    def __init__(self) -> None:
        self.document: Any = {"keys": []}
        self.status = 200
        self.redirect_to: str | None = None
        self.hits = 0
        self.requests: list[tuple[str, str | None]] = []  # (request target, Accept header)
        self.hosts: list[str | None] = []  # the Host header of each request
        # A unique path: bearer.py caches per URL and process, and ports get reused.
        self.path = f"/jwks-{uuid.uuid4().hex}.json"
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = serve_in_thread(self.httpd)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{self.path}"

    def publish(self, *keys: JoseKey, **members: Any) -> None:
        self.document = {"keys": [public_jwk(key, **members) for key in keys]}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.hits += 1
                    server.requests.append((self.path, self.headers.get("Accept")))
                    server.hosts.append(self.headers.get("Host"))
                if server.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.end_headers()
                    return
                body = json.dumps(server.document).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


class TricklingJwksServer:
    """A JWKS provider on 127.0.0.1 that, once `trickle` is set, sends its answer (status line
    and headers included) one byte per second: every socket read gets data well within any
    per-read timeout, so only a total deadline ends the fetch."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.trickle = False
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                answer = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(server.body)}\r\n\r\n".encode()
                    + server.body
                )
                self.close_connection = True
                try:
                    if not server.trickle:
                        self.wfile.write(answer)
                        return
                    for byte in answer:
                        self.wfile.write(bytes([byte]))
                        time.sleep(1.0)
                except OSError:
                    return  # the client gave up: what a deadline is for

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = serve_in_thread(self.httpd)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/jwks-{uuid.uuid4().hex}.json"

    def publish(self, *keys: RSAKey) -> None:
        self.body = json.dumps({"keys": [public_jwk(key) for key in keys]}).encode()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
