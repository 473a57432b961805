"""Throughput of protected routes against a bare one, through the real stack (nginx, TLS).

    python benchmarks/bearer_throughput.py [--duration 15] [--connections 32] [--rounds 3]

Starts scripts/devstack on free ports with the default gunicorn sizing (twice: keys from a PEM
file, and keys from a JWKS served on 127.0.0.1 and refreshed in the background every few
seconds), then runs wrk in alternating rounds against:

- GET /healthz: no token check;
- GET /api/v1/items with a bearer token: JWT verified and scope checked on every request, the
  verified-token cache on as shipped;
- the same with keys from the JWKS, whose refreshes run during the measurement;
- the same with a DPoP-bound token and a new proof on every request (signature verified, jti
  written to the replay store shared by the workers: the default SQLite file, or
  --replay-store-url redis://... for Redis).

It prints requests/s for each and the ratios. Needs nginx, wrk and the bake's certs/. Rate
limiting is switched off for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import RSAKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gunicorn_sizing import RATE_LINE, benchmark_stack

from jose_helpers import JwksServer, access_token_hash, make_claims, mint
from stack import LiveStack

PATH = "/api/v1/items"
NON_2XX = "Non-2xx or 3xx responses"
# Each wrk thread takes every second proof from the file, each once: a proof is single-use.
DPOP_SCRIPT = """
local proofs, next_index = {}, 0
local thread_count = 2
local threads_made = 0
function setup(thread)
  thread:set("offset", threads_made)
  threads_made = threads_made + 1
