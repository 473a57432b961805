"""JSON lines for the app and gunicorn, one request id per request, everything redacted.

Every line is one JSON object: time (ISO 8601, UTC), level, logger, message, request_id and,
for lines written during a request, method, path (never the query string), client (the real
address, request.remote_addr after ProxyFix) and sub (the authenticated subject, when known).
Access lines add status and duration_ms. All of it passes through redaction.RedactingFilter.

Request id: nginx generates one ($request_id) and sends it as X-Request-ID. The app accepts an
incoming value only if it looks like an id (8 to 128 of A-Z a-z 0-9 . _ -), otherwise makes
its own, keeps it in flask.g.request_id, puts it on every line about the request and returns
it as X-Request-ID.

Config read by init_app: LOG_LEVEL (default "INFO").
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from flask import Flask, Response, g, has_request_context, request
from flask.logging import default_handler

from .apikeys import key_prefix
from .redaction import RedactingFilter, Redactor
from .transport import DEFAULT_FORWARDED_ALLOW_IPS, TrustedProxies

# What init_app reads from app.config (and validates).
SETTINGS = ("LOG_LEVEL",)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")
# Fields a line about a request carries, in the order they are written.
REQUEST_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "client", "sub")
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

access_logger = logging.getLogger(f"{__package__ or 'app'}.access")
# This service's API keys carry its prefix (apikeys.py): recognised wherever they turn up.
KEY_PREFIXES = (key_prefix(__package__ or "app"),)
REDACTOR = Redactor(key_prefixes=KEY_PREFIXES)


def init_app(app: Flask) -> None:
    """JSON logging for the process (unless gunicorn configured it), request ids, access lines."""
    configure_logging(read_log_level(app.config.get("LOG_LEVEL")))
    # Flask's own handler writes unredacted text; records must reach the root handler instead.
    app.logger.removeHandler(default_handler)
    app.before_request(_start_request)
    app.after_request(_finish_request)


def read_log_level(value: object) -> str:
    """LOG_LEVEL as a logging level name (any case); unset means INFO."""
    level = str(value or "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def configure_logging(level: str = "INFO") -> logging.Handler:
    """Make sure the root logger writes JSON through the redaction filter; idempotent.

    Under gunicorn, gunicorn_logconfig_dict() already installed the handler: it is reused.
    Every other handler already on the root logger gets the redaction filter too.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = next((h for h in root.handlers if isinstance(h.formatter, JsonFormatter)), None)
    if handler is None:
        handler = CurrentStderrHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    if not any(isinstance(f, RequestContextFilter) for f in handler.filters):
        # First, so the request fields it adds are scrubbed with the rest.
        handler.filters.insert(0, RequestContextFilter())
    for each in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in each.filters):
            each.addFilter(RedactingFilter(REDACTOR))
    return handler


def get_request_id() -> str:
    """The current request's id: nginx's X-Request-ID when well-formed, else a fresh one."""
    request_id = g.get("request_id")
    if not isinstance(request_id, str):
        request_id = _valid_request_id(request.headers.get(REQUEST_ID_HEADER))
        request_id = request_id or secrets.token_hex(16)
        g.request_id = request_id
    return request_id


def _valid_request_id(value: str | None) -> str | None:
    if value and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    return None


def _start_request() -> None:
    get_request_id()
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = get_request_id()
    started = g.get("request_started")
    duration_ms = round((time.perf_counter() - started) * 1000, 3) if started else None
    access_logger.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={"status": response.status_code, "duration_ms": duration_ms},
    )
    return response


def _current_sub() -> str | None:
    # bearer.py keeps the verified caller on g (bearer_principal; principal in other apps);
    # read it by duck typing so this module does not depend on bearer.py.
    principal = g.get("bearer_principal") or g.get("principal")
    sub = getattr(principal, "sub", None)
    return sub if isinstance(sub, str) else None


