"""API keys end to end: client -> nginx (TLS) -> gunicorn (2 workers) -> app.

Keys are issued and revoked with the real command (`flask --app <package> api-keys ...`, in a
process of its own) in the shared stack's key file; the running workers pick each change up
without a restart. The in-process tests (test_apikeys.py) cover every refusal; these check the
answers arrive intact through nginx, and then read every log file of the stack whole (nginx's
access and error logs, gunicorn's and the app's lines): no key's secret anywhere, wherever the
client put the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import {{ cookiecutter.package_name }} as package

# Plain imports for the test helpers: the package's from-import then sorts last whatever its name.
import stack

pytestmark = pytest.mark.stack

SRC = Path(package.__file__).resolve().parents[1]
LOG_WAIT_SECONDS = 10.0
# The app's own access line, one per request (gunicorn's is off by default).
APP_ACCESS = f"{package.__name__}.access"
# A change of the key file reaches every worker within a second (apikeys.KeyFile); margin for
# a loaded machine.
CHANGE_SECONDS = 5.0
# Enough requests that both gunicorn workers (2 threads each) answer some of them.
REQUESTS_PER_CHECK = 8


@dataclass(frozen=True)
class Key:
    key_id: str
    key: str

    @property
    def secret(self) -> str:
        return self.key.rsplit("_", 1)[1]


def api_keys_command(live: stack.LiveStack, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`flask --app <package> api-keys ...` with the stack's settings, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", package.__name__, "api-keys", *arguments],
        cwd=live.api_keys_file.parent,
        env={
            **live.env,
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def issue(live: stack.LiveStack, name: str, scopes: str) -> Key:
    made = api_keys_command(live, "new", "--name", name, "--scope", scopes)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    records = json.loads(live.api_keys_file.read_text())["keys"]
    (record,) = [record for record in records if record["name"] == name]
    issued = Key(record["id"], key)
    wait_for_every_worker(live, issued, 200)
    return issued


def wait_for_every_worker(live: stack.LiveStack, key: Key, status: int) -> None:
    """Each worker looks at the key file at most once a second: wait until all answer status."""
    deadline = time.monotonic() + CHANGE_SECONDS
    while True:
        answers = [
            live.https("GET", "/api/v1/items", headers=with_key(key)).status
            for _ in range(REQUESTS_PER_CHECK)
        ]
        if answers == [status] * REQUESTS_PER_CHECK:
            return
        assert time.monotonic() < deadline, f"after {CHANGE_SECONDS} s still {answers}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def reader(live_stack: stack.LiveStack) -> Key:
    return issue(live_stack, f"stack-reader-{uuid.uuid4().hex[:8]}", "items:read")


def with_key(key: Key, **headers: str) -> dict[str, str]:
    return {"X-API-Key": key.key, **headers}


def problem(response: stack.Response, status: int) -> dict[str, Any]:
    assert response.status == status, response.body
    assert response.header("Content-Type") == "application/problem+json"
    body: dict[str, Any] = json.loads(response.body)
    assert body["request_id"] == response.header("X-Request-ID")
    return body


def test_a_key_reads_through_nginx_at_every_worker(
    live_stack: stack.LiveStack, reader: Key
) -> None:
    for _ in range(REQUESTS_PER_CHECK):
        assert live_stack.https("GET", "/api/v1/items", headers=with_key(reader)).status == 200
    me = live_stack.https("GET", "/api/v1/me", headers=with_key(reader))
    assert json.loads(me.body)["sub"] == f"apikey:{reader.key_id}"


def test_refusals_arrive_intact(live_stack: stack.LiveStack, reader: Key) -> None:
    json_body = {"Content-Type": "application/json"}
    forbidden = live_stack.https(
        "POST", "/api/v1/items", headers=with_key(reader, **json_body), body=b'{"name": "x"}'
    )
    assert problem(forbidden, 403)["scope"] == "items:write"
    in_query = live_stack.https("GET", f"/api/v1/items?api_key={reader.key}")
    problem(in_query, 400)
    both = live_stack.https(
        "GET", "/api/v1/items", headers=with_key(reader, Authorization="Bearer a.b.c")
    )
    problem(both, 400)
    unknown = live_stack.https("GET", "/api/v1/items", headers={"X-API-Key": reader.key[:-1] + "0"})
    problem(unknown, 401)
    assert unknown.header("WWW-Authenticate") == 'ApiKey realm="api"'


def test_a_revoked_key_is_refused_by_every_worker_without_a_restart(
    live_stack: stack.LiveStack,
) -> None:
    doomed = issue(live_stack, f"stack-doomed-{uuid.uuid4().hex[:8]}", "items:read")
    workers = live_stack.gunicorn_worker_pids()
    for _ in range(REQUESTS_PER_CHECK):
        assert live_stack.https("GET", "/api/v1/items", headers=with_key(doomed)).status == 200
    revoked = api_keys_command(live_stack, "revoke", doomed.key_id)
    assert revoked.returncode == 0, revoked.stderr
    wait_for_every_worker(live_stack, doomed, 401)
    assert live_stack.gunicorn_worker_pids() == workers  # the same processes: no restart


@dataclass(frozen=True)
class Sent:
    name: str
    response: stack.Response

    @property
    def request_id(self) -> str:
        return self.response.header("X-Request-ID") or ""


Traffic = tuple[list[Sent], str, list[dict[str, Any]]]


def log_lines(log_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    text = "".join(
        path.read_text(errors="replace") for path in sorted(log_dir.rglob("*")) if path.is_file()
    )
    lines = [
        json.loads(line) for line in text.splitlines(keepends=True)
        if line.startswith("{") and line.endswith("\n")
    ]  # fmt: skip
    return text, lines


def wait_for_access_lines(
    live: stack.LiveStack, sent: list[Sent]
) -> tuple[str, list[dict[str, Any]]]:
    """Access lines are written after the response: wait for nginx's and the app's (gunicorn
    writes its own only when GUNICORN_ACCESS_LOG asks for it, and the stack does not)."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        text, lines = log_lines(live.log_dir)
        seen = {(line.get("logger"), line.get("request_id")) for line in lines}
        missing = [
            each.name
            for each in sent
            if ("nginx.access", each.request_id) not in seen
            or (APP_ACCESS, each.request_id) not in seen
        ]
        if not missing or time.monotonic() > deadline:
            assert not missing, f"no access lines for {missing}"
            return text, lines
        time.sleep(0.2)


