"""API keys for machine clients (cron jobs, partner systems, scripts) of a Flask app.

This module stands alone (Flask, which brings click, and the standard library only) so that it
can be copied into any Flask app; see docs/patterns/api-keys.md.

    apikeys.init_app(app)

    @app.get("/items")
    @apikeys.require_scopes("items:read")
    def items():
        caller = apikeys.current_principal()   # sub "apikey:<key id>", scopes, client_id

Clients send `X-API-Key: <key>`. A key reads

    <prefix>_<key id>_<secret><checksum>

- prefix: the letters of the app's package name, lower case (init_app(app, prefix=...) to
  choose another), fixed per service so that secret scanners and log redaction recognise
  this service's keys wherever they turn up;
- key id: base62; it names the key's record, and the caller ("apikey:<key id>");
- secret: 43 base62 characters from `secrets` (256 bits);
- checksum: the CRC32 of everything before it as 6 base62 characters (GitHub's token format),
  so that a mistyped, truncated or made-up key is refused without looking anything up.

Only the SHA-256 of each key is kept, with its id, name, scopes, creation and expiry, in the
JSON file API_KEYS_FILE. Keys are looked up by id and their hashes compared in constant time.
Each worker looks at the file at most once a second (KeyFile.recheck_seconds) and reads it
again when it changed (inode, size or times), so a revocation reaches every worker within a
second, without a restart; a file that turns unreadable or malformed later keeps the last good
set in use and is reported once in the log, never treated as "no restriction".

    flask --app <package> api-keys new --name nightly-export --scope "items:read" [--expires-in 90d]
    flask --app <package> api-keys list
    flask --app <package> api-keys revoke <key id>

Settings, read once by init_app():

    API_KEYS_FILE   the key file (JSON: {"keys": [...]}); unset: API keys are off, and a
                    request that carries one gets 401 (never treated as anonymous)

Answers: a key in the query string or a form body (a parameter named api_key, or any value
carrying the prefix) 400; several X-API-Key headers 400; a malformed, unknown, revoked or expired
key 401 with `WWW-Authenticate: ApiKey realm="api"`; a missing scope 403. All are RFC 9457
problem details carrying the request id.

With bearer.py installed too, init_app registers the key check in app.extensions["credentials"]:
bearer.require_scopes then takes a token or a key on the same route and refuses both at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, ParamSpec

import click
from flask import Flask, Response, current_app, g, request
from flask.cli import with_appcontext
from flask.typing import ResponseReturnValue

__all__ = [
    "HEADER",
    "SETTINGS",
    "ApiKeyPrincipal",
    "ApiKeys",
    "ApiKeysConfigError",
    "KeyRecord",
    "current_principal",
    "init_app",
    "key_prefix",
    "new_key",
    "require_scopes",
]

logger = logging.getLogger(__name__)

# What init_app reads from app.config (and validates: nothing else checks it).
SETTINGS: Final = ("API_KEYS_FILE",)
HEADER: Final = "X-API-Key"
EXTENSION_KEY: Final = "apikeys"
# Read by bearer.require_scopes (when installed): the credentials it accepts besides a token.
CREDENTIALS_KEY: Final = "credentials"
CHALLENGE: Final = 'ApiKey realm="api"'

BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LENGTH: Final = 10
SECRET_LENGTH: Final = 43  # 43 * log2(62) = 256.03 bits
CHECKSUM_LENGTH: Final = 6  # 62**6 > 2**32: every CRC32 fits
MAX_KEY_LENGTH: Final = 256
DEFAULT_EXPIRES_IN: Final = "90d"
MAX_LIFETIME_SECONDS: Final = 3650 * 86400
MAX_FILE_BYTES: Final = 8 * 1024 * 1024
# Well-formed keys remembered by their SHA-256, so the format is not checked on every request.
FORMAT_CACHE_SIZE: Final = 4096
FILE_MODE: Final = 0o600

_KEY_ID: Final = re.compile(r"[0-9A-Za-z]{1,32}")
_PREFIX: Final = re.compile(r"[a-z]+")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# RFC 6749 section 3.3 scope-token.
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_LIFETIME: Final = re.compile(r"([0-9]{1,7})([smhd])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RECORD_FIELDS: Final = frozenset({"id", "name", "scopes", "created", "expires", "sha256"})
_FORM_MIMETYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
# Parameter names that can only mean "here is my key", whatever their value.
_KEY_PARAMETERS: Final = frozenset({"api_key", "apikey", "api-key", "x-api-key", "x_api_key"})
# Compared against when no record has the key's id, so both paths do the same work.
_NO_DIGEST: Final = bytes(32)

P = ParamSpec("P")


class ApiKeysConfigError(ValueError):
    """Raised by init_app() for an unusable API_KEYS_FILE; str() starts with the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


