"""Mozilla's HTTP Observatory grades the default bake, served by its devstack: A+, no test failed.

The scanner asks only for http://<host>/ and https://<host>/ on ports 80 and 443, so the
stack and the scanner run together in a private network and mount namespace (unshare): there
the bake's devstack binds 127.0.0.1:80 and :443 as the bake's domain_name, which a private
/etc/hosts names. Nothing of the machine changes: not its ports, not its /etc/hosts. The
scanner trusts the bake's CA (NODE_EXTRA_CA_CERTS) and reads an empty HSTS preload list.

`make tools` installs the scanner (its version is pinned in tools/observatory/); under CI=true
a missing scanner, node or namespace support fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEMPLATE, read_answers, require_tool, under_ci

SCANNER = TEMPLATE / "tools/observatory/node_modules/@mdn/mdn-http-observatory/src/scan.js"
PRELOAD_LIST = SCANNER.parent.parent / "conf" / "hsts-preload.json"
SBIN = "/usr/sbin:/sbin"
MINIMUM_NODE = (20, 19)

# Run inside the namespaces. The scanner's own wrapper (bin/wrapper.js) would replace
# NODE_EXTRA_CA_CERTS with Mozilla's CA bundle, so its scan.js is run directly.
IN_NAMESPACE = """
set -eu
ip link set lo up
mount --bind "$OBSERVATORY_HOSTS" /etc/hosts
trap '"$DEVSTACK_PYTHON" scripts/devstack down >/dev/null 2>&1 || true' EXIT
"$DEVSTACK_PYTHON" scripts/devstack up >&2
node "$OBSERVATORY_SCANNER" "$OBSERVATORY_HOST"
"""


def skip_or_fail(reason: str) -> None:
    if under_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def require_scanner() -> None:
    node = require_tool("node")
    require_tool("nginx")
    if not SCANNER.is_file() or not PRELOAD_LIST.is_file():
        skip_or_fail("Mozilla's HTTP Observatory is not installed: run `make tools`")
    # Its dependencies require() ES modules, which node supports from 20.19 on.
    version = subprocess.run(
        [node, "-p", "process.versions.node"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if tuple(int(part) for part in version.split(".")[:2]) < MINIMUM_NODE:
        skip_or_fail(f"node {version} is too old for the HTTP Observatory (20.19 or newer)")


def require_namespaces() -> None:
    if shutil.which("unshare") is None or shutil.which("ip", path=SBIN) is None:
        skip_or_fail("unshare (util-linux) and ip (iproute2) are needed (.ci/run installs them)")
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        skip_or_fail(f"cannot make network namespaces here (root needed): {probe.stderr.strip()}")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short: the gunicorn socket lives here (AF_UNIX paths are limited to 108 bytes).
    path = Path(tempfile.mkdtemp(prefix="obs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def scan(project: Path, host: str, run_dir: Path, state_dir: Path) -> dict[str, Any]:
    hosts = state_dir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {host}\n::1 localhost\n")
    venv_bin = Path(sys.prefix) / "bin"
    env = {
        **os.environ,
        "PATH": os.pathsep.join((str(venv_bin), os.environ.get("PATH", ""), SBIN)),
        "PYTHONPATH": str(project / "src"),
        # The default bake with its development .env, as `make run` serves it, but on the
        # standard ports and under its public name.
        "SERVER_NAME": host,
        "HTTPS_PORT": "443",
        "HTTP_PORT": "80",
        # As root, nginx's workers run as nobody: devstack opens this directory to them.
        "DEVSTACK_RUN_DIR": str(run_dir),
        "DEVSTACK_LOG_DIR": str(state_dir / "log"),
        "DEVSTACK_PYTHON": sys.executable,
        "NODE_EXTRA_CA_CERTS": str(project / "certs" / "ca.pem"),
        "OBSERVATORY_HOSTS": str(hosts),
        "OBSERVATORY_SCANNER": str(SCANNER),
        "OBSERVATORY_HOST": host,
    }
    result = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", IN_NAMESPACE],
        cwd=project, env=env, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_http_observatory_grades_the_default_bake_a_plus(
    default_bake: Path, run_dir: Path, tmp_path: Path
) -> None:
    require_scanner()
    require_namespaces()
    host = read_answers(default_bake)["domain_name"]
    report = scan(default_bake, host, run_dir, tmp_path)
    summary = report["scan"]
    failed = {name: test["result"] for name, test in report["tests"].items() if not test["pass"]}
    print(f"HTTP Observatory: {summary['grade']} ({summary['score']}), "
          f"{summary['testsPassed']} of {summary['testsQuantity']} tests passed")  # fmt: skip
    assert failed == {}
    assert summary["testsPassed"] == summary["testsQuantity"] == len(report["tests"])
    assert summary["grade"] == "A+"
    # What the scanner saw is the service's root, not an error page that happens to grade.
    assert summary["statusCode"] == 200
    assert summary["responseHeaders"]["content-type"] == "application/json"
