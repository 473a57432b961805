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
    "INFIX_KEYS",
    "MARKER",
    "PROSE_WORDS",
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
# Names are compared normalised: case, "-", "_", "." and camelCase do not count, so
# "access_token", "Access-Token" and "accessToken" are one name.
SENSITIVE_KEYS: tuple[str, ...] = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "private_key",
    "key",
    "signature",
    "code",
    "session",
    "sessionid",
    "credentials",
)
# Names that also count as the end of a longer name (csrf_token, x-api-key, dbPassword).
# "key" and "code" are left out on purpose: sort_key, public_key, status_code and zip-code are
# not secrets.
SUFFIX_KEYS: frozenset[str] = frozenset(
    {"token", "password", "passwd", "secret", "api_key", "apikey", "signature", "private_key"}
)
# Names that count anywhere in a longer name (aws_secret_access_key, password_hash).
INFIX_KEYS: frozenset[str] = frozenset({"secret", "password", "passwd", "passphrase"})
# Short, common words: a name only as `key=...` or as a quoted key (`"code": ...`), never as
# `code: ...` in prose ("exit code: 1", "session: started").
PROSE_WORDS: frozenset[str] = frozenset(
    {"key", "code", "session", "sessionid", "pwd", "credentials"}
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

# A value after "=" or ":", as far as it can reach: ";", "," and spaces included (a password
# may hold them), up to the next "&", quote, bracket or `name=` / `name:`. How much of it is
# the value depends on where it stands (see _value_end).
_LONG_VALUE = r"""[^\s&'"\\<>()\[\]{}]+(?:[ \t]+(?![^\s=:&]*[=:])[^\s&'"\\<>()\[\]{}]+)*"""
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
_LIST_VALUE = rf"""(?>\[\s*(?:{_QUOTED_VALUE})(?:\s*,\s*(?:{_QUOTED_VALUE}))*\s*,?\s*\])"""
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
_KEY_QUOTE_GROUP = {"header": "hq", "pair": "kq", "pair_tuple": "tq"}
_NOTHING = "(?!)"
# Nested containers in extra fields are scrubbed this deep; deeper ones are str()-ed whole.
_MAX_DEPTH = 4
_NAMES_REMEMBERED = 1024
# Text is URL-decoded this many times over at most (%253F is "?" encoded twice).
_MAX_DECODINGS = 3
# A name: letters, digits and "-", "_", "." inside; 128 characters at most, so that a long
# run of such characters costs a bounded look back, not a quadratic one.
_NAME = r"[a-z0-9](?:[a-z0-9_.-]{0,126}[a-z0-9])?"
_B64 = "[A-Za-z0-9_-]"
# Not inside a base64url run (each start would rescan the run: quadratic), but right after a
# percent-escape (Bearer%20eyJ..., token%3DeyJ...) or a backslash escape that a repr() wrote
# for a byte (b'\x80eyJ...', '\u00ffeyJ...').
_JWT_BOUNDARY = (
    r"(?:(?<![A-Za-z0-9_-])|(?<=%[0-9A-Fa-f][0-9A-Fa-f])"
    r"|(?<=\\x[0-9A-Fa-f][0-9A-Fa-f])|(?<=\\u[0-9A-Fa-f]{4}))"
)
# A name starts a word (not after "." either: compound names are matched from their first
# part, and starting inside one again would make long dotted runs quadratic; nor inside a
# percent-escape), or follows an encoded "?", "&" or ";" (a URL inside a parameter).
_KEY_START = r"(?:(?<![\w.%-])|(?<=%3f)|(?<=%26)|(?<=%3b))"


def _pattern(headers: Iterable[str], key_prefixes: Iterable[str]) -> str:
    """The one pattern redact() runs (verbose syntax; braces doubled, this is an f-string).

    Each branch is a named group <kind> holding <kind>_value, the part that gets replaced; re
    tries the branches at each position in order: a header line wins over the bearer token
    inside it, a URL or signature over the `name=` or `name:` it begins with. Which names hold
    secrets is decided by Redactor.is_sensitive_key, not here.
    """
    header_names = _alternation(headers)
    prefixes = "|".join(map(re.escape, key_prefixes)) or _NOTHING
    prose = _alternation(_BEARER_PROSE)
    return rf"""
(?P<header>
    (?<![\w-])(?P<hq>\\?["']?)(?:http_)?(?:{header_names})(?P=hq)
    (?:[ \t]*[:=][ \t]*|(?<=["']),[ \t]*(?=\\?["']))
    (?P<header_value>{_LIST_VALUE}|{_QUOTED_VALUE}|[^\r\n"'\\]+)
)
| (?P<url>
    # scheme://user:password@host: the password goes, up to the last "@" before the host
    # (an unescaped "@" in it must not leave the rest). The scheme starts a word, so a long
    # run of letters is scanned once, not once per letter.
    (?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^\s/?#:"\\<>\[\]{{}}]*:
    (?P<url_value>[^\s/?#"\\<>\[\]{{}}]+)@
)
| (?P<pem>
    {_PEM_BEGIN}(?P<pem_value>[\s\S]*?)(?:{_PEM_END}|(?=\r?\n?\Z))
)
| (?P<jwt>(?P<jwt_value>(?-i:
    {_JWT_BOUNDARY}eyJ{_B64}{{8,}}\.{_B64}*\.{_B64}*(?:\.{_B64}*\.{_B64}*)?
)))
| (?P<vendor>
    (?P<vendor_value>(?-i:(?<![\w-])
        (?:whsec_[A-Za-z0-9+/=]+
        |[sr]k_(?:live|test)_[A-Za-z0-9]{{8,}}
        |gh[pousr]_[A-Za-z0-9]{{30,}}
        |github_pat_[A-Za-z0-9_]{{30,}})
    ))
)
| (?P<api_key>
    # <prefix>_<key id>_<secret>, "_" perhaps percent-encoded; the secret goes, whatever its
    # length beyond a few characters (a truncated key is still most of a key).
    (?<![a-z0-9])(?:{prefixes})(?:_|%5f)[a-z0-9]{{1,32}}(?:_|%5f)
    (?P<api_key_value>[a-z0-9]{{16,}})
)
| (?P<standard_sig>(?<![\w-])v1a?,(?P<standard_sig_value>[a-z0-9+/]{{16,}}={{0,2}}))
| (?P<github_sig>(?<![\w-])sha(?:1|256|512)=(?P<github_sig_value>[0-9a-f]{{32,}}))
| (?P<stripe_sig>(?<![\w-])v[01]=(?P<stripe_sig_value>[0-9a-f]{{32,}}))
| (?P<pair>
    # name=value, name: value, "name": value, 'name': value, name%3Dvalue (URL-encoded)
    {_KEY_START}(?P<kq>\\?["']?)(?P<pair_key>{_NAME})(?P=kq)
    (?P<pair_sep>\s*=\s*|%3d|\s*:(?!//)\s*)
    (?P<pair_value>{_PEM_BLOCK}|{_LIST_VALUE}|{_QUOTED_VALUE}|[\[{{]|{_LONG_VALUE})
)
| (?P<pair_tuple>
    # [('password', 'hunter2'), ...]: repr() of a MultiDict (request.args, request.form) or
    # of its .items() / .lists(). Only 2-tuples in a list, so that a tuple of field names
    # ("missing ('password', 'email')") stays readable. The one-character test first: cheap.
    (?<=\()(?:(?<=[\[(]\()|(?<=,[ ]\())(?P<tq>\\?["'])(?P<pair_tuple_key>{_NAME})(?P=tq),[ \t]*
    (?P<pair_tuple_value>{_LIST_VALUE}|{_QUOTED_VALUE}|{_VALUE_CHARS})(?=[ \t]*\))
)
| (?P<bearer>
    (?<![\w-])bearer[ \t]+
    (?P<bearer_value>
        # A word of prose, maybe hyphenated ("token-based") or ending a sentence ("tokens.").
        (?!(?:{prose})(?:-[a-z]+)*\.*(?![a-z0-9._~+/=-]))
        # Not a challenge's auth-param (Bearer realm="api", error=invalid_token).
        [a-z0-9._~+/-]+=*(?![a-z0-9._~+/="'-])
    )
)
| (?P<basic>
    # The value must also decode to printable "user:password" (checked in _replacement), and
    # be 4 bytes or more ("a:bc"): words of prose ("basic Only") stay.
    (?<![\w-])basic[ \t]+(?P<basic_value>(?-i:[A-Za-z0-9+/]{{6,}}={{0,2}}))(?![\w+/=.-])
)
"""


# Where a value of a name that is part of a URL stands: after "?", "&", ";" or "/", plain or
# percent-encoded. Such a value never holds a space.
_IN_URL = re.compile(r"(?:[?&;/]|%3f|%26|%3b|%2f)\Z", re.IGNORECASE)
_SCALAR_END = re.compile(r"""[\s,}\])]""")
_WHITE_SPACE = re.compile(r"\s")
_TRANSLATE_SEPARATORS = str.maketrans("", "", "-_. ")


def _alternation(names: Iterable[str]) -> str:
    """Regex alternation of names; "-", "_" and "." between their words are interchangeable
    and may be left out (x-api-key, X_API_KEY, xApiKey). Order does not matter: what follows
    a name in the pattern is required, so re backs off a shorter name to try a longer one."""
    unique = sorted({name.replace("-", "_") for name in names})
    return "|".join("[-_.]?".join(map(re.escape, name.split("_"))) for name in unique) or _NOTHING


def _compile(headers: Iterable[str], key_prefixes: Iterable[str] = ()) -> re.Pattern[str]:
    # ASCII: case-insensitive the way the cheap pre-check below is (no Unicode case folding).
    return re.compile(_pattern(headers, key_prefixes), re.IGNORECASE | re.VERBOSE | re.ASCII)


# Literal text at least one of which every match contains (lower case). Most log lines have
# none of them, and looking for them is far cheaper than running the pattern over the line.
# The last three are in every base64 of text holding "eyJ" (a JWT), whatever its offset.
_FIXED_TRIGGERS = (
    "bearer", "eyj", "whsec_", "k_live_", "k_test_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
    "github_pat_", "v1,", "v1a,", "v1=", "v0=", "sha1=", "sha256=", "sha512=", "basic", "://",
    "private key", "zxlk", "v5s", "leu",
)  # fmt: skip
# Every match holds one of "=", ":", "," or "%" (a key and its value, a header, a signature,
# a URL), except the matches of these few triggers. Text without any of those characters, such
# as an access line, is looked at for these words only, with `in`: several times faster than a
# regex, and faster still when the words with "_" are looked for only in text with a "_".
_LONE_TRIGGERS = tuple(word for word in _FIXED_TRIGGERS if not any(c in word for c in "=:,%"))
_LONE_WORDS = tuple(word for word in _LONE_TRIGGERS if "_" not in word)
_LONE_UNDERSCORED = tuple(word for word in _LONE_TRIGGERS if "_" in word)
# Base64 (standard or URL-safe) long enough to hold a JWT, and what base64 of "eyJ" looks like
# at each of the three offsets it can start at.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_BASE64_OF_EYJ = ("ZXlK", "V5S", "leU")
_JWT_START = re.compile(r"eyJ[A-Za-z0-9_-]{8}")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


def _triggers(keys: Iterable[str], headers: Iterable[str]) -> tuple[str, ...]:
    """Words one of which is in any text the pattern can match.

    Any one word of a name must be present for the name to count (separators vary, words
    don't); prefer a word that is a key itself (access_token -> token: "access" is in every
    access line), and drop a word that contains another one (its presence implies the other's).
    """
    keys = {key.lower().replace("-", "_") for key in keys}
    words = set(_FIXED_TRIGGERS)
    for name in {*keys, *(header.lower().replace("-", "_") for header in headers)}:
        parts = [part for part in name.split("_") if part]
        words.add(next((part for part in parts if part in keys), max(parts, key=len)))
    return tuple(sorted(w for w in words if not any(o != w and o in w for o in words)))


def _compact(name: str) -> str:
    """A name as compared: lower case, without separators, without the wrapping of WSGI
    environ keys (HTTP_AUTHORIZATION) and gunicorn atoms ({authorization}i)."""
    name = name.lower()
    if name.startswith("{") and name[-2:-1] == "}":
        name = name[1:-2]
    return name.removeprefix("http_").translate(_TRANSLATE_SEPARATORS)


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
        self._pattern = _compile(headers, prefixes)
        compact = {_compact(key) for key in all_keys}
        self._prose_words = compact & {_compact(word) for word in PROSE_WORDS}
        self._exact = compact - self._prose_words
        self._suffixes = tuple(compact & {_compact(key) for key in SUFFIX_KEYS})
        self._infixes = tuple(_compact(key) for key in INFIX_KEYS)
        self._headers = frozenset(_compact(header) for header in headers)
        # A plain literal alternation over lower-cased text: much cheaper than the full pattern.
        triggers = {*_triggers(all_keys, headers), *self._infixes,
                    *(f"{p}_" for p in prefixes), *(f"{p}%5f" for p in prefixes)}  # fmt: skip
        self._triggers = re.compile("|".join(map(re.escape, sorted(triggers))))
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
        """Return text with every secret value replaced by the marker.

        Text is also looked at URL-decoded (the secret in `/me%3Faccess_token%3D...`) and base64
        wrappers that hold a JWT are opened; when decoding shows a secret the raw text hid,
        the decoded text is returned, scrubbed, with what is not printable ASCII re-encoded.
        """
        if not self.might_hold_secrets(text):
            return text
        redacted = self._redact_once(text)
        if "%" in redacted:
            decoded = _percent_decoded(redacted)
            if decoded != redacted:
                scrubbed = self._redact_once(decoded)
                if scrubbed != decoded:
                    redacted = _NOT_PRINTABLE_ASCII.sub(_percent_escape, scrubbed)
        if any(marker in redacted for marker in _BASE64_OF_EYJ):
            redacted = _BASE64_RUN.sub(self._replace_wrapped_secret, redacted)
        return redacted

    def might_hold_secrets(self, text: str) -> bool:
        """False when redact() would certainly return text unchanged: a cheap first look.

        Several values can be looked at in one call, joined by "\\0": when the joined text
        holds nothing, neither does any of them.
        """
        lowered = text.lower()
        if "=" in lowered or ":" in lowered or "," in lowered or "%" in lowered:
            if "%" in lowered:
                lowered = _percent_decoded(lowered)
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
            sensitive = self._names_a_secret(name, in_prose=False)
            if len(self._sensitive_names) < _NAMES_REMEMBERED:
                self._sensitive_names[name] = sensitive
        return sensitive

    def _names_a_secret(self, name: str, *, in_prose: bool) -> bool:
        compact = _compact(name)
        if compact in self._exact or compact in self._headers:
            return True
        if compact in self._prose_words:
            return not in_prose
        return compact.endswith(self._suffixes) or any(word in compact for word in self._infixes)

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

    def _redact_once(self, text: str) -> str:
        """One pass of the pattern. A match may end where the pattern could not tell (the end
        of a bracketed value) or sooner (a name that holds no secret: its value is looked at
        again, as text of its own), so the loop moves on from where each match says."""
        pieces: list[str] = []
        position = 0
        while (match := self._pattern.search(text, position)) is not None:
            replacement, end = self._replacement(match)
            pieces += (text[position : match.start()], replacement)
            position = end  # past the match's start: no match is empty, no name either
        if not pieces:
            return text
        pieces.append(text[position:])
        return "".join(pieces)

    def _replacement(self, match: re.Match[str]) -> tuple[str, int]:
        """What replaces a match, and where to look on from."""
        kind = match.lastgroup or ""
        text = match.string
        start, end = match.span(self._value_group[kind])
        key_quote = match.group(_KEY_QUOTE_GROUP[kind]) if kind in _KEY_QUOTE_GROUP else ""
        resume, rest = match.end(), text[end : match.end()]
        if kind in ("pair", "pair_tuple"):
            in_prose = kind == "pair" and not key_quote and ":" in match.group("pair_sep")
            if not self._names_a_secret(match.group(f"{kind}_key"), in_prose=in_prose):
                # Not a secret's name: its value is looked at as text of its own.
                return text[match.start() : start], start
            end = _value_end(text, start, end, quoted_key=bool(key_quote), name_at=match.start())
            resume, rest = end, ""
        elif kind == "basic" and not _is_basic_credentials(match.group("basic_value")):
            return match.group(), match.end()
        opening, closing = _quotes_of(text[start:end], key_quote or "")
        return f"{text[match.start() : start]}{opening}{self.marker}{closing}{rest}", resume

    def _replace_wrapped_secret(self, match: re.Match[str]) -> str:
        run = match.group()
        # The run may start anywhere in the blob it belongs to: try each of base64's offsets.
        for offset in range(4):
            decoded = _base64_text(run[offset:])
            if decoded is None:
                continue
            # A JWT glued to other bytes has no word boundary for the pattern to find.
            if (_JWT_START.search(decoded) and "." in decoded) or self.redact(decoded) != decoded:
                return self.marker
        return run


def _value_end(text: str, start: int, end: int, *, quoted_key: bool, name_at: int) -> int:
    """Where the value of a secret's name ends; the pattern matched it from start to end.

    A bracket opens a whole object or list, to its closing bracket (or the end of the text);
    a quoted value ends with its quote. Otherwise: after a quoted name (JSON, a dict repr) the
    value is a scalar, up to "," or a bracket; in a URL, up to white space; in prose, as far as
    the pattern reached (";", "," and spaces included, up to the next `name=`).
    """
    value = text[start:end]
    if value in ("[", "{"):
        return _closing_bracket(text, start)
    if value[:1] in ("'", '"', "\\", "[") or value.startswith(("b'", 'b"', "-----")):
        return end
    if text.startswith("(", end):
        # A call-shaped repr, SecretStr('...'): its arguments are the value too.
        return _closing_bracket(text, end)
    if quoted_key:
        scalar_end = _SCALAR_END.search(text, start, end)
        return scalar_end.start() if scalar_end else end
    if _IN_URL.search(text, max(0, name_at - 3), name_at):
        space = _WHITE_SPACE.search(text, start, end)
        return space.start() if space else end
    return end


def _closing_bracket(text: str, start: int) -> int:
    """The index just after the bracket that closes the one at start ("(", "[" or "{"), quotes
    respected; the end of the text when it never closes (what is left of a cut record is
    dropped, not shown)."""
    depth = 0
    quote = ""
    index = start
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return len(text)


def _percent_decoded(text: str) -> str:
    """text URL-decoded until it no longer changes (a few times at most), byte for byte."""
    for _ in range(_MAX_DECODINGS):
        if _PERCENT_ESCAPE.search(text) is None:
            break
        text = _PERCENT_ESCAPE.sub(_percent_unescape, text)
    return text


def _percent_unescape(match: re.Match[str]) -> str:
    return chr(int(match.group()[1:], 16))


def _percent_escape(match: re.Match[str]) -> str:
    """A character that is not printable ASCII, percent-encoded: its byte when decoding made
    it (one per escape), else its UTF-8."""
    char = match.group()
    raw = char.encode("latin-1") if ord(char) < 0x100 else char.encode("utf-8", "surrogatepass")
    return "".join(f"%{byte:02X}" for byte in raw)


def _base64_text(run: str) -> str | None:
    """The bytes a base64 run (standard or URL-safe, padding optional) stands for, as text."""
    try:
        # The URL-safe decoder reads the standard alphabet too (the run holds nothing else),
        # and ignores padding beyond what it needs: "==" completes any run that has a length.
        raw = base64.urlsafe_b64decode(run + "==")
    except binascii.Error:
        return None
    return raw.decode("latin-1")


def _is_basic_credentials(value: str) -> bool:
    """True when value is base64 of "user:password" (RFC 7617), not a word after "basic".

    Words of prose decode to bytes too, rarely to printable text with a colon in it.
    """
    try:
        # The pattern let through only base64's alphabet: nothing for validate= to refuse;
        # padding beyond what the decoder needs is ignored.
        decoded = base64.b64decode(value + "==").decode()
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
        prefix = item[:1] if item[:1] == "b" else ""
        for quote in _QUOTES:
            if item.startswith(quote, len(prefix)):
                return f"[{prefix}{quote}", f"{quote}]"
    body = value[1:] if value[:1] == "b" and value[1:2] in "\"'" else value
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