class KeyFileError(ValueError):
    """The key file cannot be used: unreadable, not JSON, or a record out of shape."""


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """The caller behind a valid key: sub "apikey:<key id>", its scopes, its name as client."""

    sub: str
    scopes: frozenset[str]
    client_id: str | None
    key_id: str


@dataclass(frozen=True)
class KeyRecord:
    """One issued key as the key file keeps it: never the key, only its SHA-256."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created: int  # Unix time
    expires: int | None  # Unix time; None: does not expire
    sha256: bytes = field(repr=False)
    principal: ApiKeyPrincipal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once per file load, not once per request.
        caller = ApiKeyPrincipal(f"apikey:{self.key_id}", self.scopes, self.name, self.key_id)
        object.__setattr__(self, "principal", caller)

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created": _iso(self.created),
            "expires": None if self.expires is None else _iso(self.expires),
            "sha256": self.sha256.hex(),
        }


class _Refusal(Exception):
    """A refused request; detail is fixed text for the client, reason is for the log only."""

    def __init__(
        self, status: int, detail: str, reason: str, key_id: str | None = None, **extra: str
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.detail = detail
        self.reason = reason
        self.key_id = key_id
        self.extra = extra


def _malformed(reason: str) -> _Refusal:
    return _Refusal(401, "The API key is malformed", reason)


# --------------------------------------------------------------------------- public API


def init_app(app: Flask, *, prefix: str | None = None) -> ApiKeys:
    """Load API_KEYS_FILE, register the key check and the `api-keys` commands."""
    prefix = key_prefix(app.import_name) if prefix is None else prefix
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"an API key prefix is lower-case letters only, got {prefix!r}")
    keys = ApiKeys(prefix, _key_file_setting(app.config.get("API_KEYS_FILE")))
    app.extensions[EXTENSION_KEY] = keys
    credentials = app.extensions.setdefault(CREDENTIALS_KEY, [])
    # A second init_app replaces the first: two registrations would read as two credentials.
    credentials[:] = [other for other in credentials if not isinstance(other, ApiKeys)]
    credentials.append(keys)
    app.cli.add_command(api_keys_command)
    return keys


def require_scopes(
    *scopes: str,
) -> Callable[[Callable[P, ResponseReturnValue]], Callable[P, ResponseReturnValue]]:
    """Let the view run only for a valid API key holding every scope listed.

    For apps without bearer.py; with it, use bearer.require_scopes, which takes a token or a key.
    """
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"not a valid scope: {scope!r}")
    needed = tuple(dict.fromkeys(scopes))

    def decorator(view: Callable[P, ResponseReturnValue]) -> Callable[P, ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            keys = _current_keys()
            if not keys.present():
                return keys.refuse(_Refusal(401, "An API key is required", "no key"))
            caller = keys.authenticate(needed)
            if isinstance(caller, Response):
                return caller
            return view(*args, **kwargs)

        wrapper.required_scopes = needed  # type: ignore[attr-defined]
        wrapper.api_key_only = True  # type: ignore[attr-defined]
        return wrapper

    return decorator


def current_principal() -> ApiKeyPrincipal:
    """The caller whose key this request's @require_scopes accepted."""
    principal = g.get("principal")
    if not isinstance(principal, ApiKeyPrincipal):
        raise RuntimeError("current_principal() is only usable after an API key was accepted")
    return principal


def key_prefix(import_name: str) -> str:
    """The letters of a package name, lower case: "secure_service.app" -> "secureservice"."""
    letters = "".join(c for c in import_name.partition(".")[0].lower() if "a" <= c <= "z")
    if not letters:
        raise ValueError(f"{import_name!r} has no letters to make an API key prefix from")
    return letters


