"""Processes of a benchmark run: nats-server, the measured servers, load clients; CPU and RSS from /proc.

Every measured server runs pinned to core 0 (``taskset``); nats-server (when it is infrastructure, not
the measured server), the load clients and the orchestrator on core 1. With fewer than two cores nothing
is pinned and the results say so. Starting, probing and stopping processes is scripts/processes.py's
job; this module adds the pinning, the /proc figures and the GC figures the launchers (or, for the gateway,
the site hook) write.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from scripts.processes import (
    ROOT,
    STOP_TIMEOUT_SECONDS,
    ChildProcess,
    NatsServer,
    free_port,
    http_status,
)

JWT_SECRET: Final = "bench-secret-0123456789abcdef-0123456789"  # noqa: S105 - local benchmark key
SERVER_CORE: Final = 0
CLIENT_CORE: Final = 1
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
PAGE_KIB: Final = os.sysconf("SC_PAGE_SIZE") // 1024
# A measured server imports the project and connects to NATS before it answers its probe.
SERVER_START_SECONDS: Final = 30
# On the measured gateway's PYTHONPATH: its sitecustomize times GC pauses (see that module).
SITE_HOOK: Final = Path(__file__).resolve().parent / "sitehook"


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if can_pin() else argv


def pin_self(core: int) -> None:
    if can_pin():
        os.sched_setaffinity(0, {core})


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def interrupt_seconds(core: int) -> float:
    """Hard and soft interrupt time the kernel has accounted to ``core`` (from /proc/stat). With interrupt
    time accounting, work done in a softirq (a loopback TCP delivery, say) is counted here and not in the
    process that was running."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{core}":
            return (int(fields[6]) + int(fields[7])) / CLK_TCK
    return 0.0


def rss_kib(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except OSError:
        return 0


@dataclass
class Proc:
    """One measured or infrastructure process: its child, GC figures file and facts (``url``, ``port``)."""

    child: ChildProcess
    gc_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def pid(self) -> int:
        return self.child.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)

    async def gc_snapshot(self) -> dict[str, Any]:
        """Ask the launcher (SIGUSR2) for its GC figures now; the ``window_*`` ones start over after this."""
        if self.gc_path is None or not self.child.alive:
            return {}
        self.gc_path.unlink(missing_ok=True)
        self.child.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 2.0
        while not self.gc_path.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - a file, not an event
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the file is written in one call; give it time to finish
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(self.gc_path.read_text()))
        return {}

    async def stop(self, *, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_SECONDS) -> dict[str, Any]:  # noqa: ASYNC109
        """Stop and return what its launcher wrote about GC pauses (empty when none).

        The launcher is first asked (SIGUSR2) to write its GC figures, so they survive a shutdown that
        outlasts ``timeout`` and ends in SIGKILL.
        """
        await self.gc_snapshot()
        await asyncio.to_thread(self.child.stop, sig=sig, timeout=timeout)
        if self.gc_path is not None and self.gc_path.exists():
            with contextlib.suppress(ValueError):
                return dict(json.loads(self.gc_path.read_text()))
        return {}


async def start_nats(workdir: Path, *, core: int, name: str = "nats") -> Proc:
    """A JetStream nats-server with a fresh store, pinned to ``core``."""
    server = NatsServer(
        workdir=workdir,
        name=name,
        store_dir=Path(tempfile.mkdtemp(prefix="nats-", dir=workdir)),
        command_prefix=pinned(core, []),
    )
    await asyncio.to_thread(server.start)
    return Proc(server.child, extra={"url": server.url, "port": server.port})


_names = itertools.count(1)


