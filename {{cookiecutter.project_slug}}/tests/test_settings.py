"""Start-up refuses unsafe or incomplete configuration, naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.settings import ConfigError, load_settings, read_environment


def production_env(base_env: dict[str, str]) -> dict[str, str]:
    env = {**base_env, "APP_ENV": "production"}
    env.pop("REPLAY_STORE_URL")
    return env


def test_complete_production_configuration_loads(base_env: dict[str, str]) -> None:
    settings = load_settings(production_env(base_env))
    assert settings.is_production
    assert settings.jwt_algorithms == ("RS256",)
    assert settings.jwt_leeway_seconds == 30
    assert settings.hsts_max_age == 63072000
    assert settings.hsts_preload is False
    assert settings.trusted_proxy_hops == 1


def test_app_env_defaults_to_production(base_env: dict[str, str]) -> None:
    env = production_env(base_env)
    env.pop("APP_ENV")
    assert load_settings(env).app_env == "production"


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
    pytest.param({"FLASK_DEBUG": "1"}, "FLASK_DEBUG", id="debug-on"),
    pytest.param({"WEBHOOK_SECRET": None}, "WEBHOOK_SECRET", id="missing-webhook-secret"),
    pytest.param({"WEBHOOK_SECRET": "hunter2"}, "WEBHOOK_SECRET", id="webhook-secret-not-whsec"),
    pytest.param({"REPLAY_STORE_URL": "memory://"}, "REPLAY_STORE_URL", id="memory-store"),
    pytest.param({"REPLAY_STORE_URL": "postgres://db/x"}, "REPLAY_STORE_URL", id="unknown-store"),
    pytest.param({"APP_ENV": "staging"}, "APP_ENV", id="unknown-env"),
    pytest.param({"HSTS_MAX_AGE": "two years"}, "HSTS_MAX_AGE", id="hsts-not-a-number"),
    pytest.param({"HSTS_PRELOAD": "1", "HSTS_MAX_AGE": "300"}, "HSTS_PRELOAD", id="preload-short"),
    pytest.param({"HSTS_PRELOAD": "maybe"}, "HSTS_PRELOAD", id="flag-garbage"),
    pytest.param({"TRUSTED_PROXY_HOPS": "-1"}, "TRUSTED_PROXY_HOPS", id="negative-hops"),
    pytest.param({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", id="unknown-log-level"),
    pytest.param({"JWT_ISSUER": "https://dev-issuer.localhost/"}, "JWT_ISSUER", id="dev-issuer"),
    pytest.param({"JWT_ISSUER": "http://127.0.0.1:9000/"}, "JWT_ISSUER", id="loopback-issuer"),
]


@pytest.mark.parametrize(("changes", "setting"), UNSAFE_PRODUCTION)
def test_unsafe_production_configuration_is_refused(
    base_env: dict[str, str], changes: dict[str, str | None], setting: str
) -> None:
    merged = {**production_env(base_env), **changes}
    env = {key: value for key, value in merged.items() if value is not None}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.setting == setting
    assert str(caught.value).startswith(f"{setting}: ")
    assert "\n" not in str(caught.value)


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
    env = {**production_env(base_env), "JWT_JWKS_URL": url}
    env.pop("JWT_PUBLIC_KEY_FILE")
    with pytest.raises(ConfigError, match=r"^JWT_JWKS_URL: "):
        load_settings(env)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000/jwks", "http://localhost/jwks", "http://[::1]/j"]
)
def test_http_jwks_allowed_for_loopback_outside_production(
    base_env: dict[str, str], url: str
) -> None:
    env = {**base_env, "APP_ENV": "development", "JWT_JWKS_URL": url}
    env.pop("JWT_PUBLIC_KEY_FILE")
    assert load_settings(env).jwt_jwks_url == url


def test_http_jwks_refused_for_other_hosts_outside_production(base_env: dict[str, str]) -> None:
    env = {**base_env, "APP_ENV": "development", "JWT_JWKS_URL": "http://idp.example/jwks"}
    env.pop("JWT_PUBLIC_KEY_FILE")
    with pytest.raises(ConfigError, match=r"^JWT_JWKS_URL: "):
        load_settings(env)


def test_memory_store_refused_with_several_workers(base_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^REPLAY_STORE_URL: .*WEB_CONCURRENCY"):
        load_settings({**base_env, "WEB_CONCURRENCY": "3"})


def test_webhook_secrets_are_split_for_rotation(base_env: dict[str, str]) -> None:
    old, new = base_env["WEBHOOK_SECRET"], "whsec_" + "A" * 44
    settings = load_settings({**base_env, "WEBHOOK_SECRET": f"{old}  {new}"})
    assert settings.webhook_secret == (old, new)


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
    with pytest.raises(ConfigError) as caught:
        load_settings({**base_env, "WEBHOOK_SECRET": "not-a-whsec-secret-value"})
    assert "not-a-whsec-secret-value" not in str(caught.value)


def test_algorithm_list_is_parsed(base_env: dict[str, str]) -> None:
    settings = load_settings({**base_env, "JWT_ALGORITHMS": "RS256, ES256"})
    assert settings.jwt_algorithms == ("RS256", "ES256")


def test_real_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("JWT_ISSUER=https://from-file/\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("JWT_ISSUER", "https://from-environment/")
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    merged = read_environment(dotenv)
    assert merged["JWT_ISSUER"] == "https://from-environment/"
    assert merged["LOG_LEVEL"] == "DEBUG"


def test_flask_config_uses_spec_names(base_env: dict[str, str]) -> None:
    config = load_settings(base_env).flask_config()
    spec_names = {
        "JWT_ISSUER", "JWT_AUDIENCE", "JWT_JWKS_URL", "JWT_PUBLIC_KEY_FILE", "JWT_ALGORITHMS",
        "JWT_LEEWAY_SECONDS", "WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET",
        "WEBHOOK_TOLERANCE_SECONDS", "REPLAY_STORE_URL", "TRUSTED_PROXY_HOPS", "HSTS_MAX_AGE",
        "HSTS_PRELOAD", "LOG_LEVEL", "APP_ENV",
    }  # fmt: skip
    assert spec_names <= config.keys()
    assert config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert config["DEBUG"] is False
