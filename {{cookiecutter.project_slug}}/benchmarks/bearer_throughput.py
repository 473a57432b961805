"""Throughput of a protected route against a bare one, through the real stack (nginx, TLS).

    python benchmarks/bearer_throughput.py [--duration 15] [--connections 32] [--rounds 3]

Starts scripts/devstack on free ports with the default gunicorn sizing, then runs wrk against
GET /healthz (no token check) and GET /api/v1/items (a JWT verified and its scope checked on
every request, the verified-token cache on as shipped) and prints requests/s for each and their
ratio. Needs nginx, wrk and the bake's certs/. Rate limiting is switched off for the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gunicorn_sizing import RATE_LINE, benchmark_stack, run_wrk, token_for

PATHS = ("/healthz", "/api/v1/items")


def requests_per_second(output: str) -> float:
    match = RATE_LINE.search(output)
    if match is None:
        raise SystemExit(f"wrk printed no rate:\n{output}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {path: [] for path in PATHS}
    with benchmark_stack({}) as stack:
        token = token_for(stack.issuer, stack.audience, stack.private_key_pem)
        for path in PATHS:
            check = stack.https("GET", path, headers={"Authorization": f"Bearer {token}"})
            if check.status != 200:
                raise SystemExit(f"{path} answered {check.status}: {check.body[:200]!r}")
            run_wrk(stack.url(path), token, 3, args.connections)  # warm-up
        # Alternating rounds, so that load from elsewhere on the machine hits both routes alike.
        for _ in range(args.rounds):
            for path in PATHS:
                output = run_wrk(stack.url(path), token, args.duration, args.connections)
                rates[path].append(requests_per_second(output))
                print(f"GET {path}: {rates[path][-1]:.0f} requests/s", flush=True)
    bare, protected = (statistics.median(rates[path]) for path in PATHS)
    print(
        f"median of {args.rounds} rounds: /healthz {bare:.0f}/s, /api/v1/items {protected:.0f}/s,"
        f" protected / bare = {protected / bare:.2f} (wrk -t2 -c{args.connections}"
        f" -d{args.duration}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
