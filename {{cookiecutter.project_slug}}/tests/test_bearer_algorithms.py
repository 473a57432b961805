"""The algorithm allowlist (JWT_ALGORITHMS) against validly signed tokens, with the key from
every source bearer.py reads keys from: a PEM key file, a JWKS whose key carries no "alg", and
a JWKS whose key names the very algorithm the token uses.

RFC 8725 section 3.1: the allowlist is configuration. Neither the token's header nor the
provider's key set can widen it; a key's own "alg" can only narrow it to that one algorithm.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from flask import Flask
from joserfc.jwk import ECKey, OKPKey

from jose_helpers import (
    ALG_DOES_NOT_FIT,
    ALG_NOT_ALLOWED,
    AUDIENCE,
    ISSUER,
    RSA_KEYS,
    JoseKey,
    JwksServer,
    make_claims,
    mint,
)
from {{ cookiecutter.package_name }} import bearer

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

SOURCES = ["key-file", "jwks", "jwks-alg"]
# The algorithms each kind of key can sign and verify.
FITS = {
    "rsa": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "ec": {"ES256"},
    "okp": {"EdDSA"},
}
# (JWT_ALGORITHMS, key, the token's alg, the refusal or None for accepted)
CASES = [
    ("RS256", "rsa", "RS256", None),
    ("RS256", "rsa", "PS256", ALG_NOT_ALLOWED),
    ("RS256", "rsa", "RS384", ALG_NOT_ALLOWED),
    ("RS256", "rsa", "PS512", ALG_NOT_ALLOWED),
    ("PS256", "rsa", "RS256", ALG_NOT_ALLOWED),
    ("PS256,RS256", "rsa", "PS256", None),
    ("RS512 ES256", "rsa", "RS512", None),
    ("ES256", "ec", "ES256", None),
    ("RS256", "ec", "ES256", ALG_NOT_ALLOWED),
    ("RS256 ES256", "ec", "ES256", None),
    ("EdDSA", "okp", "EdDSA", None),
    ("ES256 RS256", "okp", "EdDSA", ALG_NOT_ALLOWED),
]


class Case(NamedTuple):
    algorithms: str
    kind: str
    alg: str
    refusal: str | None
    source: str


def cases() -> Iterator[Any]:
    for algorithms, kind, alg, refusal in CASES:
        for source in SOURCES:
            # A key file that fits none of the algorithms is refused at start-up (tested there).
            if source == "key-file" and not FITS[kind] & set(algorithms.replace(",", " ").split()):
                continue
            outcome = "accepted" if refusal is None else "refused"
            case = Case(algorithms, kind, alg, refusal, source)
            yield pytest.param(case, id=f"{algorithms}-{alg}-{source}-{outcome}")


@pytest.fixture(scope="module")
def keys() -> dict[str, JoseKey]:
    return {
        "rsa": RSA_KEYS[0],
        "ec": ECKey.generate_key("P-256"),
        "okp": OKPKey.generate_key("Ed25519"),
    }


@pytest.fixture
def server() -> Iterator[JwksServer]:
    jwks = JwksServer()
    yield jwks
    jwks.stop()


def app_with_key(
    source: str, key: JoseKey, alg: str, *, algorithms: str, server: JwksServer, tmp_path: Path
) -> Flask:
    app = Flask("bearer_algorithms")
    app.config.update(
        APP_ENV="test", JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE, JWT_ALGORITHMS=algorithms
    )
    if source == "key-file":
        (tmp_path / "public.pem").write_bytes(key.as_pem(private=False))
        app.config["JWT_PUBLIC_KEY_FILE"] = str(tmp_path / "public.pem")
    else:
        server.publish(key, **({"alg": alg} if source == "jwks-alg" else {}))
        app.config["JWT_JWKS_URL"] = server.url
    bearer.init_app(app)

    @app.get("/read")
    @bearer.require_scopes("items:read")
    def read() -> str:
        return "ok"

    return app


@pytest.mark.parametrize("case", list(cases()))
def test_only_configured_algorithms_are_accepted_whatever_the_key_source(
    keys: dict[str, JoseKey], server: JwksServer, tmp_path: Path, case: Case
) -> None:
    key = keys[case.kind]
    app = app_with_key(
        case.source, key, case.alg, algorithms=case.algorithms, server=server, tmp_path=tmp_path
    )
    token = mint(key, make_claims(), alg=case.alg)
    response = app.test_client().get("/read", headers={"Authorization": f"Bearer {token}"})
    if case.refusal is None:
        assert response.status_code == 200, response.get_json()
    else:
        assert (response.status_code, response.get_json()["detail"]) == (401, case.refusal)
        assert response.get_json()["error"] == "invalid_token"


@pytest.mark.parametrize(("published", "alg"), [("RS256", "PS256"), ("PS256", "RS256")])
def test_a_key_published_for_one_algorithm_is_not_used_with_another(
    keys: dict[str, JoseKey], server: JwksServer, tmp_path: Path, published: str, alg: str
) -> None:
    # Both algorithms are allowed; the provider bound this key to one of them.
    app = app_with_key(
        "jwks-alg",
        keys["rsa"],
        published,
        algorithms="RS256 PS256",
        server=server,
        tmp_path=tmp_path,
    )
    client = app.test_client()
    accepted = mint(keys["rsa"], make_claims(), alg=published)
    assert client.get("/read", headers={"Authorization": f"Bearer {accepted}"}).status_code == 200
    token = mint(keys["rsa"], make_claims(), alg=alg)
    response = client.get("/read", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.get_json()["detail"]) == (401, ALG_DOES_NOT_FIT)