async def start_server(
    impl: str,
    loop: str,
    workdir: Path,
    *,
    nats_url: str = "",
    mode: str = "",
    core: int = SERVER_CORE,
    env: Mapping[str, str] | None = None,
    root: Path = ROOT,
    tag: str = "",
) -> Proc:
    """Start a measured server (``gateway``, ``aiohttp``, ``socketio``) and wait until it answers.

    The gateway is started exactly as users start it, ``python -m gateway`` from ``root`` (a checkout of
    another revision for ``--baseline-rev``), with ``env`` (its ``REALTIME_*`` variant settings) on top
    of what every run needs; GC pauses are timed by the site hook (``bench/sitehook/sitecustomize.py``).
    """
    port = free_port()
    name = f"{impl}{'-' + mode if mode else ''}-{tag or loop}-{next(_names)}"
    gc_path = workdir / f"{name}.gc.json"
    python = [sys.executable, "-m"]
    child_env: dict[str, str] = {}
    if impl == "gateway":
        argv = [*python, "gateway"]
        child_env.update(
            PYTHONPATH=os.pathsep.join([str(root), str(SITE_HOOK)]),
            BENCH_GC_STATS=str(gc_path),
            REALTIME_HOST="127.0.0.1",
            REALTIME_PORT=str(port),
            REALTIME_NATS_URL=nats_url,
            REALTIME_JWT_SECRET=JWT_SECRET,
            REALTIME_LOG_LEVEL="WARNING",
            REALTIME_REPLICA_ID=name,
            # The load comes from the 8 loopback addresses of bench.scenarios.SOURCES: the default cap
            # of 200 connections per client IP and the negotiate rate per IP (20/s, burst 200) would
            # refuse (429) all but about 2,500 of S3's 10,000 connections. S1 measures echo round trips
            # as fast as one connection can send them: the default 10 invocations/s per connection would
            # answer nearly all of them "Rate limit exceeded".
            REALTIME_MAX_CONNECTIONS_PER_IP=str(BENCH_CONNECTIONS_PER_IP),
            REALTIME_NEGOTIATE_RATE_PER_IP="0",
            REALTIME_INVOCATION_RATE_PER_CONNECTION="0",
            **gateway_loop_env(root, loop),
            **(env or {}),
        )
        probe = f"http://127.0.0.1:{port}/readyz"
    elif impl == "aiohttp":
        argv = [*python, "bench.peers.aiohttp_broadcast", "--port", str(port), "--loop", loop, "--mode", mode]
        argv += ["--gc-stats", str(gc_path)]
        probe = f"http://127.0.0.1:{port}/healthz"
    elif impl == "socketio":
        argv = [*python, "bench.peers.socketio_server", "--port", str(port), "--loop", loop]
        argv += ["--gc-stats", str(gc_path)]
        probe = f"http://127.0.0.1:{port}/healthz"
    else:
        raise ValueError(f"unknown server {impl!r}")
    child = ChildProcess(pinned(core, argv), name=name, log_path=workdir / f"{name}.log", env=child_env, cwd=root)
    child.start()
    proc = Proc(child, gc_path, extra={"port": port, "base_url": f"http://127.0.0.1:{port}"})
    await asyncio.to_thread(
        child.wait_until, lambda: http_status(probe) == 200, timeout=SERVER_START_SECONDS, what=name
    )
    return proc


# Connections per client IP the measured gateway accepts: above S2's top level from a single address.
BENCH_CONNECTIONS_PER_IP: Final = 20_000


def gateway_loop_env(root: Path, loop: str) -> dict[str, str]:
    """``REALTIME_EVENT_LOOP`` where the checkout has that setting; an older one gets uvloop from the site hook."""
    if (root / "shared" / "event_loop.py").exists():
        return {"REALTIME_EVENT_LOOP": loop}
    return {"BENCH_UVLOOP_POLICY": "1"} if loop == "uvloop" else {}


def checkout_revision(rev: str, workdir: Path) -> tuple[Path, str]:
    """The tree of git revision ``rev`` unpacked under ``workdir`` (``git archive``: the repository is untouched).

    Returns the directory and the revision's short commit id.
    """
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("--baseline-rev needs git on PATH")
    commit = subprocess.run(  # noqa: S603 - git with a revision the operator named
        [git, "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    target = workdir / f"rev-{commit}"
    if not target.exists():
        archive = subprocess.run(  # noqa: S603 - the commit id rev-parse just printed
            [git, "archive", "--format=tar", commit], cwd=ROOT, check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target, commit


class LoadClient:
    """One ``python -m bench.loadclient`` process pinned to the client core; JSON commands in, answers out."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls) -> LoadClient:
        process = await asyncio.create_subprocess_exec(
            *pinned(CLIENT_CORE, [sys.executable, "-m", "bench.loadclient"]),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        assert process.stdout is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        if not first.get("ready"):
            raise RuntimeError(f"load client did not start: {first}")
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            answer = json.loads(line)
            future = self._waiting.pop(answer.get("id"), None)
            if future is not None and not future.done():
                future.set_result(answer)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("load client exited"))

    async def call(self, cmd: str, *, timeout: float = 600.0, **arguments: Any) -> dict[str, Any]:  # noqa: ASYNC109
        assert self.process.stdin is not None
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        self.process.stdin.write((json.dumps({"id": command_id, "cmd": cmd, **arguments}) + "\n").encode())
        await self.process.stdin.drain()
        answer = await asyncio.wait_for(future, timeout)
        if "error" in answer:
            raise RuntimeError(f"load client {cmd} failed: {answer['error']}")
        return answer

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                assert self.process.stdin is not None
                self.process.stdin.write(b'{"cmd": "exit"}\n')
                await self.process.stdin.drain()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()
