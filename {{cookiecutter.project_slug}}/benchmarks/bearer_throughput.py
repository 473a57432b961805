"""Throughput of a protected route against a bare one, through the real stack (nginx, TLS).

    python benchmarks/bearer_throughput.py [--duration 15] [--connections 32]

Starts scripts/devstack on free ports with the default gunicorn sizing, then runs wrk against
GET /healthz (no token check) and GET /api/v1/items (a JWT verified and its scope checked on
every request, the verified-token cache on as shipped) and prints requests/s for each and their
ratio. Needs nginx, wrk and the bake's certs/. Rate limiting is switched off for the run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gunicorn_sizing import RATE_LINE, run_wrk, token_for

from stack import bake_certificates, launch_stack, run_devstack


def requests_per_second(output: str) -> float:
    match = RATE_LINE.search(output)
    if match is None:
        raise SystemExit(f"wrk printed no rate:\n{output}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    cert, key, ca = bake_certificates()
    state = Path(tempfile.mkdtemp(prefix="bench-"))
    stack = launch_stack(
        state,
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        settings={"RATE_LIMIT_PER_SECOND": "0", "LOG_LEVEL": "WARNING"},
    )
    try:
        token = token_for(stack.issuer, stack.audience, stack.private_key_pem)
        rates = {}
        for path in ("/healthz", "/api/v1/items"):
            check = stack.https("GET", path, headers={"Authorization": f"Bearer {token}"})
            if check.status != 200:
                raise SystemExit(f"{path} answered {check.status}: {check.body[:200]!r}")
            run_wrk(stack.url(path), token, 3, args.connections)  # warm-up
            output = run_wrk(stack.url(path), token, args.duration, args.connections)
            rates[path] = requests_per_second(output)
            print(f"GET {path}: {rates[path]:.0f} requests/s", flush=True)
    finally:
        run_devstack("down", stack.env)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(stack.run_dir, ignore_errors=True)
    ratio = rates["/api/v1/items"] / rates["/healthz"]
    print(f"protected / bare: {ratio:.2f} (wrk -t2 -c{args.connections} -d{args.duration}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
