"""Deployment files checked by real tools and against each other (no docker needed)."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from certificates import self_signed
from stack import PROJECT_ROOT, require_tool

NGINX_DIR = PROJECT_ROOT / "deploy" / "nginx"
TEMPLATES = sorted((NGINX_DIR / "templates").rglob("*.template"))
COMPOSE_FILES = ["compose.yaml", "compose.override.yaml", "compose.prod.yaml"]
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed (it comes with the dev extras: make install)"
    return found


def load_devstack_settings() -> tuple[str, ...]:
    source = (PROJECT_ROOT / "scripts" / "devstack").read_text()
    block = re.search(r"TEMPLATE_SETTINGS = \((.*?)\)", source, re.DOTALL)
    assert block
    return tuple(re.findall(r'"([A-Z_]+)"', block.group(1)))


def template_placeholders() -> set[str]:
    return {name for path in TEMPLATES for name in PLACEHOLDER.findall(path.read_text())}


@pytest.mark.parametrize("compose_file", COMPOSE_FILES)
def test_compose_files_match_the_compose_specification(compose_file: str) -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", compose_file],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "Dockerfile"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_unprivileged_without_dev_dependencies() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile
    assert ".[redis]" in dockerfile
    assert "dev" not in re.findall(r"pip install[^\n]*", dockerfile)[0]


def test_compose_publishes_only_nginx_and_requires_settings() -> None:
    base = (PROJECT_ROOT / "compose.yaml").read_text()
    app_section = base.split("\n  app:\n")[1].split("\n  redis:\n")[0]
    assert "ports:" not in app_section
    assert "ports:" not in base.split("\n  redis:\n")[1]
    for name in ("JWT_ISSUER", "JWT_AUDIENCE", "REDIS_PASSWORD"):
        assert "${" + name + ":?" in base
    # Either kind of Standard Webhooks key will do: the app itself requires one of them.
    for name in ("WEBHOOK_SECRET", "WEBHOOK_PUBLIC_KEY"):
        assert "${" + name + ":-}" in app_section
    assert "REPLAY_STORE_URL: redis://:${REDIS_PASSWORD:?" in base
    assert ":/etc/nginx/certs:ro" in base


def compose_networks(service: dict[str, Any]) -> dict[str, Any]:
    """A service's networks as {name: options}; compose puts one without any on "default"."""
    networks = service.get("networks", ["default"])
    return networks if isinstance(networks, dict) else dict.fromkeys(networks)


def test_only_nginx_may_speak_for_clients_to_the_app_in_compose() -> None:
    """The app honours X-Forwarded-* only from FORWARDED_ALLOW_IPS: in compose that is nginx's
    fixed address on a network nobody else joins, so neither another container nor a process
    on the host (which reaches containers through the network's gateway) can claim HTTPS or
    another client address."""
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    services = compose["services"]
    nginx, app = compose_networks(services["nginx"]), compose_networks(services["app"])
    shared = set(nginx) & set(app)
    assert len(shared) == 1, shared
    (proxy,) = shared
    assert [name for name in services if proxy in compose_networks(services[name])] == [
        "nginx",
        "app",
    ]
    address = ipaddress.ip_address(nginx[proxy]["ipv4_address"])
    (ipam,) = compose["networks"][proxy]["ipam"]["config"]
    subnet = ipaddress.ip_network(ipam["subnet"])
    assert address in subnet
    assert address != next(subnet.hosts())  # the first host is the gateway: the host itself
    assert services["app"]["environment"]["FORWARDED_ALLOW_IPS"] == str(address)
    # Redis: reachable from the app alone, on a network with no way out.
    redis = compose_networks(services["redis"])
    assert proxy not in redis
    assert set(redis) <= set(app)
    assert all(compose["networks"][name].get("internal") is True for name in redis)
    for override in ("compose.override.yaml", "compose.prod.yaml"):
        text = (PROJECT_ROOT / override).read_text()
        assert "networks:" not in text, override
        assert "FORWARDED_ALLOW_IPS" not in text, override


def test_every_template_setting_is_rendered_by_devstack_and_compose() -> None:
    used = template_placeholders()
    assert used <= set(load_devstack_settings())
    compose = (PROJECT_ROOT / "compose.yaml").read_text()
    envsubst_filter = re.search(r'NGINX_ENVSUBST_FILTER: "\^\((.*?)\)\$"', compose)
    assert envsubst_filter
    assert used <= set(envsubst_filter.group(1).split("|"))
    compose_environment = set(re.findall(r"^ +([A-Z_]+):", compose, re.MULTILINE))
    derived = {
        "NGINX_LIMIT_REQ_RATE",
        "NGINX_LIMIT_REQ_OPTIONS",
        "NGINX_UPSTREAM_SERVERS",
        "NGINX_OCSP_STAPLING",
    }
    assert used - derived <= compose_environment


