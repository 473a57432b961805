"""This service against the stack a tutorial would build, in one alternating run.

    python benchmarks/vs_tutorial.py [--duration 8] [--rounds 3] [--connections 32]
        [--replay-store-url redis://127.0.0.1:6379/0] [--threads 1]

Two stacks run side by side on free ports, both behind nginx over TLS with the bake's
certificate, both checking the same tokens and webhook deliveries:

- tutorial: nginx with Debian's defaults (access log in nginx's default format, `proxy_pass`
  without upstream keepalive) in front of `gunicorn -w 3` sync workers running a bare Flask app
  that verifies every bearer token with PyJWT (RS256, key loaded once, issuer, audience and
  scope checked) and every Standard Webhooks HMAC, and writes no access log of its own;
- service: this project through scripts/devstack, production settings, every log on (nginx's
  JSON access log, the app's JSON lines at INFO), rate limiting off, gunicorn as shipped or
  with --threads as GUNICORN_THREADS.

After one warm-up run of each route on each stack, wrk (one thread, --latency) runs every route
on both stacks in turn, --rounds times, swapping which stack goes first each round so that load
from elsewhere on the machine falls on both alike:

- GET /healthz;
- GET /api/v1/items with one token (the service remembers tokens it verified);
- GET /api/v1/items with a fresh token per request (a Lua script cycles through --tokens
  pre-minted tokens: more than the service's workers can remember, so each one is verified);
- POST /webhooks/events, a signed Standard Webhooks delivery with a fresh id per request
  (deliveries signed just before each run; the service also records each id, once).

It prints the median requests/s, p50 and p99 of each route on each stack and the ratio
service / tutorial, as a Markdown table. It exits 1 if any run saw an answer other than 2xx or a
socket error. Needs nginx, wrk and the bake's certs/ (`make bootstrap`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import http.client
import os
import re
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from stack import LiveStack, bake_certificates, free_port, launch_stack, run_devstack

WEBHOOK_BODY = '{"type":"invoice.paid","data":{"id":"in_1"}}'
# Above what the service's workers remember together (JWT_VERIFIED_CACHE_SIZE, 4096 each).
DEFAULT_TOKENS = 20_000
RATE_LINE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
LATENCY_LINE = re.compile(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\b", re.MULTILINE)
NON_2XX_LINE = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
SOCKET_ERRORS_LINE = re.compile(r"^\s*Socket errors:.*$", re.MULTILINE)
WRAPPED_LINE = re.compile(r"^pool wrapped: (\d+)$", re.MULTILINE)
MILLISECONDS = {"us": 0.001, "ms": 1.0, "s": 1000.0}

# --- the tutorial stack ----------------------------------------------------------------------

TUTORIAL_APP = '''"""A bare Flask API as a tutorial has it; written by benchmarks/vs_tutorial.py."""

import base64
import hashlib
import hmac
import os
import time

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import Flask, abort, jsonify, request

app = Flask(__name__)
with open(os.environ["TUTORIAL_PUBLIC_KEY_FILE"], "rb") as key_file:
    PUBLIC_KEY = load_pem_public_key(key_file.read())
ISSUER = os.environ["TUTORIAL_ISSUER"]
AUDIENCE = os.environ["TUTORIAL_AUDIENCE"]
WEBHOOK_KEY = base64.b64decode(os.environ["TUTORIAL_WEBHOOK_SECRET"].removeprefix("whsec_"))


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.get("/api/v1/items")
def items():
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        abort(401)
    try:
        claims = jwt.decode(
            header[7:], PUBLIC_KEY, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER
        )
    except jwt.InvalidTokenError:
        abort(401)
    if "items:read" not in claims.get("scope", "").split():
        abort(403)
    return jsonify(items=[])


@app.post("/webhooks/events")
def webhook():
    msg_id = request.headers.get("webhook-id", "")
    timestamp = request.headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        abort(400)
    signed = f"{msg_id}.{timestamp}.".encode() + request.get_data()
    digest = hmac.new(WEBHOOK_KEY, signed, hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    offered = request.headers.get("webhook-signature", "").split()
    if not any(hmac.compare_digest(expected, value.partition(",")[2]) for value in offered):
        abort(401)
    return jsonify(status="accepted")
'''

# Debian's nginx.conf (worker_processes auto, its ssl_* and gzip lines, the default "combined"
# access log), a server block as certbot leaves it (its options-ssl-nginx.conf) and the
# proxy_params Debian ships.
TUTORIAL_NGINX = """worker_processes auto;
pid @RUN@/nginx.pid;
daemon off;
error_log @RUN@/error.log;
events {
    worker_connections 768;
}
http {
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    default_type application/octet-stream;
    access_log @RUN@/access.log;
    gzip on;
    client_body_temp_path @RUN@/tmp/body;
    proxy_temp_path @RUN@/tmp/proxy;
    fastcgi_temp_path @RUN@/tmp/fastcgi;
    uwsgi_temp_path @RUN@/tmp/uwsgi;
    scgi_temp_path @RUN@/tmp/scgi;

    server {
        listen 127.0.0.1:@PORT@ ssl;
        server_name localhost;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        ssl_session_cache shared:le_nginx_SSL:10m;
        ssl_session_timeout 1440m;
        ssl_session_tickets off;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers off;
        ssl_ciphers "@CIPHERS@";

        location / {
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_pass http://unix:@RUN@/gunicorn.sock;
        }
    }
}
"""
TUTORIAL_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)


@dataclass
class Target:
    """A stack under test: where to send requests and how to reach it."""

    name: str
    https_port: int
    ca_file: Path

    def url(self, path: str) -> str:
        return f"https://localhost:{self.https_port}{path}"

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection(
            "localhost", self.https_port, context=context, timeout=10
        )
        try:
            connection.request(method, path, body=body, headers=dict(headers))
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()


@dataclass
class TutorialStack:
    run_dir: Path
    target: Target
    # Each process with the signal that stops it gracefully; each leads its own session.
    processes: list[tuple[subprocess.Popen[bytes], signal.Signals]] = field(default_factory=list)

    def stop(self) -> None:
        for process, graceful in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, graceful)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def tutorial_stack(
    certificates: tuple[Path, Path, Path],
    public_pem: bytes,
    issuer: str,
    audience: str,
    secret: str,
) -> Iterator[TutorialStack]:
    cert, key, ca = certificates
    run_dir = Path(tempfile.mkdtemp(prefix="tut-", dir="/tmp"))
    # nginx's workers run as nobody when started as root: they must reach the socket.
    run_dir.chmod(0o755)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / "tmp" / sub).mkdir(parents=True)
    (run_dir / "app.py").write_text(TUTORIAL_APP, encoding="utf-8")
    (run_dir / "public.pem").write_bytes(public_pem)
    port = free_port()
    config = TUTORIAL_NGINX
    for placeholder, value in {
        "@RUN@": run_dir,
        "@PORT@": port,
        "@CERT@": cert,
        "@KEY@": key,
        "@CIPHERS@": ":".join(TUTORIAL_CIPHERS),
    }.items():
        config = config.replace(placeholder, str(value))
    (run_dir / "nginx.conf").write_text(config, encoding="utf-8")
    env = {
        **os.environ,
        "TUTORIAL_PUBLIC_KEY_FILE": str(run_dir / "public.pem"),
        "TUTORIAL_ISSUER": issuer,
        "TUTORIAL_AUDIENCE": audience,
        "TUTORIAL_WEBHOOK_SECRET": secret,
    }
    stack = TutorialStack(run_dir, Target("tutorial", port, ca))
    try:
        with open(run_dir / "gunicorn.log", "ab") as log:
            gunicorn = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gunicorn", "-w", "3"),
                    *("--bind", f"unix:{run_dir / 'gunicorn.sock'}", "app:app"),
                ],
                cwd=run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            stack.processes.append((gunicorn, signal.SIGTERM))
            nginx = subprocess.Popen(
                [find_nginx(), "-p", f"{run_dir}/", "-c", str(run_dir / "nginx.conf")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            stack.processes.append((nginx, signal.SIGQUIT))
        wait_until_healthy(stack.target, run_dir / "gunicorn.log")
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def find_nginx() -> str:
    nginx = os.environ.get("NGINX") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    nginx = nginx or shutil.which("nginx")
    if not nginx:
        raise SystemExit("nginx is not installed (apt-get install nginx)")
    return nginx


def wait_until_healthy(target: Target, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if target.request("GET", "/healthz", {})[0] == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the {target.name} stack did not start:\n{log.read_text(errors='replace')}")


# --- the service's own stack -------------------------------------------------------------------


@contextlib.contextmanager
def service_stack(replay_store_url: str = "", threads: int | None = None) -> Iterator[LiveStack]:
    """scripts/devstack in production, every log on, rate limiting off, gunicorn as shipped
    unless threads is given; webhook ids recorded in the default SQLite file unless
    replay_store_url names another."""
    cert, key, ca = bake_certificates()
    state = Path(tempfile.mkdtemp(prefix="bench-"))
    stack = launch_stack(
        state,
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        settings={
            "APP_ENV": "production",
            "JWT_DEV_PRIVATE_KEY_FILE": None,
            "JWT_TOKEN_TYPE": "at+jwt",
            "LOG_LEVEL": "INFO",
            "RATE_LIMIT_PER_SECOND": "0",
            # Unset: gunicorn.conf.py's defaults, as shipped.
            "WEB_CONCURRENCY": None,
            "GUNICORN_THREADS": None if threads is None else str(threads),
            **({"REPLAY_STORE_URL": replay_store_url} if replay_store_url else {}),
        },
    )
    try:
        yield stack
    finally:
        run_devstack("down", stack.env)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(stack.run_dir, ignore_errors=True)


# --- what wrk sends ------------------------------------------------------------------------------

# Cycles through one request description per line of the file named by the first argument;
# reports in done() how often it ran out and started over.
LUA_TOKENS = """
local tokens = {}
local next_index = 0
local headers = {}
wrapped = 0
init = function(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
end
request = function()
  next_index = next_index + 1
  if next_index > #tokens then next_index = 1; wrapped = wrapped + 1 end
  headers["Authorization"] = "Bearer " .. tokens[next_index]
  return wrk.format("GET", nil, headers, nil)
end
"""
LUA_DELIVERIES = """
local deliveries = {}
local next_index = 0
local body = nil
local headers = {["Content-Type"] = "application/json"}
wrapped = 0
init = function(args)
  for line in io.lines(args[1]) do
    if body == nil then
      body = line
    else
      local id, timestamp, signature = line:match("^([^\\t]+)\\t([^\\t]+)\\t([^\\t]+)$")
      deliveries[#deliveries + 1] = {id, timestamp, signature}
    end
  end
end
request = function()
  next_index = next_index + 1
  if next_index > #deliveries then next_index = 1; wrapped = wrapped + 1 end
  local delivery = deliveries[next_index]
  headers["webhook-id"] = delivery[1]
  headers["webhook-timestamp"] = delivery[2]
  headers["webhook-signature"] = delivery[3]
  return wrk.format("POST", nil, headers, body)
end
"""
LUA_DONE = """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (thread:get("wrapped") or 0) end
  io.write(string.format("pool wrapped: %d\\n", total))
end
"""


@dataclass(frozen=True)
class Route:
    label: str
    path: str
    kind: str  # "plain", "token", "tokens" or "webhook"


ROUTES = (
    Route("GET /healthz", "/healthz", "plain"),
    Route("GET /api/v1/items, one token", "/api/v1/items", "token"),
    Route("GET /api/v1/items, fresh token per request", "/api/v1/items", "tokens"),
    Route("POST /webhooks/events, fresh id per request", "/webhooks/events", "webhook"),
)


@dataclass
class Workload:
    """Tokens, webhook secret and the files wrk's scripts read, in a private directory."""

    directory: Path
    issuer: str
    audience: str
    private_key_pem: bytes
    webhook_secret: str
    tokens: list[str] = field(default_factory=list)

    @property
    def tokens_file(self) -> Path:
        return self.directory / "tokens.txt"

    def mint_tokens(self, count: int) -> None:
        key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        now = int(time.time())
        self.tokens = [
            jwt.encode(
                {
                    "iss": self.issuer,
                    "aud": self.audience,
                    "sub": f"bench-{number}",
                    "scope": "items:read",
                    "iat": now,
                    "nbf": now,
                    "exp": now + 4 * 3600,
                    "jti": secrets.token_hex(8),
                },
                key,  # type: ignore[arg-type]
                algorithm="RS256",
                headers={"typ": "at+jwt"},
            )
            for number in range(count)
        ]
        self.tokens_file.write_text("\n".join(self.tokens) + "\n", encoding="ascii")

    def sign_deliveries(self, count: int) -> Path:
        """A fresh file of signed deliveries, each with a new id, timestamped now."""
        key = base64.b64decode(self.webhook_secret.removeprefix("whsec_"))
        timestamp = str(int(time.time()))
        run = secrets.token_hex(6)
        lines = [WEBHOOK_BODY]
        for number in range(count):
            msg_id = f"msg_{run}_{number}"
            signed = f"{msg_id}.{timestamp}.{WEBHOOK_BODY}".encode()
            digest = hmac.new(key, signed, hashlib.sha256).digest()
            lines.append(f"{msg_id}\t{timestamp}\tv1,{base64.b64encode(digest).decode()}")
        path = self.directory / "deliveries.txt"
        path.write_text("\n".join(lines) + "\n", encoding="ascii")
        return path

    def one_request(self, route: Route) -> tuple[str, dict[str, str], bytes | None]:
        """The request of a route as wrk sends it, for the checks before the runs."""
        if route.kind in ("token", "tokens"):
            return "GET", {"Authorization": f"Bearer {self.tokens[-1]}"}, None
        if route.kind == "webhook":
            path = self.sign_deliveries(1)
            _, delivery = path.read_text(encoding="ascii").splitlines()
            msg_id, timestamp, signature = delivery.split("\t")
            headers = {
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": signature,
            }
            return "POST", headers, WEBHOOK_BODY.encode()
        return "GET", {}, None


# --- running wrk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    rate: float
    p50_ms: float
    p99_ms: float
    problems: str  # non-2xx answers, socket errors, an exhausted delivery pool; "" when none


def run_wrk(
    target: Target,
    route: Route,
    workload: Workload,
    *,
    duration: int,
    connections: int,
    expected_rate: float,
) -> Measurement:
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    command = [wrk, "--latency", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
    script_args: list[str] = []
    if route.kind == "token":
        command += ["-H", f"Authorization: Bearer {workload.tokens[0]}"]
    elif route.kind == "tokens":
        script = workload.directory / "tokens.lua"
        script.write_text(LUA_TOKENS + LUA_DONE, encoding="ascii")
        command += ["-s", str(script)]
        script_args = [str(workload.tokens_file)]
    elif route.kind == "webhook":
        # Enough fresh ids for the whole run, with room for a faster stack than expected.
        deliveries = workload.sign_deliveries(max(20_000, int(expected_rate * duration * 3)))
        script = workload.directory / "deliveries.lua"
        script.write_text(LUA_DELIVERIES + LUA_DONE, encoding="ascii")
        command += ["-s", str(script)]
        script_args = [str(deliveries)]
    command.append(target.url(route.path))
    if script_args:
        command += ["--", *script_args]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output, route)


def parse_wrk(output: str, route: Route) -> Measurement:
    rate = RATE_LINE.search(output)
    latencies = {
        percentile: float(value) * MILLISECONDS[unit]
        for percentile, value, unit in LATENCY_LINE.findall(output)
    }
    if rate is None or set(latencies) != {"50", "99"}:
        raise SystemExit(f"wrk printed no rate or latency:\n{output}")
    problems = [match.group(0).strip() for match in SOCKET_ERRORS_LINE.finditer(output)]
    non_2xx = NON_2XX_LINE.search(output)
    if non_2xx:
        problems.append(non_2xx.group(0).strip())
    wrapped = WRAPPED_LINE.search(output)
    if route.kind == "webhook" and wrapped and int(wrapped.group(1)):
        problems.append("ran out of fresh delivery ids")
    return Measurement(float(rate.group(1)), latencies["50"], latencies["99"], "; ".join(problems))


# --- the run -------------------------------------------------------------------------------------


def check_routes(targets: list[Target], workload: Workload) -> None:
    for target in targets:
        for route in ROUTES:
            method, headers, body = workload.one_request(route)
            status, answer = target.request(method, route.path, headers, body)
            if status != 200:
                raise SystemExit(f"{target.name} {route.label} answered {status}: {answer[:300]!r}")


def load_line(label: str) -> str:
    one, five, _ = os.getloadavg()
    return f"{label}: load average {one:.2f} (1 min), {five:.2f} (5 min)"


def table(results: dict[tuple[str, str], list[Measurement]], targets: list[Target]) -> str:
    tutorial, service = (target.name for target in targets)
    rows = [
        "| route | tutorial req/s | service req/s | service / tutorial "
        "| tutorial p50 / p99 ms | service p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for route in ROUTES:
        figures = {}
        for name in (tutorial, service):
            runs = results[(route.label, name)]
            figures[name] = (
                statistics.median(run.rate for run in runs),
                statistics.median(run.p50_ms for run in runs),
                statistics.median(run.p99_ms for run in runs),
            )
        (t_rate, t_p50, t_p99), (s_rate, s_p50, s_p99) = figures[tutorial], figures[service]
        rows.append(
            f"| {route.label} | {t_rate:.0f} | {s_rate:.0f} | {s_rate / t_rate:.2f} "
            f"| {t_p50:.1f} / {t_p99:.1f} | {s_p50:.1f} / {s_p99:.1f} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (8)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per route and stack (3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per run (3)")
    parser.add_argument(
        "--tokens", type=int, default=DEFAULT_TOKENS, help="pre-minted fresh tokens (20000)"
    )
    parser.add_argument(
        "--replay-store-url",
        default="",
        help="the service's REPLAY_STORE_URL, e.g. redis://127.0.0.1:6379/0 (default: SQLite)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="the service's GUNICORN_THREADS (default: as shipped)",
    )
    args = parser.parse_args()
    # A plain kill (timeout, CI cancelling) unwinds like Ctrl-C: both stacks are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    sizing = "as shipped" if args.threads is None else f"GUNICORN_THREADS={args.threads}"
    print(f"service: gunicorn {sizing}")
    print(f"{os.cpu_count()} CPU(s); wrk -t1 -c{args.connections} -d{args.duration}s --latency")
    print(load_line("before"), flush=True)
    certificates = bake_certificates()
    with contextlib.ExitStack() as running:
        service = running.enter_context(service_stack(args.replay_store_url, args.threads))
        workload_dir = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="wl-")))
        workload = Workload(
            workload_dir,
            service.issuer,
            service.audience,
            service.private_key_pem,
            service.env["WEBHOOK_SECRET"],
        )
        public_pem = (
            serialization.load_pem_private_key(service.private_key_pem, password=None)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        tutorial = running.enter_context(
            tutorial_stack(
                certificates,
                public_pem,
                service.issuer,
                service.audience,
                service.env["WEBHOOK_SECRET"],
            )
        )
        targets = [tutorial.target, Target("service", service.https_port, service.ca_file)]
        for target in targets:
            print(f"{target.name} stack on {target.url('/')}", flush=True)
        print(f"minting {args.tokens} tokens", flush=True)
        workload.mint_tokens(args.tokens)
        check_routes(targets, workload)
        expected: dict[tuple[str, str], float] = {}
        results: dict[tuple[str, str], list[Measurement]] = {}
        failures: list[str] = []
        for route in ROUTES:
            for target in targets:
                if args.warmup:
                    warm = run_wrk(
                        target,
                        route,
                        workload,
                        duration=args.warmup,
                        connections=args.connections,
                        expected_rate=5000,
                    )
                    expected[(route.label, target.name)] = warm.rate
        for number in range(args.rounds):
            order = targets if number % 2 == 0 else targets[::-1]
            for route in ROUTES:
                for target in order:
                    key = (route.label, target.name)
                    run = run_wrk(
                        target,
                        route,
                        workload,
                        duration=args.duration,
                        connections=args.connections,
                        expected_rate=expected.get(key, 5000),
                    )
                    results.setdefault(key, []).append(run)
                    note = f"  PROBLEM: {run.problems}" if run.problems else ""
                    if run.problems:
                        failures.append(f"round {number + 1}, {target.name}, {route.label}")
                    print(
                        f"round {number + 1} {target.name:8s} {route.label:45s} "
                        f"{run.rate:7.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                        f"p99 {run.p99_ms:6.2f} ms{note}",
                        flush=True,
                    )
    print("both stacks stopped")
    print(load_line("after"))
    print(
        f"\nMedian of {args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.duration}s"
        f" over TLS, {os.cpu_count()} CPU(s):\n"
    )
    print(table(results, targets))
    if failures:
        print("\nruns with non-2xx answers or socket errors: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
