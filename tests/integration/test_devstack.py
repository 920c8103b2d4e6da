"""``make run``'s launcher (scripts/devstack.py) on free ports: Ctrl-C stops the stack in order and exits 0.

The launcher runs in a process group of its own, as a command in a terminal does, and the test sends
SIGINT to that group, as Ctrl-C does. The launcher's children run in their own sessions, so the
signal reaches the launcher alone, which stops the simulator, the gateway, the collector and then
NATS; each exits 0, and nobody reports a NATS connection lost on the way.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from scripts.processes import ChildProcess, free_port, http_status
from tests.support.fanout import metric_value

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STOP_ORDER = ("simulator", "gateway", "collector", "nats")
COLLECTOR_LINE = re.compile(r"^\s*Collector:\s*(\S+/metrics)$", re.MULTILINE)
STOPPED_LINE = re.compile(r"^\s*stopped (\S+) \(exit (-?\d+)\)$", re.MULTILINE)
# What the log shows when NATS goes away before its clients are done with it.
SIGNS_OF_DISORDER = ("Traceback", "UnexpectedEOF", "ConnectionRefusedError")


def collector_metrics_url(output: str) -> str | None:
    found = COLLECTOR_LINE.search(output)
    return found.group(1) if found else None


def collector_last_sequence(url: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own localhost
            return metric_value(response.read().decode(), "collector_last_sequence")
    except OSError:
        return 0.0


def test_ctrl_c_stops_simulator_gateway_collector_then_nats_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "scripts.devstack", "--port", str(port), "--nats-port", "0", "--metrics-port", "0"]
    launcher = ChildProcess(
        [*argv, "--run-dir", str(tmp_path / "run")],
        name="devstack",
        log_path=tmp_path / "devstack.log",
        env={"REALTIME_NATS_URL": "", "REALTIME_JWT_SECRET": ""},  # its own NATS and dev secret
    )
    launcher.start()
    try:
        metrics_url = launcher.wait_until(
            lambda: collector_metrics_url(launcher.log()), timeout=60, what="the launcher's banner"
        )
        assert http_status(f"http://127.0.0.1:{port}/readyz") == 200
        # Simulated events have reached the collector: it has state to save when it is stopped.
        launcher.wait_until(lambda: collector_last_sequence(metrics_url) > 0, timeout=30, what="collected events")

        os.killpg(launcher.pid, signal.SIGINT)
        code = launcher.wait(timeout=60)
    finally:
        launcher.stop(timeout=60)  # only does something when the test failed before the launcher exited
    output = launcher.log()
    assert code == 0, output[-4000:]
    assert STOPPED_LINE.findall(output) == [(name, "0") for name in STOP_ORDER], output[-4000:]
    assert [sign for sign in SIGNS_OF_DISORDER if sign in output] == [], output[-4000:]
