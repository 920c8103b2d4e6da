"""Long-running official SignalR clients (``tests/js/fanout_client.mjs`` under Node) driven from pytest.

Each :class:`FanoutClient` is one Node process holding one hub connection. Everything it prints is
collected in order; tests wait for hub events and state changes with bounded waits and check
that nothing arrived within a short window::

    async with ClientPool() as pool:
        client = await pool.connect(gateway.hub_url, admin_token())
        await client.invoke("SubscribeToAlerts")
        alert = await client.wait_event("SystemAlert", seconds=5)
        await client.assert_no_event("SystemAlert", within=0.7)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from scripts.processes import ROOT
from tests.support.jsclient import node_binary

SCRIPT = ROOT / "tests" / "js" / "fanout_client.mjs"
Predicate = Callable[[Any], bool]
# One stdout line carries one hub event; hub messages can be large (REST bodies up to 64 KB).
MAX_LINE_BYTES = 16 * 1024 * 1024


class HubInvocationError(AssertionError):
    """``connection.invoke`` rejected; ``message`` is the client's error text."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"{method} failed: {message}")
        self.method = method
        self.message = message


class FanoutClient:
    """One Node process with one started hub connection (see :meth:`start`)."""

    def __init__(self, process: asyncio.subprocess.Process, label: str) -> None:
        self.process = process
        self.label = label
        self.lines: list[dict[str, Any]] = []
        self.connection_id: str | None = None
        self.transport: str | None = None
        """The client's transport class once started (``LongPollingTransport``...)."""
        self._stderr = bytearray()
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._mark = 0
        self._reader = asyncio.create_task(self._read_stdout())
        self._err_reader = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(
        cls,
        url: str,
        token: str,
        *,
        label: str = "client",
        events: list[str] | None = None,
        transport: str | None = None,
        seconds: float = 15,
        options: dict[str, Any] | None = None,
    ) -> FanoutClient:
        """``transport``: only this HttpTransportType ("WebSockets", "ServerSentEvents", "LongPolling");
        ``options``: more for the script (see its header), e.g. ``{"statefulReconnect": True}``."""
        script_options: dict[str, Any] = {"events": events or [], **(options or {})}
        if transport is not None:
            script_options["transport"] = transport
        process = await asyncio.create_subprocess_exec(
            node_binary(),
            str(SCRIPT),
            url,
            token,
            json.dumps(script_options),
            cwd=Path(SCRIPT).parent,
            limit=MAX_LINE_BYTES,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = cls(process, label)
        try:
            line = await client._wait_line(lambda x: x.get("state") in ("connected", "startError"), seconds)
        except BaseException:
            await client.close()
            raise
        if line["state"] != "connected":
            await client.close()
            raise AssertionError(f"{label}: start() failed: {line.get('error')}\n{client.diagnostics()}")
        client.connection_id = line.get("connectionId")
        client.transport = line.get("transport")
        return client

    # -- reading ----------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        ended: dict[str, Any] = {"exited": True}
        try:
            async for raw in self.process.stdout:
                text = raw.decode(errors="replace").strip()
                if not text:
                    continue
                try:
                    line = json.loads(text)
                except ValueError:
                    line = {"raw": text}
                line["_at"] = time.monotonic()
                if "event" in line:  # the wrapper's view: ``data`` is the first argument
                    args = line.get("args") or []
                    line["data"] = args[0] if args else None
                async with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        except ValueError as error:  # a line over MAX_LINE_BYTES
            ended["readerError"] = repr(error)
        finally:
            ended["_at"] = time.monotonic()
            async with self._changed:
                self.lines.append(ended)
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self._stderr.extend(raw)

    def diagnostics(self) -> str:
        shown = [{k: v for k, v in line.items() if k not in ("_at", "at", "data")} for line in self.lines[-30:]]
        return f"{self.label} output (last 30 lines): {json.dumps(shown, indent=1)}\nstderr: {self._stderr.decode()}"

    async def _wait_line(self, predicate: Predicate, seconds: float, *, start: int = 0) -> dict[str, Any]:
        """The first line from index ``start`` on matching ``predicate``; AssertionError after ``seconds``."""

        def find() -> dict[str, Any] | None:
            for line in self.lines[start:]:
                if predicate(line):
                    return line
            return None

        async with self._changed:
            try:
                async with asyncio.timeout(seconds):
                    while (found := find()) is None:
                        if self.lines and self.lines[-1].get("exited"):
                            raise AssertionError(f"{self.label}: output ended\n{self.diagnostics()}")
                        await self._changed.wait()
            except TimeoutError:
                raise AssertionError(f"{self.label}: nothing matched within {seconds}s\n{self.diagnostics()}") from None
        return found

    # -- marks: events "since" -------------------------------------------------------------

    def mark(self) -> int:
        """Forget everything received so far for :meth:`events`, :meth:`wait_event` and friends."""
        self._mark = len(self.lines)
        return self._mark

    def events(self, name: str | None = None, *, since: int | None = None) -> list[Any]:
        """``data`` of the hub events received since the mark (or ``since``), optionally of one name."""
        start = self._mark if since is None else since
        return [
            line["data"] for line in self.lines[start:] if "event" in line and (name is None or line["event"] == name)
        ]

    def event_names(self, *, since: int | None = None) -> list[str]:
        """Names of the hub events received since the mark (or ``since``), in order."""
        start = self._mark if since is None else since
        return [line["event"] for line in self.lines[start:] if "event" in line]

    def states(self, *, since: int = 0) -> list[str]:
        return [line["state"] for line in self.lines[since:] if "state" in line]

    def errors_logged(self) -> list[str]:
        """Warnings and errors the SignalR client logged (any at all is usually a bug)."""
        return [line["message"] for line in self.lines if "log" in line]

    async def wait_event(
        self, name: str, predicate: Predicate | None = None, *, seconds: float = 5, since: int | None = None
    ) -> Any:
        """The ``data`` of the first ``name`` event since the mark (or ``since``) matching ``predicate``."""
        start = self._mark if since is None else since
        line = await self._wait_line(
            lambda x: x.get("event") == name and (predicate is None or predicate(x.get("data"))),
            seconds,
            start=start,
        )
        return line["data"]

    async def assert_no_event(self, name: str | None = None, *, within: float = 0.7, since: int | None = None) -> None:
        """Wait ``within`` seconds, then assert no ``name`` event (any event if None) since the mark."""
        await asyncio.sleep(within)
        got = self.events(name, since=since)
        assert got == [], f"{self.label}: expected no {name or 'event'}, got {got}"

    async def wait_state(self, state: str, *, seconds: float = 10, since: int = 0) -> dict[str, Any]:
        return await self._wait_line(lambda x: x.get("state") == state, seconds, start=since)

    # -- commands ---------------------------------------------------------------------------

    async def _command(self, command: dict[str, Any], seconds: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        command_id = next(self._ids)
        start = len(self.lines)
        self.process.stdin.write((json.dumps({**command, "id": command_id}) + "\n").encode())
        await self.process.stdin.drain()
        return await self._wait_line(lambda x: x.get("id") == command_id, seconds, start=start)

    async def invoke(self, method: str, *args: Any, seconds: float = 5) -> Any:
        """``connection.invoke(method, ...args)``'s result; HubInvocationError when it rejects."""
        return (await self.invoke_answer(method, *args, seconds=seconds))["result"]

    async def invoke_answer(self, method: str, *args: Any, seconds: float = 5) -> dict[str, Any]:
        """The script's whole answer line to an invoke (``result``, ``sentAt``, ``at``)."""
        answer = await self._command({"cmd": "invoke", "method": method, "args": list(args)}, seconds)
        if "error" in answer:
            raise HubInvocationError(method, str(answer["error"]))
        return answer

    async def sync_with_broker(self, *, seconds: float = 5) -> None:
        """Return once NATS has every subscription this connection's replica asked for so far.

        The hub answers SubscribeTo* (and completes the handshake) before nats-server has processed
        the SUB (see ``test_subscribe_is_acknowledged_only_after_nats_has_the_interest``), so a
        message published right after could be missed. ``GetPlatformStats`` reads NATS KV over the
        replica's one NATS connection, which nats-server handles in order: when its answer is back,
        every earlier SUB of that replica is in place. Only meaningful while NATS is up.
        """
        await self.invoke("GetPlatformStats", seconds=seconds)

    async def state(self, *, seconds: float = 5) -> str:
        return str((await self._command({"cmd": "state"}, seconds))["result"])

    async def close(self, *, seconds: float = 5) -> None:
        """Stop the connection and end the process (killed if it does not exit in time)."""
        if self.process.returncode is None:
            if self.process.stdin is not None and not self.process.stdin.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    self.process.stdin.write(b'{"cmd": "stop"}\n')
                    await self.process.stdin.drain()
                    self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), seconds)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in (self._reader, self._err_reader):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2)


