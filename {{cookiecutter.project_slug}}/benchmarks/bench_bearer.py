"""Bearer-token cost per request: `PYTHONPATH=src python benchmarks/bench_bearer.py`.

Prints microseconds per request (Flask test client, one process) for a bare route and the same
route behind @require_scopes, with the verified-token cache on (the default) and off, plus
the raw PyJWT RS256 decode for reference. Throughput through nginx + gunicorn is measured
with wrk against the native stack (see the README).
"""

from __future__ import annotations

import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from {{ cookiecutter.package_name }} import bearer

ISSUER = "https://issuer.bench/"
AUDIENCE = "https://api.bench"
ROUNDS = 1000
# The best of many short runs: shared CI machines are noisy, the minimum is the real cost.
REPEATS = 15


def bench_app(key_file: Path, cache_size: int) -> Flask:
    app = Flask("bench")
    app.config.update(
        JWT_ISSUER=ISSUER,
        JWT_AUDIENCE=AUDIENCE,
        JWT_PUBLIC_KEY_FILE=str(key_file),
        JWT_VERIFIED_CACHE_SIZE=cache_size,
    )
    bearer.init_app(app)

    @app.get("/bare")
    def bare() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/protected")
    @bearer.require_scopes("items:read")
    def protected() -> dict[str, str]:
        return {"status": "ok"}

    return app


def per_call_us(function: Callable[[], object]) -> float:
    function()
    best = min(timeit.repeat(function, number=ROUNDS, repeat=REPEATS))
    return best / ROUNDS * 1e6


def main() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "iat": now, "exp": now + 3600}
    token = jwt.encode(
        {**claims, "scope": "items:read"}, key, algorithm="RS256", headers={"typ": "at+jwt"}
    )
    headers = {"Authorization": f"Bearer {token}"}
    with tempfile.TemporaryDirectory() as directory:
        key_file = Path(directory) / "public.pem"
        key_file.write_bytes(public_pem)
        cached = bench_app(key_file, cache_size=4096).test_client()
        uncached = bench_app(key_file, cache_size=0).test_client()
        loaded_key = key.public_key()
        figures = {
            "bare route": per_call_us(lambda: cached.get("/bare")),
            "protected, cache on": per_call_us(lambda: cached.get("/protected", headers=headers)),
            "protected, cache off": per_call_us(
                lambda: uncached.get("/protected", headers=headers)
            ),
            "PyJWT decode, loaded key": per_call_us(
                lambda: jwt.decode(token, loaded_key, algorithms=["RS256"], audience=AUDIENCE)
            ),
            "PyJWT decode, PEM string": per_call_us(
                lambda: jwt.decode(token, public_pem, algorithms=["RS256"], audience=AUDIENCE)
            ),
        }
    bare = figures["bare route"]
    for name, micros in figures.items():
        ratio = ""
        if "protected" in name:
            ratio = f"  (+{micros - bare:.1f} us, {bare / micros:.2f} of the bare route's rate)"
        print(f"{name:28s} {micros:8.1f} us{ratio}")


if __name__ == "__main__":
    main()
