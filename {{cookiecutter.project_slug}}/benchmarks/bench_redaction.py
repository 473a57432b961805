"""Cost of redaction per log record: `PYTHONPATH=src python benchmarks/bench_redaction.py`.

Prints microseconds per record for a typical access line, a line carrying secrets, and the
whole path a record takes in the service (redaction + JSON formatting), then the cost of an
access line against a plain logging.Formatter line. Each figure is the best of many short
runs, the two compared taken in turns, so that other load on the machine hits both alike.
"""

from __future__ import annotations

import logging
import timeit
from collections.abc import Callable

from gunicorn.glogging import SafeAtoms  # type: ignore[import-untyped, unused-ignore]

from {{ cookiecutter.package_name }}.logs import JsonFormatter
from {{ cookiecutter.package_name }}.redaction import RedactingFilter, redact

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImF1ZCI6Imh0dHBzOi8vYXBpIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2Nzg5MA"
)
ACCESS_LINE = "GET /api/v1/items/550e8400-e29b-41d4-a716-446655440000 200"
ACCESS_FIELDS = {
    "request_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "method": "GET",
    "path": "/api/v1/items/550e8400-e29b-41d4-a716-446655440000",
    "status": 200,
    "duration_ms": 3.214,
    "client": "203.0.113.7",
    "sub": "alice",
}
SECRET_LINE = f"GET /api/v1/items?page=2&access_token={JWT}&sort=name HTTP/1.1 " + repr(
    {"Authorization": f"Bearer {JWT}", "Cookie": "sid=31d4d96e407aad42"}
)


ENVIRON = {
    "request_method": "GET",
    "path_info": "/api/v1/items",
    "query_string": "page=2",
    "raw_uri": "/api/v1/items?page=2",
    "server_protocol": "HTTP/1.1",
    "server_name": "127.0.0.1",
    "server_port": "8000",
    "remote_addr": "10.0.0.2",
    "remote_port": "51234",
    "script_name": "",
    "wsgi.url_scheme": "http",
    "wsgi.multithread": True,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
    "wsgi.version": (1, 0),
    "http_host": "api.example.com",
    "http_user_agent": "curl/8.5.0",
    "http_accept": "*/*",
    "http_authorization": f"Bearer {JWT}",
    "http_x_forwarded_for": "203.0.113.7",
    "http_x_forwarded_proto": "https",
    "http_x_request_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "gunicorn.socket": object(),
    "wsgi.input": object(),
    "wsgi.errors": object(),
}
GUNICORN_ATOMS = {
    "h": "10.0.0.2",
    "m": "GET",
    "U": "/api/v1/items",
    "q": "page=2",
    "r": "GET /api/v1/items?page=2 HTTP/1.1",
    "s": "200",
    "B": 512,
    "D": 3214,
    "f": "-",
    "a": "curl/8.5.0",
    "{host}i": "api.example.com",
    "{user-agent}i": "curl/8.5.0",
    "{accept}i": "*/*",
    "{authorization}i": f"Bearer {JWT}",
    "{x-forwarded-for}i": "203.0.113.7",
    "{x-forwarded-proto}i": "https",
    "{x-request-id}i": "4bf92f3577b34da6a3ce929d0e0e4736",
    "{content-type}o": "application/json",
    "{x-request-id}o": "4bf92f3577b34da6a3ce929d0e0e4736",
    # gunicorn also adds every WSGI environ entry as an "{...}e" atom.
    **{"{" + name + "}e": value for name, value in ENVIRON.items()},
}


def record(message: str, args: tuple[object, ...] = (), **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("bench.access", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def per_call_us(function: Callable[[], object], number: int, repeat: int = 15) -> float:
    best = min(timeit.repeat(function, number=number, repeat=repeat))
    return best / number * 1e6


def in_turns(
    first: Callable[[], object], second: Callable[[], object], number: int
) -> tuple[float, float]:
    """Best microseconds per call of each, measured in alternation."""
    firsts, seconds = [], []
    for _ in range(15):
        firsts.append(per_call_us(first, number, repeat=1))
        seconds.append(per_call_us(second, number, repeat=1))
    return min(firsts), min(seconds)


def main() -> None:
    redacting = RedactingFilter()
    formatter = JsonFormatter()
    number = 5000

    def access_filter() -> object:
        return redacting.filter(record("%s %s %s", ("GET", "/api/v1/items", 200), **ACCESS_FIELDS))

    def access_json() -> object:
        return formatter.format(record("%s %s %s", ("GET", "/api/v1/items", 200), **ACCESS_FIELDS))

    def secret_json() -> object:
        return formatter.format(record("request %s", (SECRET_LINE,)))

    def gunicorn_json() -> object:
        made = record("%(m)s %(U)s %(s)s", (SafeAtoms(GUNICORN_ATOMS),))
        made.name = "gunicorn.access"
        return formatter.format(made)

    def plain_format() -> object:
        return logging.Formatter("%(message)s").format(record(ACCESS_LINE))

    results = {
        "redact(): typical access line (no secret)": per_call_us(
            lambda: redact(ACCESS_LINE), number
        ),
        "redact(): line with 2 JWTs, a cookie and a query token": per_call_us(
            lambda: redact(SECRET_LINE), number
        ),
        "RedactingFilter on an access record (message + 7 fields)": per_call_us(
            access_filter, number
        ),
        "JsonFormatter (filter + JSON) on an access record": per_call_us(access_json, number),
        "JsonFormatter (filter + JSON) on a record full of secrets": per_call_us(
            secret_json, number
        ),
        f"JsonFormatter on a gunicorn access record ({len(GUNICORN_ATOMS)} atoms)": per_call_us(
            gunicorn_json, number
        ),
        "baseline: logging.Formatter('%(message)s') on a record": per_call_us(plain_format, number),
    }
    width = max(len(name) for name in results)
    for name, micros in results.items():
        print(name.ljust(width), f"{micros:7.2f} us/record")
    access, plain = in_turns(access_json, plain_format, number)
    print(
        f"\nredaction + JSON of an access record: {access:.2f} us, a plain logging.Formatter"
        f" line: {plain:.2f} us, ratio {access / plain:.2f}"
    )


if __name__ == "__main__":
    main()