class ClientPool:
    """Starts clients and closes every one of them on exit (also when the test fails)."""

    def __init__(self) -> None:
        self.clients: list[FanoutClient] = []

    async def connect(self, url: str, token: str, *, label: str | None = None, **kwargs: Any) -> FanoutClient:
        client = await FanoutClient.start(url, token, label=label or f"client{len(self.clients) + 1}", **kwargs)
        self.clients.append(client)
        return client

    async def connect_many(self, *specs: tuple[str, str, str]) -> list[FanoutClient]:
        """Start several clients at once from ``(url, token, label)`` triples."""
        started = await asyncio.gather(
            *(FanoutClient.start(url, token, label=label) for url, token, label in specs), return_exceptions=True
        )
        failures = [item for item in started if isinstance(item, BaseException)]
        self.clients.extend(item for item in started if isinstance(item, FanoutClient))
        if failures:
            raise failures[0]
        return [item for item in started if isinstance(item, FanoutClient)]

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.clients), return_exceptions=True)
        self.clients.clear()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


# -- HTTP -----------------------------------------------------------------------------------------

API = "/api/admin/realtime"


class HttpAnswer:
    """Status, content type and body (parsed JSON when it is JSON) of one HTTP answer."""

    def __init__(self, status: int, content_type: str, text: str, headers: dict[str, str]) -> None:
        self.status = status
        self.content_type = content_type
        self.text = text
        self.headers = headers
        try:
            self.json: Any = json.loads(text) if text else None
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"HttpAnswer({self.status}, {self.content_type!r}, {self.text[:500]!r})"


async def http(
    method: str,
    base_url: str,
    path: str,
    *,
    token: str | None = None,
    json_body: Any = None,
    data: bytes | str | None = None,
    seconds: float = 10,
) -> HttpAnswer:
    """One request with aiohttp; ``path`` not starting with ``/`` is taken under the API prefix."""
    import aiohttp

    url = base_url + (path if path.startswith("/") else f"{API}/{path}")
    headers: dict[str, str] = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if json_body is not None:
        data = json.dumps(json_body)
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
        session.request(method, url, headers=headers, data=data) as response,
    ):
        text = await response.text()
        return HttpAnswer(response.status, response.content_type, text, dict(response.headers))


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels`` (0 when there is none)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        if all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
            total += float(value)
    return total
