"""Start-up refuses unsafe or incomplete configuration, naming the setting; every setting the
README documents reaches the part of the service that owns it."""

from __future__ import annotations

import base64
import logging
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from flask import Flask
from flask.helpers import get_debug_flag
from werkzeug.middleware.proxy_fix import ProxyFix

from {{ cookiecutter.package_name }} import create_app, webhooks
from {{ cookiecutter.package_name }}.settings import (
    MODULE_SETTINGS,
    ConfigError,
    load_settings,
    read_environment,
    refuse_local_issuer,
)

PROJECT = Path(__file__).resolve().parent.parent
README = PROJECT / "README.md"
NGINX_DERIVE = PROJECT / "deploy" / "nginx" / "10-derive-settings.envsh"
NGINX_SITE = PROJECT / "deploy" / "nginx" / "templates" / "default.conf.template"


def production_env(base_env: dict[str, str]) -> dict[str, str]:
    env = {**base_env, "APP_ENV": "production"}
    env.pop("REPLAY_STORE_URL")
    # Production keeps no signing key of its own: only the public key it trusts.
    env.pop("JWT_DEV_PRIVATE_KEY_FILE")
    return env


def start(env: Mapping[str, str | None]) -> Flask:
    """What gunicorn's master does before any worker starts: settings, then every init_app."""
    return create_app(load_settings({k: v for k, v in env.items() if v is not None}))