def test_templates_use_no_bare_uppercase_variables() -> None:
    """The image's envsubst also replaces $NAME without braces: keep nginx variables lowercase."""
    for path in TEMPLATES:
        assert not re.search(r"\$[A-Z]", path.read_text()), path


def test_access_log_never_records_query_strings() -> None:
    text = (NGINX_DIR / "templates" / "default.conf.template").read_text()
    log_format = text.split("log_format json", 1)[1].split(";", 1)[0]
    for variable in ("$request_uri", "$request ", '$request"', "$args", "$arg_", "$query_string"):
        assert variable not in log_format
    # No request header either (Referer carries other sites' query strings).
    assert "$http_" not in log_format
    assert "$request_id" in log_format
    # Only variables nginx builds itself or checked while parsing (the method and protocol),
    # or maps keeping a safe form of what a client chose.
    assert set(re.findall(r"\$([a-z_0-9]+)", log_format)) == {
        "log_time_seconds", "log_time_millis", "log_time_offset", "log_method", "log_path",
        "status", "request_id", "log_status", "log_duration_ms", "remote_addr",
        "body_bytes_sent", "upstream_status", "log_upstream_duration_ms", "scheme", "log_host",
        "server_protocol",
    }  # fmt: skip
    # The path comes from the request line, cut at the first "?", at any character outside
    # [A-Za-z0-9/._~-] (%3F, ";", bytes from 0x80 up), and where a credential-shaped segment
    # or an API key starts.
    assert '"path":"$log_path"' in log_format
    assert (
        "map $request_uri $log_path_as_sent {\n"
        '    "~^(/[A-Za-z0-9/._~-]*)(?:[?]|$)" $1;\n'
        '    "~^(/[A-Za-z0-9/._~-]*)" "$1[REDACTED]";\n'
        '    default "[REDACTED]";\n}'
    ) in text
    assert '"~^(.*?/)(?:eyJ|(?=[^/]*[0-9])(?=[^/]*[A-Za-z])[^/]{24})" "$1[REDACTED]";' in text
    assert 'map $host $log_host {\n    "~^[a-z0-9.:_\\[\\]-]*$" $host;' in text
    # Imported here: at the top its sort order against `stack` would depend on the name.
    from {{ cookiecutter.package_name }} import apikeys  # noqa: PLC0415

    prefix = apikeys.key_prefix(apikeys.__name__)
    assert f'"~*^(.*?(?<![a-z0-9]){prefix}_)" "$1[REDACTED]";' in text


def test_nginx_refuses_request_lines_gunicorn_would_refuse() -> None:
    """nginx's 414 page is a problem; gunicorn's refusal is its own (4094 bytes by default)."""
    text = (NGINX_DIR / "templates" / "default.conf.template").read_text()
    assert 'map $request $request_line_too_long {\n    "~^.{4000}" 1;' in text
    proxy = (NGINX_DIR / "templates" / "snippets" / "proxy-to-app.conf.template").read_text()
    assert "if ($request_line_too_long) {\n    return 414;\n}" in proxy
    gunicorn_conf = (PROJECT_ROOT / "gunicorn.conf.py").read_text()
    limit = re.search(r'"GUNICORN_LIMIT_REQUEST_LINE", ([0-9]+)', gunicorn_conf)
    assert limit
    assert int(limit[1]) >= 4000


def test_error_log_level_never_quotes_requests() -> None:
    """Below alert, nginx's lines about a request quote its request line, Host and Referer
    (a missing upstream socket is logged at crit)."""
    for path in TEMPLATES:
        for directive in re.findall(r"^\s*error_log\s+[^;]*;", path.read_text(), re.MULTILINE):
            assert re.search(r"\s(alert|emerg);$", directive), (path.name, directive)


def test_every_https_response_path_sets_hsts() -> None:
    """add_header is not inherited by a block that has its own: each such block repeats HSTS."""
    for path in TEMPLATES:
        text = path.read_text()
        if "add_header" in text:
            assert "add_header Strict-Transport-Security $hsts_header always;" in text, path


