"""Unit tests of each hook step: validators, file selection, certificates, keys and .env."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import BAKED_TEMPLATE_DIR, TEMPLATE, load_module, require_tool
from dotenv import dotenv_values

pre_gen = load_module(TEMPLATE / "hooks" / "pre_gen_project.py", "pre_gen_project")
post_gen = load_module(TEMPLATE / "hooks" / "post_gen_project.py", "post_gen_project")
bootstrap = load_module(BAKED_TEMPLATE_DIR / "scripts" / "bootstrap.py", "bootstrap")

DOMAIN = "api.example.com"
NAMES = ["localhost", "127.0.0.1", "::1", DOMAIN]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- pre-generation validators -----------------------------------------------------------

GOOD = [
    ("validate_project_slug", "secure-service"),
    ("validate_project_slug", "billing2-api"),
    ("validate_package_name", "secure_service"),
    ("validate_package_name", "billing_api2"),
    ("validate_domain_name", "api.example.com"),
    ("validate_domain_name", "localhost"),
    ("validate_domain_name", "x-1.eu"),
    ("validate_author_email", "dev@example.com"),
    ("validate_project_name", "Payments API"),
]

BAD = [
    ("validate_project_slug", "Secure-Service", "project_slug"),
    ("validate_project_slug", "secure--service", "project_slug"),
    ("validate_project_slug", "-secure", "project_slug"),
    ("validate_project_slug", "9lives", "project_slug"),
    ("validate_project_slug", "secure service", "project_slug"),
    ("validate_package_name", "secure-service", "package_name"),
    ("validate_package_name", "class", "package_name"),
    ("validate_package_name", "match", "package_name"),
    ("validate_package_name", "1service", "package_name"),
    ("validate_package_name", "Service", "package_name"),
    ("validate_package_name", "jwt", "package_name"),
    ("validate_package_name", "flask", "package_name"),
    ("validate_package_name", "redis", "package_name"),
    ("validate_package_name", "logging", "package_name"),
    ("validate_package_name", "secrets", "package_name"),
    ("validate_package_name", "dotenv", "package_name"),
    ("validate_package_name", "tests", "package_name"),
    ("validate_domain_name", "-api.example.com", "domain_name"),
    ("validate_domain_name", "api_.example.com", "domain_name"),
    ("validate_domain_name", "api..example.com", "domain_name"),
    ("validate_domain_name", "https://api.example.com", "domain_name"),
    ("validate_domain_name", "10.0.0.1", "domain_name"),
    ("validate_domain_name", "a" * 64 + ".com", "domain_name"),
    ("validate_domain_name", "", "domain_name"),
    ("validate_author_email", "not-an-email", "author_email"),
    ("validate_author_email", "a@b", "author_email"),
    ("validate_project_name", "   ", "project_name"),
    ("validate_project_name", 'Evil"""name', "project_name"),
    ("validate_project_name", "O'Brien API", "project_name"),
]

INJECTIONS = [
    pytest.param("description", 'x"""\nimport os; os.system("id")\n"""', id="docstring-breakout"),
    pytest.param("description", "line one\nline two", id="description-newline"),
    pytest.param("author_name", 'Eve"\ndependencies = ["evil"]', id="toml-breakout"),
    pytest.param("author_name", "back\\slash", id="backslash"),
    pytest.param("description", "", id="empty-description"),
]


@pytest.mark.parametrize(("variable", "value"), INJECTIONS)
def test_free_text_that_could_escape_its_string_is_rejected(variable: str, value: str) -> None:
    with pytest.raises(pre_gen.InvalidAnswer, match=f"^{variable} "):
        pre_gen.validate_free_text(variable, value)


def test_ordinary_free_text_is_accepted() -> None:
    pre_gen.validate_free_text("description", "Payments API: ledgers, refunds & reports (v2).")
    pre_gen.validate_free_text("author_name", "Zoë Müller-Øster")


@pytest.mark.parametrize(("validator", "value"), GOOD, ids=[v for _, v in GOOD])
def test_validators_accept_good_values(validator: str, value: str) -> None:
    getattr(pre_gen, validator)(value)


@pytest.mark.parametrize(
    ("validator", "value", "variable"), BAD, ids=[f"{n}={v[:20]!r}" for _, v, n in BAD]
)
def test_validators_reject_bad_values_naming_the_variable(
    validator: str, value: str, variable: str
) -> None:
    with pytest.raises(pre_gen.InvalidAnswer) as caught:
        getattr(pre_gen, validator)(value)
    message = str(caught.value)
    assert message.startswith(variable)
    assert "\n" not in message


