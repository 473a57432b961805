"""DPoP proofs (RFC 9449) for Flask resource servers: tokens a thief cannot use.

A DPoP-bound access token names the client's public key (its ``cnf.jkt`` claim, the RFC 7638
thumbprint); every request must carry, in a ``DPoP`` header, a fresh proof signed by that key
for this method and URL. This module checks the proofs. It stands alone (Flask, PyJWT and the
standard library) and imports nothing of bearer.py, nor bearer.py anything of it: init_app
registers a checker in ``app.extensions["dpop"]``, which bearer.py asks for ``Authorization:
DPoP <token>`` requests. Copy both files to get DPoP; bearer.py alone still works (bearer only).

    webhooks.init_app(app)  # or anything else that registers app.extensions["replay_store"]
    bearer.init_app(app)
    dpop.init_app(app)

Settings, read once from app.config by init_app():

    JWT_DPOP             "allowed" (default): a DPoP-bound token needs a valid proof, plain
                         bearer tokens are still accepted; "required": every token must be
                         DPoP-bound
    JWT_DPOP_ALGORITHMS  "alg" values accepted for proofs, space or comma separated;
                         asymmetric only (default "ES256 RS256 PS256 EdDSA")
    JWT_DPOP_ORIGINS     the https origins clients call this API at, space separated, e.g.
                         "https://api.example.com https://localhost:8443"; the request's host
                         (as the trusted proxy forwarded it) must be one of them. Unset: the
                         request's own origin, as the trusted proxy reported it (nginx only
                         forwards its configured server names)

A proof's ``jti`` is remembered in the replay store shared by all workers and hosts, found in
``app.extensions["replay_store"]`` (webhooks.init_app registers its store there) or passed to
init_app: any object with ``claim(key, lease_seconds, owner)`` answering "claimed" for a key
it has not seen within the lease.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import jwt
from flask import Flask, request

__all__ = [
    "SETTINGS",
    "DPoPConfigError",
    "DPoPProofError",
    "DPoPStoreUnavailable",
    "ProofVerifier",
    "init_app",
    "jwk_thumbprint",
]

EXTENSION_KEY: Final = "dpop"
REPLAY_STORE_KEY: Final = "replay_store"
# What init_app reads from app.config (and validates: nothing else checks these).
SETTINGS: Final = ("JWT_DPOP", "JWT_DPOP_ALGORITHMS", "JWT_DPOP_ORIGINS")
MODES: Final = ("allowed", "required")
DEFAULT_ALGORITHMS: Final = ("ES256", "RS256", "PS256", "EdDSA")
# RFC 9449 section 4.2: asymmetric signature algorithms only, never "none" or a MAC. The curve
# or key type each one needs: an ES256 signature by a P-384 key is refused, not tried.
KEY_TYPES: Final[Mapping[str, tuple[str, frozenset[str]]]] = {
    **{
        f"{family}{bits}": ("RSA", frozenset())
        for family in ("RS", "PS")
        for bits in (256, 384, 512)
    },
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
# RFC 7638 section 3.2: the members a thumbprint is computed over, per key type, in the
# lexicographic order the thumbprint's JSON lists them in.
THUMBPRINT_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
# RFC 7517/7518: members that only a private (or symmetric) key has.
PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS: Final = 2048
# The proof's key is the sender's choice, and so is what checking it costs: a public exponent
# near the modulus makes verification a full modular exponentiation (10 to 30 ms instead of
# 0.1), a 16384-bit modulus about 20 ms. Bounded as other JOSE stacks bound them (Go's
# crypto/rsa takes exponents below 2**31; clients use 65537), before any signature work.
MAX_RSA_BITS: Final = 4096
MAX_RSA_EXPONENT: Final = 2**32 - 1
# RFC 9449 section 11.1: proofs are accepted for a short time only; the window is the token
# leeway plus this, either side of now, and a jti is remembered for twice that.
PROOF_WINDOW_SECONDS: Final = 60
MAX_PROOF_BYTES: Final = 8192
MAX_JTI_CHARACTERS: Final = 256

# RFC 9110 section 11.2 token68, the syntax of the DPoP header (and of a compact JWS).
_TOKEN68: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_TYP: Final = "dpop+jwt"
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# A percent-escape, or a character that a URI path must percent-encode.
_PATH_NORMALIZE: Final = re.compile(r"%([0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]")
# host[:port] as a Host header carries it: a DNS name, an IPv4 address or a bracketed IPv6 one.
_HOST: Final = re.compile(
    r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
# Errors a hostile proof may make a parser raise; each ends as a refused proof, never a 500.
_PARSE_ERRORS: Final = (ValueError, TypeError, KeyError, RecursionError, OverflowError)


class DPoPConfigError(ValueError):
    """Raised by init_app() for an unusable setting; str() starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