@pytest.fixture(scope="module")
def traffic(live_stack: stack.LiveStack, reader: Key) -> Traffic:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    encoded = reader.key.replace("_", "%5F")
    requests: dict[str, tuple[str, str, dict[str, str], bytes | None]] = {
        "header": ("GET", "/api/v1/items", with_key(reader), None),
        "query": ("GET", f"/api/v1/items?api_key={reader.key}", {}, None),
        "path-segment": ("GET", f"/api/v1/items/{reader.key}", {}, None),
        "encoded-path": ("GET", f"/nowhere/{encoded}/x", {}, None),
        "form": ("POST", "/api/v1/items", form, f"note={reader.key}".encode()),
        "header-and-token": (
            "GET", "/api/v1/me", with_key(reader, Authorization="Bearer a.b.c"), None,
        ),
    }  # fmt: skip
    sent = [
        Sent(name, live_stack.https(method, path, headers=headers, body=body))
        for name, (method, path, headers, body) in requests.items()
    ]
    text, lines = wait_for_access_lines(live_stack, sent)
    return sent, text, lines


def test_no_key_reaches_any_log(traffic: Traffic, reader: Key, live_stack: stack.LiveStack) -> None:
    sent, text, _ = traffic
    assert [each.response.status for each in sent] == [200, 400, 404, 404, 400, 400]
    files = [path.name for path in live_stack.log_dir.rglob("*") if path.is_file()]
    assert {"access.log", "gunicorn.log"} <= set(files)
    assert reader.secret not in text
    assert reader.secret[:16] not in text


def test_the_logs_name_the_caller_and_cut_keys_out_of_paths(traffic: Traffic, reader: Key) -> None:
    sent, _, lines = traffic
    by_name = {each.name: each.request_id for each in sent}

    def line(logger: str, name: str) -> dict[str, Any]:
        (found,) = [
            entry
            for entry in lines
            if entry.get("logger") == logger and entry.get("request_id") == by_name[name]
        ]
        return found

    assert line(APP_ACCESS, "header")["sub"] == f"apikey:{reader.key_id}"
    # nginx cuts the path where a key starts (or at the "%" before its encoded "_"); the app
    # cuts the key's segment whole, as any segment shaped like a credential.
    prefix = reader.key.split("_", 1)[0]
    assert line("nginx.access", "path-segment")["path"] == f"/api/v1/items/{prefix}_[REDACTED]"
    assert line("nginx.access", "encoded-path")["path"] == f"/nowhere/{prefix}[REDACTED]"
    assert line(APP_ACCESS, "path-segment")["path"] == "/api/v1/items/[REDACTED]"