# --- post-generation: option files -----------------------------------------------------------


def test_every_option_file_exists_in_the_template() -> None:
    for files_by_value in post_gen.FILES_BY_OPTION.values():
        for paths in files_by_value.values():
            for relative in paths:
                assert (BAKED_TEMPLATE_DIR / relative).exists(), relative


@pytest.mark.parametrize("tls_profile", ["intermediate", "modern"])
def test_only_the_selected_tls_profile_remains(tmp_path: Path, tls_profile: str) -> None:
    snippets = tmp_path / "deploy/nginx/templates/snippets"
    snippets.mkdir(parents=True)
    for profile in ("intermediate", "modern"):
        (snippets / f"tls-{profile}.conf.template").write_text("ssl_protocols TLSv1.3;\n")
    post_gen.remove_unselected_files(tmp_path, {"ci": "none", "tls_profile": tls_profile})
    assert [p.name for p in snippets.iterdir()] == [f"tls-{tls_profile}.conf.template"]


@pytest.mark.parametrize("ci", ["github", "gitlab", "none"])
def test_only_the_selected_ci_files_remain(tmp_path: Path, ci: str) -> None:
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    (tmp_path / ".gitlab-ci.yml").write_text("stages: []\n")
    context = {"ci": ci, "tls_profile": "intermediate"}
    post_gen.remove_unselected_files(tmp_path, context)
    assert (tmp_path / ".github").exists() == (ci == "github")
    assert (tmp_path / ".gitlab-ci.yml").exists() == (ci == "gitlab")


def test_next_steps_hint_at_mkcert_only_when_missing() -> None:
    context = {"project_name": "Secure Service", "project_slug": "secure-service"}
    assert "mkcert -install" in post_gen.next_steps(context, [], mkcert_found=False)
    assert "mkcert -install" not in post_gen.next_steps(context, [], mkcert_found=True)


# --- certificates ----------------------------------------------------------------------------


