"""scripts/acme end to end: a real ACME server (Pebble) validates HTTP-01 through the stack's
own nginx, the certificate lands where nginx reads it, and nginx serves it after a graceful
reload; renewal, forced renewal under load, and each failure leaving the served certificate
as it was."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from acme_servers import Pebble, rate_limited_acme, running_pebble
from stack import PROJECT_ROOT, LiveStack, bake_certificates, free_port, require_tool

pytestmark = pytest.mark.stack

ACME = PROJECT_ROOT / "scripts" / "acme"
DOMAIN = json.loads((PROJECT_ROOT / ".cookiecutter.json").read_text())["domain_name"]


@dataclass
class AcmeSite:
    """A stack whose nginx answers HTTP-01 for DOMAIN, the Pebble that validates through it,
    and the settings scripts/acme runs with."""

    stack: LiveStack
    pebble: Pebble
    root_file: Path
    cert_file: Path
    key_file: Path
    state_dir: Path
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def acme(self, *args: str, **changes: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, str(ACME), *args],
            env={**self.env, **changes},
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        self.outputs += [result.stdout, result.stderr]
        return result

    def served(self) -> x509.Certificate:
        """The certificate a client gets for DOMAIN, verified against Pebble's root."""
        context = ssl.create_default_context(cafile=str(self.root_file))
        with (
            socket.create_connection(("127.0.0.1", self.stack.https_port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def installed(self) -> tuple[bytes, bytes]:
        return self.cert_file.read_bytes(), self.key_file.read_bytes()


@pytest.fixture(scope="module")
def acme_site(
    start_stack: Callable[..., LiveStack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AcmeSite]:
    require_tool("certbot", "certbot")
    directory = tmp_path_factory.mktemp("acme")
    # scripts/acme replaces these: copies, never the bake's own certs/.
    bake_cert, bake_key, bake_ca = bake_certificates()
    served_dir = directory / "served"
    served_dir.mkdir()
    cert_file, key_file = served_dir / "server.pem", served_dir / "server-key.pem"
    shutil.copy(bake_cert, cert_file)
    shutil.copy(bake_key, key_file)
    http_port = free_port()
    with running_pebble(directory / "pebble", http_port) as pebble:
        stack = start_stack(
            {"HTTP_PORT": str(http_port)}, cert_file=cert_file, key_file=key_file, ca_file=bake_ca
        )
        root_file = directory / "pebble-root.pem"
        root_file.write_bytes(pebble.root_certificate_pem())
        env = {
            **stack.env,
            "ACME_DIRECTORY_URL": pebble.directory_url,
            "ACME_CA_FILE": str(pebble.ca_file),
            "ACME_EMAIL": "ops@example.com",
            # Empty: the names default to the bake's domain_name.
            "ACME_DOMAINS": "",
            "SERVER_NAME": "",
            "ACME_STATE_DIR": str(directory / "state"),
        }
        yield AcmeSite(stack, pebble, root_file, cert_file, key_file, directory / "state", env)


@pytest.fixture(scope="module")
def issued(acme_site: AcmeSite) -> AcmeSite:
    result = acme_site.acme("issue")
    assert result.returncode == 0, result.stdout + result.stderr
    return acme_site


def test_issue_serves_a_certificate_from_pebble_for_the_domain(issued: AcmeSite) -> None:
    # The handshake verifies the chain up to Pebble's root and that DOMAIN is covered.
    served = issued.served()
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert DOMAIN in names.get_values_for_type(x509.DNSName)
    assert "Pebble" in served.issuer.rfc4514_string()
    installed = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
    assert served == installed
    # The full chain: the intermediate travels with the leaf.
    assert issued.cert_file.read_bytes().count(b"BEGIN CERTIFICATE") >= 2


def test_key_and_acme_state_are_private(issued: AcmeSite) -> None:
    assert issued.key_file.stat().st_mode & 0o777 == 0o600
    assert issued.state_dir.stat().st_mode & 0o777 == 0o700


def test_account_key_is_never_logged(issued: AcmeSite) -> None:
    account_keys = list((issued.state_dir / "config" / "accounts").rglob("private_key.json"))
    assert account_keys, "certbot registered no account"
    secrets = [json.loads(path.read_text())["d"] for path in account_keys]
    logs = [path for path in issued.state_dir.rglob("*.log*") if path.is_file()]
    logs += [path for path in issued.stack.log_dir.rglob("*.log") if path.is_file()]
    assert logs
    texts = issued.outputs + [path.read_text(errors="replace") for path in logs]
    for secret in secrets:
        assert not any(secret in text for text in texts)


def test_renew_is_a_no_op_until_due(issued: AcmeSite) -> None:
    before = issued.installed()
    serial = issued.served().serial_number
    certbot_log = issued.state_dir / "log" / "letsencrypt.log"
    log_before = certbot_log.stat().st_mtime_ns
    result = issued.acme("renew")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("acme: not due:"), result.stdout
    assert issued.installed() == before
    assert issued.served().serial_number == serial
    # certbot did not even run.
    assert certbot_log.stat().st_mtime_ns == log_before


class RequestLoop:
    """HTTPS requests to DOMAIN, each on a new connection, until stopped; records the
    certificate serial each saw and every failure."""

    def __init__(self, site: AcmeSite) -> None:
        self.site = site
        self.serials: list[int] = []
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        context = ssl.create_default_context(cafile=str(self.site.root_file))
        deadline = time.monotonic() + 120
        while not self.stopped.is_set() and time.monotonic() < deadline:
            port = self.site.stack.https_port
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                tls = context.wrap_socket(
                    socket.create_connection(("127.0.0.1", port), timeout=10),
                    server_hostname=DOMAIN,
                )
                # Before the request: an old worker answers "Connection: close" while it winds
                # down, and http.client then closes the socket.
                der = tls.getpeercert(binary_form=True)
                connection.sock = tls
                connection.request("GET", "/healthz", headers={"Host": DOMAIN})
                answer = connection.getresponse()
                answer.read()
                if answer.status != 200 or der is None:
                    self.failures.append(f"HTTP {answer.status}")
                else:
                    self.serials.append(x509.load_der_x509_certificate(der).serial_number)
            # Whatever goes wrong is a failed request, never a loop that silently stops.
            except Exception as error:  # noqa: BLE001
                self.failures.append(repr(error))
            finally:
                connection.close()

    def __enter__(self) -> RequestLoop:
        self.thread.start()
        return self

    def wait_for(self, count: int) -> None:
        """Until `count` requests succeeded, one failed, or a minute passed."""
        deadline = time.monotonic() + 60
        while len(self.serials) < count and not self.failures and time.monotonic() < deadline:
            time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)


def test_forced_renewal_serves_a_new_certificate_without_a_failed_request(
    issued: AcmeSite,
) -> None:
    old_serial = issued.served().serial_number
    with RequestLoop(issued) as loop:
        loop.wait_for(20)
        result = issued.acme("renew", "--force")
        loop.wait_for(len(loop.serials) + 20)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nginx reloaded" in result.stdout
    new_serial = issued.served().serial_number
    assert new_serial != old_serial
    assert new_serial == x509.load_pem_x509_certificate(issued.cert_file.read_bytes()).serial_number
    assert loop.failures == []
    # The loop ran across the reload: it saw the old certificate, then the new one.
    assert loop.serials[0] == old_serial
    assert loop.serials[-1] == new_serial
    print(f"requests during forced renewal: {len(loop.serials)}, failed: {len(loop.failures)}")


@pytest.mark.parametrize("failure", ["unreachable", "challenge", "rate-limit"])
def test_failures_exit_with_one_line_and_leave_the_served_certificate(
    issued: AcmeSite, failure: str, tmp_path: Path
) -> None:
    before = issued.installed()
    serial = issued.served().serial_number
    with rate_limited_acme(tmp_path / "stub") as stub:
        settings = {
            # Nothing listens there.
            "unreachable": {"ACME_DIRECTORY_URL": f"https://localhost:{free_port()}/dir"},
            # certbot writes the challenge where nginx does not look: Pebble gets a 404.
            "challenge": {"ACME_WEBROOT": str(tmp_path / "not-served")},
            "rate-limit": {
                "ACME_DIRECTORY_URL": stub.directory_url,
                "ACME_CA_FILE": str(stub.ca_file),
            },
        }[failure]
        result = issued.acme("renew", "--force", **settings)
    expected = {
        "unreachable": "acme: ACME directory https://localhost:",
        "challenge": f"acme: HTTP-01 challenge failed for {DOMAIN} (unauthorized): ",
        "rate-limit": "acme: rate limited by the ACME server: too many certificates (5)",
    }[failure]
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    if failure == "unreachable":
        assert "is unreachable" in lines[0]
    assert issued.installed() == before
    assert issued.served().serial_number == serial
