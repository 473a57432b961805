"""JSON lines for the app and gunicorn, one request id per request, everything redacted.

Every line is one JSON object: time (ISO 8601, UTC), level, logger, message, request_id and,
for lines written during a request, method, path (never the query string), client (the real
address, request.remote_addr after ProxyFix) and sub (the authenticated subject, when known).
Access lines add status and duration_ms. JsonFormatter scrubs every record with redaction.py
before it writes a line; other handlers on the root logger get redaction.RedactingFilter.

Request id: nginx generates one ($request_id) and sends it as X-Request-ID. The app accepts an
incoming value only if it looks like an id (8 to 128 of A-Z a-z 0-9 . _ -), otherwise makes
its own, keeps it in flask.g.request_id, puts it on every line about the request and returns
it as X-Request-ID.

Config read by init_app: LOG_LEVEL (default "INFO").
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from types import NoneType
from typing import Any, TextIO

from flask import Flask, Response, g, has_request_context, request
from flask.globals import request_ctx
from flask.logging import default_handler

from .apikeys import key_prefix
from .redaction import MARKER, RedactingFilter, Redactor
from .transport import DEFAULT_FORWARDED_ALLOW_IPS, TrustedProxies

# What init_app reads from app.config (and validates).
SETTINGS = ("LOG_LEVEL",)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")
# Fields a line about a request carries, in the order they are written.
_PATH_KEPT = re.compile(r"/[A-Za-z0-9/._~-]*")
_CREDENTIAL_SEGMENT = re.compile(r"/(?:eyJ|(?=[^/]*[0-9])(?=[^/]*[A-Za-z])[^/]{24})")
REQUEST_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "client", "sub")
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_INIT_COUNT = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
# Record attributes that are not extra fields, and names the line itself uses.
_NOT_EXTRA = (
    _STANDARD_ATTRIBUTES | {*REQUEST_FIELDS, "time", "level", "logger", "exception"} | {"stack"}
)
_REMEMBERED = 512
# How a template writes a value of each kind it takes as it is (None: null, no placeholder).
_TEMPLATE_SPECS = {str: '"%s"', int: "%d", float: "%r", NoneType: "null"}
# A template, then getters of the values it writes, of the text to look at, and where floats
# sit (NaN and infinity are not JSON).
_Shape = tuple[
    str,
    Callable[[list[Any]], tuple[Any, ...]],
    Callable[[list[Any]], tuple[Any, ...]],
    tuple[int, ...],
]
# Objects a log field can hold that are not JSON: written as their str().
_ENCODER = json.JSONEncoder(default=str)
# json's own string escaping (C): ASCII only, so every line is valid UTF-8 whatever it holds.
_encode_string = json.encoder.encode_basestring_ascii

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
    """Make sure the root logger writes redacted JSON lines; idempotent.

    Under gunicorn, gunicorn_logconfig_dict() already installed the handler: it is reused.
    Every other handler already on the root logger gets the redaction filter.
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
        # JsonFormatter scrubs what it writes itself, once; other formatters need the filter.
        if isinstance(each.formatter, JsonFormatter):
            continue
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
    g.request_started = time.perf_counter()
    get_request_id()


def _finish_request(response: Response) -> Response:
    request_id = get_request_id()
    response.headers[REQUEST_ID_HEADER] = request_id
    if access_logger.isEnabledFor(logging.INFO):
        started = g.get("request_started")
        duration_ms = round((time.perf_counter() - started) * 1000, 3) if started else None
        # The request itself, not its proxy: one context look-up instead of one per attribute.
        current = request_ctx.request
        method, path, status = current.method, loggable_path(current.path), response.status_code
        fields = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "client": current.remote_addr,
            "sub": _current_sub(),
        }
        # makeRecord + handle is logger.info without the look up the stack for the caller's
        # file and line, which no line shows: one access line per request, so it counts.
        access_logger.handle(
            access_logger.makeRecord(
                access_logger.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %s",
                (method, path, status),
                None,
                extra=fields,
            )
        )
    return response


def loggable_path(path: str) -> str:
    """The path as logged: cut where it might start holding a secret, "[REDACTED]" marking the cut.

    A secret can sit anywhere in a path, not only in a query string: after a "?" or "%3F" that a
    decoder turned into one, after ";" (password=...), "=", "+" or a space, or as a whole
    segment (a JWT, a bearer token, an API key). So the path is kept up to the first character
    outside letters, digits and "/._~-", and up to the first segment that looks like a
    credential: one starting like a JWT or JWS ("eyJ", a base64url '{"'), or one of 24
    characters or more holding both letters and digits. nginx's access log cuts it the same way
    (deploy/nginx/templates/default.conf.template), before percent-decoding.
    """
    kept = _PATH_KEPT.match(path)
    end = kept.end() if kept else 0
    credential = _CREDENTIAL_SEGMENT.search(path, 0, end)
    if credential is not None:
        end = credential.start() + 1
    return path if end == len(path) else path[:end] + MARKER