class DPoPProofError(ValueError):
    """A refused proof. str() is fixed text, never proof content; error is the RFC 9449 code."""

    def __init__(self, description: str, error: str = "invalid_dpop_proof") -> None:
        super().__init__(description)
        self.error = error


class DPoPStoreUnavailable(ConnectionError):
    """The replay store cannot answer: the proof cannot be judged (503, never accept)."""


class ReplayStore(Protocol):
    def claim(self, key: str, lease_seconds: int, owner: str) -> str: ...


class ProofVerifier:
    """Checks the DPoP proof of the current request; registered as app.extensions["dpop"].

    bearer.py reads ``required`` and ``algorithms`` and calls ``verify_proof``; it catches
    ValueError (DPoPProofError) and ConnectionError (DPoPStoreUnavailable) without importing
    this module.
    """

    def __init__(
        self,
        *,
        required: bool,
        algorithms: tuple[str, ...],
        origins: frozenset[str],
        store: ReplayStore,
    ) -> None:
        self.required = required
        self.algorithms = algorithms
        self.origins = origins
        self.store = store

    def verify_proof(self, access_token: str, bound_to: str, *, leeway: int) -> None:
        """Check the request's proof for access_token, bound to the key whose thumbprint is
        bound_to (the token's cnf.jkt); remember its jti. RFC 9449 section 4.3, in order."""
        proof = self._proof_header()
        claims, key_thumbprint = self._verified_proof(proof)
        self._check_request_binding(claims, access_token, leeway)
        if not hmac.compare_digest(key_thumbprint, bound_to):
            # RFC 9449 section 7.1's own example: the binding failed, so the token is refused.
            raise DPoPProofError(
                "The DPoP proof key is not the key the token is bound to", "invalid_token"
            )
        self._remember(key_thumbprint, claims["jti"], leeway)

    # ------------------------------------------------------------------------- the proof

    @staticmethod
    def _proof_header() -> str:
        proof = request.headers.get("DPoP")
        if proof is None:
            raise DPoPProofError("A DPoP proof is required with the DPoP scheme")
        # WSGI gives one value per field name: the server joined repeated fields with commas
        # (never part of a JWT).
        if "," in proof:
            raise DPoPProofError("Send exactly one DPoP proof")
        if len(proof) > MAX_PROOF_BYTES:
            raise DPoPProofError("The DPoP proof is too large")
        if not _TOKEN68.fullmatch(proof) or proof.count(".") != 2:
            raise DPoPProofError("The DPoP proof is not a single well-formed JWT")
        return proof

    def _verified_proof(self, proof: str) -> tuple[dict[str, Any], str]:
        """The proof's claims and its key's thumbprint, once its header and signature pass."""
        try:
            header = jwt.get_unverified_header(proof)
        except (jwt.PyJWTError, *_PARSE_ERRORS):
            raise DPoPProofError("The DPoP proof is not a single well-formed JWT") from None
        if not _is_media_type(header.get("typ"), _TYP):
            raise DPoPProofError("The DPoP proof must have typ dpop+jwt")
        alg = header.get("alg")
        # The allowlist is configuration, never the proof's: none and HS* are never in it.
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise DPoPProofError("The DPoP proof signing algorithm is not allowed")
        key, thumbprint = _public_key(header.get("jwk"), alg)
        try:
            decoded = jwt.api_jws.decode_complete(proof, key=key, algorithms=[alg])
            claims = json.loads(decoded["payload"])
        except jwt.InvalidSignatureError:
            raise DPoPProofError("The DPoP proof signature does not verify with its jwk") from None
        except (jwt.PyJWTError, *_PARSE_ERRORS):
            raise DPoPProofError("The DPoP proof is not a single well-formed JWT") from None
        if not isinstance(claims, dict):
            raise DPoPProofError("The DPoP proof is not a single well-formed JWT")
        for name in ("jti", "htm", "htu", "iat", "ath"):
            if name not in claims:
                raise DPoPProofError(f"The DPoP proof lacks the {name} claim")
        return claims, thumbprint

    def _check_request_binding(
        self, claims: Mapping[str, Any], access_token: str, leeway: int
    ) -> None:
        if claims["htm"] != request.method:
            raise DPoPProofError("The DPoP proof was made for another HTTP method")
        self._check_htu(claims["htu"])
        iat = claims["iat"]
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            raise DPoPProofError("The DPoP proof iat must be a number")
        # Compared, never used in arithmetic: NaN and 400-digit numbers simply fail.
        now, window = time.time(), leeway + PROOF_WINDOW_SECONDS
        if not now - window <= iat <= now + window:
            raise DPoPProofError("The DPoP proof is too old or from the future")
        expected_ath = _b64url(hashlib.sha256(access_token.encode()).digest())
        ath = claims["ath"]
        if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), expected_ath.encode()):
            raise DPoPProofError("The DPoP proof was made for another access token (ath)")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARACTERS:
            raise DPoPProofError("The DPoP proof jti must be a string of 1 to 256 characters")

    def _check_htu(self, htu: object) -> None:
        if request.scheme != "https":
            raise DPoPProofError("DPoP proofs are only accepted over https")
        # The host the client called, as the trusted proxy forwarded it (ProxyFix).
        origin = _origin_of_host(request.host)
        if origin is None or (self.origins and origin not in self.origins):
            raise DPoPProofError("This request's host is not a configured server name")
        called = (origin, _normalized_path(_request_path()))
        if not isinstance(htu, str) or _url_parts(htu) != called:
            raise DPoPProofError("The DPoP proof was made for another URL (htu)")

    def _remember(self, thumbprint: str, jti: str, leeway: int) -> None:
        # Only a hash is stored (RFC 9449 section 11.1), per key, for as long as a proof with
        # this iat could still be accepted from either side of the window.
        digest = hashlib.sha256(f"{thumbprint}:{jti}".encode()).hexdigest()
        lease = 2 * (leeway + PROOF_WINDOW_SECONDS)
        try:
            # The claim is never released or completed: it lapses with its lease.
            outcome = self.store.claim(f"dpop-jti:{digest}", lease, secrets.token_hex(16))
        except Exception as exc:
            # Another module's store: whatever it raises, the proof cannot be judged (fail closed).
            raise DPoPStoreUnavailable from exc  # the store's own error is the cause
        if outcome != "claimed":
            raise DPoPProofError("The DPoP proof was already used (jti)")


