"""The benchmark against a tutorial stack starts both stacks, measures, and stops both.

A smoke run with tiny durations: the figures mean nothing here, only that the benchmark a user
runs with one command still works from a fresh bake.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

import pytest

from stack import PROJECT_ROOT, require_nginx, require_tool

pytestmark = pytest.mark.stack

ROUTES = (
    "GET /healthz",
    "GET /api/v1/items, one token",
    "GET /api/v1/items, fresh token per request",
    "POST /webhooks/events, fresh id per request",
)


def test_vs_tutorial_starts_measures_and_stops_both_stacks() -> None:
    require_nginx()
    require_tool("wrk", "wrk")
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "vs_tutorial.py"),
            *("--duration", "1", "--rounds", "1", "--warmup", "0", "--tokens", "20"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ports = [int(port) for port in re.findall(r"stack on https://localhost:(\d+)/", result.stdout)]
    assert len(ports) == 2
    for route in ROUTES:
        row = re.search(
            rf"^\| {re.escape(route)} \| (\d+) \| (\d+) \| ([0-9.]+) \|", result.stdout, re.M
        )
        assert row, f"no figures for {route}:\n{result.stdout}"
        assert int(row.group(1)) > 0
        assert int(row.group(2)) > 0
    assert "both stacks stopped" in result.stdout
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_vs_tutorial_stops_both_stacks_when_killed() -> None:
    require_nginx()
    require_tool("wrk", "wrk")
    process = subprocess.Popen(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "vs_tutorial.py"),
            *("--duration", "60", "--rounds", "1", "--warmup", "0", "--tokens", "20"),
            *("--threads", "1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("minting"):  # both stacks are up
                break
        ports = [
            int(port) for port in re.findall(r"stack on https://localhost:(\d+)/", "".join(lines))
        ]
        assert len(ports) == 2, "".join(lines)
        assert "service: gunicorn GUNICORN_THREADS=1\n" in lines
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, "".join(lines) + rest
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_vs_tutorial_refuses_a_thread_count_below_one() -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "vs_tutorial.py"), "--threads", "0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--threads must be at least 1" in result.stderr
