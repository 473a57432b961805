"""API key cost per request: `PYTHONPATH=src python benchmarks/bench_api_keys.py`.

Prints microseconds per call (one process) for the credential checks alone, an API key
(format and checksum, SHA-256, a stat of the key file, lookup and constant-time compare)
against a bearer token found in the verified-token cache, and then for whole requests through
the Flask test client: a bare route, and the same route behind bearer.require_scopes with a
cached token and with an API key. The claim it checks: a key costs no more than a cached token.
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

from {{ cookiecutter.package_name }} import apikeys, bearer

ISSUER = "https://issuer.bench/"
AUDIENCE = "https://api.bench"
ROUNDS = 2000
# The best of many short runs: shared CI machines are noisy, the minimum is the real cost.
REPEATS = 15


def bench_app(directory: Path) -> tuple[Flask, str, str]:
    """An app with bearer.py and apikeys.py, a token and a key that both hold items:read."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_file = directory / "public.pem"
    public_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # A realistic file: a few hundred other keys around ours.
    prefix = apikeys.key_prefix("bench")
    now = int(time.time())
    records = []
    for number in range(300):
        key_id, api_key = apikeys.new_key(prefix)
        records.append(
            apikeys.KeyRecord(
                key_id, f"client-{number}", frozenset({"items:read"}), now, now + 86400,
                apikeys.key_digest(api_key),
            )
        )  # fmt: skip
    key_file = directory / "api-keys.json"
    apikeys.write_key_file(key_file, records)
    app = Flask("bench")
    app.config.update(
        JWT_ISSUER=ISSUER,
        JWT_AUDIENCE=AUDIENCE,
        JWT_PUBLIC_KEY_FILE=str(public_file),
        API_KEYS_FILE=str(key_file),
    )
    bearer.init_app(app)
    apikeys.init_app(app)

    @app.get("/bare")
    def bare() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/protected")
    @bearer.require_scopes("items:read")
    def protected() -> dict[str, str]:
        return {"status": "ok"}

    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "iat": now, "exp": now + 3600}
    token = jwt.encode({**claims, "scope": "items:read"}, key, algorithm="RS256")
    return app, token, api_key


def best_us(functions: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Microseconds per call of each function: the best of REPEATS rounds, taken in turns so
    that a busy spell of a shared machine hits every function alike."""
    best = dict.fromkeys(functions, float("inf"))
    for function in functions.values():
        function()
    for _ in range(REPEATS):
        for name, function in functions.items():
            best[name] = min(best[name], timeit.timeit(function, number=ROUNDS))
    return {name: seconds / ROUNDS * 1e6 for name, seconds in best.items()}


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        app, token, api_key = bench_app(Path(directory))
        verifier = app.extensions["bearer"]
        keys = app.extensions["apikeys"]
        assert keys.verify(api_key).sub.startswith("apikey:")
        verifier.verify(token)  # now in the verified-token cache
        client = app.test_client()
        with_token = {"Authorization": f"Bearer {token}"}
        with_key = {"X-API-Key": api_key}
        assert client.get("/protected", headers=with_token).status_code == 200
        assert client.get("/protected", headers=with_key).status_code == 200
        checks = best_us(
            {
                "token check, cache hit": lambda: verifier.verify(token),
                "API key check": lambda: keys.verify(api_key),
            }
        )
        requests = best_us(
            {
                "bare route": lambda: client.get("/bare"),
                "protected, cached token": lambda: client.get("/protected", headers=with_token),
                "protected, API key": lambda: client.get("/protected", headers=with_key),
            }
        )
    for name, micros in checks.items():
        print(f"{name:28s} {micros:8.2f} us")
    bare = requests["bare route"]
    for name, micros in requests.items():
        extra = f"  (+{micros - bare:.1f} us over the bare route)" if name != "bare route" else ""
        print(f"{name:28s} {micros:8.1f} us{extra}")
    key_check, token_check = checks["API key check"], checks["token check, cache hit"]
    key_request = requests["protected, API key"] - bare
    token_request = requests["protected, cached token"] - bare
    print(
        f"API key / cached token: {key_check / token_check:.2f} for the check alone, "
        f"{key_request / token_request:.2f} for the request overhead"
    )


if __name__ == "__main__":
    main()
