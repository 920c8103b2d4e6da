"""scripts/processes.py with real processes: sessions, stopping in stages, and private nats-servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from scripts.processes import ChildProcess, NatsServer, nats_server_binary, port_open, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ChildProcess]]:
    """Start ``python -c code`` children logging to ``tmp_path``; every one is killed at the end."""
    started: list[ChildProcess] = []

    def start(code: str, *, name: str = "child") -> ChildProcess:
        argv = [sys.executable, "-c", code]
        child = ChildProcess(argv, name=name, log_path=tmp_path / f"{name}.log")
        started.append(child)
        child.start()
        return child

    yield start
    for child in started:
        child.kill()


def ready(child: ChildProcess) -> ChildProcess:
    """Wait until ``child`` printed "ready" (its signal handlers are set up by then)."""
    child.wait_until(lambda: "ready" in child.log(), timeout=20, what=f"{child.name} to be ready")
    return child


def pid_gone(pid: int) -> bool:
    """No such process, or only its zombie (killed, waiting for whoever adopted it to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# A child that exits 3 on SIGTERM.
EXITS_3_ON_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
print("ready", flush=True)
time.sleep(60)
"""
# A child that ignores SIGTERM and has a child of its own.
IGNORES_SIGTERM = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("grandchild", grandchild.pid, flush=True)
print("ready", flush=True)
time.sleep(60)
"""


def test_a_child_has_its_own_session_and_stops_on_sigterm(spawn: Callable[..., ChildProcess]) -> None:
    child = ready(spawn(EXITS_3_ON_SIGTERM))
    assert os.getsid(child.pid) == child.pid != os.getsid(0)
    assert os.getpgid(child.pid) == child.pid
    assert child.stop(timeout=10) == 3  # its own SIGTERM handler ran
    assert not child.alive


def test_a_child_that_ignores_sigterm_is_killed_with_its_group(spawn: Callable[..., ChildProcess]) -> None:
    child = ready(spawn(IGNORES_SIGTERM))
    grandchild = int(child.log().split("grandchild ")[1].split()[0])
    assert child.stop(timeout=0.5) == -signal.SIGKILL
    wait_until(lambda: pid_gone(grandchild), timeout=10, what="the grandchild to be killed with the group")


def test_waiting_on_a_child_fails_at_once_when_it_exits(spawn: Callable[..., ChildProcess]) -> None:
    child = spawn("print('bad config'); raise SystemExit(2)", name="short")
    with pytest.raises(RuntimeError, match=r"short exited with 2:\nbad config"):
        child.wait_until(lambda: False, timeout=30, what="something that never comes")
    child.start()  # a stopped child starts again, appending to its log
    assert child.wait(timeout=10) == 2
    assert child.log().count("bad config") == 2


async def test_a_private_nats_server_restarts_on_its_port_with_its_options(tmp_path: Path) -> None:
    with NatsServer(workdir=tmp_path, options={"authorization": {"token": "s3cret"}}) as server:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server.url, allow_reconnect=False, connect_timeout=2)
        client = await nats.connect(server.url, token="s3cret", allow_reconnect=False)
        await client.close()

        server.kill()
        assert not port_open(server.port)
        server.start(jetstream=False)
        client = await nats.connect(server.url, token="s3cret", allow_reconnect=False)
        try:
            with pytest.raises(nats.js.errors.ServiceUnavailableError):
                await client.jetstream().account_info()
        finally:
            await client.close()
    assert (tmp_path / "nats.log").read_text().count("Server is ready") == 2


def test_accounts_blocks_make_a_config_nats_server_accepts(tmp_path: Path) -> None:
    server = NatsServer(
        workdir=tmp_path,
        options={
            "accounts": {
                "APP": {"users": [{"user": "app", "password": "pw"}], "jetstream": "enabled"},
                "SYS": {"users": [{"user": "sys", "password": "pw"}]},
            },
            "system_account": "SYS",
        },
    )
    check = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(server.write_config())], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
