"""scripts/acme's decisions without a CA: settings, when to renew, how a certbot failure is
named, what gets installed. tests/test_stack_acme.py runs it against a real ACME server."""

from __future__ import annotations

import datetime
import importlib.machinery
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509

from certificates import self_signed
from stack import PROJECT_ROOT, require_tool

ACME = PROJECT_ROOT / "scripts" / "acme"
DOMAIN = json.loads((PROJECT_ROOT / ".cookiecutter.json").read_text())["domain_name"]
NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def load_acme() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("acme_script", str(ACME))
    spec = importlib.util.spec_from_loader("acme_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the file executes.
    sys.modules["acme_script"] = module
    loader.exec_module(module)
    return module


acme = load_acme()


def settings_env(tmp_path: Path, **changes: str) -> dict[str, str]:
    env = {
        "ACME_WEBROOT": str(tmp_path / "webroot"),
        "TLS_CERT_FILE": str(tmp_path / "served" / "server.pem"),
        "TLS_KEY_FILE": str(tmp_path / "served" / "server-key.pem"),
        "ACME_STATE_DIR": str(tmp_path / "state"),
    }
    env.update(changes)
    return env


# --- settings -------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    settings = acme.load_settings({"DEVSTACK_RUN_DIR": str(tmp_path / "run")})
    assert settings.directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert settings.domains == (DOMAIN,)
    assert settings.email == ""
    assert settings.ca_file is None
    assert settings.state_dir == PROJECT_ROOT / "var" / "acme"
    # Where scripts/devstack's nginx serves the challenge and reads its certificate.
    assert settings.webroot == tmp_path / "run" / "acme"
    assert settings.cert_file == PROJECT_ROOT / "certs" / "server.pem"
    assert settings.key_file == PROJECT_ROOT / "certs" / "server-key.pem"
    assert settings.reload_command[1:] == (str(PROJECT_ROOT / "scripts" / "devstack"), "reload")
    assert settings.certbot == "certbot"


def test_names_come_from_acme_domains_then_server_name(tmp_path: Path) -> None:
    settings = acme.load_settings(
        settings_env(tmp_path, ACME_DOMAINS="API.example.org, www.example.org api.example.org")
    )
    assert settings.domains == ("api.example.org", "www.example.org")
    settings = acme.load_settings(settings_env(tmp_path, SERVER_NAME="shop.example.org"))
    assert settings.domains == ("shop.example.org",)
    # The native stack's development name is no public name: the bake's domain instead.
    settings = acme.load_settings(settings_env(tmp_path, SERVER_NAME="localhost"))
    assert settings.domains == (DOMAIN,)


def test_reload_command_can_be_replaced_or_left_to_nginx(tmp_path: Path) -> None:
    settings = acme.load_settings(
        settings_env(tmp_path, ACME_RELOAD_COMMAND="systemctl reload 'nginx.service'")
    )
    assert settings.reload_command == ("systemctl", "reload", "nginx.service")
    settings = acme.load_settings(settings_env(tmp_path, ACME_RELOAD_COMMAND="none"))
    assert settings.reload_command == ()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ACME_DIRECTORY_URL": "http://acme.example/dir"}, "ACME_DIRECTORY_URL: must be an https"),
        (
            {"ACME_DOMAINS": "*.example.org"},
            "ACME_DOMAINS: *.example.org: wildcard names need DNS-01",
        ),
        ({"ACME_DOMAINS": "203.0.113.7"}, "ACME_DOMAINS: '203.0.113.7' is not a public host name"),
        ({"ACME_DOMAINS": "intranet"}, "ACME_DOMAINS: 'intranet' is not a public host name"),
        ({"ACME_DOMAINS": "a_b.example.org"}, "ACME_DOMAINS: 'a_b.example.org' is not a public"),
        ({"ACME_EMAIL": "ops at example.org"}, "ACME_EMAIL: not an e-mail address"),
        (
            {"ACME_CA_FILE": "/nonexistent/ca.pem"},
            "ACME_CA_FILE: /nonexistent/ca.pem does not exist",
        ),
    ],
)
def test_bad_settings_are_refused_by_name(
    tmp_path: Path, changes: dict[str, str], message: str
) -> None:
    with pytest.raises(acme.AcmeError, match="^" + re.escape(message)):
        acme.load_settings(settings_env(tmp_path, **changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ACME_DIRECTORY_URL": "http://acme.example/dir"}, "acme: ACME_DIRECTORY_URL: "),
        ({"ACME_DOMAINS": " , "}, "acme: ACME_DOMAINS: no host name in it"),
        # A certificate path that cannot be written: a file where a directory should be.
        ({"TLS_CERT_FILE": f"{__file__}/server.pem"}, "acme: [Errno 17] File exists: "),
    ],
)
def test_failures_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, str], message: str
) -> None:
    env = {**settings_env(tmp_path, ACME_DOMAINS="api.example.org"), **changes}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert acme.main(["placeholder"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(message)
    assert error.count("\n") == 1


# --- when to renew ----------------------------------------------------------------------------


def certificate(
    names: tuple[str, ...] = (DOMAIN,), *, age: datetime.timedelta, lifetime_days: int = 90
) -> x509.Certificate:
    issued = self_signed(
        names, not_before=NOW - age, lifetime=datetime.timedelta(days=lifetime_days)
    )
    return issued.certificate


@pytest.mark.parametrize(
    ("age_days", "lifetime_days", "due"),
    [
        (1, 90, False),
        (59, 90, False),  # 31 days left of 90
        (61, 90, True),  # 29 days left: less than a third
        (31, 47, False),  # 47-day certificates: 16 days left
        (32, 47, True),
        (100, 90, True),  # expired
    ],
)
def test_renewal_is_due_when_less_than_a_third_of_the_lifetime_is_left(
    age_days: int, lifetime_days: int, due: bool
) -> None:
    served = certificate(age=age_days * DAY, lifetime_days=lifetime_days)
    reason = acme.renewal_reason(served, (DOMAIN,), NOW)
    assert (reason is not None) == due
    if due:
        assert "less than a third" in reason


def test_renewal_is_due_for_a_missing_certificate_or_a_missing_name() -> None:
    assert acme.renewal_reason(None, (DOMAIN,), NOW) == "no certificate is installed"
    served = certificate(age=DAY)
    reason = acme.renewal_reason(served, (DOMAIN, "www.example.org"), NOW)
    assert reason == "the certificate does not cover www.example.org"


def test_a_wildcard_certificate_covers_one_label() -> None:
    served = certificate(("*.example.org",), age=DAY)
    assert acme.renewal_reason(served, ("api.example.org",), NOW) is None
    assert acme.renewal_reason(served, ("a.b.example.org",), NOW) is not None


# --- naming certbot's failures ----------------------------------------------------------------

# What certbot 2.1 prints (stdout, then stderr) and logs; certbot 4 prints the same lines.
CHALLENGE_OUTPUT = """Renewing an existing certificate for api.example.com

Certbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority \
reported these problems:
  Domain: api.example.com
  Type:   unauthorized
  Detail: Non-200 status code from HTTP: http://api.example.com/.well-known/acme-challenge/x \
returned 404

Hint: The Certificate Authority failed to download the temporary challenge files created by \
Certbot.

Saving debug log to /srv/var/acme/log/letsencrypt.log
Some challenges have failed.
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile \
/srv/var/acme/log/letsencrypt.log or re-run Certbot with -v for more details.
"""

# certbot 2.1 on Python 3.11 loses the ACME problem on its way out; its log keeps it.
RATE_LIMIT_OUTPUT = """Account registered.
Requesting a certificate for api.example.com
Saving debug log to /srv/var/acme/log/letsencrypt.log
An unexpected error occurred:
AttributeError: can't set attribute
Ask for help or search for solutions at https://community.letsencrypt.org.
"""
RATE_LIMIT_LOG = """2030-06-01 12:00:00,926:DEBUG:acme.client:Received response:
HTTP 429
{"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many certificates", "status": 429}
acme.messages.Error: urn:ietf:params:acme:error:rateLimited :: There were too many requests of a \
given type :: too many certificates (5) already issued for this exact set of identifiers
"""


@pytest.mark.parametrize(
    ("output", "log", "expected"),
    [
        (
            CHALLENGE_OUTPUT,
            "",
            "HTTP-01 challenge failed for api.example.com (unauthorized): Non-200 status code "
            "from HTTP: http://api.example.com/.well-known/acme-challenge/x returned 404",
        ),
        (
            RATE_LIMIT_OUTPUT,
            RATE_LIMIT_LOG,
            "rate limited by the ACME server: too many certificates (5) already issued for this "
            "exact set of identifiers",
        ),
        (
            "An unexpected error occurred:\nurn:ietf:params:acme:error:rejectedIdentifier :: The "
            "server will not issue certificates for the identifier :: Error creating new order "
            ':: Cannot issue for "example.com": forbidden by policy\n',
            "",
            "the ACME server refused the request (rejectedIdentifier): Cannot issue for "
            '"example.com": forbidden by policy',
        ),
        (
            "An unexpected error occurred:\nValueError: Requesting acme.example/dir: Connection "
            "refused\nAsk for help or search for solutions at https://community.letsencrypt.org.\n",
            "",
            "ACME server unreachable: acme.example/dir: Connection refused",
        ),
        (
            "Saving debug log to /x\nAn unexpected error occurred:\nOSError: disk full\n",
            "",
            "certbot failed: OSError: disk full",
        ),
    ],
)
def test_certbot_failures_are_named_in_one_line(output: str, log: str, expected: str) -> None:
    cause = acme.certbot_failure(output, log)
    assert cause == expected
    assert "\n" not in cause


def test_long_details_are_shortened() -> None:
    cause = acme.certbot_failure("Domain: a.example\nType: dns\nDetail: " + "x" * 1000, "")
    assert len(cause) < 400
    assert cause.endswith("...")


# --- install and placeholder ------------------------------------------------------------------


def write_lineage(settings: Any, cert_pem: bytes, key_pem: bytes) -> None:
    lineage: Path = settings.lineage
    lineage.mkdir(parents=True)
    (lineage / "fullchain.pem").write_bytes(cert_pem)
    (lineage / "privkey.pem").write_bytes(key_pem)


def test_install_writes_the_chain_and_a_private_key(tmp_path: Path) -> None:
    settings = acme.load_settings(settings_env(tmp_path, ACME_DOMAINS="api.example.org"))
    issued = self_signed(("api.example.org",))
    write_lineage(settings, issued.cert_pem, issued.key_pem)
    installed = acme.install(settings)
    assert installed == issued.certificate
    assert settings.cert_file.read_bytes() == issued.cert_pem
    assert settings.key_file.read_bytes() == issued.key_pem
    assert settings.key_file.stat().st_mode & 0o777 == 0o600
    assert not [path for path in settings.cert_file.parent.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize("problem", ["foreign key", "missing name"])
def test_install_refuses_a_mismatch_and_touches_nothing(tmp_path: Path, problem: str) -> None:
    settings = acme.load_settings(settings_env(tmp_path, ACME_DOMAINS="api.example.org"))
    served = self_signed(("api.example.org",)).write(settings.cert_file.parent)
    before = [path.read_bytes() for path in served]
    new = self_signed(("api.example.org",) if problem == "foreign key" else ("other.example",))
    key_pem = self_signed(("x.example",)).key_pem if problem == "foreign key" else new.key_pem
    write_lineage(settings, new.cert_pem, key_pem)
    with pytest.raises(acme.AcmeError):
        acme.install(settings)
    assert [path.read_bytes() for path in served] == before


def test_placeholder_lets_nginx_start_and_is_renewed_first(tmp_path: Path) -> None:
    settings = acme.load_settings(settings_env(tmp_path, ACME_DOMAINS="api.example.org"))
    assert acme.placeholder(settings) == 0
    written = acme.read_certificate(settings.cert_file)
    assert written is not None
    assert settings.key_file.stat().st_mode & 0o777 == 0o600
    now = datetime.datetime.now(datetime.UTC)
    assert acme.renewal_reason(written, settings.domains, now) == (
        "the certificate does not cover api.example.org"
    )
    # Never over a real certificate.
    before = settings.cert_file.read_bytes()
    assert acme.placeholder(settings) == 0
    assert settings.cert_file.read_bytes() == before


def test_one_run_at_a_time(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with (
        acme.state_lock(state),
        pytest.raises(acme.AcmeError, match="another scripts/acme run"),
        acme.state_lock(state),
    ):
        pass
    assert state.stat().st_mode & 0o777 == 0o700


def test_acme_state_is_git_ignored(tmp_path: Path) -> None:
    git = require_tool("git", "git")
    shutil.copy(PROJECT_ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True)
    account_key = "var/acme/config/accounts/acme.example/directory/1/private_key.json"
    result = subprocess.run(
        [git, "-C", str(tmp_path), "check-ignore", "-q", account_key], check=False
    )
    assert result.returncode == 0