def new_key(prefix: str, key_id: str | None = None) -> tuple[str, str]:
    """A fresh key of this prefix: (key id, key)."""
    key_id = key_id or _random_base62(KEY_ID_LENGTH)
    body = f"{prefix}_{key_id}_{_random_base62(SECRET_LENGTH)}"
    return key_id, body + checksum(body)


def checksum(text: str) -> str:
    """CRC32 of text as CHECKSUM_LENGTH base62 digits, most significant first."""
    value = zlib.crc32(text.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def _current_keys() -> ApiKeys:
    keys = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(keys, ApiKeys):
        # Fail closed: a protected view without init_app must never run unprotected.
        raise RuntimeError("apikeys.init_app(app) was not called")
    return keys


# --------------------------------------------------------------------------- verification


class ApiKeys:
    """The key check of one app; also the credential bearer.require_scopes hands keys to."""

    def __init__(self, prefix: str, key_file: KeyFile | None) -> None:
        self.prefix = prefix
        self.key_file = key_file
        self._marker = f"{prefix}_"
        self._well_formed: dict[bytes, str] = {}  # SHA-256 of a key -> its key id
        body_length = f"{SECRET_LENGTH + CHECKSUM_LENGTH},{MAX_KEY_LENGTH}"
        self._format = re.compile(
            re.escape(prefix) + r"_(?P<id>[0-9A-Za-z]{1,32})_[0-9A-Za-z]{" + body_length + "}"
        )

    @property
    def enabled(self) -> bool:
        """False when API_KEYS_FILE is unset: every key is then refused."""
        return self.key_file is not None

    def present(self) -> bool:
        """The request carries a key: in the header, or where it must not be (URL, form)."""
        return HEADER in request.headers or self._key_in_url_or_form()

    def authenticate(self, needed_scopes: tuple[str, ...]) -> ApiKeyPrincipal | Response:
        """The caller if the request's key is valid and holds every scope, else the refusal."""
        try:
            principal = self.verify(self._key_from_request())
        except _Refusal as refusal:
            return self.refuse(refusal)
        # Before the scope check, so that the log line of a 403 names the caller too.
        g.principal = principal
        if not principal.scopes.issuperset(needed_scopes):
            detail = "The API key lacks a required scope"
            scope = " ".join(needed_scopes)
            return self.refuse(
                _Refusal(403, detail, "missing scope", principal.key_id, scope=scope)
            )
        return principal

    def verify(self, key: str) -> ApiKeyPrincipal:
        """The caller behind key; raises _Refusal (401) for anything but a valid, live key."""
        digest, key_id = self._checked_format(key)
        records = self.key_file.records() if self.key_file is not None else {}
        record = records.get(key_id)
        if record is None:
            hmac.compare_digest(digest, _NO_DIGEST)
            raise _Refusal(401, "The API key is not valid", "unknown or revoked key id", key_id)
        if not hmac.compare_digest(digest, record.sha256):
            raise _Refusal(401, "The API key is not valid", "wrong secret", key_id)
        if record.expired(time.time()):
            raise _Refusal(401, "The API key expired", "expired", key_id)
        return record.principal

    def _checked_format(self, key: str) -> tuple[bytes, str]:
        """The key's SHA-256 and id, the format checked once per distinct key."""
        if len(key) > MAX_KEY_LENGTH or not key.isascii():
            raise _malformed("too long or not ASCII")
        digest = hashlib.sha256(key.encode("ascii")).digest()
        key_id = self._well_formed.get(digest)
        if key_id is None:
            key_id = self.key_id_of(key)  # raises for a malformed key: never remembered
            if len(self._well_formed) >= FORMAT_CACHE_SIZE:
                self._well_formed.clear()  # made-up keys of the right shape cost a parse, no more
            self._well_formed[digest] = key_id
        return digest, key_id

    def key_id_of(self, key: str) -> str:
        """The id of a well-formed key of this service; raises _Refusal (401) otherwise."""
        if len(key) > MAX_KEY_LENGTH:
            raise _malformed("too long")
        match = self._format.fullmatch(key)
        if match is None:
            raise _malformed("not in this service's key format")
        if checksum(key[:-CHECKSUM_LENGTH]) != key[-CHECKSUM_LENGTH:]:
            raise _malformed("bad checksum")
        return match["id"]

    def refuse(self, refusal: _Refusal) -> Response:
        # The key id only once the checksum proved the key well-formed; never the key itself.
        logger.info(
            "api key refused: status=%s reason=%s key_id=%s",
            refusal.status,
            refusal.reason,
            refusal.key_id or "-",
        )
        response = _problem(refusal.status, refusal.detail, **refusal.extra)
        if refusal.status == 401:
            response.headers["WWW-Authenticate"] = CHALLENGE
        return response

    def _key_from_request(self) -> str:
        # Keys in URLs end up in access logs, proxies and browser history; refused even with
        # a header present, so the client learns of it before the key leaks further.
        if self._key_in_url_or_form():
            raise _Refusal(
                400,
                f"API keys are not accepted in the query string or form body: use {HEADER}",
                "key in URL or form",
            )
        values = request.headers.getlist(HEADER)
        # The server joins repeated headers with commas, which no key contains.
        if len(values) != 1 or "," in values[0]:
            raise _Refusal(400, f"Send exactly one {HEADER} header", "several keys")
        if self.key_file is None:
            raise _Refusal(401, "API keys are not accepted by this service", "API keys are off")
        return values[0].strip(" \t")

    def _key_in_url_or_form(self) -> bool:
        if request.query_string and self._carries_key(request.args.items(multi=True)):
            return True
        return request.mimetype in _FORM_MIMETYPES and self._carries_key(
            request.form.items(multi=True)
        )

    def _carries_key(self, parameters: Iterable[tuple[str, str]]) -> bool:
        marker = self._marker
        for name, value in parameters:
            lowered = name.lower()
            if lowered in _KEY_PARAMETERS or marker in lowered or marker in value.lower():
                return True
        return False


def _problem(status: int, detail: str, **extensions: str) -> Response:
    """RFC 9457 problem+json with the request's id; built here so that this file stands alone."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    if request_id := g.get("request_id"):
        body["request_id"] = request_id
    response = Response(json.dumps(body), status, mimetype="application/problem+json")
    response.headers["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- the key file


_Signature = tuple[int, int, int, int, int]


def _signature(info: os.stat_result) -> _Signature:
    # A rename gives a new inode, an in-place edit new times or size; a Kubernetes Secret
    # update swaps a symlink, which stat follows to the new file.
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class KeyFile:
    """API_KEYS_FILE, re-read whenever it changes; the last good set stays in use otherwise."""

    # How long a worker uses its copy before it stats the file again: a revocation reaches it
    # within this time, and the requests in between cost no system call.
    recheck_seconds: float = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        signature, records = read_key_file(path)
        # Swapped as one tuple, so a reader never sees new records under an old signature.
        self._snapshot: tuple[_Signature, Mapping[str, KeyRecord]] = (signature, records)
        self._failed: object = None  # what was last reported as unusable
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()

    def records(self) -> Mapping[str, KeyRecord]:
        """The current key records by id (a stat per recheck_seconds, a read after a change)."""
        moment = time.monotonic()
        if moment - self._checked_at >= self.recheck_seconds:
            self._checked_at = moment
            self._look_again()
        return self._snapshot[1]

    def _look_again(self) -> None:
        try:
            now = _signature(os.stat(self.path))
        except OSError as error:
            self._keep_last_good(("stat", error.errno), f"cannot read it ({error.strerror})")
            return
        if now == self._snapshot[0]:
            self._failed = None
            return
        if now == self._failed:
            return  # reported already; read again once it changes
        with self._lock:
            if now == self._snapshot[0]:
                return  # another thread read it meanwhile
            try:
                loaded = read_key_file(self.path)
            except KeyFileError as error:
                self._keep_last_good(now, str(error))
                return
            self._snapshot = loaded
            self._failed = None
        logger.info("API keys reloaded from %s: %d key(s)", self.path, len(loaded[1]))

    def _keep_last_good(self, failure: object, problem: str) -> None:
        # One line per new failure, not one per request.
        if failure != self._failed:
            self._failed = failure
            logger.error(
                "API_KEYS_FILE %s: %s; keeping the %d key(s) loaded before",
                self.path,
                problem,
                len(self._snapshot[1]),
            )


def read_key_file(path: Path) -> tuple[_Signature, Mapping[str, KeyRecord]]:
    """The file's signature and its records by id; raises KeyFileError if unusable."""
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyFileError(f"{path} is not a regular file")
            if info.st_mode & stat.S_IWOTH:
                # Whoever can write the file can add a key for themselves.
                raise KeyFileError(f"{path} is writable by every user (chmod 600 it)")
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise KeyFileError(f"cannot read {path} ({error.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return _signature(info), MappingProxyType(parse_key_file(data, str(path)))


def parse_key_file(data: bytes, name: str = "the key file") -> dict[str, KeyRecord]:
    """The records of a key file's text by id; raises KeyFileError naming the first problem."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise KeyFileError(f"{name} is not valid JSON") from None
    if not isinstance(document, dict) or set(document) != {"keys"}:
        raise KeyFileError(f'{name} must hold one JSON object: {{"keys": [...]}}')
    if not isinstance(document["keys"], list):
        raise KeyFileError(f'{name}: "keys" must be a list')
    records: dict[str, KeyRecord] = {}
    for number, item in enumerate(document["keys"], 1):
        record = _record(item, f"{name}: key {number}")
        if record.key_id in records:
            raise KeyFileError(f"{name}: key {number} repeats the id {record.key_id}")
        records[record.key_id] = record
    return records


def _record(item: object, where: str) -> KeyRecord:
    if not isinstance(item, dict) or set(item) != _RECORD_FIELDS:
        raise KeyFileError(f"{where} must have exactly {', '.join(sorted(_RECORD_FIELDS))}")
    key_id, name, scopes, digest = item["id"], item["name"], item["scopes"], item["sha256"]
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise KeyFileError(f"{where}: id must be 1 to 32 base62 characters")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyFileError(f"{where}: name must be 1 to 64 of A-Z a-z 0-9 . _ -")
    if not isinstance(scopes, list) or not all(
        isinstance(scope, str) and _SCOPE_TOKEN.fullmatch(scope) for scope in scopes
    ):
        raise KeyFileError(f"{where}: scopes must be a list of scope names")
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise KeyFileError(f"{where}: sha256 must be 64 lower-case hex digits")
    created = _timestamp(item["created"], f"{where}: created")
    expires = None if item["expires"] is None else _timestamp(item["expires"], f"{where}: expires")
    return KeyRecord(key_id, name, frozenset(scopes), created, expires, bytes.fromhex(digest))


def _timestamp(value: object, where: str) -> int:
    problem = f"{where} must be an ISO 8601 time with its offset, e.g. 2030-01-31T12:00:00Z"
    if not isinstance(value, str):
        raise KeyFileError(problem)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise KeyFileError(problem) from None
    if moment.tzinfo is None:
        raise KeyFileError(problem)
    return int(moment.timestamp())


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_file_setting(value: object) -> KeyFile | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str | os.PathLike):
        raise ApiKeysConfigError("API_KEYS_FILE", "must be a file path")
    try:
        return KeyFile(Path(value))
    except KeyFileError as error:
        raise ApiKeysConfigError("API_KEYS_FILE", str(error)) from None


def write_key_file(path: Path, records: Iterable[KeyRecord]) -> None:
    """Replace the key file atomically (a temporary file renamed over it): mode 0600, or, over
    an existing file, its owner and group and its owner and group read permission."""
    text = json.dumps({"keys": [record.to_json() for record in records]}, indent=2) + "\n"
    # The service may read the file as another user, through its group (`sudo flask api-keys
    # revoke` beside a service user). A replacement it cannot read would leave every worker on
    # the keys it read last, the revoked one included, so whoever could read it still can.
    try:
        existing: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        existing = None
    mode = FILE_MODE if existing is None else FILE_MODE | (stat.S_IMODE(existing.st_mode) & 0o040)
    # Same directory, so the rename is atomic: readers see the old file or the new one whole.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            if existing is not None:
                # Only root may give a file away; anyone may keep one of their own groups.
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), existing.st_uid, existing.st_gid)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # The rename itself must survive a crash too.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Serialise writers of the key file (two `api-keys new` at once must not lose one)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------- commands


@click.group("api-keys")
def api_keys_command() -> None:
    """Issue, list and revoke API keys (kept as hashes in API_KEYS_FILE)."""


@api_keys_command.command("new")
@click.option("--name", required=True, help="Who the key is for, e.g. nightly-export.")
@click.option("--scope", required=True, help='Space separated scopes, e.g. "items:read".')
@click.option(
    "--expires-in",
    default=DEFAULT_EXPIRES_IN,
    show_default=True,
    help="Lifetime: a number and s, m, h or d (90d), or never.",
)
@with_appcontext
def new_command(name: str, scope: str, expires_in: str) -> None:
    """Print a new key (once: only its hash is kept) and add its record to API_KEYS_FILE."""
    key_file = _cli_key_file()
    if not _NAME.fullmatch(name):
        raise click.BadParameter(
            "use 1 to 64 of A-Z a-z 0-9 . _ - (a letter or digit first)", param_hint="--name"
        )
    scopes = _scopes_option(scope)
    lifetime = _lifetime_option(expires_in)
    keys = _current_keys()
    created = int(time.time())
    with _changing(key_file.path) as records:
        key_id, key = new_key(keys.prefix)
        while key_id in records:  # 62**10 ids; a collision is not worth a retry budget
            key_id, key = new_key(keys.prefix)
        expires = None if lifetime is None else created + lifetime
        record = KeyRecord(key_id, name, scopes, created, expires, key_digest(key))
        records[key_id] = record
    click.echo(key)
    until = "never expires" if expires is None else f"expires {_iso(expires)}"
    click.echo(
        f"api-keys: added {key_id} ({name}; {' '.join(sorted(scopes))}; {until}) to "
        f"{key_file.path}. The key above is shown only this once: store it now.",
        err=True,
    )


@api_keys_command.command("list")
@with_appcontext
def list_command() -> None:
    """Show each key's id, name, scopes, creation and expiry (never a key or a hash)."""
    path = _cli_key_file().path
    records = _read_for_cli(path)
    if not records:
        click.echo(f"no API keys in {path}")
        return
    now = time.time()
    rows = [("ID", "NAME", "SCOPES", "CREATED", "EXPIRES")]
    for record in sorted(records.values(), key=lambda record: (record.created, record.key_id)):
        expires = "never" if record.expires is None else _iso(record.expires)
        if record.expired(now):
            expires += " (expired)"
        scopes = " ".join(sorted(record.scopes))
        rows.append((record.key_id, record.name, scopes, _iso(record.created), expires))
    # Every column but the last padded to its widest cell.
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*padded, row[-1]]))


