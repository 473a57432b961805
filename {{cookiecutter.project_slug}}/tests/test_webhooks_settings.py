"""The webhook module's numeric settings: every spelling its reader takes, and both sides of
each bound. init_app is the only reader of these, so a bare app is enough."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from {{ cookiecutter.package_name }} import webhooks

BOUNDS = {
    # setting: (least, most, attribute of WebhookState that holds it)
    "WEBHOOK_TOLERANCE_SECONDS": (1, 3600, "tolerance"),
    "WEBHOOK_LEASE_SECONDS": (1, 3600, "lease"),
    "WEBHOOK_REPLAY_TTL_SECONDS": (1, 365 * 24 * 3600, "replay_ttl"),
}


def start(tmp_path: Path, **config: Any) -> webhooks.WebhookState:
    app = Flask("webhook_settings", instance_path=str(tmp_path / "instance"))
    app.config.update(REPLAY_STORE_URL="memory://", **config)
    return webhooks.init_app(app)


def test_defaults(tmp_path: Path) -> None:
    state = start(tmp_path)
    assert (state.tolerance, state.lease, state.replay_ttl) == (300, 60, 7 * 24 * 3600)
    assert state.max_body == 1024 * 1024


@pytest.mark.parametrize("setting", list(BOUNDS))
def test_each_bound_is_accepted(tmp_path: Path, setting: str) -> None:
    least, most, attribute = BOUNDS[setting]
    for value in (least, most):
        # The TTL never drops below the window and the lease: keep those at their least.
        config = {"WEBHOOK_TOLERANCE_SECONDS": 1, "WEBHOOK_LEASE_SECONDS": 1, setting: value}
        state = start(tmp_path, **config)
        assert getattr(state, attribute) == max(value, 3 if attribute == "replay_ttl" else 0)


@pytest.mark.parametrize("setting", list(BOUNDS))
def test_one_past_each_bound_is_refused(tmp_path: Path, setting: str) -> None:
    least, most, _ = BOUNDS[setting]
    for value in (least - 1, most + 1):
        with pytest.raises(webhooks.WebhookConfigError) as refused:
            start(tmp_path, **{setting: str(value)})
        assert str(refused.value) == f"{setting}: must be between {least} and {most}, got '{value}'"
        assert refused.value.setting == setting


@pytest.mark.parametrize(
    ("value", "number"),
    [("120", 120), (120, 120), (" 120 ", 120), ("+120", 120), ("0120", 120)],
    ids=["text", "int", "spaces", "plus-sign", "leading-zero"],
)
def test_whole_number_spellings_are_read(tmp_path: Path, value: object, number: int) -> None:
    state = start(tmp_path, WEBHOOK_LEASE_SECONDS=value)
    assert state.lease == number


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1.5", "must be a whole number, got '1.5'"),
        ("1e3", "must be a whole number, got '1e3'"),
        ("", "must be a whole number, got ''"),
        ("sixty", "must be a whole number, got 'sixty'"),
        (None, "must be a whole number, got None"),
        (True, "must be between 1 and 3600, got True"),
        (-5, "must be between 1 and 3600, got -5"),
    ],
    ids=["decimal", "exponent", "empty", "word", "none", "bool", "negative"],
)
def test_other_spellings_are_refused(tmp_path: Path, value: object, problem: str) -> None:
    with pytest.raises(webhooks.WebhookConfigError) as refused:
        start(tmp_path, WEBHOOK_TOLERANCE_SECONDS=value)
    assert str(refused.value) == f"WEBHOOK_TOLERANCE_SECONDS: {problem}"


@pytest.mark.parametrize(
    ("configured", "limit"),
    [(None, 1024 * 1024), (1000, 1000), (1024 * 1024, 1024 * 1024), (2**21, 1024 * 1024)],
    ids=["unset", "smaller", "equal", "larger"],
)
def test_the_body_limit_is_the_smaller_of_flask_s_and_one_mebibyte(
    tmp_path: Path, configured: int | None, limit: int
) -> None:
    assert start(tmp_path, MAX_CONTENT_LENGTH=configured).max_body == limit


def test_settings_lists_what_init_app_reads() -> None:
    assert webhooks.SETTINGS == (
        "WEBHOOK_SECRET",
        "WEBHOOK_PUBLIC_KEY",
        "GITHUB_WEBHOOK_SECRET",
        "STRIPE_WEBHOOK_SECRET",
        "WEBHOOK_TOLERANCE_SECONDS",
        "WEBHOOK_REPLAY_TTL_SECONDS",
        "WEBHOOK_LEASE_SECONDS",
        "REPLAY_STORE_URL",
    )