def verify_chain(openssl: str, certs: Path, name: str) -> subprocess.CompletedProcess[str]:
    check = "-verify_ip" if name[0].isdigit() or ":" in name else "-verify_hostname"
    return subprocess.run(
        [openssl, "verify", "-CAfile", str(certs / "ca.pem"), "-purpose", "sslserver",
         check, name, str(certs / "server.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def assert_certificates_verify_for_every_name(certs: Path) -> None:
    openssl = require_tool("openssl")
    for name in NAMES:
        result = verify_chain(openssl, certs, name)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    wrong = verify_chain(openssl, certs, "evil.example.net")
    assert wrong.returncode != 0, "the certificate must not be valid for unlisted names"
    assert mode(certs / "server-key.pem") == 0o600
    leftover_ca_keys = [p.name for p in certs.iterdir() if "ca" in p.name and "key" in p.name]
    assert leftover_ca_keys == [], "a CA private key must never be left in the project"
    assert sorted(p.name for p in certs.iterdir()) == ["ca.pem", "server-key.pem", "server.pem"]


def test_mkcert_certificates_verify_for_every_name(tmp_path: Path, mkcert_caroot: Path) -> None:
    require_tool("mkcert")
    made = bootstrap.make_certificates_with_mkcert(tmp_path, NAMES)
    assert made.made_by == "mkcert"
    assert_certificates_verify_for_every_name(tmp_path)


def test_openssl_fallback_certificates_verify_for_every_name(tmp_path: Path) -> None:
    made = bootstrap.make_certificates_with_openssl(tmp_path, NAMES, "secure-service")
    assert made.made_by == "openssl"
    assert_certificates_verify_for_every_name(tmp_path)


def test_fallback_is_used_when_mkcert_is_not_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_openssl = tmp_path / "bin"
    only_openssl.mkdir()
    (only_openssl / "openssl").symlink_to(require_tool("openssl"))
    monkeypatch.setenv("PATH", str(only_openssl))
    made = bootstrap.make_certificates(tmp_path / "certs", DOMAIN, "secure-service")
    assert made.made_by == "openssl"
    assert_certificates_verify_for_every_name(tmp_path / "certs")


# --- keys and .env --------------------------------------------------------------------------


def test_jwt_key_pair_is_rsa_2048_and_private(tmp_path: Path) -> None:
    private, public = bootstrap.make_jwt_keys(tmp_path / "keys")
    assert mode(private) == 0o600
    text = subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "2048 bit" in text
    derived = subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout"], capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    assert derived == public.read_text()


def test_env_file_parses_and_matches_the_dev_key(tmp_path: Path) -> None:
    env_file = bootstrap.write_env_file(tmp_path / ".env", DOMAIN)
    assert mode(env_file) == 0o600
    values = dotenv_values(env_file)
    assert values["APP_ENV"] == "development"
    assert values["JWT_PUBLIC_KEY_FILE"] == "keys/dev_jwt_public.pem"
    assert values["JWT_DEV_PRIVATE_KEY_FILE"] == "keys/dev_jwt_private.pem"
    assert values["JWT_AUDIENCE"] == f"https://{DOMAIN}"
    assert values["API_KEYS_FILE"] == "var/api-keys.json"
    secret = values["WEBHOOK_SECRET"] or ""
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_two_env_files_share_no_secret(tmp_path: Path) -> None:
    first = dotenv_values(bootstrap.write_env_file(tmp_path / "a.env", DOMAIN))
    second = dotenv_values(bootstrap.write_env_file(tmp_path / "b.env", DOMAIN))
    for name in ("WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET"):
        assert first[name]
        assert second[name]
        assert first[name] != second[name], name


def test_private_file_is_never_world_readable_even_with_open_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        path = tmp_path / "secret"
        bootstrap.write_private_text(path, "s3cret")
    finally:
        os.umask(previous)
    assert mode(path) == 0o600


def laxly_opened(path: Path) -> Any:
    """An old secret file left readable (0644), and a handle someone opened on it then: file
    modes are checked at open time, so that handle would read whatever is written in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("old, laxly kept\n")
    path.chmod(0o644)
    return path.open("rb")


def test_a_rewritten_secret_never_reaches_an_old_handle(tmp_path: Path) -> None:
    with laxly_opened(tmp_path / ".env") as handle:
        bootstrap.write_env_file(tmp_path / ".env", DOMAIN)
        assert handle.read() == b"old, laxly kept\n"
    assert mode(tmp_path / ".env") == 0o600
    assert "WEBHOOK_SECRET=whsec_" in (tmp_path / ".env").read_text()


def test_remade_jwt_key_never_reaches_an_old_handle(tmp_path: Path) -> None:
    with laxly_opened(tmp_path / "keys" / "dev_jwt_private.pem") as handle:
        private, _ = bootstrap.make_jwt_keys(tmp_path / "keys")
        assert handle.read() == b"old, laxly kept\n"
    assert mode(private) == 0o600
    assert "PRIVATE KEY" in private.read_text()
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "dev_jwt_private.pem",
        "dev_jwt_public.pem",
    ]


@pytest.mark.parametrize("maker", ["mkcert", "openssl"])
def test_remade_tls_key_never_reaches_an_old_handle(
    tmp_path: Path, mkcert_caroot: Path, maker: str
) -> None:
    certs = tmp_path / "certs"
    with laxly_opened(certs / "server-key.pem") as handle:
        if maker == "mkcert":
            require_tool("mkcert")
            bootstrap.make_certificates_with_mkcert(certs, NAMES)
        else:
            bootstrap.make_certificates_with_openssl(certs, NAMES, "secure-service")
        assert handle.read() == b"old, laxly kept\n"
    assert mode(certs / "server-key.pem") == 0o600
    assert_certificates_verify_for_every_name(certs)


def test_bootstrap_keeps_existing_files_unless_forced(default_bake: Path) -> None:
    env_before = (default_bake / ".env").read_text()
    assert bootstrap.bootstrap(default_bake) == []
    assert (default_bake / ".env").read_text() == env_before


def test_bootstrap_remakes_everything_when_forced(tmp_path: Path, default_bake: Path) -> None:
    project = tmp_path / "copy"
    shutil.copytree(default_bake, project)
    keys_issued = '{"keys": [{"id": "kept"}]}'
    (project / "var" / "api-keys.json").write_text(keys_issued)
    made = bootstrap.bootstrap(project, force=True)
    assert len(made) == 3
    assert (project / ".env").read_text() != (default_bake / ".env").read_text()
    # Not a secret to rotate but the keys handed out: kept, even when forced.
    assert (project / "var" / "api-keys.json").read_text() == keys_issued


def test_bootstrap_makes_an_empty_private_api_key_file(default_bake: Path) -> None:
    path = default_bake / "var" / "api-keys.json"
    assert json.loads(path.read_text()) == {"keys": []}
    assert mode(path) == 0o600


def test_bootstrap_reports_a_missing_openssl_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(bootstrap.BootstrapError, match="openssl is not installed"):
        bootstrap.make_jwt_keys(tmp_path / "keys")
