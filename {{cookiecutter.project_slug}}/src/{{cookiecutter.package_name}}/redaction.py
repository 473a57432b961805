"""Scrub credentials out of log records before any handler writes them.

Standalone: this file imports only the standard library (``logging``, ``re`` and friends), so
it can be copied as is into any Python application, Flask or not.

What is replaced by ``[REDACTED]`` (the rest of the line stays readable):

* values of the headers Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key and
  the webhook signature headers, whether written ``Name: value``, ``'Name': 'value'`` (dict
  repr), ``('Name', 'value')`` (header list repr) or ``HTTP_NAME=value`` (WSGI environ);
* ``Bearer <token>`` (any word after "Bearer" but a few of prose: ``Bearer tokens``),
  ``Basic <credentials>`` (base64 of ``user:password``), anything shaped like a JWT/JWS/JWE
  (``eyJ...``), ``whsec_`` secrets, Stripe ``sk_``/``rk_`` keys and GitHub tokens;
* signature values: Standard Webhooks ``v1,<base64>``, GitHub ``sha256=<hex>``, Stripe
  ``v1=<hex>`` (the ``t=`` timestamp is kept);
* values of sensitive keys in query strings, form bodies, JSON, dict reprs, ``key=value``
  text, ``repr(request.args)`` / ``repr(request.form)`` (``[('password', '...')]``) and lists
  of values (``parse_qs()``: ``{'password': ['...']}``): see SENSITIVE_KEYS
  (case-insensitive; ``-`` and ``_`` are interchangeable). Keys in SUFFIX_KEYS also match as
  the last part of a longer name (``csrf_token``, ``db-password``);
* the password in a URL (``redis://:pw@host``, ``postgres://user:pw@db/x``);
* the body of a PEM private key block (``-----BEGIN [RSA |EC |...]PRIVATE KEY-----``), to
  the ``-----END`` line or, when that is missing, to the end of the text;
* API keys of the ``<prefix>_<key id>_<secret>`` shape for the prefixes given as
  ``Redactor(key_prefixes=...)`` (the prefix and key id stay, to tell which key leaked),
  wherever they appear: a path segment, a message, a JSON value.

Use::

    import logging
    from redaction import install

    logging.basicConfig(level=logging.INFO)
    install()                       # every handler of the root logger now scrubs records
    install(my_handler, extra_keys=("ssn", "otp"))
    install(key_prefixes=("myservice",))  # API keys myservice_<id>_<secret>

Install on handlers, not on a logger: a logger's filters do not see records that propagate
from child loggers, a handler's filters see every record it is about to write.

As a pipe, for logs written by other programs (nginx's error log quotes the request line,
query string included, when an upstream fails)::

    nginx 2> >(python -m redaction [extra_key ...] >> var/log/nginx-error.log)
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "MARKER",
    "SENSITIVE_HEADERS",
    "SENSITIVE_KEYS",
    "SUFFIX_KEYS",
    "RedactingFilter",
    "RedactingFormatter",
    "Redactor",
    "install",
    "redact",
]

MARKER = "[REDACTED]"

# Edit this tuple to add a key for the whole service (app and gunicorn use the defaults).
SENSITIVE_KEYS: tuple[str, ...] = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "private_key",
    "key",
    "signature",
    "code",
)
# Keys that also match as the last part of a longer name (csrf_token, x-api-key, db_password).
# "key" and "code" are left out on purpose: sort_key, public_key, status_code and zip-code are
# not secrets. For the same reason "key" and "code" only match as `key=...` or as a quoted key
# (`"code": ...`), never as `code: ...` in prose ("exit code: 1").
SUFFIX_KEYS: frozenset[str] = frozenset(
    {"token", "password", "passwd", "secret", "api_key", "apikey", "signature", "private_key"}
)
SENSITIVE_HEADERS: tuple[str, ...] = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "webhook-signature",
    "x-hub-signature",
    "x-hub-signature-256",
    "stripe-signature",
)

_VALUE_CHARS = r"""[^\s&;,'"\\<>()\[\]{}]+"""
_QUOTED_VALUE = r"""
      b?"(?:[^"\\]|\\.)*"               # "double quoted", b"bytes"
    | b?'(?:[^'\\]|\\.)*'               # 'single quoted', b'bytes'
    | \\"(?:[^"\\]|\\[^"])*\\"          # \"quoted inside a JSON string\"
"""
# A list of strings: parse_qs() output, MultiDict.to_dict(flat=False), a JSON array. Quoted
# items only, so that the marker itself ("[REDACTED]") is not taken for a list. Each item has
# one way to match, so an unclosed list costs one pass and one step back per item; atomic, so
# a matched list is never re-split when what follows it does not fit.
_LIST_VALUE = r"""(?>\[\s*(?:@QUOTED@)(?:\s*,\s*(?:@QUOTED@))*\s*,?\s*\])"""
# A PEM private key block (PKCS#1 "RSA", SEC 1 "EC", PKCS#8 "ENCRYPTED", "OPENSSH", PGP). The
# body runs to the END line, or to the end of the text when a truncated record has none.
_PEM_BEGIN = r"-----BEGIN[ ](?:[A-Z0-9]+[ ]){0,3}PRIVATE[ ]KEY(?:[ ]BLOCK)?-----"
_PEM_END = r"-----END[ ](?:[A-Z0-9]+[ ]){0,3}PRIVATE[ ]KEY(?:[ ]BLOCK)?-----"
_PEM_BLOCK = rf"(?:{_PEM_BEGIN}[\s\S]*?(?:{_PEM_END}|(?=\r?\n?\Z)))"
# Words that follow "Bearer" in prose and in challenges, never as a token: any other word
# after "Bearer " is taken for one, however short ("Bearer abcdefghij"). Fail closed: a word
# missing here costs a redacted word of prose, not a leaked token.
_BEARER_PROSE: tuple[str, ...] = (
    "a", "access", "an", "and", "are", "as", "auth", "authentication", "authorization", "be",
    "but", "by", "challenge", "credential", "credentials", "endpoint", "error", "errors", "for",
    "format", "formats", "from", "header", "headers", "in", "is", "jwt", "jwts", "missing",
    "must", "not", "of", "only", "or", "parsing", "prefix", "realm", "required", "scheme",
    "schemes", "scope", "should", "string", "strings", "the", "to", "token", "tokens", "type",
    "validation", "value", "verification", "was", "with",
)  # fmt: skip
_QUOTES = ('\\"', '"', "'")
_KEY_QUOTE_GROUP = {"header": "hq", "pair": "kq", "short": "sq", "pair_tuple": "tq"}
_NOTHING = "(?!)"
# Nested containers in extra fields are scrubbed this deep; deeper ones are str()-ed whole.
_MAX_DEPTH = 4
_NAMES_REMEMBERED = 1024
# Each branch is a named group <kind> holding <kind>_value, the part that gets replaced; re
# tries the branches at each position in order, so a header line wins over the bearer token
# inside it, and a key=value over the JWT that is its value. Placeholders (@NAME@) instead of
# an f-string: its doubled braces would clash with the template engine this file goes through.
_PATTERN = r"""
(?P<header>
    (?<![\w-])(?P<hq>\\?["']?)(?:http_)?(?:@HEADERS@)(?P=hq)
    (?:[ \t]*[:=][ \t]*|(?<=["']),[ \t]*(?=\\?["']))
    (?P<header_value>@LIST@|@QUOTED@|[^\r\n"'\\]+)
)
| (?P<pair>
    @KEY_START@(?P<kq>\\?["']?)
    (?:(?:[a-z0-9]+[-_.])+(?:@SUFFIX_KEYS@)|@PLAIN_KEYS@)
    (?P=kq)(?:\s*[:=]\s*|%3d)
    (?P<pair_value>@PEM@|@LIST@|@QUOTED@|@VALUE@)
)
| (?P<short>
    @KEY_START@
    (?:(?P<sq>\\?["'])(?:@SHORT_KEYS@)(?P=sq)\s*[:=]\s*|(?:@SHORT_KEYS@)(?:=|%3d))
    (?P<short_value>@PEM@|@LIST@|@QUOTED@|@VALUE@)
)
| (?P<pair_tuple>
    # [('password', 'hunter2'), ...]: repr() of a MultiDict (request.args, request.form) or
    # of its .items() / .lists(). Only 2-tuples in a list, so that a tuple of field names
    # ("missing ('password', 'email')") stays readable. The one-character test first: cheap.
    (?<=\()(?:(?<=[\[(]\()|(?<=,[ ]\())(?P<tq>\\?["'])
    (?:(?:[a-z0-9]+[-_.])+(?:@SUFFIX_KEYS@)|@PLAIN_KEYS@|@SHORT_KEYS@)
    (?P=tq),[ \t]*
    (?P<pair_tuple_value>@LIST@|@QUOTED@|@VALUE@)(?=[ \t]*\))
)
| (?P<bearer>
    (?<![\w-])bearer[ \t]+
    (?P<bearer_value>
        # A word of prose, maybe hyphenated ("token-based") or ending a sentence ("tokens.").
        (?!(?:@BEARER_PROSE@)(?:-[a-z]+)*\.*(?![a-z0-9._~+/=-]))
        # Not a challenge's auth-param (Bearer realm="api", error=invalid_token).
        [a-z0-9._~+/-]+=*(?![a-z0-9._~+/="'-])
    )
)
| (?P<basic>
    # The value must also decode to printable "user:password" (checked in _replace), and be
    # 4 bytes or more ("a:bc"): words of prose ("basic Only") stay.
    (?<![\w-])basic[ \t]+(?P<basic_value>(?-i:[A-Za-z0-9+/]{6,}={0,2}))(?![\w+/=.-])
)
| (?P<url>
    # scheme://user:password@host: the password goes, up to the last "@" before the host
    # (an unescaped "@" in it must not leave the rest). The scheme starts a word, so a long
    # run of letters is scanned once, not once per letter.
    (?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^\s/?#:"\\<>\[\]{}]*:
    (?P<url_value>[^\s/?#"\\<>\[\]{}]+)@
)
| (?P<pem>
    @PEM_BEGIN@(?P<pem_value>[\s\S]*?)(?:@PEM_END@|(?=\r?\n?\Z))
)
| (?P<jwt>(?P<jwt_value>(?-i:@JWT_START@eyJ@B64@{8,}\.@B64@*\.@B64@*(?:\.@B64@*\.@B64@*)?)))
| (?P<vendor>
    (?P<vendor_value>(?-i:(?<![\w-])
        (?:whsec_[A-Za-z0-9+/=]+
        |[sr]k_(?:live|test)_[A-Za-z0-9]{8,}
        |gh[pousr]_[A-Za-z0-9]{30,}
        |github_pat_[A-Za-z0-9_]{30,})
    ))
)
| (?P<api_key>
    # <prefix>_<key id>_<secret>, "_" perhaps percent-encoded; the secret goes, whatever its
    # length beyond a few characters (a truncated key is still most of a key).
    (?<![a-z0-9])(?:@KEY_PREFIXES@)(?:_|%5f)[a-z0-9]{1,32}(?:_|%5f)
    (?P<api_key_value>[a-z0-9]{16,})
)
| (?P<standard_sig>(?<![\w-])v1a?,(?P<standard_sig_value>[a-z0-9+/]{16,}={0,2}))
| (?P<github_sig>(?<![\w-])sha(?:1|256|512)=(?P<github_sig_value>[0-9a-f]{32,}))
| (?P<stripe_sig>(?<![\w-])v[01]=(?P<stripe_sig_value>[0-9a-f]{32,}))
"""
# A whole field name or dict key that holds a secret; also gunicorn atoms like {cookie}i.
_KEY_PATTERN = r"""
\{?(?:@PLAIN_KEYS@|@SHORT_KEYS@|(?:[a-z0-9]+[-_.])+(?:@SUFFIX_KEYS@)|(?:http_)?(?:@HEADERS@))
(?:\}[ioe])?
"""


def _alternation(names: Iterable[str]) -> str:
    """Regex alternation of names, longest first, with '-' and '_' interchangeable."""
    unique = sorted({name.lower().replace("-", "_") for name in names}, key=len, reverse=True)
    return "|".join(re.escape(name).replace("_", "[-_]") for name in unique) or _NOTHING


def _compile(
    template: str, keys: Iterable[str], headers: Iterable[str], key_prefixes: Iterable[str] = ()
) -> re.Pattern[str]:
    keys = {key.lower().replace("-", "_") for key in keys}
    short = keys & {"key", "code"}
    parts = {
        "@HEADERS@": _alternation(headers),
        "@KEY_PREFIXES@": "|".join(map(re.escape, key_prefixes)) or _NOTHING,
        "@PLAIN_KEYS@": _alternation(keys - short),
        "@SHORT_KEYS@": _alternation(short),
        "@SUFFIX_KEYS@": _alternation(keys & SUFFIX_KEYS),
        "@LIST@": _LIST_VALUE,
        "@PEM@": _PEM_BLOCK,
        "@PEM_BEGIN@": _PEM_BEGIN,
        "@PEM_END@": _PEM_END,
        "@QUOTED@": _QUOTED_VALUE,
        "@VALUE@": _VALUE_CHARS,
        "@BEARER_PROSE@": _alternation(_BEARER_PROSE),
        "@B64@": "[A-Za-z0-9_-]",
        # Not inside a base64url run (each start would rescan the run: quadratic), but right
        # after a percent-escape (Bearer%20eyJ..., token%3DeyJ...).
        "@JWT_START@": "(?:(?<![A-Za-z0-9_-])|(?<=%[0-9A-Fa-f][0-9A-Fa-f]))",
        # A key starts a word (not after "." either: compound names are matched from their
        # first part, and starting inside one again would make long dotted runs quadratic),
        # or follows an encoded "?" or "&" (a URL inside a parameter).
        "@KEY_START@": r"(?:(?<![\w.-])|(?<=%3f)|(?<=%26))",
    }
    for placeholder, text in parts.items():
        template = template.replace(placeholder, text)
    # ASCII: case-insensitive the way the cheap pre-check below is (no Unicode case folding).
    return re.compile(template, re.IGNORECASE | re.VERBOSE | re.ASCII)


# Literal text at least one of which every match contains (lower case). Most log lines have
# none of them, and looking for them is far cheaper than running the pattern over the line.
_FIXED_TRIGGERS = (
    "bearer", "eyj", "whsec_", "k_live_", "k_test_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
    "github_pat_", "v1,", "v1a,", "v1=", "v0=", "sha1=", "sha256=", "sha512=", "basic", "://",
    "private key",
)  # fmt: skip
# Every match holds one of "=", ":", "," or "%" (a key and its value, a header, a signature,
# a URL), except the matches of these few triggers. Text without any of those characters, such
# as an access line, is looked at for these words only, with `in`: several times faster than a
# regex, and faster still when the words with "_" are looked for only in text with a "_".
_LONE_TRIGGERS = tuple(word for word in _FIXED_TRIGGERS if not any(c in word for c in "=:,%"))
_LONE_WORDS = tuple(word for word in _LONE_TRIGGERS if "_" not in word)
_LONE_UNDERSCORED = tuple(word for word in _LONE_TRIGGERS if "_" in word)


def _triggers(keys: Iterable[str], headers: Iterable[str]) -> tuple[str, ...]:
    """Words one of which is in any text the pattern can match.

    Any one part of a name must be present for the name to match ("-"/"_" vary, parts don't);
    prefer a part that is a key itself (access_token -> token: "access" is in every access
    line), and drop a word that contains another one (its presence implies the other's).
    """
    keys = {key.lower().replace("-", "_") for key in keys}
    words = set(_FIXED_TRIGGERS)
    for name in {*keys, *(header.lower().replace("-", "_") for header in headers)}:
        parts = [part for part in name.split("_") if part]
        words.add(next((part for part in parts if part in keys), max(parts, key=len)))
    return tuple(sorted(w for w in words if not any(o != w and o in w for o in words)))


class Redactor:
    """Replaces secrets in text with a marker. Thread-safe; build once, reuse everywhere."""

    def __init__(
        self,
        keys: Iterable[str] = SENSITIVE_KEYS,
        *,
        extra_keys: Iterable[str] = (),
        headers: Iterable[str] = SENSITIVE_HEADERS,
        marker: str = MARKER,
        key_prefixes: Iterable[str] = (),
    ) -> None:
        all_keys = (*keys, *extra_keys)
        headers = tuple(headers)
        prefixes = tuple(prefix.lower() for prefix in key_prefixes)
        self.marker = marker
        self._pattern = _compile(_PATTERN, all_keys, headers, prefixes)
        self._key_pattern = _compile(_KEY_PATTERN, all_keys, headers)
        # A plain literal alternation over lower-cased text: much cheaper than the full pattern.
        triggers = (*_triggers(all_keys, headers), *(f"{p}_" for p in prefixes),
                    *(f"{p}%5f" for p in prefixes))  # fmt: skip
        self._triggers = re.compile("|".join(map(re.escape, triggers)))
        # API keys stand alone in paths and messages, with no key name or separator before them.
        self._lone_underscored = (*_LONE_UNDERSCORED, *(f"{p}_" for p in prefixes))
        # The same few field and header names come back on every line; bounded, since header
        # names are chosen by clients.
        self._sensitive_names: dict[str, bool] = {}
        groups = self._pattern.groupindex
        self._value_group = {
            name: groups[f"{name}_value"] for name in groups if f"{name}_value" in groups
        }

    def redact(self, text: str) -> str:
        """Return text with every secret value replaced by the marker."""
        if not self.might_hold_secrets(text):
            return text
        return self._pattern.sub(self._replace, text)

    def might_hold_secrets(self, text: str) -> bool:
        """False when redact() would certainly return text unchanged: a cheap first look.

        Several values can be looked at in one call, joined by "\\0": when the joined text
        holds nothing, neither does any of them.
        """
        lowered = text.lower()
        if "=" in lowered or ":" in lowered or "," in lowered or "%" in lowered:
            return self._triggers.search(lowered) is not None
        for word in _LONE_WORDS:
            if word in lowered:
                return True
        if "_" in lowered:
            for word in self._lone_underscored:
                if word in lowered:
                    return True
        return False

    def is_sensitive_key(self, name: str) -> bool:
        """True when a field or dict key of this name holds a secret (its value is dropped)."""
        sensitive = self._sensitive_names.get(name)
        if sensitive is None:
            sensitive = self._match_key(name)
            if len(self._sensitive_names) < _NAMES_REMEMBERED:
                self._sensitive_names[name] = sensitive
        return sensitive

    def _match_key(self, name: str) -> bool:
        return self._key_pattern.fullmatch(name) is not None

    def redact_value(self, value: Any, depth: int = 0) -> Any:
        """Redact a log argument or extra field, keeping numbers and containers' shapes."""
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth < _MAX_DEPTH and isinstance(value, Mapping):
            return {
                key: self.marker
                if isinstance(key, str) and self.is_sensitive_key(key)
                else self.redact_value(item, depth + 1)
                for key, item in value.items()
            }
        if depth < _MAX_DEPTH and isinstance(value, list | tuple | set | frozenset):
            return [self.redact_value(item, depth + 1) for item in value]
        # Any other object would be str()-ed by the formatter later, unredacted: do it now.
        try:
            text = str(value)
        except Exception:  # noqa: BLE001 - a broken __str__ must not break the logging call
            text = f"<unprintable {type(value).__name__}>"
        return self.redact(text)

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup or ""
        value_group = self._value_group[kind]
        if kind == "basic" and not _is_basic_credentials(match.group(value_group)):
            return match.group()
        start, end = match.span(value_group)
        key_quote = match.group(_KEY_QUOTE_GROUP[kind]) if kind in _KEY_QUOTE_GROUP else ""
        opening, closing = _quotes_of(match.group(value_group), key_quote or "")
        text = match.string
        return (
            f"{text[match.start() : start]}{opening}{self.marker}{closing}{text[end : match.end()]}"
        )


def _is_basic_credentials(value: str) -> bool:
    """True when value is base64 of "user:password" (RFC 7617), not a word after "basic".

    Words of prose decode to bytes too, rarely to printable text with a colon in it.
    """
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


def _quotes_of(value: str, key_quote: str) -> tuple[str, str]:
    """The quotes around a value, kept so a redacted JSON body or dict repr keeps its shape.

    An unquoted value of a quoted key ("code": 123) gets the key's quotes, so JSON stays JSON;
    a list keeps its brackets and the quotes of its first item (["a", "b"] -> ["[REDACTED]"]).
    """
    if value.startswith("[") and value.endswith("]"):
        item = value[1:].lstrip()
        prefix = item[:1] if item[:1] in "bB" else ""
        for quote in _QUOTES:
            if item.startswith(quote, len(prefix)):
                return f"[{prefix}{quote}", f"{quote}]"
    body = value[1:] if value[:1] in "bB" and value[1:2] in "\"'" else value
    prefix = value[: len(value) - len(body)]
    for quote in _QUOTES:
        if len(body) >= 2 * len(quote) and body.startswith(quote) and body.endswith(quote):
            return prefix + quote, quote
    return key_quote, key_quote


_DEFAULT = Redactor()


def redact(text: str) -> str:
    """Redact text with the default keys and headers."""
    return _DEFAULT.redact(text)


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_DONE = "_redacted"
_EXCEPTION_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Handler filter that scrubs the message, its arguments, extra fields and exceptions.

    It never drops a record (always returns True). A record already scrubbed with the same
    Redactor (by another handler's filter, or the formatter) is not scrubbed again.
    """

    def __init__(
        self,
        redactor: Redactor | None = None,
        *,
        extra_keys: Iterable[str] = (),
        name: str = "",
    ) -> None:
        super().__init__(name)
        extra_keys = tuple(extra_keys)
        if redactor is None:
            redactor = Redactor(extra_keys=extra_keys) if extra_keys else _DEFAULT
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get(_DONE) is self.redactor:
            return True
        try:
            if not self._nothing_to_scrub(record):
                self._redact_message(record)
                self._redact_exception(record)
                self._redact_extra(record)
        except Exception:  # noqa: BLE001 - fail closed: what could not be scrubbed is dropped
            _blank(record, self.redactor.marker)
        record.__dict__[_DONE] = self.redactor
        return True

    def _nothing_to_scrub(self, record: logging.LogRecord) -> bool:
        """The common case, decided with one cheap look at all of a record's text at once.

        True (and the message formatted once) when the record has no exception, no mapping
        argument, no field named like a secret, only plain values, and no text that might hold
        a secret; anything else takes the full path, field by field.
        """
        if record.exc_info or record.exc_text or record.stack_info:
            return False
        try:
            message = None if isinstance(record.args, Mapping) else record.getMessage()
        except Exception:  # noqa: BLE001 - the full path copes with a broken format
            message = None
        if message is None:
            return False
        fields = record.__dict__
        redactor = self.redactor
        texts = [message]
        for name in fields.keys() - _RECORD_ATTRIBUTES:
            if name.startswith("_"):
                continue
            value = fields[name]
            kind = type(value)
            if kind is str:
                texts.append(value)
            elif not (value is None or kind is int or kind is float or kind is bool):
                return False
            if redactor.is_sensitive_key(name):
                return False
        if redactor.might_hold_secrets("\0".join(texts)):
            return False
        record.msg = message
        record.args = ()
        return True

    def _redact_message(self, record: logging.LogRecord) -> None:
        redactor = self.redactor
        if isinstance(record.args, Mapping):
            # `log("%(name)s", mapping)`, e.g. gunicorn's access atoms: keep a mapping so that
            # formatters can still read single fields, but one that redacts what is read.
            record.args = _RedactedView(record.args, redactor)
            if isinstance(record.msg, str):
                record.msg = redactor.redact(record.msg)
            return
        # Format first, then scrub the whole text: a secret split between the format string
        # and its arguments ("Authorization: %s") is only recognisable once joined.
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format must not hide the secrets in args
            message = f"{record.msg} {record.args!r}"
        record.msg = redactor.redact(message)
        record.args = ()

    def _redact_exception(self, record: logging.LogRecord) -> None:
        redactor = self.redactor
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the traceback is rendered once, here.
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.redact(record.stack_info)

    def _redact_extra(self, record: logging.LogRecord) -> None:
        redactor = self.redactor
        for name in record.__dict__.keys() - _RECORD_ATTRIBUTES:
            if name.startswith("_"):
                continue
            value = record.__dict__[name]
            if redactor.is_sensitive_key(name):
                record.__dict__[name] = redactor.marker
            else:
                record.__dict__[name] = redactor.redact_value(value)


def _blank(record: logging.LogRecord, marker: str) -> None:
    record.msg = f"{marker} (this log record could not be scrubbed)"
    record.args = ()
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None
    for name in record.__dict__.keys() - _RECORD_ATTRIBUTES:
        if not name.startswith("_"):
            record.__dict__[name] = marker


class _RedactedView(Mapping[str, object]):
    """Read-only view of a mapping argument whose values are redacted as they are read.

    Lazy on purpose: gunicorn's access atoms hold every request header and environ entry
    (up to tens of kilobytes a client chooses); scrubbing only the few a format uses keeps
    the cost per line small. Missing keys behave as in the source (gunicorn answers "-").
    """

    def __init__(self, source: Mapping[str, object], redactor: Redactor) -> None:
        self._source = source
        self._redactor = redactor

    def __getitem__(self, key: str) -> object:
        value = self._source[key]
        if self._redactor.is_sensitive_key(str(key)):
            return self._redactor.marker
        return self._redactor.redact_value(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        # `log("headers: %s", headers_dict)` formats the whole mapping.
        return repr(dict(self.items()))

    __str__ = __repr__


class RedactingFormatter(logging.Formatter):
    """Belt and braces: scrubs the final text of any format (use with a plain text format).

    Prefer RedactingFilter, which also keeps structured fields usable; this one is for handlers
    whose records you cannot filter (or for a last pass over the formatted line).
    """

    def __init__(self, *args: Any, redactor: Redactor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._filter = RedactingFilter(redactor)

    def format(self, record: logging.LogRecord) -> str:
        self._filter.filter(record)
        return self._filter.redactor.redact(super().format(record))


def install(
    target: logging.Logger | logging.Handler | None = None,
    *,
    extra_keys: Iterable[str] = (),
    key_prefixes: Iterable[str] = (),
) -> RedactingFilter:
    """Add one RedactingFilter to a handler, or to every current handler of a logger.

    target defaults to the root logger. Handlers added later are not covered: call install
    again after configuring them. Returns the filter (add it to other handlers at will).
    """
    key_prefixes = tuple(key_prefixes)
    redactor = Redactor(extra_keys=extra_keys, key_prefixes=key_prefixes) if key_prefixes else None
    redacting = RedactingFilter(redactor, extra_keys=extra_keys)
    if target is None:
        target = logging.getLogger()
    handlers = [target] if isinstance(target, logging.Handler) else target.handlers
    for handler in handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(redacting)
    return redacting


_PEM_BEGIN_LINE = re.compile(_PEM_BEGIN, re.IGNORECASE | re.VERBOSE)
_PEM_END_LINE = re.compile(_PEM_END, re.IGNORECASE | re.VERBOSE)


def _opens_private_key(line: str) -> bool:
    """True when the last private key block begun on this line does not end on it."""
    begins = list(_PEM_BEGIN_LINE.finditer(line))
    return bool(begins) and _PEM_END_LINE.search(line, begins[-1].end()) is None


def main(argv: list[str] | None = None) -> None:
    """Copy stdin to stdout line by line, redacted; arguments are extra sensitive keys."""
    redactor = Redactor(extra_keys=sys.argv[1:] if argv is None else argv)
    in_private_key = False
    # readline, not iteration: each line goes out as soon as it comes in.
    for line in iter(sys.stdin.readline, ""):
        text = line
        if in_private_key:
            # Line by line, a key's body lines look like any base64: drop them up to the
            # END line (its BEGIN line was already redacted to its end).
            end = _PEM_END_LINE.search(line)
            if end is None:
                continue
            text = line[end.start() :]
        in_private_key = _opens_private_key(text)
        sys.stdout.write(redactor.redact(text))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
