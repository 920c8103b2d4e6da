"""A WebSocket cut for a bad frame is freed by reference counting, not left to the cycle collector.

The gateway freezes what survives its frequent young collections and runs a full collection once an hour
(gateway/gc_policy.py), so a connection left in a reference cycle when it ends stays in memory until then:
the S8 soak (bench/soak.py) saw RSS grow by about 1 MiB a minute with misbehaving clients being cut.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bench.wsframes import OP_CLOSE, OP_TEXT, FrameReader, client_frame, parse_upgrade_response, upgrade_request
from broker_bridge.broker_memory import InMemoryBroker
from gateway.app import build_app
from gateway.settings import GatewaySettings
from gateway.signalr.connection import ServerConnection
from gateway.transport.websocket import forget_traceback
from tests.component.http_hub import SECRET, ClientFactory, bearer
from tests.support.fanout import metric_value
from tests.support.frames import JSON_HANDSHAKE


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    # No GC policy: its young collections would free a fresh cycle before the test can see it.
    settings = GatewaySettings(jwt_secret=SECRET, replica_id="test-replica", gc_young_interval_seconds=0.0)
    return await aiohttp_client(build_app(settings, broker=InMemoryBroker()))


async def closed_for(client: TestClient[Any, Any], reason: str) -> float:
    async with client.get("/metrics") as response:
        return metric_value(await response.text(), "realtime_connections_closed_total", reason=reason)


async def cut_like_a_browser_tab(client: TestClient[Any, Any]) -> None:
    """Handshake, a 100 KB frame, then, once the gateway's Close came, the socket reset (no clean close)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    host = str(client.host)
    writer.write(upgrade_request(host, int(client.port or 0), "/hubs/admin", bearer()))
    writer.write(client_frame(OP_TEXT, JSON_HANDSHAKE) + client_frame(OP_TEXT, b"x" * 100_000))
    frames = FrameReader()
    upgrade = b""
    async with asyncio.timeout(5):
        while parse_upgrade_response(upgrade) is None:
            upgrade += await reader.read(65536)
        status, length = parse_upgrade_response(upgrade) or (0, 0)
        assert status == 101
        received = frames.feed(upgrade[length:])
        while not any(opcode == OP_CLOSE for opcode, _ in received):
            data = await reader.read(65536)
            assert data
            received = frames.feed(data)
    writer.transport.abort()


async def test_a_connection_cut_for_an_oversized_frame_leaves_no_cycle(client: TestClient[Any, Any]) -> None:
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            await cut_like_a_browser_tab(client)
        async with asyncio.timeout(5):
            while await closed_for(client, "frame_too_large") < 3:  # noqa: ASYNC110 - a metric, not an event
                await asyncio.sleep(0.02)
        for _ in range(10):  # let the handlers return
            await asyncio.sleep(0.01)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left_in_cycles = [item for item in gc.garbage if isinstance(item, ServerConnection)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left_in_cycles == []


def test_forget_traceback_clears_the_chain() -> None:
    def fail() -> None:
        try:
            raise ValueError("first")
        except ValueError as first:
            raise RuntimeError("second") from first

    try:
        fail()
    except RuntimeError as error:
        caught = error
    forget_traceback(caught)
    assert caught.__traceback__ is None and caught.__cause__ is not None
    assert caught.__cause__.__traceback__ is None
    forget_traceback(None)
