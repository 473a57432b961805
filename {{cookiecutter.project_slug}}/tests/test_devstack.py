"""scripts/devstack's configuration logic, without starting anything."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

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


def test_nginx_judges_hsts_for_the_apps_environment() -> None:
    # nginx sends the HSTS header clients see: a short max-age must not reach it in production
    # (APP_ENV unset means production, as for the app), while development may turn HSTS off.
    for env in ({"HSTS_MAX_AGE": "0"}, {"HSTS_MAX_AGE": "0", "APP_ENV": "production"}):
        with pytest.raises(devstack.DevstackError, match="HSTS_MAX_AGE"):
            devstack.derived_settings(devstack.load_stack(env).settings)
    development = devstack.load_stack({"HSTS_MAX_AGE": "0", "APP_ENV": "development"})
    assert devstack.derived_settings(development.settings)["NGINX_LIMIT_REQ_RATE"] == "20"


# --- the runtime directory: made exclusively, never taken over from someone else ------------

NOBODY = 65534


def require_root() -> None:
    """Handing a directory to another user needs root; CI runs as root and must not skip."""
    if os.geteuid() == 0:
        return
    reason = "needs root to give a directory to another user"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + ", and CI=true makes it mandatory")
    pytest.skip(reason)


def stack_in(run_dir: Path, log_dir: Path) -> Any:
    return devstack.load_stack({"DEVSTACK_RUN_DIR": str(run_dir), "DEVSTACK_LOG_DIR": str(log_dir)})


def test_new_runtime_and_log_directories_are_private(tmp_path: Path) -> None:
    stack = stack_in(tmp_path / "run", tmp_path / "var" / "log")
    devstack.prepare_directories(stack)
    expected = 0o750 if os.geteuid() == 0 else 0o700  # as root, nginx's workers use the group
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == expected
    # Logs are redacted, yet still say who called what: only this user reads them.
    for log_dir in (tmp_path / "var" / "log", tmp_path / "var" / "log" / "nginx"):
        assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700, log_dir


def test_an_existing_private_runtime_directory_is_reused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    stack = stack_in(tmp_path / "run", tmp_path / "log")
    devstack.prepare_directories(stack)
    devstack.prepare_directories(stack)  # a second `up` after `down`
    assert (tmp_path / "run" / "conf").is_dir()


def test_runtime_directory_made_by_another_user_is_refused(tmp_path: Path) -> None:
    require_root()
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o755)
    os.chown(run_dir, NOBODY, NOBODY)
    with pytest.raises(devstack.DevstackError, match=f"owned by uid {NOBODY}"):
        devstack.prepare_directories(stack_in(run_dir, tmp_path / "log"))
    assert not (run_dir / "conf").exists()


def test_runtime_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(devstack.DevstackError, match="symbolic link"):
        devstack.prepare_directories(stack_in(tmp_path / "run", tmp_path / "log"))
    assert not (tmp_path / "elsewhere" / "conf").exists()


def test_runtime_directory_others_can_write_to_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run").chmod(0o777)
    with pytest.raises(devstack.DevstackError, match="writable by others"):
        devstack.prepare_directories(stack_in(tmp_path / "run", tmp_path / "log"))


def test_runtime_directory_inside_a_directory_others_control_is_refused(tmp_path: Path) -> None:
    # Whoever may rename entries of a parent can swap the directory after it was checked;
    # /tmp is safe only thanks to its sticky bit.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(devstack.DevstackError, match=str(shared)):
        devstack.prepare_directories(stack_in(shared / "run", tmp_path / "log"))
    shared.chmod(0o1777)
    devstack.prepare_directories(stack_in(shared / "run", tmp_path / "log"))


def test_log_directory_made_by_another_user_is_refused(tmp_path: Path) -> None:
    require_root()
    log_dir = tmp_path / "log"
    log_dir.mkdir(mode=0o755)
    os.chown(log_dir, NOBODY, NOBODY)
    with pytest.raises(devstack.DevstackError, match=f"owned by uid {NOBODY}"):
        devstack.prepare_directories(stack_in(tmp_path / "run", log_dir))


@pytest.fixture
def decoy(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """Someone else's runtime directory whose pid file names a live process that looks like
    this stack's gunicorn (its command line holds the directory, its own process group)."""
    require_root()
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o755)
    process = subprocess.Popen(["sh", "-c", "sleep 60", str(run_dir)], start_new_session=True)
    (run_dir / "gunicorn.pid").write_text(f"{process.pid}\n")
    os.chown(run_dir, NOBODY, NOBODY)
    try:
        yield run_dir, process
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.parametrize("command", ["down", "status", "up"])
def test_commands_never_act_on_someone_elses_runtime_directory(
    decoy: tuple[Path, subprocess.Popen[bytes]],
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    run_dir, process = decoy
    monkeypatch.setenv("DEVSTACK_RUN_DIR", str(run_dir))
    monkeypatch.setenv("DEVSTACK_LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setenv("NGINX", "/bin/true")  # never reached
    assert devstack.main([command]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"devstack: runtime directory {run_dir} is owned by uid {NOBODY}")
    assert process.poll() is None, "a process named by someone else's pid file was signalled"


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_down_leaves_alone_a_live_process_group_that_is_not_this_stacks(tmp_path: Path) -> None:
    # A stale pid file whose pid now belongs to another live program: e.g. the system's own
    # nginx master, whose workers look exactly like this stack's ("nginx: worker process").
    # While that pid lives, the group is its own: this stack's orphans cannot be in it.
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to find the worker")
    stack = stack_in(tmp_path / "run", tmp_path / "log")
    devstack.prepare_directories(stack)
    script = 'exec -a "nginx: worker process" sleep 60 & wait'
    master = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (workers := children_of(master.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers, "the stand-in worker did not start"
        (stack.run_dir / "nginx.pid").write_text(f"{master.pid}\n")
        devstack.stop_all(stack)
        time.sleep(0.2)
        assert master.poll() is None
        assert children_of(master.pid) == workers, "another program's workers were killed"
    finally:
        os.killpg(master.pid, 9)
        master.wait(timeout=10)