# --------------------------------------------------------------------------- helpers


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint, base64url: the cnf.jkt of tokens bound to this key."""
    members = THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None or not all(isinstance(jwk.get(name), str) for name in members):
        raise DPoPProofError("The DPoP proof jwk is not a usable public key")
    # THUMBPRINT_MEMBERS lists each key type's members in lexicographic order, as RFC 7638
    # section 3.3 wants them.
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _public_key(jwk: object, alg: str) -> tuple[Any, str]:
    """The verifying key of a proof's jwk header, and the jwk's RFC 7638 thumbprint."""
    if not isinstance(jwk, dict):
        raise DPoPProofError("The DPoP proof has no jwk header")
    if PRIVATE_MEMBERS & jwk.keys():
        # RFC 9449 section 4.2: the proof must not carry a private key (a client that leaks
        # it this way leaks it to every hop; using it would teach clients to do so).
        raise DPoPProofError("The DPoP proof jwk contains private key material")
    kty, curves = KEY_TYPES[alg]
    if jwk.get("kty") != kty or (curves and jwk.get("crv") not in curves):
        raise DPoPProofError("The DPoP proof jwk does not fit its alg")
    thumbprint = jwk_thumbprint(jwk)  # also: every member it needs is there, as a string
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWTError, *_PARSE_ERRORS):
        raise DPoPProofError("The DPoP proof jwk is not a usable public key") from None
    if kty == "RSA" and key.key_size < MIN_RSA_BITS:
        raise DPoPProofError("The DPoP proof jwk is an RSA key shorter than 2048 bits")
    if kty == "RSA" and (key.key_size > MAX_RSA_BITS or key.public_numbers().e > MAX_RSA_EXPONENT):
        raise DPoPProofError(
            "The DPoP proof jwk must be an RSA key of at most 4096 bits, exponent below 2**32"
        )
    return key, thumbprint


def _request_path() -> str:
    """The path the client sent (before any decoding), without its query."""
    environ = request.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw:
        return request.script_root + request.path
    if not raw.startswith("/"):
        raw = urlsplit(raw).path or "/"  # absolute-form request target
    return raw.partition("?")[0]


def _url_parts(url: str) -> tuple[str, str] | None:
    """(origin, path) of an https URL after RFC 3986 syntax- and scheme-based normalization
    (RFC 9449 section 4.3); query and fragment are ignored. None if it is no such URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    # urlsplit() gives scheme and hostname in lower case already (RFC 3986 6.2.2.1).
    if parts.scheme != "https" or parts.username is not None or not parts.hostname:
        return None
    return _origin(parts.hostname, port), _normalized_path(parts.path or "/")