@api_keys_command.command("revoke")
@click.argument("key_id")
@with_appcontext
def revoke_command(key_id: str) -> None:
    """Remove a key's record: every worker refuses the key within a second, no restart."""
    path = _cli_key_file().path
    with _changing(path) as records:
        record = records.pop(key_id, None)
        if record is None:
            raise click.ClickException(f"no key with id {key_id!r} in {path}; nothing changed")
    click.echo(f"api-keys: revoked {key_id} ({record.name}) in {path}; refused within a second")


def _cli_key_file() -> KeyFile:
    key_file = _current_keys().key_file
    if key_file is None:
        raise click.ClickException(
            "API_KEYS_FILE is not set, so API keys are off: set it to the key file's path "
            '(a new one holds {"keys": []}) and run the command again'
        )
    return key_file


def _read_for_cli(path: Path) -> dict[str, KeyRecord]:
    try:
        return dict(read_key_file(path)[1])
    except KeyFileError as error:
        raise click.ClickException(f"API_KEYS_FILE: {error}; nothing changed") from None


@contextlib.contextmanager
def _changing(path: Path) -> Iterator[dict[str, KeyRecord]]:
    """The file's records to change in place; written back whole, or not at all."""
    try:
        with _exclusive(path.parent):
            records = _read_for_cli(path)
            yield records
            write_key_file(path, records.values())
    except OSError as error:
        raise click.ClickException(
            f"cannot write {path} ({error.strerror}); nothing changed"
        ) from None


def _scopes_option(value: str) -> frozenset[str]:
    scopes = value.split()
    if not scopes:
        raise click.BadParameter("give at least one scope, e.g. items:read", param_hint="--scope")
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise click.BadParameter(f"{scope!r} is not a scope name", param_hint="--scope")
    return frozenset(scopes)


def _lifetime_option(value: str) -> int | None:
    if value == "never":
        return None
    match = _LIFETIME.fullmatch(value)
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]] if match else 0
    if not 0 < seconds <= MAX_LIFETIME_SECONDS:
        raise click.BadParameter(
            "use a number and s, m, h or d (e.g. 90d; at most 3650d), or never",
            param_hint="--expires-in",
        )
    return seconds
