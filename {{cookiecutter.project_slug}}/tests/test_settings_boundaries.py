"""settings.py's own rules, each tried with every spelling its reader accepts, some it must
refuse, and its limits at the boundary and one past it; every refusal is checked for its
reason, so that a start refused for another reason fails the test."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.settings import (
    ConfigError,
    load_settings,
    loopback_host_names,
    read_environment,
    refuse_local_issuer,
)


def production(base_env: dict[str, str], **changes: str) -> dict[str, str]:
    env = {**base_env, "APP_ENV": "production"}
    env.pop("REPLAY_STORE_URL")
    env.pop("JWT_DEV_PRIVATE_KEY_FILE")
    return {**env, **changes}


def refused(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value


# --- APP_ENV ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "app_env"),
    [
        ("production", "production"),
        ("development", "development"),
        ("test", "test"),
        (" test ", "test"),
        ("", "production"),  # unset or blank: the safe default
        ("  ", "production"),
    ],
)
def test_app_env_spellings(base_env: dict[str, str], value: str, app_env: str) -> None:
    # Production's own rules are met, so that only the reading of APP_ENV is tried here.
    assert load_settings(production(base_env, APP_ENV=value)).app_env == app_env


def test_the_modules_see_the_environment_as_read(base_env: dict[str, str]) -> None:
    # bearer.py relaxes its rules outside production: " development " must reach it as the
    # environment start-up judged, not as the raw value (which it would take for production).
    env = {**base_env, "APP_ENV": " development ", "JWT_JWKS_URL": "http://127.0.0.1:9/jwks",
           "JWT_JWKS_TIMEOUT_SECONDS": "1"}  # fmt: skip
    env.pop("JWT_PUBLIC_KEY_FILE")
    app = create_app(load_settings(env))
    assert app.config["APP_ENV"] == "development"


@pytest.mark.parametrize("value", ["Production", "TEST", "dev", "prod", "staging", "testing"])
def test_other_app_envs_are_refused(base_env: dict[str, str], value: str) -> None:
    error = refused({**base_env, "APP_ENV": value})
    assert str(error) == (f"APP_ENV: must be one of production, development, test, got {value!r}")
    assert error.setting == "APP_ENV"


# --- WEB_CONCURRENCY and the per-process replay store -----------------------------------------


@pytest.mark.parametrize(("value", "workers"), [("1", 1), (" 2 ", 2), ("16", 16)])
def test_web_concurrency_is_a_whole_number_from_one(
    base_env: dict[str, str], value: str, workers: int
) -> None:
    env = {**base_env, "WEB_CONCURRENCY": value, "REPLAY_STORE_URL": "sqlite:///:memory:"}
    assert load_settings(env).web_concurrency == workers


@pytest.mark.parametrize("value", ["0", "-1", "+1", "1.5", "two", "00"])
def test_other_worker_counts_are_refused(base_env: dict[str, str], value: str) -> None:
    error = refused({**base_env, "WEB_CONCURRENCY": value})
    assert str(error) == f"WEB_CONCURRENCY: must be a whole number of at least 1, got {value!r}"


def test_web_concurrency_defaults_to_the_cores(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**base_env, "WEB_CONCURRENCY": " ", "REPLAY_STORE_URL": "sqlite:///:memory:"}
    assert load_settings(env).web_concurrency == (os.cpu_count() or 1)
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # the count is unknown on this machine
    assert load_settings(env).web_concurrency == 1


@pytest.mark.parametrize("app_env", ["development", "test"])
@pytest.mark.parametrize("url", ["memory://", "MEMORY://", " memory:// ", "memory://anything"])
def test_memory_store_serves_one_worker_and_refuses_two(
    base_env: dict[str, str], app_env: str, url: str
) -> None:
    env = {**base_env, "APP_ENV": app_env, "REPLAY_STORE_URL": url, "WEB_CONCURRENCY": "1"}
    assert load_settings(env).web_concurrency == 1
    error = refused({**env, "WEB_CONCURRENCY": "2"})
    assert str(error) == (
        "REPLAY_STORE_URL: memory:// is per process: with WEB_CONCURRENCY above 1 replays "
        "would pass"
    )


def test_memory_store_is_refused_in_production_even_for_one_worker(
    base_env: dict[str, str],
) -> None:
    error = refused(production(base_env, REPLAY_STORE_URL="memory://", WEB_CONCURRENCY="1"))
    assert str(error) == "REPLAY_STORE_URL: memory:// is for tests only, not production"


def test_a_shared_store_serves_any_number_of_workers(base_env: dict[str, str]) -> None:
    env = {**base_env, "REPLAY_STORE_URL": "sqlite:///:memory:", "WEB_CONCURRENCY": "8"}
    assert load_settings(env).web_concurrency == 8


# --- production's floors ----------------------------------------------------------------------


@pytest.mark.parametrize("max_age", ["31536000", " 31536000 ", "63072000"])
def test_a_year_of_hsts_starts_production(base_env: dict[str, str], max_age: str) -> None:
    assert load_settings(production(base_env, HSTS_MAX_AGE=max_age)).is_production


@pytest.mark.parametrize("max_age", ["31535999", " 31535999 ", "0"])
def test_less_than_a_year_of_hsts_is_refused_in_production(
    base_env: dict[str, str], max_age: str
) -> None:
    error = refused(production(base_env, HSTS_MAX_AGE=max_age))
    assert str(error) == "HSTS_MAX_AGE: must be at least 31536000 (one year) in production"
    # Development may turn the policy down (0 makes a browser forget it).
    assert load_settings({**base_env, "HSTS_MAX_AGE": max_age}).app_env == "test"


def standard_secret(size: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * size).decode()


# (setting, the weakest secret production accepts, one byte less, the bytes required)
WEAK_SECRETS = [
    pytest.param("WEBHOOK_SECRET", standard_secret(24), standard_secret(23), 24, id="standard"),
    pytest.param("GITHUB_WEBHOOK_SECRET", "g" * 32, "g" * 31, 32, id="github"),
    # Stripe keys the HMAC with the whole string, prefix included.
    pytest.param("STRIPE_WEBHOOK_SECRET", "whsec_" + "s" * 26, "whsec_" + "s" * 25, 32,
                 id="stripe"),
]  # fmt: skip


@pytest.mark.parametrize(("setting", "strong", "weak", "size"), WEAK_SECRETS)
def test_webhook_secrets_need_their_strong_length_in_production(
    base_env: dict[str, str], setting: str, strong: str, weak: str, size: int
) -> None:
    assert load_settings(production(base_env, **{setting: strong})).is_production
    error = refused(production(base_env, **{setting: weak}))
    assert str(error) == f"{setting}: each secret needs at least {size} bytes"
    assert weak not in str(error)
    # Development and tests may use short, readable secrets.
    assert load_settings({**base_env, setting: weak}).app_env == "test"


def test_one_weak_secret_among_rotated_ones_is_refused(base_env: dict[str, str]) -> None:
    rotated = f"{standard_secret(32)} {standard_secret(23)}"
    error = refused(production(base_env, WEBHOOK_SECRET=rotated))
    assert str(error) == "WEBHOOK_SECRET: each secret needs at least 24 bytes"


def test_production_needs_a_webhook_key(base_env: dict[str, str]) -> None:
    env = production(base_env)
    env.pop("WEBHOOK_SECRET")
    assert str(refused(env)) == (
        "WEBHOOK_SECRET: required in production (whsec_... for /webhooks/events), unless "
        "WEBHOOK_PUBLIC_KEY (whpk_...) is set"
    )
    assert str(refused({**env, "WEBHOOK_SECRET": "  "})).startswith("WEBHOOK_SECRET: required")
    # Only production insists: a development checkout may leave webhooks unconfigured.
    assert load_settings({**env, "APP_ENV": "development"}).app_env == "development"


# --- the development signing key and local issuers --------------------------------------------


def test_the_dev_key_refusal_names_the_key(base_env: dict[str, str]) -> None:
    private_file = base_env["JWT_DEV_PRIVATE_KEY_FILE"]
    env = production(base_env, JWT_DEV_PRIVATE_KEY_FILE=f" {private_file} ")
    env["JWT_PUBLIC_KEY_FILE"] = f" {env['JWT_PUBLIC_KEY_FILE']} "
    assert str(refused(env)) == (
        f"JWT_PUBLIC_KEY_FILE: is the public half of the development key {private_file}; "
        "use your provider's"
    )


def test_an_unreadable_key_is_left_to_bearer(base_env: dict[str, str], tmp_path: Path) -> None:
    # No match with the development key, so bearer.py's own reason is the one reported.
    env = production(base_env, JWT_PUBLIC_KEY_FILE="/nonexistent.pem")
    reason = "JWT_PUBLIC_KEY_FILE: cannot read /nonexistent.pem (No such file or directory)"
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        create_app(load_settings(env))
    # A development key that is no key is no match either.
    (tmp_path / "garbage.pem").write_text("not a key")
    env = production(base_env, JWT_DEV_PRIVATE_KEY_FILE=str(tmp_path / "garbage.pem"))
    assert load_settings(env).is_production


def test_a_jwks_setup_has_no_dev_key_to_compare(base_env: dict[str, str]) -> None:
    env = production(base_env, JWT_JWKS_URL="https://idp.example/jwks")
    env.pop("JWT_PUBLIC_KEY_FILE")
    assert load_settings(env).is_production


def test_a_hosts_file_names_loopback_hosts_only(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(
        b"127.0.1.1 BUILD-BOX\n"  # a line with one name, in capitals
        b"::1 ip6-localhost ip6-loopback.\n"
        b"\n"
        b"127.0.0.1\n"  # an address alone names nothing
        b"127.0.0.1 localhost # alias-in-a-comment # and-another\n"
        b"# 127.0.0.1 commented-out\n"
        b"10.1.2.3 idp.internal # 127.0.0.1 in-a-comment\n"
        b"10.1.2.4 caf\xe9\n"  # not UTF-8: the other lines still count
        b"not-an-address 127.0.0.1 name-after-garbage\n"
    )
    assert loopback_host_names(hosts) == {"build-box", "ip6-localhost", "ip6-loopback", "localhost"}
    # A URL's %-escapes are decoded as URL parsers do (%58 is X), then compared in lower case.
    for issuer in ("https://build-box./", "https://build-bo%58/"):
        with pytest.raises(ConfigError) as refused_issuer:
            refuse_local_issuer(issuer, hosts_file=hosts)
        assert str(refused_issuer.value) == (
            "JWT_ISSUER: is a local development issuer; use your provider's"
        )


def test_an_unreadable_hosts_file_names_nothing(tmp_path: Path) -> None:
    assert loopback_host_names(tmp_path / "missing") == frozenset()
    assert loopback_host_names(tmp_path) == frozenset()  # a directory: OSError too


# --- reading the environment ------------------------------------------------------------------


def test_a_dotenv_name_without_a_value_is_no_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("HSTS_PRELOAD\nLOG_LEVEL=\n")
    monkeypatch.delenv("HSTS_PRELOAD", raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    merged = read_environment(dotenv)
    assert "HSTS_PRELOAD" not in merged
    assert merged["LOG_LEVEL"] == ""


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_setting_leaves_the_modules_default(base_env: dict[str, str], blank: str) -> None:
    # A blank HSTS_MAX_AGE would be refused by transport.py as no number; blank means unset.
    settings = load_settings(production(base_env, HSTS_MAX_AGE=blank, TRUSTED_PROXY_HOPS=blank))
    assert "HSTS_MAX_AGE" not in settings.flask_config()
    assert "TRUSTED_PROXY_HOPS" not in settings.flask_config()


def test_without_arguments_the_settings_come_from_the_process(
    base_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How gunicorn's create_app() reads them: the environment over ./.env.
    (tmp_path / ".env").write_text("WEB_CONCURRENCY=1\n")
    monkeypatch.chdir(tmp_path)
    for name, value in base_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("REPLAY_STORE_URL", "sqlite:///replay.sqlite3")
    settings = load_settings()
    assert (settings.app_env, settings.web_concurrency) == ("test", 3)


def test_the_dotenv_file_is_dot_env_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=WARNING\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    assert read_environment()["LOG_LEVEL"] == "WARNING"