def _origin_of_host(host: str) -> str | None:
    """The https origin of a Host header value; None unless it is a plain host[:port]."""
    if not _HOST.fullmatch(host):
        return None
    parts = _url_parts(f"https://{host}/")
    return parts[0] if parts is not None else None


def _origin(hostname: str, port: int | None) -> str:
    """https://host[:port] without the default port 443; hostname as urlsplit() gives it."""
    name = f"[{hostname}]" if ":" in hostname else hostname
    return f"https://{name}" if port in (None, 443) else f"https://{name}:{port}"


def _normalized_path(path: str) -> str:
    def normalize(match: re.Match[str]) -> str:
        escaped = match.group(1)
        if escaped is None:
            return "".join(f"%{byte:02X}" for byte in match.group(0).encode())
        character = chr(int(escaped, 16))
        return character if character in _UNRESERVED else f"%{escaped.upper()}"

    return _PATH_NORMALIZE.sub(normalize, path)


def _is_media_type(value: object, expected: str) -> bool:
    """RFC 7515 section 4.1.9: case-insensitive, and "application/" may be left out."""
    if not isinstance(value, str):
        return False
    return value.lower().removeprefix("application/") == expected


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --------------------------------------------------------------------------- settings


def init_app(app: Flask, *, store: ReplayStore | None = None) -> ProofVerifier:
    """Validate the JWT_DPOP* settings and register the proof checker bearer.py will use."""
    config = app.config
    store = store or app.extensions.get(REPLAY_STORE_KEY)
    if store is None:
        raise RuntimeError(
            "dpop.init_app needs a replay store shared by every worker: call "
            "webhooks.init_app(app) first, or pass store="
        )
    verifier = ProofVerifier(
        required=_mode_setting(config.get("JWT_DPOP")) == "required",
        algorithms=_algorithms_setting(config.get("JWT_DPOP_ALGORITHMS")),
        origins=_origins_setting(config.get("JWT_DPOP_ORIGINS")),
        store=store,
    )
    app.extensions[EXTENSION_KEY] = verifier
    return verifier


def _mode_setting(value: object) -> str:
    if value is None or value == "":
        return "allowed"
    if value not in MODES:
        raise DPoPConfigError("JWT_DPOP", f"must be one of {', '.join(MODES)}, got {value!r}")
    return str(value)


def _algorithms_setting(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return DEFAULT_ALGORITHMS
    names = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise DPoPConfigError("JWT_DPOP_ALGORITHMS", "give at least one algorithm, e.g. ES256")
    for name in names:
        if not isinstance(name, str) or name not in KEY_TYPES:
            raise DPoPConfigError(
                "JWT_DPOP_ALGORITHMS",
                f"{name!r} is not allowed; use asymmetric algorithms only "
                f"({', '.join(KEY_TYPES)}); HS* and none are refused (RFC 9449 section 4.2)",
            )
    return tuple(dict.fromkeys(names))


def _origins_setting(value: object) -> frozenset[str]:
    if value is None:  # and "", which splits into no origin
        return frozenset()
    entries = value.split() if isinstance(value, str) else value
    if not isinstance(entries, list | tuple | set | frozenset):
        raise DPoPConfigError("JWT_DPOP_ORIGINS", "give https origins separated by spaces")
    origins = set()
    for entry in entries:
        parts = _url_parts(entry) if isinstance(entry, str) else None
        if parts is None or parts[1] != "/" or "?" in entry or "#" in entry:
            raise DPoPConfigError(
                "JWT_DPOP_ORIGINS",
                f"{entry!r} is not an https origin such as https://api.example.com or "
                "https://localhost:8443",
            )
        origins.add(parts[0])
    return frozenset(origins)
