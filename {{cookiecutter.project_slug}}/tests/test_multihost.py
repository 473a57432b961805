"""Several app hosts behind one edge, each host a Linux network namespace with real processes.

    client --public link--> edge (nginx from deploy/nginx/templates, two upstream servers)
                              |
                        virtual switch (a bridge in a namespace of its own)
                         /         |          \\
                     app1        app2        redis
           (gunicorn with this app, production settings,      (redis-server with a password)
            REPLAY_STORE_URL pointing at the redis host)

The edge's configuration is rendered by scripts/devstack's own code from the shipped templates,
with UPSTREAM_SERVER naming both app hosts. Cutting a host's link sets its switch port down:
its packets vanish as with a pulled cable, nobody is told (no reset, no ICMP), which is the
hard case for a proxy. Through the edge the tests show that:

- both app hosts serve requests;
- 20 identical webhook deliveries at once, spread over both hosts, are accepted exactly once;
- losing Redis makes deliveries and /readyz answer 503, never accept, and both recover by
  themselves when the link returns;
- losing an app host under load costs at most the requests the edge had handed it before it
  noticed: one per waiting client, however long the outage (a silent host is noticed only by a
  timeout; nginx then retries a GET on the other host, and never resends a POST that reached
  the lost host), after which every request succeeds on the other host.

Requests are attributed to a host by the request id nginx generates: each host's gunicorn logs
the id of every request it answered. The figures are printed (pytest -s shows them; `make
test-multihost` does).

Needs Linux, root (network namespaces), iproute2, nginx and redis-server; `make test` leaves
this module out (marker "multihost"), `make test-multihost` runs it. Under CI=true a missing
requirement fails instead of skipping. Every namespace is named NETNS_PREFIX + this process id
+ a role, and removed with its links and processes even when a test fails.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import functools
import http.client
import importlib.machinery
import importlib.util
import json
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
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest
import redis
import standardwebhooks
from cryptography.hazmat.primitives import serialization

from stack import (
    DEVSTACK,
    PROJECT_ROOT,
    blank_dotenv_settings,
    make_mozilla_test_certificates,
    new_signing_key,
)

pytestmark = pytest.mark.multihost

NETNS_PREFIX = "ssk8s-"
CLONE_NEWNET = 0x40000000
# Private addresses inside the namespaces only; the machine's own network is never touched.
SWITCH_SUBNET = "10.231.7"
PUBLIC_SUBNET = "10.231.8"
EDGE_PUBLIC = f"{PUBLIC_SUBNET}.1"
CLIENT_ADDRESS = f"{PUBLIC_SUBNET}.2"
HOST_ADDRESSES = {
    "edge": f"{SWITCH_SUBNET}.10",
    "app1": f"{SWITCH_SUBNET}.11",
    "app2": f"{SWITCH_SUBNET}.12",
    "redis": f"{SWITCH_SUBNET}.20",
}
APP_HOSTS = ("app1", "app2")
HTTPS_PORT = 22443
HTTP_PORT = 22080
APP_PORT = 22800
REDIS_PORT = 22379
SERVER_NAME = "edge.multihost.test"
ISSUER = "https://issuer.multihost.test/"
AUDIENCE = "https://api.multihost.test"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
HANDLER_LINE = "webhook event recorded: "
CONCURRENT_DELIVERIES = 20
# nginx's proxy_read_timeout (snippets/proxy-to-app.conf.template): how long a request sent to
# a host that vanished waits before nginx gives up on it.
PROXY_READ_TIMEOUT = 30.0
LOAD_CLIENTS = 8
LOAD_PAUSE_SECONDS = 0.05
PROCESSED_ID = re.compile(re.escape(HANDLER_LINE) + r"\S+ \S+ (msg_[0-9a-f]+)")

T = TypeVar("T")


# --------------------------------------------------------------------------- requirements


def require(condition: bool, message: str) -> None:
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true makes the multi-host test mandatory)")
    pytest.skip(message)


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def check_requirements() -> dict[str, str]:
    require(sys.platform == "linux", "network namespaces need Linux")
    require(os.geteuid() == 0, "network namespaces need root (run `sudo make test-multihost`)")
    tools = {name: find_binary(name) for name in ("ip", "nginx", "redis-server")}
    for name, path in tools.items():
        require(path is not None, f"{name} is not installed (iproute2, nginx, redis-server)")
    return {name: path for name, path in tools.items() if path}


# --------------------------------------------------------------------------- the network


_thread_namespace = threading.local()


def enter_namespace(name: str) -> None:
    """Move the calling thread (only it) into a network namespace; its sockets stay there."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {name}: {os.strerror(error)}")
    finally:
        os.close(fd)
    _thread_namespace.name = name


