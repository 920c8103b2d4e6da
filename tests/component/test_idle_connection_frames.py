"""What an idle WebSocket connection keeps: of ours, one suspended coroutine (the hub GET handler, whose
frame runs the read loop) and a slotted access logger.

Every coroutine frame suspended under an idle connection costs about 250 bytes for as long as it is
open (BENCHMARKS.md, S2), so the middlewares return the handler's awaitable instead of awaiting it,
admission and the upgrade are awaited to their end before the connection runs, and the read loop is
written out in :meth:`gateway.transport.endpoint.HubEndpoint.get`.
"""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker_bridge.broker_memory import InMemoryBroker
from gateway.app import PathOnlyAccessLogger, build_app
from gateway.settings import GatewaySettings
from tests.component.http_hub import HUB, SECRET, ClientFactory, access_token, invocation
from tests.support.frames import HANDSHAKE_OK, JSON_HANDSHAKE

ORIGIN = "https://dashboard.example"


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    # CORS on, so both middlewares are installed.
    settings = GatewaySettings(jwt_secret=SECRET, replica_id="test-replica", cors_origins=(ORIGIN,))
    return await aiohttp_client(build_app(settings, broker=InMemoryBroker()))


def suspended_chain(task: asyncio.Task[Any]) -> list[types.FrameType]:
    """The frames of ``task``'s coroutine and of each coroutine it awaits, outermost first."""
    frames: list[types.FrameType] = []
    awaited: Any = task.get_coro()
    while isinstance(awaited, types.CoroutineType) and awaited.cr_frame is not None:
        frames.append(awaited.cr_frame)
        awaited = awaited.cr_await
    return frames


def gateway_frames_under(name: str) -> list[str]:
    """The gateway's own suspended coroutines in the task whose chain runs ``name``."""
    for task in asyncio.all_tasks():
        chain = suspended_chain(task)
        names = [frame.f_code.co_qualname for frame in chain]
        if name in names:
            return [
                frame.f_code.co_qualname
                for frame in chain
                if "/gateway/" in frame.f_code.co_filename or "/shared/" in frame.f_code.co_filename
            ]
    raise AssertionError(f"no task runs {name}")


async def test_an_idle_connection_keeps_one_frame_of_ours(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect(f"{HUB}?access_token={access_token()}", headers={"Origin": ORIGIN}) as ws:
        await ws.send_str(JSON_HANDSHAKE.decode())
        assert (await ws.receive_str(timeout=5)).startswith(HANDSHAKE_OK.decode())
        await ws.send_str(invocation("1", "SubscribeToAlerts").decode())
        assert '"invocationId":"1"' in await ws.receive_str(timeout=5)
        await asyncio.sleep(0.05)  # idle: the server waits in receive()

        frames = gateway_frames_under("HubEndpoint.get")
        # No middleware (authenticate, preflight), no admission, no wrapper around the read loop.
        assert frames == ["HubEndpoint.get"]


async def test_a_preflight_is_still_answered_by_the_middleware(client: TestClient[Any, Any]) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    async with client.options(f"{HUB}/negotiate", headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_the_access_logger_each_connection_gets_has_no_instance_dict() -> None:
    """aiohttp makes one per TCP connection and keeps it while the connection is open."""
    logger = PathOnlyAccessLogger(logging.getLogger("test"), "")
    assert not hasattr(logger, "__dict__")