def _loggable_atom_path(path: object) -> object:
    return loggable_path(path) if isinstance(path, str) else path


def _current_sub() -> str | None:
    # bearer.py keeps the verified caller on g (bearer_principal; principal in other apps);
    # read it by duck typing so this module does not depend on bearer.py.
    principal = g.get("bearer_principal") or g.get("principal")
    sub = getattr(principal, "sub", None)
    return sub if isinstance(sub, str) else None


class RequestContextFilter(logging.Filter):
    """Adds request_id, method, path, client and sub to records written during a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Only what the record does not bring itself (access lines bring all of it).
        if has_request_context():
            fields = record.__dict__
            if "request_id" not in fields:
                fields["request_id"] = get_request_id()
            if "method" not in fields:
                fields["method"] = request.method
            if "path" not in fields:
                # Scrubbed here too: when another handler's filter scrubbed the record first,
                # before this field existed, the record is marked done and no filter looks again.
                fields["path"] = REDACTOR.redact(loggable_path(request.path))
            if "client" not in fields:
                fields["client"] = request.remote_addr
            if "sub" not in fields:
                fields["sub"] = _current_sub()
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
        self._redactor = self._redacting.redactor
        # The last second written ("2026-11-22T05:52:37"): lines come many to a second.
        self._second: tuple[int, str] = (-1, "")
        # A line's %-template and the fields it writes, per level, logger and field names:
        # the same few shapes come back on every line.
        self._layouts: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}
        # The same for records with nothing to scrub or escape, per kinds of value too.
        self._shapes: dict[tuple[Any, ...], _Shape | None] = {}

    def format(self, record: logging.LogRecord) -> str:
        line = self._line_if_nothing_to_do(record)
        if line is not None:
            return line
        self._redacting.filter(record)
        fields = record.__dict__
        names = _added_names(fields)
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            # From single atoms: the access format string may hold the query or referer.
            atoms = self._gunicorn_access_fields(record.args)
            fields = {**fields, **atoms}
            names += [name for name in atoms if name not in names]
            message = f"{fields['method']} {fields['path']} {fields['status']}"
        else:
            message = record.getMessage()
        if "sub" in fields and has_request_context():
            # The caller this service verified, never a credential: redaction would take the
            # sub of an API key, "apikey:<key id>", for an "apikey: <secret>" pair.
            fields["sub"] = _current_sub()
        template, order = self._layout(record, names)
        tail = ""
        if record.exc_text:
            tail += ', "exception": ' + _encode_string(record.exc_text)
        if record.stack_info:
            tail += ', "stack": ' + _encode_string(record.stack_info)
        values = [
            _encode_string(value) if value.__class__ is str else _json_value(value)
            for value in map(fields.__getitem__, order)
        ]
        return template % (
            self._second_text(record.created),
            record.msecs,
            _encode_string(message),
            *values,
            tail,
        )

    def _line_if_nothing_to_do(self, record: logging.LogRecord) -> str | None:
        """The line of a record with nothing to scrub or escape, else None: the common case.

        Such a record has no exception, positional arguments, text that is printable ASCII
        without quotes or backslashes and holds nothing that might be a secret, and fields of
        plain kinds (text, whole numbers, finite floats, None) not named like a secret. Its line
        comes from a %-template kept per shape of record (level, logger, field names and kinds
        of value): a handful of C calls instead of work per field.
        """
        # Not a mapping argument (gunicorn's access atoms hold every header), no exception.
        if record.args.__class__ is not tuple or record.exc_info or record.exc_text:
            return None
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - the redaction filter copes with a broken format
            return None
        fields = record.__dict__
        values = list(islice(fields.values(), _INIT_COUNT, None))
        key = (
            record.levelname,
            record.name,
            *islice(fields, _INIT_COUNT, None),
            *map(type, values),
        )
        try:
            shape = self._shapes[key]
        except KeyError:
            shape = self._learn_shape(key, record, values)
        if shape is None or record.stack_info:
            return None
        template, arguments, texts, floats = shape
        text = " ".join((message, *texts(values)))
        plain = text.isascii() and text.isprintable() and '"' not in text and "\\" not in text
        if not plain or self._redactor.might_hold_secrets(text):
            return None
        for position in floats:
            if not math.isfinite(values[position]):
                return None
        line: str = template % (
            self._second_text(record.created),
            record.msecs,
            message,
            *arguments(values),
        )
        return line

    def _learn_shape(
        self, key: tuple[Any, ...], record: logging.LogRecord, values: list[Any]
    ) -> _Shape | None:
        """The template of a shape of record (see _line_if_nothing_to_do), None if it has none.

        Template placeholders: the second, the milliseconds, the message, then each field
        that has a value (None is written as null by the template itself).
        """
        names = list(record.__dict__)[_INIT_COUNT:]
        kinds = [type(value) for value in values]
        public = [index for index, name in enumerate(names) if name[:1] != "_"]
        shape: _Shape | None = None
        if all(kinds[index] in _TEMPLATE_SPECS for index in public) and not any(
            self._redactor.is_sensitive_key(names[index]) for index in public
        ):
            order = [names.index(name) for name in REQUEST_FIELDS if name in names]
            order += [index for index in public if names[index] not in _NOT_EXTRA]
            text = [
                '{"time": "%s.%03dZ", "level": ',
                _encode_string(record.levelname).replace("%", "%%"),
                ', "logger": ',
                _encode_string(record.name).replace("%", "%%"),
                ', "message": "%s"',
            ]
            if "request_id" not in names:
                text.append(', "request_id": null')
            for index in order:
                name = _encode_string(names[index]).replace("%", "%%")
                text.append(f", {name}: {_TEMPLATE_SPECS[kinds[index]]}")
            text.append("}")
            shape = (
                "".join(text),
                _getter([index for index in order if kinds[index] is not NoneType]),
                _getter([index for index in public if kinds[index] is str]),
                tuple(index for index in public if kinds[index] is float),
            )
        # Bounded: the program names its fields and loggers, but it may make many.
        if len(self._shapes) < _REMEMBERED:
            self._shapes[key] = shape
        return shape

    def _second_text(self, created: float) -> str:
        second = int(created)
        cached, text = self._second
        if second != cached:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            # One tuple: threads sharing the formatter never pair a second with another's text.
            self._second = (second, text)
        return text

    def _layout(self, record: logging.LogRecord, names: list[str]) -> tuple[str, tuple[str, ...]]:
        """The %-template of a line and the fields whose JSON values fill it, in order.

        Placeholders: the second, the milliseconds, the message, each field, the exception
        and stack (or nothing). Fields go in REQUEST_FIELDS order, then any other in the order
        given; request_id is always there (null outside a request).
        """
        key = (record.levelname, record.name, *names)
        layout = self._layouts.get(key)
        if layout is not None:
            return layout
        order = [name for name in REQUEST_FIELDS if name in names]
        order += [name for name in names if name not in _NOT_EXTRA and name[:1] != "_"]
        text = [
            '{"time": "%s.%03dZ", "level": ',
            _encode_string(record.levelname).replace("%", "%%"),
            ', "logger": ',
            _encode_string(record.name).replace("%", "%%"),
            ', "message": %s',
        ]
        if "request_id" not in order:
            text.append(', "request_id": null')
        text += [f", {_encode_string(name).replace('%', '%%')}: %s" for name in order]
        text.append("%s}")
        layout = ("".join(text), tuple(order))
        # Bounded: the program names its fields and loggers, but it may make many.
        if len(self._layouts) < _REMEMBERED:
            self._layouts[key] = layout
        return layout

    def _gunicorn_access_fields(self, atoms: Mapping[str, Any]) -> dict[str, Any]:
        status = str(_atom(atoms, "s"))
        micros = _atom(atoms, "D")
        request_id = _valid_request_id(_atom(atoms, "{x-request-id}o")) or _valid_request_id(
            _atom(atoms, "{x-request-id}i")
        )
        return {
            "request_id": request_id,
            "method": _atom(atoms, "m"),
            "path": _loggable_atom_path(_atom(atoms, "U")),
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


def _getter(positions: list[int]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """A function that picks these positions of a list, as a tuple (itemgetter, in C)."""
    if not positions:
        return lambda _: ()
    if len(positions) == 1:
        (position,) = positions
        return lambda values: (values[position],)
    return operator.itemgetter(*positions)


def _added_names(fields: Mapping[str, object]) -> list[str]:
    """Names a record got after LogRecord.__init__ (extra=, filters, formatters), in order.

    LogRecord.__init__ sets its attributes before anything else can add one: those come after
    them, and slicing finds them faster than a set difference. (A field that an odd filter
    deleted and set again would be missed, and then neither looked at nor written.)
    """
    return list(fields)[_INIT_COUNT:]


def _json_value(value: object) -> str:
    """json.dumps(value, default=str) for one field, faster for the plain values lines hold.

    Non-finite floats become strings, so that a line is always valid JSON (json.dumps would
    write NaN); objects json does not know are written as their str().
    """
    if isinstance(value, str):
        return _encode_string(value)
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        number = float.__repr__(value)
        return number if math.isfinite(value) else f'"{number}"'
    return _ENCODER.encode(value)


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
    # JsonFormatter scrubs each record itself, after request_context added its fields.
    filters = ["request_context"]

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