def test_derive_script_is_executable_posix_sh() -> None:
    script = NGINX_DIR / "10-derive-settings.envsh"
    assert script.stat().st_mode & 0o111, "the nginx image only sources executable .envsh files"
    checker = shutil.which("shellcheck")
    if checker:
        result = subprocess.run(
            [checker, "-s", "sh", str(script)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout


def derive(**settings: str) -> subprocess.CompletedProcess[str]:
    """Source 10-derive-settings.envsh as the nginx image does and print what it derived."""
    env = {
        "PATH": "/usr/bin:/bin",
        "RATE_LIMIT_PER_SECOND": "20",
        "RATE_LIMIT_BURST": "40",
        "HSTS_MAX_AGE": "63072000",
        "HTTPS_PORT": "443",
        "UPSTREAM_SERVER": "app:8000",
        **settings,
    }
    printer = (
        '. "$1" && printf "%s|%s|%s" "$NGINX_LIMIT_REQ_RATE" "$NGINX_LIMIT_REQ_OPTIONS" '
        '"$NGINX_UPSTREAM_SERVERS"'
    )
    return subprocess.run(
        ["sh", "-c", printer, "sh", str(NGINX_DIR / "10-derive-settings.envsh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("rate", "burst", "expected_rate", "expected_options"),
    [
        ("20", "40", "20", "burst=40 nodelay"),
        ("0", "0", "1", "nodelay"),
        ("5", "0", "5", "nodelay"),
    ],
)
def test_derived_rate_limit_settings(
    rate: str, burst: str, expected_rate: str, expected_options: str
) -> None:
    result = derive(RATE_LIMIT_PER_SECOND=rate, RATE_LIMIT_BURST=burst)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("|")[:2] == [expected_rate, expected_options]


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("app:8000", ["app:8000"]),
        ("unix:/run/app/gunicorn.sock", ["unix:/run/app/gunicorn.sock"]),
        ("10.0.0.11:8000  10.0.0.12:8000", ["10.0.0.11:8000", "10.0.0.12:8000"]),
        ("[::1]:8000", ["[::1]:8000"]),
    ],
)
def test_upstream_servers_become_one_server_line_each(upstream: str, expected: list[str]) -> None:
    result = derive(UPSTREAM_SERVER=upstream)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("|")[2]
    assert re.findall(r"server (\S+) max_fails=1 fail_timeout=10s; ", lines) == expected
    assert lines.count(";") == len(expected)


@pytest.mark.parametrize(
    "upstream", ["", "   ", "app:8000; include /etc/passwd", "a:1 }", "app:8000 #"]
)
def test_upstream_servers_that_could_inject_directives_are_refused(upstream: str) -> None:
    result = derive(UPSTREAM_SERVER=upstream)
    assert result.returncode == 1
    assert result.stderr.startswith("configuration error: UPSTREAM_SERVER: must ")


@pytest.mark.parametrize("name", ["RATE_LIMIT_PER_SECOND", "RATE_LIMIT_BURST", "HSTS_MAX_AGE",
                                  "HTTPS_PORT"])  # fmt: skip
@pytest.mark.parametrize("value", ["lots", "-1", "+1", "1.5", "1e3", " 1", ""])
def test_derive_script_refuses_a_non_number(name: str, value: str) -> None:
    result = derive(**{name: value})
    assert result.returncode == 1
    assert result.stderr == (
        f"configuration error: {name}: must be a non-negative integer, got '{value}'\n"
    )


@pytest.mark.parametrize(
    ("app_env", "max_age", "refused"),
    [
        (None, "31535999", True),  # unset means production, as in the app
        ("production", "31535999", True),
        ("production", "31536000", False),  # the floor itself
        ("Development", "0", True),  # any other word counts as production (the app refuses it)
        (" test", "0", True),
        ("development", "0", False),
        ("test", "0", False),
    ],
)
def test_derive_script_holds_hsts_to_a_year_in_production(
    app_env: str | None, max_age: str, refused: bool
) -> None:
    result = derive(HSTS_MAX_AGE=max_age, **({"APP_ENV": app_env} if app_env is not None else {}))
    if refused:
        assert result.returncode == 1
        assert result.stderr == (
            "configuration error: HSTS_MAX_AGE: must be at least 31536000 (one year) in "
            f"production, got '{max_age}'\n"
        )
    else:
        assert result.returncode == 0, result.stderr


# The app's words for HSTS_PRELOAD (transport.py); the script refuses the rest, and nginx's map
# in the site template must read each accepted word as the app does.
PRELOAD_WORDS = {"": False, "1": True, "true": True, "TRUE": True, "Yes": True, "on": True,
                 "0": False, "false": False, "No": False, "OFF": False}  # fmt: skip


@pytest.mark.parametrize(("value", "preload"), PRELOAD_WORDS.items())
def test_nginx_reads_every_preload_word_as_the_app_does(value: str, preload: bool) -> None:
    result = derive(HSTS_PRELOAD=value)
    assert result.returncode == 0, result.stderr
    site = (NGINX_DIR / "templates" / "default.conf.template").read_text()
    mapping = re.search(r'map "\$\{HSTS_PRELOAD\}" \$hsts_preload_suffix \{\s*"~\*([^"]+)"', site)
    assert mapping, "the site template no longer maps HSTS_PRELOAD"
    # ~* is a case-insensitive regular expression.
    assert bool(re.search(mapping.group(1), value, re.IGNORECASE)) is preload


@pytest.mark.parametrize("value", ["maybe", "2", "y", " yes", "true!"])
def test_derive_script_refuses_other_preload_words(value: str) -> None:
    result = derive(HSTS_PRELOAD=value)
    assert result.returncode == 1
    assert result.stderr == (
        "configuration error: HSTS_PRELOAD: must be true or false (1/0, yes/no, on/off), "
        f"got '{value}'\n"
    )


# --- OCSP stapling follows the certificate ----------------------------------------------------


@pytest.fixture(scope="module")
def busybox_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH of busybox applets only: the shell and tools of the nginx image (Alpine)."""
    busybox = require_tool("busybox", "busybox")
    applets = tmp_path_factory.mktemp("busybox")
    subprocess.run([busybox, "--install", "-s", str(applets)], check=True)
    return str(applets)


def derive_ocsp(shell_path: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Source 10-derive-settings.envsh with the given shell's tools; print NGINX_OCSP_STAPLING."""
    env = {
        "PATH": shell_path,
        "RATE_LIMIT_PER_SECOND": "20",
        "RATE_LIMIT_BURST": "40",
        "HSTS_MAX_AGE": "63072000",
        "HTTPS_PORT": "443",
        "UPSTREAM_SERVER": "app:8000",
        **settings,
    }
    return subprocess.run(
        ["sh", "-c", '. "$1" && printf "%s" "$NGINX_OCSP_STAPLING"', "sh",
         str(NGINX_DIR / "10-derive-settings.envsh")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("shell", ["sh", "busybox"])
@pytest.mark.parametrize(
    ("ocsp_url", "setting", "trusted", "expected"),
    [
        ("http://ocsp.example.test/", "auto", True, "on"),
        (None, "auto", True, "off"),
        ("http://ocsp.example.test/", "off", True, "off"),
        # No issuer chain to verify responses with: off, and a warning says why.
        ("http://ocsp.example.test/", "auto", False, "off"),
    ],
)
def test_ocsp_stapling_is_on_only_for_a_certificate_with_an_ocsp_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    *,
    shell: str,
    ocsp_url: str | None,
    setting: str,
    trusted: bool,
    expected: str,
) -> None:
    shell_path = request.getfixturevalue("busybox_path") if shell == "busybox" else "/usr/bin:/bin"
    # A chain file like certbot's fullchain.pem: the leaf first, then its issuer.
    leaf = self_signed(("api.example.test",), ocsp_url=ocsp_url)
    issuer = self_signed(("issuer.example.test",))
    cert_file = tmp_path / "fullchain.pem"
    cert_file.write_bytes(leaf.cert_pem + issuer.cert_pem)
    trusted_file = tmp_path / "chain.pem"
    if trusted:
        trusted_file.write_bytes(issuer.cert_pem)
    result = derive_ocsp(
        shell_path,
        OCSP_STAPLING=setting,
        TLS_CERT_FILE=str(cert_file),
        TLS_TRUSTED_CERT_FILE=str(trusted_file),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert ("TLS_TRUSTED_CERT_FILE" in result.stderr) == (ocsp_url is not None and not trusted)


def test_ocsp_url_of_a_later_certificate_in_the_chain_does_not_count(tmp_path: Path) -> None:
    leaf = self_signed(("api.example.test",))
    issuer = self_signed(("issuer.example.test",), ocsp_url="http://ocsp.example.test/")
    cert_file = tmp_path / "fullchain.pem"
    cert_file.write_bytes(leaf.cert_pem + issuer.cert_pem)
    result = derive_ocsp(
        "/usr/bin:/bin", TLS_CERT_FILE=str(cert_file), TLS_TRUSTED_CERT_FILE=str(cert_file)
    )
    assert result.stdout == "off"


def test_derive_script_refuses_an_unknown_ocsp_setting() -> None:
    result = derive_ocsp("/usr/bin:/bin", OCSP_STAPLING="on")
    assert result.returncode == 1
    assert result.stderr.startswith("configuration error: OCSP_STAPLING: must be auto or off")
