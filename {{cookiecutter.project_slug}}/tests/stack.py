"""The real stack (nginx + gunicorn via scripts/devstack) for end-to-end tests.

Fixtures (made available to every test module by conftest.py):

- ``live_stack``: session-scoped stack on free ports with the bake's certificates, trusting
  only the bake's CA (certs/ca.pem). Reuse it; do not stop or reconfigure it.
- ``start_stack``: factory for extra, differently configured stacks (stopped at session end).

A ``LiveStack`` gives URLs, an SSL context trusting only its CA, raw requests that keep
repeated headers, the directory of its logs, the signing key of its JWT issuer so a test
can mint tokens (``issuer``, ``audience``, ``private_key_pem``), and its API key file
(``api_keys_file``, empty at start; the running app re-reads it when it changes).

nginx is required: under CI=true a missing nginx fails; elsewhere the tests skip, saying why.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEVSTACK = PROJECT_ROOT / "scripts" / "devstack"
BAKE_CERTS = PROJECT_ROOT / "certs"
STACK_ISSUER = "https://issuer.stack.test/"
STACK_AUDIENCE = "https://api.stack.test"
# Request headers as a mapping, or as (name, value) pairs where a name must repeat.
Headers = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None


@dataclass
class LiveStack:
    https_port: int
    http_port: int
    ca_file: Path
    run_dir: Path
    log_dir: Path
    env: dict[str, str]
    server_name: str = "localhost"
    issuer: str = STACK_ISSUER
    audience: str = STACK_AUDIENCE
    private_key_pem: bytes = field(default=b"", repr=False)
    running: bool = True

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "gunicorn.sock"

    @property
    def acme_webroot(self) -> Path:
        return self.run_dir / "acme"

    @property
    def api_keys_file(self) -> Path:
        return Path(self.env["API_KEYS_FILE"])

    @property
    def gunicorn_log(self) -> Path:
        return self.log_dir / "gunicorn.log"

    @property
    def nginx_access_log(self) -> Path:
        return self.log_dir / "nginx" / "access.log"

    def url(self, path: str) -> str:
        return f"https://{self.server_name}:{self.https_port}{path}"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts only this stack's CA, like a client that pinned it."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.set_alpn_protocols(["http/1.1"])
        return context

    def https(
        self,
        method: str,
        path: str,
        *,
        headers: Headers | None = None,
        body: bytes | None = None,
        host: str | None = None,
        sni: str | None = None,
    ) -> Response:
        """One HTTPS/1.1 request; headers are kept as sent (repeats included)."""
        sni = sni or self.server_name
        connection = http.client.HTTPConnection("127.0.0.1", self.https_port, timeout=10)
        # The TLS socket is made here so SNI (and the certificate check) can name a server
        # other than the address connected to.
        connection.sock = self.ssl_context().wrap_socket(
            socket.create_connection(("127.0.0.1", self.https_port), timeout=10),
            server_hostname=sni,
        )
        return _send(
            connection, method, path, headers=headers, body=body, host=host or self.host_header()
        )

    def http(
        self,
        method: str,
        path: str,
        *,
        headers: Headers | None = None,
        body: bytes | None = None,
        host: str | None = None,
    ) -> Response:
        """One plain-HTTP request to nginx's port 80 equivalent."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        default_host = f"{self.server_name}:{self.http_port}"
        return _send(
            connection, method, path, headers=headers, body=body, host=host or default_host
        )

    def direct(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> Response:
        """A request straight to gunicorn's unix socket, bypassing nginx."""
        connection = _UnixHTTPConnection(str(self.socket_path))
        return _send(connection, method, path, headers=headers, body=None, host="localhost")

    def host_header(self) -> str:
        return f"{self.server_name}:{self.https_port}"

    def devstack(self, command: str) -> subprocess.CompletedProcess[str]:
        return run_devstack(command, self.env)

    def stop(self) -> None:
        if self.running:
            self.devstack("down")
            self.running = False

    def kill_gunicorn(self) -> None:
        """Simulate a crash: SIGKILL gunicorn's whole process group, leave its files behind."""
        pid = int((self.run_dir / "gunicorn.pid").read_text().strip())
        os.killpg(pid, signal.SIGKILL)

    def gunicorn_worker_pids(self) -> list[int]:
        """The gunicorn master's children (its workers), from /proc; [] where there is none."""
        master = int((self.run_dir / "gunicorn.pid").read_text().strip())
        workers = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                # Field 4 of /proc/<pid>/stat is the parent; the command name before it is
                # parenthesised and may contain spaces.
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == master:
                workers.append(int(entry.name))
        return sorted(workers)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)