class RequestContextFilter(logging.Filter):
    """Adds request_id, method, path, client and sub to records written during a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            fields = record.__dict__
            fields.setdefault("request_id", get_request_id())
            fields.setdefault("method", request.method)
            # Scrubbed here too: when another handler's filter scrubbed the record first, before
            # this field existed, the record is marked done and no filter looks at it again.
            fields.setdefault("path", REDACTOR.redact(request.path))
            fields.setdefault("client", request.remote_addr)
            fields.setdefault("sub", _current_sub())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Redacts the record itself, so it is safe on any handler.

    gunicorn's access records (whose arguments are its atoms) become the same shape as the
    app's access lines; their client is the X-Forwarded-For entry set by the trusted proxy,
    counted like ProxyFix does (trusted_proxy_hops from the right), and only when the peer is
    one of the proxies (forwarded_allow_ips, as transport.py judges it for the app).
    """

    def __init__(
        self,
        *,
        trusted_proxy_hops: int = 1,
        forwarded_allow_ips: str | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        super().__init__()
        self.trusted_proxy_hops = trusted_proxy_hops
        self.proxies = TrustedProxies.parse(forwarded_allow_ips or DEFAULT_FORWARDED_ALLOW_IPS)
        self._redacting = RedactingFilter(redactor or REDACTOR)

    def format(self, record: logging.LogRecord) -> str:
        self._redacting.filter(record)
        fields = record.__dict__
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            # Built from single atoms: the access format string may hold the query or referer.
            fields = {**fields, **self._gunicorn_access_fields(record.args)}
            message = f"{fields['method']} {fields['path']} {fields['status']}"
        else:
            message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        entry["request_id"] = fields.get("request_id")
        for name in REQUEST_FIELDS:
            if name in fields:
                entry[name] = fields[name]
        if "sub" in entry and has_request_context():
            # The caller this service verified, never a credential: redaction would take the
            # sub of an API key, "apikey:<key id>", for an "apikey: <secret>" pair.
            entry["sub"] = _current_sub()
        for name, value in fields.items():
            if name not in _STANDARD_ATTRIBUTES and name not in entry and name[:1] != "_":
                entry[name] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str)

    def _gunicorn_access_fields(self, atoms: Mapping[str, Any]) -> dict[str, Any]:
        status = str(_atom(atoms, "s"))
        micros = _atom(atoms, "D")
        request_id = _valid_request_id(_atom(atoms, "{x-request-id}o")) or _valid_request_id(
            _atom(atoms, "{x-request-id}i")
        )
        return {
            "request_id": request_id,
            "method": _atom(atoms, "m"),
            "path": _atom(atoms, "U"),
            "status": int(status) if status.isdigit() else None,
            "duration_ms": micros / 1000 if isinstance(micros, int) else None,
            "client": self._forwarded_client(atoms),
            "bytes": _atom(atoms, "B"),
        }

    def _forwarded_client(self, atoms: Mapping[str, Any]) -> str | None:
        peer = _atom(atoms, "h")
        peer = peer if isinstance(peer, str) else None
        hops = self.trusted_proxy_hops
        forwarded = _atom(atoms, "{x-forwarded-for}i")
        if hops < 1 or not isinstance(forwarded, str) or peer not in self.proxies:
            return peer
        # As ProxyFix: the hops-th address from the right, else the peer itself.
        addresses = [part.strip() for part in forwarded.split(",")]
        return addresses[-hops] if len(addresses) >= hops else peer


def _atom(atoms: Mapping[str, Any], name: str) -> Any:
    """One gunicorn atom, None when absent (gunicorn itself answers "-" for those)."""
    value = atoms.get(name)
    return None if value in ("-", "") else value


class CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time of the write.

    Test runners swap sys.stderr for each test; a handler holding the stream it was created
    with would then write to a closed capture file.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def gunicorn_logconfig_dict(
    level: str = "INFO",
    *,
    accesslog: str | None = "-",
    errorlog: str | None = "-",
    trusted_proxy_hops: int = 1,
    forwarded_allow_ips: str | None = None,
    extra_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its error and access logs, and the app's, as JSON lines.

    accesslog/errorlog take gunicorn's values: "-" for stdout/stderr, a path for a file,
    None to turn the access log off. The app's own lines go where the error log goes.
    """
    filters = ["request_context", "redact"]

    def handler(target: str | None, stream: str) -> dict[str, Any]:
        if target is None:
            return {"class": "logging.NullHandler"}
        if target == "-":
            return {
                "class": "logging.StreamHandler",
                "stream": f"ext://sys.{stream}",
                "formatter": "json",
                "filters": filters,
            }
        # WatchedFileHandler reopens the file after logrotate moves it.
        return {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": target,
            "formatter": "json",
            "filters": filters,
        }

    # One redactor (one compiled pattern) shared by the filter and the formatter.
    redactor = (
        Redactor(extra_keys=extra_keys, key_prefixes=KEY_PREFIXES) if extra_keys else REDACTOR
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_context": {"()": RequestContextFilter},
            "redact": {"()": RedactingFilter, "redactor": redactor},
        },
        "formatters": {
            "json": {
                "()": JsonFormatter,
                "trusted_proxy_hops": trusted_proxy_hops,
                "forwarded_allow_ips": forwarded_allow_ips,
                "redactor": redactor,
            }
        },
        "handlers": {
            "error": handler(errorlog or "-", "stderr"),
            "access": handler(accesslog, "stdout"),
        },
        "root": {"level": level.upper(), "handlers": ["error"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["error"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }
