"""Settings that two readers parse must mean one number to both: a production floor judged on
one spelling while the module that sends the header reads another lets the unsafe value start."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.settings import load_settings

# Spellings Python's int() reads as a number that str.isdecimal() does not recognise as one
# (and nginx's derive script refuses): each used to start production with a short HSTS policy.
SHORT_HSTS_SPELLINGS = ["+100", "1_000", " +300 ", "0_0"]


def production(base_env: dict[str, str], **changes: str) -> dict[str, str]:
    env = {**base_env, "APP_ENV": "production", **changes}
    env.pop("REPLAY_STORE_URL")
    env.pop("JWT_DEV_PRIVATE_KEY_FILE")
    return env


@pytest.mark.parametrize("max_age", SHORT_HSTS_SPELLINGS)
def test_no_spelling_of_a_short_hsts_starts_production(
    base_env: dict[str, str], max_age: str
) -> None:
    with pytest.raises(ValueError, match=r"^HSTS_MAX_AGE: "):
        create_app(load_settings(production(base_env, HSTS_MAX_AGE=max_age)))


@pytest.mark.parametrize("value", ["+1", "1_0", "٣", "1e3"])
def test_whole_numbers_are_plain_digits_as_nginx_reads_them(
    base_env: dict[str, str], value: str
) -> None:
    # nginx's 10-derive-settings.envsh takes [0-9]+ only; the app refuses what nginx refuses.
    env = {**base_env, "HSTS_MAX_AGE": value}
    with pytest.raises(ValueError, match=r"^HSTS_MAX_AGE: "):
        create_app(load_settings(env))
    env = {**base_env, "TRUSTED_PROXY_HOPS": value}
    with pytest.raises(ValueError, match=r"^TRUSTED_PROXY_HOPS: "):
        create_app(load_settings(env))


def test_plain_digits_still_start(base_env: dict[str, str]) -> None:
    app = create_app(load_settings(production(base_env, HSTS_MAX_AGE="31536000")))
    assert app.config["HSTS_MAX_AGE"] == "31536000"
