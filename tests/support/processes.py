"""Real processes for the integration tests: ``python -m`` services on free ports, and the gateway.

Starting, probing and stopping processes, free ports and private nats-servers come from
scripts/processes.py. :class:`ServiceProcess` adds what the
gateway and the collector (tests/support/collector.py) share: a free port, environment overrides,
a log file, and a start that waits for ``/readyz`` (or only ``/healthz``) by polling, never by a
fixed sleep::

    gateway = GatewayProcess(nats.url, env={"REALTIME_HANDSHAKE_TIMEOUT_SECONDS": "1"})
    gateway.start()             # returns once /readyz answers 200
    gateway.kill()              # SIGKILL, no chance to drain
    code = gateway.stop()       # SIGTERM: drain, exit 0
"""

from __future__ import annotations

import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from scripts.processes import ChildProcess, free_port, http_status, wait_until

TEST_JWT_SECRET = "integration-test-secret-0123456789abcdef"


class ServiceProcess(ABC):
    """``python -m <module>`` with its HTTP probes on a free port; the environment is built at each start."""

    module: ClassVar[str]

    def __init__(self, *, label: str, env: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.label = label
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.log_path = Path(tempfile.mkstemp(prefix=f"{label}-", suffix=".log")[1])
        self.child: ChildProcess | None = None

    @abstractmethod
    def service_env(self) -> dict[str, str]:
        """The variables this service needs (its port above all); ``env`` overrides them."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, seconds: float = 20, wait_ready: bool = True) -> None:
        """Start and wait until ``/readyz`` answers 200 (``wait_ready=False``: only ``/healthz``)."""
        argv = [sys.executable, "-m", self.module, *self.args]
        env = {"REALTIME_LOG_LEVEL": "DEBUG", **self.service_env(), **self.extra_env}
        self.child = ChildProcess(argv, name=self.label, log_path=self.log_path, env=env)
        self.child.start()
        path = "/readyz" if wait_ready else "/healthz"
        wait_until(lambda: self.probe(path) == 200, timeout=seconds, what=f"{self.label} {path}")

    def probe(self, path: str) -> int | None:
        """The HTTP status of ``path`` (None if nothing answers); RuntimeError if the process exited."""
        if self.child is not None:
            self.child.raise_if_exited()
        return http_status(self.base_url + path)

    def is_running(self) -> bool:
        return self.child is not None and self.child.alive

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to save, drain or publish anything."""
        if self.child is not None:
            self.child.kill()

    def stop(self, *, timeout: float = 15) -> int | None:
        """SIGTERM and wait; the exit code (killed, and -9 returned, if it hangs)."""
        return None if self.child is None else self.child.stop(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class GatewayProcess(ServiceProcess):
    """``python -m gateway`` on a free port, with the test JWT secret."""

    module = "gateway"

    def __init__(self, nats_url: str, *, env: Mapping[str, str] | None = None, label: str = "gateway") -> None:
        super().__init__(label=label, env=env)
        self.nats_url = nats_url

    def service_env(self) -> dict[str, str]:
        return {
            "REALTIME_HOST": "127.0.0.1",
            "REALTIME_PORT": str(self.port),
            "REALTIME_NATS_URL": self.nats_url,
            "REALTIME_JWT_SECRET": TEST_JWT_SECRET,
        }

    @property
    def hub_url(self) -> str:
        return f"{self.base_url}/hubs/admin"


@contextmanager
def gateways_on(nats_url: str) -> Iterator[Callable[..., GatewayProcess]]:
    """A function that starts a gateway (``REALTIME_*`` overrides as keywords); all are stopped on exit."""
    started: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        gateway = GatewayProcess(nats_url, env=env)
        started.append(gateway)
        gateway.start()
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.stop()
