"""How benchmark messages reach each server: NATS subjects, our REST API, or the peers' publish socket.

A message's data is ``{"bt": time.time_ns(), "bs": sequence, "pad": "x..."}`` sized to the payload
size; ``bt`` is stamped right before the publish call (wall clock: the load client compares it with the
kernel's receive timestamps). A target is ``("group", name)`` or ``("user", i)``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Final

import aiohttp

from broker_bridge.subjects import group_subject, user_subject

Target = tuple[str, Any]
REST_ALERT: Final = "/api/admin/realtime/alert"
MAX_REST_IN_FLIGHT: Final = 64


def bench_data(seq: int, size: int) -> dict[str, Any]:
    overhead = len(json.dumps({"bt": time.time_ns(), "bs": seq, "pad": ""}, separators=(",", ":")))
    return {"bt": time.time_ns(), "bs": seq, "pad": "x" * max(0, size - overhead)}


class Publisher:
    """Sends one message to a target; ``sent_times`` keeps every ``bt`` for loss accounting."""

    def __init__(self) -> None:
        self.sent_times: list[int] = []
        self.failures = 0

    async def send(self, target: Target, seq: int, size: int) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


class NatsPublisher(Publisher):
    """Straight into NATS: our fan-out subjects (``signalr``) or one plain subject (the nats peer)."""

    def __init__(self, client: Any, *, envelope: bool, plain_subject: str = "bench.s3") -> None:
        super().__init__()
        self.client = client
        self.envelope = envelope
        self.plain_subject = plain_subject

    @classmethod
    async def connect(cls, url: str, *, envelope: bool) -> NatsPublisher:
        import nats

        return cls(await nats.connect(url, pending_size=64 * 1024 * 1024), envelope=envelope)

    async def send(self, target: Target, seq: int, size: int) -> None:
        data = bench_data(seq, size)
        self.sent_times.append(data["bt"])
        if not self.envelope:
            await self.client.publish(self.plain_subject, json.dumps(data, separators=(",", ":")).encode())
            return
        kind, name = target
        subject = group_subject(name) if kind == "group" else user_subject(f"bench-{name}")
        body = {"target": "SystemAlert" if kind == "group" else "ReceiveMessage", "arguments": [data]}
        await self.client.publish(subject, json.dumps(body, separators=(",", ":")).encode())

    async def flush(self) -> None:
        await self.client.flush()

    async def close(self) -> None:
        await self.client.drain()


class RestPublisher(Publisher):
    """``POST /api/admin/realtime/alert`` (SystemAlert to ``alerts``), up to 64 requests in flight."""

    def __init__(self, base_url: str, token: str) -> None:
        super().__init__()
        self.url = base_url + REST_ALERT
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.session = aiohttp.ClientSession()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.limit = asyncio.Semaphore(MAX_REST_IN_FLIGHT)

    async def send(self, target: Target, seq: int, size: int) -> None:
        kind, name = target
        if kind != "group" or name != "alerts":
            raise ValueError("the REST path publishes SystemAlert to the alerts group only")
        await self.limit.acquire()
        data = bench_data(seq, size)
        self.sent_times.append(data["bt"])
        body = json.dumps({"type": "info", "message": "bench", "data": data})
        task = asyncio.get_running_loop().create_task(self._post(body))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _post(self, body: str) -> None:
        try:
            async with self.session.post(self.url, data=body, headers=self.headers) as response:
                await response.read()
                if response.status != 200:
                    self.failures += 1
        except aiohttp.ClientError:
            self.failures += 1
        finally:
            self.limit.release()

    async def flush(self) -> None:
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        await self.session.close()


class PeerPublisher(Publisher):
    """The peers' ``/publish`` WebSocket: ``{"rooms": [...], "data": "<json text>"}`` per message."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__()
        self.session = session
        self.ws = ws

    @classmethod
    async def connect(cls, base_url: str) -> PeerPublisher:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(base_url.replace("http", "ws", 1) + "/publish", compress=0, autoping=True)
        return cls(session, ws)

    async def send(self, target: Target, seq: int, size: int) -> None:
        kind, name = target
        room = name if kind == "group" else f"u-{name}"
        data = bench_data(seq, size)
        self.sent_times.append(data["bt"])
        await self.ws.send_str(json.dumps({"rooms": [room], "data": json.dumps(data, separators=(",", ":"))}))

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def publish_at(
    publisher: Publisher, *, rate: float, seconds: float, target: Callable[[int], Target], size: int, first_seq: int = 0
) -> dict[str, float]:
    """Publish ``round(rate * seconds)`` messages on an absolute schedule, then wait out the window.

    Returns the window's wall time (at least ``seconds``), how late the last message went out
    (``lag_seconds``) and the rate achieved (``rate`` when the publisher kept the schedule).
    """
    started = time.monotonic()
    sent = 0
    total = max(1, round(rate * seconds))
    while sent < total:
        due = started + sent / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await publisher.send(target(sent), first_seq + sent, size)
        sent += 1
    lag = max(0.0, time.monotonic() - (started + (total - 1) / rate))
    await publisher.flush()
    remaining = started + seconds - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)
    elapsed = max(time.monotonic() - started, seconds)
    return {"published": sent, "seconds": elapsed, "lag_seconds": lag, "achieved_rate": sent / (sent / rate + lag)}
