"""scripts/devstack's configuration logic, without starting anything."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from certificates import self_signed
from {{ cookiecutter.package_name }}.settings import read_environment
from stack import DEVSTACK, PROJECT_ROOT, require_nginx, run_devstack


def load_devstack() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("devstack", str(DEVSTACK))
    spec = importlib.util.spec_from_loader("devstack", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the file executes.
    sys.modules["devstack"] = module
    loader.exec_module(module)
    return module


devstack = load_devstack()


def test_defaults_follow_the_spec() -> None:
    stack = devstack.load_stack({})
    assert stack.https_port == 8443
    assert stack.http_port == 8080
    assert stack.log_dir == PROJECT_ROOT / "var" / "log"
    assert stack.cert_file == PROJECT_ROOT / "certs" / "server.pem"
    assert stack.key_file == PROJECT_ROOT / "certs" / "server-key.pem"
    assert stack.ca_file == PROJECT_ROOT / "certs" / "ca.pem"
    assert stack.health_url == "https://localhost:8443/healthz"
    # Short enough for AF_UNIX on Linux and macOS.
    assert len(str(stack.socket_path).encode()) <= devstack.MAX_SOCKET_PATH
    names = stack.settings["EXTRA_SERVER_NAMES"].split()
    assert {"127.0.0.1", "[::1]"} <= set(names)
    assert stack.settings["NGINX_HTTPS_LISTEN"] == "127.0.0.1:8443"
    assert stack.settings["OCSP_STAPLING"] == "auto"


def test_settings_come_from_the_environment() -> None:
    stack = devstack.load_stack(
        {"HTTPS_PORT": "9443", "HTTP_PORT": "9080", "TLS_CERT_FILE": "/etc/x.pem"}
    )
    assert stack.settings["NGINX_HTTPS_LISTEN"] == "127.0.0.1:9443"
    assert stack.settings["HTTPS_PORT"] == "9443"
    assert stack.cert_file == Path("/etc/x.pem")


@pytest.mark.parametrize("port", ["0", "70000", "https", "-1"])
def test_bad_ports_are_refused(port: str) -> None:
    with pytest.raises(devstack.DevstackError, match="HTTPS_PORT"):
        devstack.load_stack({"HTTPS_PORT": port})


def test_long_socket_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(devstack.DevstackError, match="AF_UNIX"):
        devstack.check_socket_path(tmp_path / ("x" * 120) / "gunicorn.sock")


def test_render_replaces_only_known_settings() -> None:
    settings = dict.fromkeys(devstack.TEMPLATE_SETTINGS, "v")
    assert devstack.render("a ${SERVER_NAME} $host", settings) == "a v $host"
    with pytest.raises(devstack.DevstackError, match="UNKNOWN"):
        devstack.render("${UNKNOWN}", settings)


def test_dotenv_is_read_as_the_app_reads_it(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport HTTPS_PORT=9443 # local\nHSTS_PRELOAD='true'\n"
        'EXTRA_SERVER_NAMES="a.test b.test"\nBROKEN\n'
    )
    from_devstack = devstack.read_dotenv(env_file)
    assert from_devstack == {
        "HTTPS_PORT": "9443",
        "HSTS_PRELOAD": "true",
        "EXTRA_SERVER_NAMES": "a.test b.test",
    }
    assert devstack.load_stack(from_devstack).https_port == 9443
    # The same file through the app's own reader gives the same values.
    with pytest.MonkeyPatch.context() as patch:
        for name in from_devstack:
            patch.delenv(name, raising=False)
        from_app = read_environment(env_file)
    assert {name: from_app[name] for name in from_devstack} == from_devstack


def test_the_domain_comes_from_the_bake_answers() -> None:
    answers = json.loads((PROJECT_ROOT / ".cookiecutter.json").read_text())
    assert devstack.domain_name() == answers["domain_name"]
    assert answers["domain_name"] in devstack.load_stack({}).settings["EXTRA_SERVER_NAMES"]


@pytest.mark.parametrize(
    ("ocsp_url", "snippet"), [("http://ocsp.example.test/", "on"), (None, "off")]
)
def test_rendered_configuration_staples_only_for_a_certificate_with_an_ocsp_url(
    tmp_path: Path, ocsp_url: str | None, snippet: str
) -> None:
    require_nginx()
    cert_file, key_file = self_signed(("localhost",), ocsp_url=ocsp_url).write(tmp_path / "certs")
    stack = devstack.load_stack(
        {
            "DEVSTACK_RUN_DIR": str(tmp_path / "run"),
            "DEVSTACK_LOG_DIR": str(tmp_path / "log"),
            "TLS_CERT_FILE": str(cert_file),
            "TLS_KEY_FILE": str(key_file),
            "TLS_CA_FILE": str(cert_file),
        }
    )
    devstack.prepare_directories(stack)
    devstack.render_nginx_config(stack)
    rendered = (stack.conf_dir / "conf.d" / "default.conf").read_text()
    assert f"include conf.d/snippets/ocsp-{snippet}.conf;" in rendered
    # nginx accepts either configuration (stapling needs a resolver and the issuer chain).
    devstack.test_nginx_config(devstack.find_nginx(), stack)


def test_reload_refuses_when_nginx_is_not_running(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEVSTACK_RUN_DIR": str(tmp_path / "run"),
        "DEVSTACK_LOG_DIR": str(tmp_path),
    }
    result = run_devstack("reload", env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "devstack: nginx is not running; run `scripts/devstack up` first"
    )