@dataclasses.dataclass
class Network:
    ip: str
    run_id: str = dataclasses.field(default_factory=lambda: f"{os.getpid()}")
    created: list[str] = dataclasses.field(default_factory=list)

    def namespace(self, role: str) -> str:
        return f"{NETNS_PREFIX}{self.run_id}-{role}"

    def run(self, *args: str) -> None:
        result = subprocess.run(
            [self.ip, *args], capture_output=True, text=True, check=False, timeout=30
        )
        assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr.strip()}"

    def add_namespace(self, role: str) -> str:
        name = self.namespace(role)
        self.run("netns", "add", name)
        self.created.append(name)
        self.run("-n", name, "link", "set", "lo", "up")
        return name

    def build(self) -> None:
        switch = self.add_namespace("switch")
        self.run("-n", switch, "link", "add", "br0", "type", "bridge")
        self.run("-n", switch, "link", "set", "br0", "up")
        for role, address in HOST_ADDRESSES.items():
            host = self.add_namespace(role)
            port = f"port-{role}"
            self.run("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                     "netns", host)  # fmt: skip
            self.run("-n", switch, "link", "set", port, "master", "br0", "up")
            self.run("-n", host, "address", "add", f"{address}/24", "dev", "eth0")
            self.run("-n", host, "link", "set", "eth0", "up")
        client = self.add_namespace("client")
        edge = self.namespace("edge")
        self.run("-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
                 "netns", edge)  # fmt: skip
        self.run("-n", client, "address", "add", f"{CLIENT_ADDRESS}/24", "dev", "eth0")
        self.run("-n", client, "link", "set", "eth0", "up")
        self.run("-n", edge, "address", "add", f"{EDGE_PUBLIC}/24", "dev", "eth1")
        self.run("-n", edge, "link", "set", "eth1", "up")

    def cut(self, role: str) -> None:
        self.run("-n", self.namespace("switch"), "link", "set", f"port-{role}", "down")

    def restore(self, role: str) -> None:
        self.run("-n", self.namespace("switch"), "link", "set", f"port-{role}", "up")

    def pids(self) -> list[int]:
        found = []
        for name in self.created:
            result = subprocess.run(
                [self.ip, "netns", "pids", name], capture_output=True, text=True, check=False
            )
            found += [int(pid) for pid in result.stdout.split()]
        return found

    def remove(self) -> None:
        """Kill what still runs inside (only processes in our namespaces), delete them all;
        their links go with them."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for name in reversed(self.created):
            subprocess.run([self.ip, "netns", "delete", name], capture_output=True, check=False)
        self.created.clear()

    def remove_stale(self) -> None:
        """Namespaces of an earlier run that was killed before it could clean up (its process
        is gone): whatever still runs inside them is ours, and goes with them."""
        for name in self.listed():
            owner = name.removeprefix(NETNS_PREFIX).split("-", 1)[0]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                stale = Network(self.ip, run_id=owner, created=[name])
                stale.remove()

    def listed(self) -> list[str]:
        result = subprocess.run(
            [self.ip, "netns", "list"], capture_output=True, text=True, check=False
        )
        names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
        return [name for name in names if name.startswith(NETNS_PREFIX)]

    def leftovers(self) -> list[str]:
        prefix = f"{NETNS_PREFIX}{self.run_id}-"
        return [name for name in self.listed() if name.startswith(prefix)]


# --------------------------------------------------------------------------- processes


@dataclasses.dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=15)

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


def start_in(
    network: Network, role: str, command: list[str], log: Path, env: Mapping[str, str]
) -> Process:
    with log.open("ab") as output:
        popen = subprocess.Popen(
            [network.ip, "netns", "exec", network.namespace(role), *command],
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            # Its own process group: stopped as a whole (gunicorn's and nginx's workers too).
            start_new_session=True,
        )
    return Process(role, popen, log)


def load_devstack() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("devstack_multihost", str(DEVSTACK))
    spec = importlib.util.spec_from_loader("devstack_multihost", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["devstack_multihost"] = module
    loader.exec_module(module)
    return module


def render_edge(directory: Path, run_dir: Path) -> tuple[ModuleType, object]:
    """The edge's nginx configuration, rendered from deploy/nginx/templates by devstack's code,
    with both app hosts as upstream servers and the public address as listener."""
    devstack = load_devstack()
    certificates = make_mozilla_test_certificates(directory / "certs", (SERVER_NAME,))
    stack = devstack.load_stack(
        {
            "HTTPS_PORT": str(HTTPS_PORT),
            "HTTP_PORT": str(HTTP_PORT),
            "SERVER_NAME": SERVER_NAME,
            "EXTRA_SERVER_NAMES": SERVER_NAME,
            "TLS_CERT_FILE": str(certificates.cert_file),
            "TLS_KEY_FILE": str(certificates.key_file),
            "TLS_CA_FILE": str(certificates.ca_file),
            "DEVSTACK_RUN_DIR": str(run_dir),
            "DEVSTACK_LOG_DIR": str(directory / "edge-log"),
            # The load comes from one client address; per-client limits would refuse most of it.
            "RATE_LIMIT_PER_SECOND": "0",
        }
    )
    settings = {
        **stack.settings,
        "NGINX_HTTPS_LISTEN": f"{EDGE_PUBLIC}:{HTTPS_PORT}",
        "NGINX_HTTP_LISTEN": f"{EDGE_PUBLIC}:{HTTP_PORT}",
        "UPSTREAM_SERVER": " ".join(f"{HOST_ADDRESSES[host]}:{APP_PORT}" for host in APP_HOSTS),
    }
    stack = dataclasses.replace(stack, settings=settings)
    devstack.prepare_directories(stack)
    devstack.render_nginx_config(stack)
    return devstack, stack


def app_environment(directory: Path, role: str, redis_url: str) -> dict[str, str]:
    key = serialization.load_pem_private_key(new_signing_key(), password=None)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (directory / "jwt_public.pem").write_bytes(public_pem)
    return {
        **os.environ,
        # Nothing from the developer's .env: the real environment wins, and empty means default.
        **blank_dotenv_settings(),
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
        "APP_ENV": "production",
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_PUBLIC_KEY_FILE": str(directory / "jwt_public.pem"),
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "REPLAY_STORE_URL": redis_url,
        "TRUSTED_PROXY_HOPS": "1",
        # The edge's address on the switch: the one peer whose X-Forwarded-* headers count.
        "FORWARDED_ALLOW_IPS": HOST_ADDRESSES["edge"],
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "GUNICORN_BIND": f"{HOST_ADDRESSES[role]}:{APP_PORT}",
        "LOG_LEVEL": "INFO",
    }


# --------------------------------------------------------------------------- the client


@dataclasses.dataclass(frozen=True)
class Result:
    method: str
    path: str
    status: int
    body: bytes
    request_id: str
    started: float
    ended: float

    def json(self) -> dict[str, object]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class Client:
    """HTTPS through the edge's public address, from the client namespace: every request runs
    on a pool thread that has entered it."""

    def __init__(self, namespace: str, ca_file: Path, threads: int) -> None:
        self.namespace = namespace
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.context.set_alpn_protocols(["http/1.1"])
        self.pool = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="client", initializer=enter_namespace, initargs=(namespace,)
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def connect(self, timeout: float = 60.0) -> http.client.HTTPConnection:
        # Outside the client namespace the edge's address would be routed to the machine's real
        # network: refuse rather than send anything there.
        if getattr(_thread_namespace, "name", None) != self.namespace:
            raise RuntimeError("connect() runs only on the client's threads (submit/request)")
        connection = http.client.HTTPConnection(EDGE_PUBLIC, HTTPS_PORT, timeout=timeout)
        connection.sock = self.context.wrap_socket(
            socket.create_connection((EDGE_PUBLIC, HTTPS_PORT), timeout=timeout),
            server_hostname=SERVER_NAME,
        )
        return connection

    def send(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Result:
        started = time.monotonic()
        try:
            connection.request(
                method,
                path,
                body=body,
                headers={"Host": f"{SERVER_NAME}:{HTTPS_PORT}", **(headers or {})},
            )
            answer = connection.getresponse()
            data = answer.read()
            return Result(
                method, path, answer.status, data, answer.getheader("X-Request-ID") or "",
                started, time.monotonic(),
            )  # fmt: skip
        finally:
            connection.close()

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Result:
        """One request on its own connection, on a pool thread; waits for the answer."""
        return self.pool.submit(
            lambda: self.send(self.connect(), method, path, headers, body)
        ).result()

    def submit(self, work: Callable[[], T]) -> concurrent.futures.Future[T]:
        return self.pool.submit(work)


def delivery(msg_id: str) -> tuple[dict[str, str], bytes]:
    """A Standard Webhooks delivery signed by the reference library."""
    body = json.dumps({"type": "order.paid", "data": {"order": msg_id}}).encode()
    when = datetime.fromtimestamp(int(time.time()), tz=UTC)
    signature = standardwebhooks.Webhook(WEBHOOK_SECRET).sign(msg_id, when, body.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }
    return headers, body


# --------------------------------------------------------------------------- the hosts


@dataclasses.dataclass
class Hosts:
    network: Network
    client: Client
    processes: dict[str, Process]
    redis_url: str

    def log_lines(self, host: str) -> list[str]:
        return self.processes[host].log.read_text(errors="replace").splitlines()

    def served_by(self, results: list[Result]) -> dict[str, list[Result]]:
        """Which app host answered each request, by the request id in its gunicorn log."""
        ids_by_host = {
            host: set(re.findall(r'"request_id": "([0-9a-f]+)"', "\n".join(self.log_lines(host))))
            for host in APP_HOSTS
        }
        served: dict[str, list[Result]] = {host: [] for host in (*APP_HOSTS, "none")}
        for result in results:
            hosts = [host for host in APP_HOSTS if result.request_id in ids_by_host[host]]
            assert len(hosts) <= 1, f"{result.request_id} answered by {hosts}"
            served[hosts[0] if hosts else "none"].append(result)
        return served

    def processed_ids(self) -> list[str]:
        """The delivery id of every event a handler processed, on either host."""
        return [
            found.group(1)
            for host in APP_HOSTS
            for line in self.log_lines(host)
            if (found := PROCESSED_ID.search(line))
        ]

    def times_processed(self, msg_id: str) -> int:
        return self.processed_ids().count(msg_id)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Seconds until condition() held; fails after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError, http.client.HTTPException, redis.RedisError):
            if condition():
                return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def get(hosts: Hosts, path: str) -> Result:
    return hosts.client.send(hosts.client.connect(), "GET", path)


def post_delivery(hosts: Hosts, headers: Mapping[str, str], body: bytes) -> Result:
    return hosts.client.send(hosts.client.connect(), "POST", "/webhooks/events", headers, body)


def figure(line: str) -> None:
    print(f"multihost: {line}", flush=True)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    tools = check_requirements()
    network = Network(tools["ip"])
    directory = Path(tempfile.mkdtemp(prefix=f"{NETNS_PREFIX}{network.run_id}-"))
    processes: dict[str, Process] = {}
    client: Client | None = None
    run_dir: Path | None = None
    try:
        network.remove_stale()
        network.build()
        password = secrets.token_hex(24)
        redis_conf = directory / "redis.conf"
        redis_conf.write_text(
            f"bind {HOST_ADDRESSES['redis']}\nport {REDIS_PORT}\nrequirepass {password}\n"
            'save ""\nappendonly no\n',
            encoding="utf-8",
        )
        redis_conf.chmod(0o600)
        processes["redis"] = start_in(
            network, "redis", [tools["redis-server"], str(redis_conf)],
            directory / "redis.log", os.environ,
        )  # fmt: skip
        redis_url = f"redis://:{password}@{HOST_ADDRESSES['redis']}:{REDIS_PORT}/0"
        for host in APP_HOSTS:
            host_dir = directory / host
            host_dir.mkdir()
            processes[host] = start_in(
                network, host,
                [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"],
                host_dir / "gunicorn.log", app_environment(host_dir, host, redis_url),
            )  # fmt: skip
        # Short: devstack keeps sockets and pid files there.
        run_dir = Path(tempfile.mkdtemp(prefix=f"{NETNS_PREFIX}edge-", dir="/tmp"))
        devstack, stack = render_edge(directory, run_dir)
        nginx = [*devstack.nginx_command(tools["nginx"], stack), "-g", "daemon off;"]
        processes["edge"] = start_in(network, "edge", nginx, directory / "edge.log", os.environ)
        client = Client(network.namespace("client"), directory / "certs" / "ca.pem", 32)
        hosts = Hosts(network, client, processes, redis_url)
        ready = client

        def both_app_hosts_answer() -> bool:
            # An app host still booting when the edge first tries it is left alone for
            # fail_timeout (10 s): the tests start only once both answer through the edge.
            results = [ready.request("GET", "/readyz") for _ in range(4)]
            served = hosts.served_by(results)
            return all(r.status == 200 for r in results) and all(served[h] for h in APP_HOSTS)

        try:
            wait_until(both_app_hosts_answer, "both app hosts answering", timeout=60)
        except AssertionError:
            logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in processes.values())
            raise AssertionError(f"the multi-host stack did not start:\n{logs}") from None
        yield hosts
    finally:
        if client is not None:
            client.close()
        for process in processes.values():
            process.stop()
        network.remove()
        shutil.rmtree(directory, ignore_errors=True)
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        # Nothing of ours may outlive the test: no namespace (with its links), no process.
        assert network.leftovers() == []
        assert all(process.popen.poll() is not None for process in processes.values())


# --------------------------------------------------------------------------- the tests


def test_both_app_hosts_serve(hosts: Hosts) -> None:
    results = [hosts.client.request("GET", "/healthz") for _ in range(20)]
    assert [result.status for result in results] == [200] * 20
    served = hosts.served_by(results)
    figure("20 GET /healthz through the edge: " + ", ".join(
        f"{host} {len(served[host])}" for host in APP_HOSTS
    ))  # fmt: skip
    assert served["none"] == []
    # Round robin over two servers: both get a fair share.
    assert all(len(served[host]) >= 5 for host in APP_HOSTS)


def test_a_neighbour_host_cannot_speak_for_clients(hosts: Hosts) -> None:
    """Another host on the app network (here the Redis host) calling an app host directly, with
    forwarding headers claiming HTTPS and a client address, is a plain-HTTP client from its own
    address: only the edge's address may set them."""
    forged_client = "203.0.113.66"

    def direct() -> tuple[int, bytes]:
        enter_namespace(hosts.network.namespace("redis"))
        connection = http.client.HTTPConnection(HOST_ADDRESSES["app1"], APP_PORT, timeout=10)
        try:
            headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": forged_client}
            connection.request("GET", "/api/v1/me", headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    # A thread of its own: it stays in the Redis host's namespace once it entered it.
    with concurrent.futures.ThreadPoolExecutor(1) as neighbour:
        status, body = neighbour.submit(direct).result(timeout=30)
    assert status == 403, body
    assert json.loads(body)["detail"] == "This API is only served over HTTPS."
    wait_until(lambda: "/api/v1/me" in "\n".join(hosts.log_lines("app1")), "app1's log line")
    lines = [line for line in hosts.log_lines("app1") if "/api/v1/me" in line]
    assert all(f'"client": "{HOST_ADDRESSES["redis"]}"' in line for line in lines), lines
    assert forged_client not in "\n".join(hosts.log_lines("app1"))


def test_identical_deliveries_to_both_hosts_are_accepted_once(hosts: Hosts) -> None:
    msg_id = f"msg_{uuid.uuid4().hex}"
    headers, body = delivery(msg_id)
    barrier = threading.Barrier(CONCURRENT_DELIVERIES)

    def one() -> Result:
        connection = hosts.client.connect()  # TLS done first: the barrier releases requests
        barrier.wait(timeout=30)
        return hosts.client.send(connection, "POST", "/webhooks/events", headers, body)

    futures = [hosts.client.submit(one) for _ in range(CONCURRENT_DELIVERIES)]
    results = [future.result() for future in futures]
    statuses = [str(result.json().get("status", result.status)) for result in results]
    served = hosts.served_by(results)
    figure(
        f"{CONCURRENT_DELIVERIES} identical deliveries at once: "
        + ", ".join(f"{s} {statuses.count(s)}" for s in sorted(set(statuses)))
        + "; answered by "
        + ", ".join(f"{host} {len(served[host])}" for host in APP_HOSTS)
    )
    assert statuses.count("accepted") == 1
    # The rest were told it is done (200 duplicate) or being handled (409, retry later).
    assert set(statuses) <= {"accepted", "duplicate", "409"}, statuses
    assert all(len(served[host]) >= 1 for host in APP_HOSTS), "not spread over both hosts"
    assert hosts.times_processed(msg_id) == 1


def test_losing_redis_fails_closed_and_recovers_by_itself(hosts: Hosts) -> None:
    held_back = [delivery(f"msg_{uuid.uuid4().hex}") for _ in range(4)]
    hosts.network.cut("redis")
    cut_at = time.monotonic()
    try:
        # All at once: each waits for the store's timeouts (about 2 s per try, two tries).
        posts = [
            hosts.client.submit(functools.partial(post_delivery, hosts, headers, body))
            for headers, body in held_back
        ]
        probes = [hosts.client.submit(functools.partial(get, hosts, "/readyz")) for _ in range(4)]
        during = [future.result() for future in posts]
        readiness = [future.result() for future in probes]
        served = hosts.served_by(during + readiness)
        slowest = max(result.ended - result.started for result in during + readiness)
        figure(
            "Redis cut: deliveries "
            + " ".join(str(result.status) for result in during)
            + ", /readyz "
            + " ".join(str(result.status) for result in readiness)
            + f" (slowest answer {slowest:.1f} s; from "
            + ", ".join(f"{host} {len(served[host])}" for host in APP_HOSTS)
            + ")"
        )
        assert [result.status for result in during] == [503] * len(during)
        assert [result.status for result in readiness] == [503] * len(readiness)
        assert all(len(served[host]) >= 1 for host in APP_HOSTS)
    finally:
        hosts.network.restore("redis")
    restored_at = time.monotonic()

    def ready_everywhere() -> bool:
        # Four in a row: round robin has then asked each host twice.
        return all(hosts.client.request("GET", "/readyz").status == 200 for _ in range(4))

    recovered = wait_until(ready_everywhere, "/readyz 200 again after the link returned")
    fresh = hosts.client.request("POST", "/webhooks/events", *delivery(f"msg_{uuid.uuid4().hex}"))
    retries = [
        hosts.client.request("POST", "/webhooks/events", headers, body)
        for headers, body in held_back
    ]
    answers = [str(result.json().get("status", result.status)) for result in retries]
    figure(
        f"Redis link back after {restored_at - cut_at:.1f} s: /readyz 200 on both hosts "
        f"{recovered:.1f} s later; a new delivery: {fresh.json().get('status')}; the sender's "
        f"retries of the refused ones: {' '.join(answers)}"
    )
    assert fresh.json().get("status") == "accepted"
    # None of the refused deliveries was processed while Redis was away. A retry is processed
    # now ("accepted"), or answered 409 when the claim its first attempt had already sent
    # reached Redis after the link came back (TCP delivers what was sent once it can): the
    # delivery then counts as being processed until its lease ends (WEBHOOK_LEASE_SECONDS, 60 s)
    # and the sender's next retry is processed. Never a duplicate of something not processed.
    assert set(answers) <= {"accepted", "409"}, answers
    for (headers, _), answer in zip(held_back, answers, strict=True):
        assert hosts.times_processed(headers["webhook-id"]) == (answer == "accepted")


def test_losing_an_app_host_under_load_costs_only_what_it_was_handed(hosts: Hosts) -> None:
    """LOAD_CLIENTS clients alternate GET /healthz and POST deliveries (each with a new id);
    app1's link is cut a few seconds in, and the load runs on until every request nginx had
    sent to app1 has timed out (proxy_read_timeout) and a while after."""
    results: list[Result] = []
    lock = threading.Lock()
    started = time.monotonic()
    cut_at = started + 3.0
    stop_at = cut_at + PROXY_READ_TIMEOUT + 8.0

    def load(client_number: int) -> int:
        sent = 0
        while time.monotonic() < stop_at:
            if sent % 2 == client_number % 2:
                result = get(hosts, "/healthz")
            else:
                result = post_delivery(hosts, *delivery(f"msg_{uuid.uuid4().hex}"))
            sent += 1
            with lock:
                results.append(result)
            # A steady load, not a flood: the machine running the test has other work.
            time.sleep(LOAD_PAUSE_SECONDS)
        return sent

    futures = [
        hosts.client.submit(functools.partial(load, number)) for number in range(LOAD_CLIENTS)
    ]
    time.sleep(max(0.0, cut_at - time.monotonic()))
    hosts.network.cut("app1")
    cut_at = time.monotonic()
    for future in futures:
        future.result()

    served = hosts.served_by(results)
    before = [result for result in results if result.ended < cut_at]
    in_hand = [result for result in results if result.started < cut_at <= result.ended]
    after = [result for result in results if result.started >= cut_at]
    failed = [result for result in results if result.status != 200]
    # Answered, but only after nginx gave up on app1: sent to it, then retried on app2 once the
    # connect (5 s) or read (proxy_read_timeout) timeout ran out.
    delayed = [r for r in results if r.status == 200 and r.ended - r.started > 2.0]
    window_end = max(
        (r.ended for r in failed + delayed if r.started < cut_at + 5.0), default=cut_at
    )
    settled = [result for result in after if result.started > window_end]
    served_before = {
        host: sum(1 for result in served[host] if result.ended < cut_at) for host in APP_HOSTS
    }
    figure(
        f"load of {LOAD_CLIENTS} clients, app1 cut {cut_at - started:.1f} s in: "
        f"{len(results)} requests; before the cut {len(before)} answered "
        f"(app1 {served_before['app1']}, app2 {served_before['app2']}); "
        f"{len(in_hand)} in hand at the cut"
    )
    figure(
        f"after the cut: {len(failed)} failed ("
        + (", ".join(f"{r.method} {r.status}" for r in failed) or "none")
        + f"), {len(delayed)} answered late by app2 ("
        + ", ".join(f"{r.method} {r.ended - r.started:.1f} s" for r in delayed)
        + f"); failure window {window_end - cut_at:.1f} s; afterwards {len(settled)} requests, "
        + f"{sum(r.status == 200 for r in settled)} answered 200, "
        + f"{sum(r in served['app2'] for r in settled)} by app2"
    )
    assert served_before["app1"] > 0
    assert served_before["app2"] > 0
    # What was lost is bounded by what app1 had been handed: one request per client at most
    # (each waits for its answer), never a request per second of the outage.
    assert len(failed) <= LOAD_CLIENTS
    assert len(failed) + len(delayed) <= 2 * LOAD_CLIENTS
    # Only POSTs fail: nginx retries a GET on the other host, and never resends a POST that
    # reached app1 (it may have acted on it); a lost POST answers 504. No delivery id was
    # processed twice, whichever host it reached.
    for result in failed:
        assert (result.method, result.status) == ("POST", 504), result
    processed = hosts.processed_ids()
    assert len(processed) == len(set(processed))
    # Afterwards every request succeeds, on app2 (and app1 is still tried now and then: a
    # request that meets it waits for the connect timeout, then app2 answers it).
    assert len(settled) >= 20
    assert all(result.status == 200 for result in settled)
    assert all(result in served["app2"] for result in settled)
    assert window_end - cut_at <= PROXY_READ_TIMEOUT + 6.0
