"""Compare gunicorn sizings through the real stack (nginx, TLS) with wrk.

    python benchmarks/gunicorn_sizing.py [--duration 15] [--connections 32] [--path /api/v1/me]

For each sizing it starts scripts/devstack on free ports (bake certificates, a fresh signing
key), warms up, runs `wrk --latency` against an authenticated API route (a JWT is verified on
every request, like real traffic) and prints requests/s and latency percentiles. Needs nginx,
wrk and the bake's certs/. Rate limiting is switched off for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from stack import LiveStack, bake_certificates, launch_stack, run_devstack

CORES = os.cpu_count() or 1
SIZINGS = {
    f"workers={CORES} threads=2 (default)": {
        "WEB_CONCURRENCY": str(CORES),
        "GUNICORN_THREADS": "2",
    },
    f"workers={CORES} threads=1 (one loop per worker)": {
        "WEB_CONCURRENCY": str(CORES),
        "GUNICORN_THREADS": "1",
    },
    f"workers={2 * CORES + 1} threads=1 (2*cores+1)": {
        "WEB_CONCURRENCY": str(2 * CORES + 1),
        "GUNICORN_THREADS": "1",
    },
}
LATENCY_LINE = re.compile(r"^\s+(50|75|90|99)%\s+(\S+)", re.MULTILINE)
RATE_LINE = re.compile(r"^Requests/sec:\s+(\S+)", re.MULTILINE)


def token_for(issuer: str, audience: str, private_key_pem: bytes) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": "bench",
        "scope": "items:read",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": os.urandom(8).hex(),
    }
    return jwt.encode(claims, private_key_pem, algorithm="RS256", headers={"typ": "at+jwt"})


def run_wrk(url: str, token: str, duration: int, connections: int) -> str:
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    command = [
        wrk,
        "--latency",
        "-t2",
        f"-c{connections}",
        f"-d{duration}s",
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@contextlib.contextmanager
def benchmark_stack(settings: dict[str, str]) -> Iterator[LiveStack]:
    """The native stack on free ports, rate limiting off, quiet logs; stopped afterwards."""
    cert, key, ca = bake_certificates()
    state = Path(tempfile.mkdtemp(prefix="bench-"))
    stack = launch_stack(
        state,
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        settings={**settings, "RATE_LIMIT_PER_SECOND": "0", "LOG_LEVEL": "WARNING"},
    )
    try:
        yield stack
    finally:
        run_devstack("down", stack.env)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(stack.run_dir, ignore_errors=True)


def measure(name: str, settings: dict[str, str], args: argparse.Namespace) -> dict[str, str]:
    with benchmark_stack(settings) as stack:
        token = token_for(stack.issuer, stack.audience, stack.private_key_pem)
        check = stack.https("GET", args.path, headers={"Authorization": f"Bearer {token}"})
        if check.status != 200:
            raise SystemExit(f"{args.path} answered {check.status}: {check.body[:200]!r}")
        run_wrk(stack.url(args.path), token, 3, args.connections)  # warm-up
        output = run_wrk(stack.url(args.path), token, args.duration, args.connections)
    result = {"sizing": name, "req/s": RATE_LINE.search(output).group(1)}  # type: ignore[union-attr]
    result.update({f"p{p}": value for p, value in LATENCY_LINE.findall(output)})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--path", default="/api/v1/me")
    args = parser.parse_args()
    print(
        f"{CORES} CPU(s); wrk -t2 -c{args.connections} -d{args.duration}s https://localhost{args.path}"
    )
    for name, settings in SIZINGS.items():
        result = measure(name, settings, args)
        print("  ".join(f"{key}={value}" for key, value in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