def _send(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    *,
    headers: Headers | None,
    body: bytes | None,
    host: str,
) -> Response:
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        for name, value in pairs:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        return Response(answer.status, answer.getheaders(), answer.read())
    finally:
        connection.close()


def nginx_available() -> bool:
    return bool(
        os.environ.get("NGINX")
        or shutil.which("nginx")
        or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    )


def require_nginx() -> None:
    if nginx_available():
        return
    reason = "nginx is not installed; the real-stack tests need it (apt-get install nginx)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " and CI=true makes them mandatory")
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    """The path of a tool a test runs for real: under CI=true its absence fails the test,
    elsewhere the test skips, saying what to install."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    reason = f"{name} is not installed; this test needs it (apt-get install {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " and CI=true makes it mandatory")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_devstack(command: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEVSTACK), command],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


def new_signing_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def app_environment(state_dir: Path, private_key_pem: bytes) -> dict[str, str]:
    """A complete, self-contained app configuration (nothing read from the developer's .env)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (state_dir / "jwt_public.pem").write_bytes(public_pem)
    (state_dir / "jwt_private.pem").write_bytes(private_key_pem)
    api_keys_file = state_dir / "api-keys.json"
    api_keys_file.write_text('{"keys": []}\n')
    api_keys_file.chmod(0o600)
    return {
        "APP_ENV": "development",
        "JWT_ISSUER": STACK_ISSUER,
        "JWT_AUDIENCE": STACK_AUDIENCE,
        "JWT_PUBLIC_KEY_FILE": str(state_dir / "jwt_public.pem"),
        "JWT_DEV_PRIVATE_KEY_FILE": str(state_dir / "jwt_private.pem"),
        "API_KEYS_FILE": str(api_keys_file),
        "WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "GITHUB_WEBHOOK_SECRET": secrets.token_hex(32),
        "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(24),
        "REPLAY_STORE_URL": f"sqlite:///{state_dir / 'replay.sqlite3'}",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "2",
        "TRUSTED_PROXY_HOPS": "1",
        "LOG_LEVEL": "INFO",
    }


def blank_dotenv_settings() -> dict[str, str]:
    """Empty values for every name in the developer's .env: the real environment wins over
    .env (for the app and devstack alike), and empty means "use the default"."""
    dotenv = PROJECT_ROOT / ".env"
    if not dotenv.is_file():
        return {}
    names = re.findall(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", dotenv.read_text(), re.M)
    return dict.fromkeys(names, "")


def launch_stack(
    state_dir: Path,
    *,
    cert_file: Path,
    key_file: Path,
    ca_file: Path,
    settings: Mapping[str, str | None] | None = None,
) -> LiveStack:
    """Start a devstack on free ports; its runtime directory is short (AF_UNIX limit).

    settings override the stack's environment; None removes a name (its default applies).
    """
    require_nginx()
    run_dir = Path(tempfile.mkdtemp(prefix="stk-", dir="/tmp"))
    log_dir = state_dir / "log"
    private_key_pem = new_signing_key()
    env = {
        **os.environ,
        **blank_dotenv_settings(),
        **app_environment(state_dir, private_key_pem),
        "HTTPS_PORT": str(free_port()),
        "HTTP_PORT": str(free_port()),
        "TLS_CERT_FILE": str(cert_file),
        "TLS_KEY_FILE": str(key_file),
        "TLS_CA_FILE": str(ca_file),
        "DEVSTACK_RUN_DIR": str(run_dir),
        "DEVSTACK_LOG_DIR": str(log_dir),
        "DEVSTACK_PYTHON": sys.executable,
    }
    for name, value in (settings or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    result = run_devstack("up", env)
    if result.returncode != 0:
        run_devstack("down", env)
        shutil.rmtree(run_dir, ignore_errors=True)
        pytest.fail(f"devstack up failed:\n{result.stdout}\n{result.stderr}")
    return LiveStack(
        https_port=int(env["HTTPS_PORT"]),
        http_port=int(env["HTTP_PORT"]),
        ca_file=ca_file,
        run_dir=run_dir,
        log_dir=log_dir,
        env=env,
        server_name=env.get("SERVER_NAME", "localhost"),
        private_key_pem=private_key_pem,
    )


def bake_certificates() -> tuple[Path, Path, Path]:
    cert, key, ca = (BAKE_CERTS / name for name in ("server.pem", "server-key.pem", "ca.pem"))
    missing = [str(path) for path in (cert, key, ca) if not path.is_file()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make bootstrap` to make them")
    return cert, key, ca


@pytest.fixture(scope="session")
def start_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LiveStack]]:
    """Factory: start_stack(settings={...}, cert_file=..., key_file=..., ca_file=...)."""
    started: list[LiveStack] = []

    def start(
        settings: Mapping[str, str] | None = None,
        *,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        ca_file: Path | None = None,
    ) -> LiveStack:
        if cert_file is None or key_file is None or ca_file is None:
            cert_file, key_file, ca_file = bake_certificates()
        stack = launch_stack(
            tmp_path_factory.mktemp("stack"),
            cert_file=cert_file,
            key_file=key_file,
            ca_file=ca_file,
            settings=settings,
        )
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()
        shutil.rmtree(stack.run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def live_stack(start_stack: Callable[..., LiveStack]) -> LiveStack:
    """The shared stack: bake certificates, default settings but the rate limit. Read-only for
    tests. Every stack test module sends its requests through it, far faster than one client
    would: at the default 20/s (burst 40) some would meet 429 depending on the order the tests
    ran in. The rate limit is tested on stacks of its own, at their own settings."""
    return start_stack({"RATE_LIMIT_PER_SECOND": "0"})


# --- certificates meeting Mozilla's rules, for the sslyze check ------------------------------


@dataclass(frozen=True)
class MozillaCertificates:
    cert_file: Path
    key_file: Path
    ca_file: Path


def make_mozilla_test_certificates(directory: Path, names: tuple[str, ...]) -> MozillaCertificates:
    """A throwaway CA and an ECDSA P-256 leaf valid for 30 days (modern allows at most 90)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stack test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    certificates = MozillaCertificates(
        directory / "server.pem", directory / "server-key.pem", directory / "ca.pem"
    )
    certificates.cert_file.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    certificates.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key_bytes = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(certificates.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    return certificates


@pytest.fixture(scope="session")
def mozilla_stack(
    start_stack: Callable[..., LiveStack], tmp_path_factory: pytest.TempPathFactory
) -> LiveStack:
    """A stack serving an ECDSA P-256, 30-day certificate from a test CA (Mozilla's rules)."""
    require_nginx()
    certificates = make_mozilla_test_certificates(
        tmp_path_factory.mktemp("mozilla-certs"), ("localhost",)
    )
    return start_stack(
        cert_file=certificates.cert_file,
        key_file=certificates.key_file,
        ca_file=certificates.ca_file,
    )


# --- test only: a route that raises, for following an unhandled exception through the logs ---

RAISING_ROUTE = "/_stack-test/raise"
RAISING_ROUTE_MESSAGE = "STACK_TEST_RAISE_MESSAGE"

_RAISING_ROUTE_LAUNCHER = '''#!@PYTHON@
"""Written by tests/stack.py, for tests only: gunicorn serving the app plus @ROUTE@, which
raises RuntimeError(os.environ["@MESSAGE@"]). devstack runs this file as its Python
interpreter (DEVSTACK_PYTHON), with the arguments "-m gunicorn ..."."""

import os
import sys

from gunicorn.app.wsgiapp import WSGIApplication


def fail():
    raise RuntimeError(os.environ["@MESSAGE@"])


class AppWithRaisingRoute(WSGIApplication):
    def load_wsgiapp(self):
        app = super().load_wsgiapp()
        app.add_url_rule("@ROUTE@", "stack_test_raise", fail)
        return app


if sys.argv[1:3] != ["-m", "gunicorn"]:
    sys.exit("expected the arguments -m gunicorn ...")
sys.argv = ["gunicorn", *sys.argv[3:]]
AppWithRaisingRoute("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn").run()
'''


def raising_route_settings(directory: Path, message: str) -> dict[str, str]:
    """Settings for start_stack(): the app also serves RAISING_ROUTE, raising RuntimeError.

    Test only. The service has no route that fails on purpose and must not grow one, nor a
    setting for it; so the route is added from outside, by a launcher written to `directory`
    that devstack runs as its interpreter (DEVSTACK_PYTHON). Nothing under src/ knows of it.
    The message travels in the environment, so the traceback's source line does not hold it.
    """
    launcher = directory / "python-with-raising-route"
    text = _RAISING_ROUTE_LAUNCHER.replace("@PYTHON@", sys.executable)
    text = text.replace("@ROUTE@", RAISING_ROUTE).replace("@MESSAGE@", RAISING_ROUTE_MESSAGE)
    launcher.write_text(text, encoding="utf-8")
    launcher.chmod(0o700)
    return {"DEVSTACK_PYTHON": str(launcher), RAISING_ROUTE_MESSAGE: message}