end
function init(args)
  for line in io.lines(args[1]) do proofs[#proofs + 1] = line end
  next_index = offset + 1
end
function request()
  wrk.headers["DPoP"] = proofs[next_index] or "exhausted"
  next_index = next_index + thread_count
  return wrk.format()
end
"""


def wrk(
    url: str,
    headers: dict[str, str],
    seconds: int,
    connections: int,
    script: list[str] | None = None,
) -> str:
    """One wrk run; script is [lua file, its arguments...]. Every answer must be a 200."""
    binary = shutil.which("wrk")
    if not binary:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    command = [binary, "-t2", f"-c{connections}", f"-d{seconds}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", script[0], url, "--", *script[1:]]
    else:
        command.append(url)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if NON_2XX in output:
        raise SystemExit(f"{url}: some answers were not 200:\n{output}")
    return output


def rate(output: str) -> float:
    match = RATE_LINE.search(output)
    if match is None:
        raise SystemExit(f"wrk printed no rate:\n{output}")
    return float(match.group(1))


def ec_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    jwk: dict[str, str] = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return jwk


class DPoPClient:
    """A DPoP-bound token for the stack's issuer, and proofs made in bulk before each round."""

    def __init__(self, stack: LiveStack, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = ec_jwk(self.key)
        issuer_key = RSAKey.import_key(stack.private_key_pem)
        claims = make_claims(iss=stack.issuer, aud=stack.audience, exp=int(time.time()) + 7200)
        claims["cnf"] = {"jkt": self.thumbprint()}
        self.token = mint(issuer_key, claims)
        self.url = stack.url(PATH)
        self.proofs = directory / "proofs.txt"
        self.script = directory / "dpop.lua"
        self.script.write_text(DPOP_SCRIPT)

    def thumbprint(self) -> str:
        import base64  # noqa: PLC0415
        import hashlib  # noqa: PLC0415
        import json  # noqa: PLC0415

        members = {name: self.jwk[name] for name in ("crv", "kty", "x", "y")}
        digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
        return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()

    def write_proofs(self, count: int) -> None:
        now, ath = int(time.time()), access_token_hash(self.token)
        headers = {"typ": "dpop+jwt", "jwk": self.jwk}
        with self.proofs.open("w") as out:
            for _ in range(count):
                claims = {"jti": uuid.uuid4().hex, "htm": "GET", "htu": self.url, "iat": now,
                          "ath": ath}  # fmt: skip
                out.write(jwt.encode(claims, self.key, algorithm="ES256", headers=headers) + "\n")


@contextlib.contextmanager
def jwks_stack() -> Iterator[tuple[LiveStack, str]]:
    """A stack whose keys come from a JWKS on 127.0.0.1, refreshed every 5 s in the background."""
    server = JwksServer()
    settings = {"JWT_JWKS_URL": server.url, "JWT_PUBLIC_KEY_FILE": "",
                "JWT_JWKS_CACHE_SECONDS": "5", "JWT_JWKS_COOLDOWN_SECONDS": "1"}  # fmt: skip
    try:
        with benchmark_stack(settings) as stack:
            key = RSAKey.import_key(stack.private_key_pem)
            server.publish(key)
            claims = make_claims(iss=stack.issuer, aud=stack.audience, exp=int(time.time()) + 7200)
            token = mint(key, claims)
            # Published after the start: the first calls refetch it, once the cooldown allows.
            for _ in range(50):
                answer = stack.https("GET", PATH, headers={"Authorization": f"Bearer {token}"})
                if answer.status == 200:
                    break
                time.sleep(0.2)
            yield stack, token
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--proofs", type=int, default=60000, help="DPoP proofs made per round")
    parser.add_argument("--replay-store-url", default="", help="REPLAY_STORE_URL of the stack")
    args = parser.parse_args()
    store = {"REPLAY_STORE_URL": args.replay_store_url} if args.replay_store_url else {}
    with (
        benchmark_stack(store) as stack,
        jwks_stack() as (jwks, jwks_token),
        tempfile.TemporaryDirectory() as directory,
    ):
        bearer_token = mint(
            RSAKey.import_key(stack.private_key_pem),
            make_claims(iss=stack.issuer, aud=stack.audience, exp=int(time.time()) + 7200),
        )
        dpop = DPoPClient(stack, Path(directory))

        def run_dpop(seconds: int) -> str:
            dpop.write_proofs(args.proofs)
            headers = {"Authorization": f"DPoP {dpop.token}"}
            script = [str(dpop.script), str(dpop.proofs)]
            return wrk(stack.url(PATH), headers, seconds, args.connections, script)

        bearer_headers = {"Authorization": f"Bearer {bearer_token}"}
        variants: dict[str, Callable[[int], str]] = {
            "GET /healthz": lambda s: wrk(stack.url("/healthz"), {}, s, args.connections),
            "bearer (PEM key)": lambda s: wrk(stack.url(PATH), bearer_headers, s, args.connections),
            "bearer (JWKS)": lambda s: wrk(
                jwks.url(PATH), {"Authorization": f"Bearer {jwks_token}"}, s, args.connections
            ),
            "DPoP (new proof each)": run_dpop,
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for run in variants.values():  # warm-up (every worker fetches the JWKS key by now)
            with contextlib.suppress(SystemExit):
                run(3)
        # Alternating rounds, each starting with the next variant, so that load from elsewhere
        # on the machine and the order of the runs hit all alike.
        order = list(variants.items())
        for round_number in range(args.rounds):
            shift = round_number % len(order)
            for name, run in order[shift:] + order[:shift]:
                rates[name].append(rate(run(args.duration)))
                print(f"{name}: {rates[name][-1]:.0f} requests/s", flush=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    bare = median["GET /healthz"]
    print(f"median of {args.rounds} rounds (wrk -t2 -c{args.connections} -d{args.duration}s):")
    for name, value in median.items():
        print(f"  {name:24s} {value:8.0f}/s  {value / bare:.2f} of /healthz")
    print(f"  JWKS / PEM bearer = {median['bearer (JWKS)'] / median['bearer (PEM key)']:.2f}")
    print(
        f"  DPoP / bearer     = {median['DPoP (new proof each)'] / median['bearer (PEM key)']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