def refusal(env: Mapping[str, str | None]) -> str:
    # Each module raises its own error class; all are ValueErrors, as gunicorn.conf.py expects.
    with pytest.raises(ValueError, match=r"^[A-Z][A-Z0-9_]+: ") as caught:
        start(env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_complete_production_configuration_starts(base_env: dict[str, str]) -> None:
    app = start(production_env(base_env))
    assert app.config["APP_ENV"] == "production"
    assert app.extensions["bearer"].algorithms == ("RS256",)


def test_app_env_defaults_to_production(base_env: dict[str, str]) -> None:
    env = production_env(base_env)
    env.pop("APP_ENV")
    assert load_settings(env).is_production


UNSAFE_PRODUCTION = [
    pytest.param({"JWT_ISSUER": None}, "JWT_ISSUER", id="missing-issuer"),
    pytest.param({"JWT_AUDIENCE": ""}, "JWT_AUDIENCE", id="empty-audience"),
    pytest.param({"JWT_PUBLIC_KEY_FILE": None}, "JWT_JWKS_URL", id="no-key-source"),
    pytest.param(
        {"JWT_PUBLIC_KEY_FILE": "/nonexistent.pem"}, "JWT_PUBLIC_KEY_FILE", id="unreadable-key"
    ),
    pytest.param(
        {"JWT_JWKS_URL": "https://idp.example/jwks"}, "JWT_JWKS_URL", id="two-key-sources"
    ),
    pytest.param({"JWT_ALGORITHMS": "HS256"}, "JWT_ALGORITHMS", id="hs256"),
    pytest.param({"JWT_ALGORITHMS": "RS256,hs512"}, "JWT_ALGORITHMS", id="hs512-in-list"),
    pytest.param({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS", id="alg-none"),
    pytest.param({"JWT_ALGORITHMS": "RS257"}, "JWT_ALGORITHMS", id="unknown-alg"),
    pytest.param({"JWT_LEEWAY_SECONDS": "600"}, "JWT_LEEWAY_SECONDS", id="leeway-too-long"),
    pytest.param({"WEBHOOK_SECRET": None}, "WEBHOOK_SECRET", id="missing-webhook-secret"),
    pytest.param({"WEBHOOK_SECRET": "hunter2"}, "WEBHOOK_SECRET", id="webhook-secret-not-whsec"),
    pytest.param({"REPLAY_STORE_URL": "memory://"}, "REPLAY_STORE_URL", id="memory-store"),
    pytest.param({"REPLAY_STORE_URL": "postgres://db/x"}, "REPLAY_STORE_URL", id="unknown-store"),
    pytest.param({"APP_ENV": "staging"}, "APP_ENV", id="unknown-env"),
    pytest.param({"HSTS_MAX_AGE": "two years"}, "HSTS_MAX_AGE", id="hsts-not-a-number"),
    # Preload's own floor is the same year; in production the general floor speaks first.
    pytest.param({"HSTS_PRELOAD": "1", "HSTS_MAX_AGE": "300"}, "HSTS_MAX_AGE", id="preload-short"),
    pytest.param({"HSTS_PRELOAD": "maybe"}, "HSTS_PRELOAD", id="flag-garbage"),
    pytest.param({"HSTS_MAX_AGE": "0"}, "HSTS_MAX_AGE", id="hsts-off"),
    pytest.param({"HSTS_MAX_AGE": "31535999"}, "HSTS_MAX_AGE", id="hsts-under-a-year"),
    pytest.param({"TRUSTED_PROXY_HOPS": "-1"}, "TRUSTED_PROXY_HOPS", id="negative-hops"),
    pytest.param({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", id="unknown-log-level"),
    pytest.param({"JWT_ISSUER": "https://dev-issuer.localhost/"}, "JWT_ISSUER", id="dev-issuer"),
    pytest.param({"JWT_ISSUER": "http://127.0.0.1:9000/"}, "JWT_ISSUER", id="loopback-issuer"),
]


@pytest.mark.parametrize(("changes", "setting"), UNSAFE_PRODUCTION)
def test_unsafe_production_configuration_is_refused(
    base_env: dict[str, str], changes: dict[str, str | None], setting: str
) -> None:
    assert refusal({**production_env(base_env), **changes}).startswith(f"{setting}: ")


# Every spelling of this host: a production start must not trust a token minted locally.
LOCAL_ISSUERS = [
    "https://localhost/",
    "https://localhost./",
    "https://LOCALHOST/",
    "https://issuer.localhost./",
    "https://127.0.0.1/",
    "https://127.1/",
    "https://2130706433/",
    "https://0.0.0.0/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::]/",
    "https://0177.0.0.1/",
    "https://[::1%25lo]/",
    "https://[::127.0.0.1]/",  # IPv4-compatible IPv6, deprecated but still a spelling
    "https://%6cocalhost/",  # percent-encoded, as URL parsers decode it
    "https://localhost%2e/",
    "https://ip6-localhost/",  # Debian's names for ::1
    "https://ip6-loopback/",
    "https://localhost.localdomain/",  # Red Hat's
    "https://localhost6.localdomain6./",
]


@pytest.mark.parametrize("issuer", LOCAL_ISSUERS)
def test_every_spelling_of_a_local_issuer_is_refused_in_production(
    base_env: dict[str, str], issuer: str
) -> None:
    with pytest.raises(ConfigError, match=r"^JWT_ISSUER: .*local development issuer"):
        load_settings({**production_env(base_env), "JWT_ISSUER": issuer})


@pytest.mark.parametrize(
    "issuer", ["https://issuer.example.com/", "https://localhost.example.com/", "https://10.0.0.1/"]
)
def test_real_issuers_are_accepted_in_production(base_env: dict[str, str], issuer: str) -> None:
    assert load_settings({**production_env(base_env), "JWT_ISSUER": issuer}).is_production


def test_names_this_hosts_file_maps_to_loopback_are_local_issuers(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n127.0.1.1 build-box build-box.lan # Debian's own name\n"
        "::1 localhost ip6-localhost\n10.1.2.3 idp.internal\n"
    )
    for issuer in ("https://build-box/", "https://BUILD-BOX.lan./"):
        with pytest.raises(ConfigError, match=r"^JWT_ISSUER: "):
            refuse_local_issuer(issuer, hosts_file=hosts)
    refuse_local_issuer("https://idp.internal/", hosts_file=hosts)
    refuse_local_issuer("https://build-box/", hosts_file=tmp_path / "missing")


def test_the_dev_key_is_refused_in_production(
    base_env: dict[str, str], signing_keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a production start from a checkout would trust if the bake's .env filled in the
    # key: the public half of a pair whose private half sits on this host for dev-token.
    env = {**production_env(base_env), "JWT_DEV_PRIVATE_KEY_FILE": str(signing_keys.private_file)}
    assert refusal(env).startswith("JWT_PUBLIC_KEY_FILE: ")
    # The same through the default dev key location, relative to the working directory.
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "dev_jwt_private.pem").write_bytes(signing_keys.private_pem)
    monkeypatch.chdir(tmp_path)
    assert refusal(production_env(base_env)).startswith("JWT_PUBLIC_KEY_FILE: ")
    # Outside production, that pair is exactly what local development uses.
    assert start({**env, "APP_ENV": "development"}).config["APP_ENV"] == "development"


@pytest.mark.parametrize(("app_env", "refused"), [(None, True), ("production", True),
                                                  ("staging", True), ("development", False),
                                                  ("test", False)])  # fmt: skip
def test_nginx_refuses_a_short_hsts_outside_development(app_env: str | None, refused: bool) -> None:
    # nginx sends the HSTS header clients see (it hides the app's copy), so it checks too;
    # an unknown APP_ENV counts as production there, as the app refuses it anyway.
    settings = {"HSTS_MAX_AGE": "0"} | ({"APP_ENV": app_env} if app_env else {})
    derived = run_nginx_derive(settings)
    if refused:
        assert derived.returncode != 0
        assert derived.stderr.startswith("configuration error: HSTS_MAX_AGE: ")
    else:
        assert derived.returncode == 0, derived.stderr
    assert run_nginx_derive({**settings, "HSTS_MAX_AGE": "31536000"}).returncode == 0


# Flask turns its debugger on for every FLASK_DEBUG value but these (flask.helpers), and
# compares them unstripped: " 0" is on.
DEBUG_ON = ["1", "true", "True", "TRUE", "yes", "on", "2", "debug", " 1 ", " 0 ", "0 ", " ",
            "no ", "off", "OFF"]  # fmt: skip
DEBUG_OFF = ["", "0", "false", "False", "FALSE", "no", "No", "NO"]


@pytest.mark.parametrize("value", DEBUG_ON)
def test_every_spelling_of_debug_on_is_refused_in_production(
    base_env: dict[str, str], value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_DEBUG", value)
    assert get_debug_flag(), "Flask itself reads this as off"
    with pytest.raises(ConfigError) as refused:
        load_settings({**production_env(base_env), "FLASK_DEBUG": value})
    assert str(refused.value) == (
        "FLASK_DEBUG: must be off in production (the debugger executes code)"
    )
    # Outside production the debugger is the developer's choice.
    assert load_settings({**base_env, "FLASK_DEBUG": value}).app_env == "test"


@pytest.mark.parametrize("value", DEBUG_OFF)
def test_debug_off_starts_in_production(
    base_env: dict[str, str], value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_DEBUG", value)
    assert not get_debug_flag(), "Flask itself reads this as on"
    assert load_settings({**production_env(base_env), "FLASK_DEBUG": value}).is_production


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example/jwks",
        "http://127.0.0.1:9000/jwks",
        "ftp://idp.example/jwks",
        "https:///x",
    ],
)
def test_jwks_url_must_be_https_in_production(base_env: dict[str, str], url: str) -> None:
    env: dict[str, str | None] = {**production_env(base_env), "JWT_JWKS_URL": url}
    env["JWT_PUBLIC_KEY_FILE"] = None
    assert refusal(env).startswith("JWT_JWKS_URL: ")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/jwks", "http://localhost:9/jwks", "http://[::1]:9/j"]
)
def test_http_jwks_allowed_for_loopback_outside_production(
    base_env: dict[str, str], url: str
) -> None:
    # Port 9 (discard) is closed: the app starts without keys and answers 503 until they come.
    app = start({**base_env, "APP_ENV": "development", "JWT_JWKS_URL": url,
                 "JWT_PUBLIC_KEY_FILE": None, "JWT_JWKS_TIMEOUT_SECONDS": "1"})  # fmt: skip
    assert app.extensions["bearer"].keys.url == url


def test_http_jwks_refused_for_other_hosts_outside_production(base_env: dict[str, str]) -> None:
    env: dict[str, str | None] = {**base_env, "APP_ENV": "development"}
    env.update(JWT_JWKS_URL="http://idp.example/jwks", JWT_PUBLIC_KEY_FILE=None)
    assert refusal(env).startswith("JWT_JWKS_URL: ")


@pytest.mark.parametrize(("workers", "refused"), [("1", False), ("2", True), ("3", True)])
def test_memory_store_refused_with_more_than_one_worker(
    base_env: dict[str, str], workers: str, refused: bool
) -> None:
    env = {**base_env, "REPLAY_STORE_URL": "memory://", "WEB_CONCURRENCY": workers}
    if refused:
        with pytest.raises(ConfigError, match=r"^REPLAY_STORE_URL: .*WEB_CONCURRENCY"):
            load_settings(env)
    else:
        assert load_settings(env).web_concurrency == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_web_concurrency_must_be_a_positive_whole_number(
    base_env: dict[str, str], value: str
) -> None:
    with pytest.raises(ConfigError, match=r"^WEB_CONCURRENCY: "):
        load_settings({**base_env, "WEB_CONCURRENCY": value})


def test_webhook_secrets_are_split_for_rotation(base_env: dict[str, str]) -> None:
    old, new = base_env["WEBHOOK_SECRET"], "whsec_" + "A" * 44
    app = start({**base_env, "WEBHOOK_SECRET": f"{old}  {new}"})
    keys = app.extensions["webhooks"].keys[webhooks.STANDARD_WEBHOOKS.name]["v1"]
    assert keys == (webhooks.decode_standard_secret(old), webhooks.decode_standard_secret(new))


def test_a_webhook_public_key_alone_is_enough_in_production(base_env: dict[str, str]) -> None:
    # v1a: the receiver holds only the sender's public key, no shared secret at all.
    env: dict[str, str | None] = {**production_env(base_env), "WEBHOOK_SECRET": None}
    env["WEBHOOK_PUBLIC_KEY"] = WEBHOOK_PUBLIC_KEY
    keys = start(env).extensions["webhooks"].keys[webhooks.STANDARD_WEBHOOKS.name]
    assert keys == {"v1": (), "v1a": (PUBLIC_KEY_BYTES,)}


def test_secrets_never_appear_in_repr_or_errors(base_env: dict[str, str]) -> None:
    secret = base_env["WEBHOOK_SECRET"]
    settings = load_settings(
        {
            **base_env,
            "GITHUB_WEBHOOK_SECRET": "gh-secret-value",
            "REPLAY_STORE_URL": "rediss://default:redis-password@redis.internal:6380/0",
        }
    )
    assert "redis-password" not in repr(settings)
    assert secret not in repr(settings)
    assert "gh-secret-value" not in repr(settings)
    assert "not-a-whsec-secret-value" not in refusal(
        {**base_env, "WEBHOOK_SECRET": "not-a-whsec-secret-value"}
    )


def test_real_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("JWT_ISSUER=https://from-file/\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("JWT_ISSUER", "https://from-environment/")
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    merged = read_environment(dotenv)
    assert merged["JWT_ISSUER"] == "https://from-environment/"
    assert merged["LOG_LEVEL"] == "DEBUG"


def test_flask_config_carries_every_module_setting_and_fixed_policy(
    base_env: dict[str, str],
) -> None:
    config = load_settings(dict.fromkeys(MODULE_SETTINGS, "x") | base_env).flask_config()
    assert set(MODULE_SETTINGS) <= config.keys()
    assert config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert config["DEBUG"] is False
    assert config["PROPAGATE_EXCEPTIONS"] is False


# --------------------------------------------------------------------- the README's table


def readme_settings() -> list[str]:
    """Every setting named in the first column of the README's configuration table."""
    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1]
    section = section.split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])
    return names


@dataclass(frozen=True)
class Documented:
    """How to see a README setting at work: a value its owner must refuse, and a valid value
    other than the default with what the owner then holds (read from the owner itself)."""

    invalid: str
    valid: str
    seen: Callable[[Any], object]
    expected: object
    owner: str = "app"  # app, nginx, gunicorn or dev-token
    production: bool = False  # the invalid value is refused in production only
    files: tuple[tuple[str, str], ...] = ()  # (name, text) the valid value needs, in the cwd


def bearer_of(app: Flask) -> Any:
    return app.extensions["bearer"]


def dpop_of(app: Flask) -> Any:
    return app.extensions["dpop"]


def webhooks_of(app: Flask) -> Any:
    return app.extensions["webhooks"]


def standard_keys(app: Flask) -> Any:
    return webhooks_of(app).keys[webhooks.STANDARD_WEBHOOKS.name]


def proxy_fix_hops(app: Flask) -> object:
    middleware = app.wsgi_app
    return middleware.x_for if isinstance(middleware, ProxyFix) else 0


def speaks_for_clients(app: Flask, peer: str) -> bool:
    """Whether the app believes peer's X-Forwarded-Proto (HSTS goes only on HTTPS answers)."""
    response = app.test_client().get(
        "/healthz", headers={"X-Forwarded-Proto": "https"}, environ_base={"REMOTE_ADDR": peer}
    )
    return "Strict-Transport-Security" in response.headers


def hsts_of(app: Flask) -> object:
    response = app.test_client().get("/healthz", headers={"X-Forwarded-Proto": "https"})
    return response.headers.get("Strict-Transport-Security")


GITHUB_SECRET = "g" * 40
PUBLIC_KEY_BYTES = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
WEBHOOK_PUBLIC_KEY = "whpk_" + base64.b64encode(PUBLIC_KEY_BYTES).decode()
STRIPE_SECRET = "whsec_" + "s" * 40

DOCUMENTED: dict[str, Documented] = {
    "APP_ENV": Documented("staging", "development", lambda app: app.config["APP_ENV"],
                          "development"),
    "JWT_ISSUER": Documented("", "https://other-issuer.test/",
                             lambda app: bearer_of(app).issuer, "https://other-issuer.test/"),
    "JWT_AUDIENCE": Documented("", "https://other-api.test",
                               lambda app: bearer_of(app).audience, "https://other-api.test"),
    "JWT_JWKS_URL": Documented("http://idp.example/jwks", "http://127.0.0.1:9/jwks",
                               lambda app: bearer_of(app).keys.url, "http://127.0.0.1:9/jwks"),
    "JWT_PUBLIC_KEY_FILE": Documented("/nonexistent.pem", "", lambda app: None, None),
    "JWT_ALGORITHMS": Documented("HS256", "RS256,PS256", lambda app: bearer_of(app).algorithms,
                                 ("RS256", "PS256")),
    "JWT_LEEWAY_SECONDS": Documented("301", "300", lambda app: bearer_of(app).leeway, 300),
    "JWT_TOKEN_TYPE": Documented("a b", "any", lambda app: bearer_of(app).token_type, None),
    "JWT_REALM": Documented('x"y', "orders", lambda app: bearer_of(app).realm, "orders"),
    "JWT_MAX_TOKEN_BYTES": Documented("255", "256",
                                      lambda app: bearer_of(app).max_token_bytes, 256),
    "JWT_JWKS_CACHE_SECONDS": Documented("0", "86400",
                                         lambda app: bearer_of(app).keys.max_age, 86400),
    "JWT_JWKS_COOLDOWN_SECONDS": Documented("3601", "3600",
                                            lambda app: bearer_of(app).keys.cooldown, 3600),
    "JWT_JWKS_TIMEOUT_SECONDS": Documented("61", "2",
                                           lambda app: bearer_of(app).keys.timeout, 2),
    "JWT_VERIFIED_CACHE_SIZE": Documented("-1", "0", lambda app: bearer_of(app).cache.size, 0),
    "API_KEYS_FILE": Documented("/nonexistent/api-keys.json", "api-keys.json",
                                lambda app: app.extensions["apikeys"].key_file.path,
                                Path("api-keys.json"), files=(("api-keys.json", '{"keys": []}'),)),
    "JWT_DPOP": Documented("sometimes", "required", lambda app: dpop_of(app).required, True),
    "JWT_DPOP_ALGORITHMS": Documented("ES256 HS256", "ES256,EdDSA",
                                      lambda app: dpop_of(app).algorithms, ("ES256", "EdDSA")),
    "JWT_DPOP_ORIGINS": Documented("http://api.example.com",
                                   "https://API.example.com:443 https://localhost:8443",
                                   lambda app: dpop_of(app).origins,
                                   frozenset({"https://api.example.com", "https://localhost:8443"})),
    "JWT_DEV_PRIVATE_KEY_FILE": Documented("/nonexistent.pem", "", lambda app: None, None,
                                           owner="dev-token"),
    "WEBHOOK_SECRET": Documented("whsec_!!!", "whsec_" + "B" * 44,
                                 lambda app: len(standard_keys(app)["v1"]), 1),
    "WEBHOOK_PUBLIC_KEY": Documented("whsk_" + "A" * 86, WEBHOOK_PUBLIC_KEY,
                                     lambda app: standard_keys(app)["v1a"],
                                     (PUBLIC_KEY_BYTES,)),
    "GITHUB_WEBHOOK_SECRET": Documented("g" * 31, GITHUB_SECRET,
                                        lambda app: webhooks_of(app).keys["github"]["sha256"],
                                        (GITHUB_SECRET.encode(),), production=True),
    "STRIPE_WEBHOOK_SECRET": Documented("whsec_" + "s" * 25, STRIPE_SECRET,
                                        lambda app: webhooks_of(app).keys["stripe"]["v1"],
                                        (STRIPE_SECRET.encode(),), production=True),
    "WEBHOOK_TOLERANCE_SECONDS": Documented("3601", "3600",
                                            lambda app: webhooks_of(app).tolerance, 3600),
    "WEBHOOK_REPLAY_TTL_SECONDS": Documented("0", "2592000",
                                             lambda app: webhooks_of(app).replay_ttl, 2592000),
    "WEBHOOK_LEASE_SECONDS": Documented("0", "5", lambda app: webhooks_of(app).lease, 5),
    "REPLAY_STORE_URL": Documented("postgres://db/x", "sqlite:///replay.sqlite3",
                                   lambda app: type(webhooks_of(app).store).__name__,
                                   "SqliteReplayStore"),
    "TRUSTED_PROXY_HOPS": Documented("-1", "2", proxy_fix_hops, 2),
    "FORWARDED_ALLOW_IPS": Documented("10.0.0.300", "10.0.0.0/8",
                                      lambda app: speaks_for_clients(app, "10.1.2.3"), True),
    "HSTS_MAX_AGE": Documented("-5", "31536000", hsts_of, "max-age=31536000; includeSubDomains"),
    "HSTS_PRELOAD": Documented("maybe", "yes", hsts_of,
                               "max-age=63072000; includeSubDomains; preload"),
    "LOG_LEVEL": Documented("LOUD", "warning", lambda app: logging.getLogger().level,
                            logging.WARNING),
    "RATE_LIMIT_PER_SECOND": Documented("fast", "7", lambda conf: "rate=7r/s" in conf, True,
                                        owner="nginx"),
    "RATE_LIMIT_BURST": Documented("-1", "9", lambda conf: "burst=9 nodelay" in conf, True,
                                   owner="nginx"),
    "WEB_CONCURRENCY": Documented("0", "3", lambda conf: conf["workers"], 3, owner="gunicorn"),
    "GUNICORN_THREADS": Documented("0", "5", lambda conf: conf["threads"], 5, owner="gunicorn"),
}  # fmt: skip
# Both parts check these: the app (its headers) and nginx (its own copy of the HSTS header).
ALSO_NGINX = {"HSTS_MAX_AGE": "-5", "HSTS_PRELOAD": "maybe"}


def test_every_readme_setting_has_a_check() -> None:
    documented = readme_settings()
    assert len(documented) == len(set(documented)), "a setting is listed twice"
    assert set(documented) == set(DOCUMENTED)


def test_every_module_setting_is_in_the_readme() -> None:
    assert set(MODULE_SETTINGS) - {"APP_ENV"} <= set(readme_settings())


def run_nginx_derive(settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The script nginx's image sources before rendering its templates (devstack too)."""
    env = {"RATE_LIMIT_PER_SECOND": "20", "RATE_LIMIT_BURST": "40", "HSTS_MAX_AGE": "63072000",
           "HTTPS_PORT": "443", "UPSTREAM_SERVER": "app:8000", "PATH": "/usr/bin:/bin",
           **settings}  # fmt: skip
    printer = '. "$1" && echo "rate=${NGINX_LIMIT_REQ_RATE}r/s ${NGINX_LIMIT_REQ_OPTIONS}"'
    return subprocess.run(
        ["sh", "-c", printer, "sh", str(NGINX_DERIVE)],
        env=env, capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def load_gunicorn_conf(environment: dict[str, str]) -> dict[str, Any]:
    """gunicorn.conf.py as gunicorn loads it: a module run with the process environment."""
    code = compile((PROJECT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec")
    namespace: dict[str, Any] = {"__name__": "gunicorn_conf"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        exec(code, namespace)  # noqa: S102 - the project's own config file
    return namespace


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_invalid_value_stops_start_up_naming_the_setting(
    name: str,
    base_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    case = DOCUMENTED[name]
    env = production_env(base_env) if case.production else base_env
    if case.owner == "app":
        assert refusal({**env, name: case.invalid}).startswith(f"{name}: ")
    elif case.owner == "nginx":
        derived = run_nginx_derive({name: case.invalid})
        assert derived.returncode != 0
        assert derived.stderr.startswith(f"configuration error: {name}: ")
    elif case.owner == "gunicorn":
        monkeypatch.chdir(tmp_path)  # no .env here: only the environment counts
        with pytest.raises(SystemExit):
            load_gunicorn_conf({name: case.invalid})
        assert capsys.readouterr().err.startswith(f"configuration error: {name}: ")
    else:
        app = start({**env, name: case.invalid})
        dev_token = app.test_cli_runner().invoke(args=["dev-token", "--sub", "alice"])
        assert dev_token.exit_code != 0
        assert name in dev_token.output
    if name in ALSO_NGINX:
        derived = run_nginx_derive({name: ALSO_NGINX[name]})
        assert derived.returncode != 0
        assert derived.stderr.startswith(f"configuration error: {name}: ")


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_valid_value_reaches_the_part_that_owns_it(
    name: str,
    base_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    case = DOCUMENTED[name]
    monkeypatch.chdir(tmp_path)  # relative paths (sqlite:///replay.sqlite3) land here
    for file_name, text in case.files:
        (tmp_path / file_name).write_text(text)
    if name in ("JWT_PUBLIC_KEY_FILE", "JWT_DEV_PRIVATE_KEY_FILE"):
        # The key files have no "other" value to read back: the key itself shows it arrived.
        dev_token = start(base_env).test_cli_runner().invoke(args=["dev-token", "--sub", "a"])
        assert dev_token.exit_code == 0, dev_token.output
        client = start(base_env).test_client()
        answer = client.get(
            "/api/v1/me",
            headers={"Authorization": f"Bearer {dev_token.output.strip()}",
                     "X-Forwarded-Proto": "https"},
        )  # fmt: skip
        assert answer.status_code == 200
        return
    if case.owner == "nginx":
        result = run_nginx_derive({name: case.valid})
        assert result.returncode == 0, result.stderr
        assert case.seen(result.stdout) == case.expected
        return
    if case.owner == "gunicorn":
        assert case.seen(load_gunicorn_conf({name: case.valid})) == case.expected
        return
    env: dict[str, str | None] = {**base_env}
    if name.startswith("JWT_JWKS_"):
        # Port 9 is closed: the app starts without keys (503 until they come), quickly.
        env.update(JWT_PUBLIC_KEY_FILE=None, JWT_JWKS_URL="http://127.0.0.1:9/jwks")
    app = start({**env, name: case.valid})
    assert case.seen(app) == case.expected


# (setting, gunicorn.conf.py's name, least value, default). gunicorn reads 0 as "no limit" or
# "never" for those with a least value of 1: a typo must not start without the fence.
GUNICORN_WHOLE_NUMBERS = [
    ("GUNICORN_THREADS", "threads", 1, 2),
    ("GUNICORN_TIMEOUT", "timeout", 1, 30),  # 0: a stuck worker is never replaced
    ("GUNICORN_GRACEFUL_TIMEOUT", "graceful_timeout", 0, 30),
    ("GUNICORN_KEEPALIVE", "keepalive", 0, 75),
    ("GUNICORN_LIMIT_REQUEST_LINE", "limit_request_line", 1, 4094),  # 0: any length
    ("GUNICORN_LIMIT_REQUEST_FIELDS", "limit_request_fields", 1, 100),  # 0: 32768 headers
    ("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", "limit_request_field_size", 1, 8190),  # 0: any size
]


def gunicorn_refusal(environment: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        load_gunicorn_conf(environment)
    assert stopped.value.code == 1
    return capsys.readouterr().err


@pytest.mark.parametrize(("name", "key", "least", "default"), GUNICORN_WHOLE_NUMBERS)
def test_gunicorn_whole_numbers_at_their_boundaries(
    name: str, key: str, least: int, default: int, *,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # no .env here: only the environment counts
    assert load_gunicorn_conf({name: str(least)})[key] == least
    assert load_gunicorn_conf({name: f" {least + 1} "})[key] == least + 1
    assert load_gunicorn_conf({name: " "})[key] == default
    for value in (str(least - 1), "+5", "1.5", "many"):
        assert gunicorn_refusal({name: value}, capsys) == (
            f"configuration error: {name}: must be a whole number of at least {least}, "
            f"got {value!r}\n"
        )


def test_gunicorn_refuses_what_the_app_refuses(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert gunicorn_refusal({"FORWARDED_ALLOW_IPS": "127.0.0.1, nginx"}, capsys) == (
        "configuration error: FORWARDED_ALLOW_IPS: 'nginx' is not an IP address or network "
        "(host names are not resolved)\n"
    )
    assert gunicorn_refusal({"TRUSTED_PROXY_HOPS": "-1"}, capsys) == (
        "configuration error: TRUSTED_PROXY_HOPS: must be a whole number of at least 0, got '-1'\n"
    )
    assert gunicorn_refusal({"WEB_CONCURRENCY": "0"}, capsys) == (
        "configuration error: WEB_CONCURRENCY: must be a whole number of at least 1, got '0'\n"
    )
    assert gunicorn_refusal({"LOG_LEVEL": "LOUD"}, capsys).startswith(
        "configuration error: LOG_LEVEL: "
    )
    # Blank means the default, a proxy on this host, as in transport.py.
    assert load_gunicorn_conf({"FORWARDED_ALLOW_IPS": " "})["forwarded_allow_ips"] == (
        "127.0.0.1,::1"
    )
    # The access log names the client as the app does: through as many proxies, from zero.
    for hops in ("0", "2"):
        json_format = load_gunicorn_conf({"TRUSTED_PROXY_HOPS": hops})["logconfig_dict"]
        assert json_format["formatters"]["json"]["trusted_proxy_hops"] == int(hops)


def test_gunicorn_control_socket_is_opt_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GUNICORN_CONTROL_SOCKET", raising=False)
    assert load_gunicorn_conf({})["control_socket_disable"] is True
    opted_in = load_gunicorn_conf({"GUNICORN_CONTROL_SOCKET": str(tmp_path / "ctl.sock")})
    assert opted_in["control_socket_disable"] is False
    assert opted_in["control_socket"] == str(tmp_path / "ctl.sock")
