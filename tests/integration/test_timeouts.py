"""Server timers on live connections: client timeout, keep-alive pings and access-token expiry."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.support import expect
from tests.support.fanout import metric_value
from tests.support.jsclient import run_js
from tests.support.processes import GatewayProcess
from tests.support.rawclient import RawConnection, open_connected
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

CLIENT_TIMEOUT_SECONDS = 2
KEEP_ALIVE_SECONDS = 1


@pytest.fixture(scope="module")
def timer_gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    return gateway_factory(
        REALTIME_CLIENT_TIMEOUT_SECONDS=str(CLIENT_TIMEOUT_SECONDS),
        REALTIME_KEEP_ALIVE_INTERVAL_SECONDS=str(KEEP_ALIVE_SECONDS),
        REALTIME_JWT_LEEWAY_SECONDS="0",
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def _keep_pinging(connection: RawConnection, every: float = 0.5) -> None:
    while True:
        await connection.send({"type": 6})
        await asyncio.sleep(every)


async def test_silent_client_is_closed_after_the_client_timeout(
    http: aiohttp.ClientSession, timer_gateway: GatewayProcess
) -> None:
    connection, _ = await open_connected(http, timer_gateway, admin_token())
    async with connection:
        started = time.monotonic()
        records = await connection.wait_closed(within=8)
        waited = time.monotonic() - started
    assert records[-1] == expect.CLOSE_WITH_ERROR, records
    pings = [r for r in records[:-1] if not is_presence_notification(r)]
    assert pings and all(r == {"type": 6} for r in pings), records  # keep-alive pings first
    assert CLIENT_TIMEOUT_SECONDS - 0.2 <= waited < CLIENT_TIMEOUT_SECONDS + 2.5, waited


def is_presence_notification(record: dict[str, Any]) -> bool:
    """Admins hear other tests' users come and go on the shared gateway; these tests are about timers."""
    arguments = record.get("arguments") or [{}]
    return record.get("target") == "AdminNotification" and arguments[0].get("type") == "presence"


async def test_pinging_client_stays_open_and_server_pings_every_keep_alive_interval(
    http: aiohttp.ClientSession, timer_gateway: GatewayProcess
) -> None:
    connection, _ = await open_connected(http, timer_gateway, admin_token())
    async with connection:
        pinger = asyncio.create_task(_keep_pinging(connection))
        try:
            ping_times: list[float] = []
            started = time.monotonic()
            while time.monotonic() - started < 2 * CLIENT_TIMEOUT_SECONDS + 0.5:
                message = await connection.receive(within=KEEP_ALIVE_SECONDS + 2)
                if is_presence_notification(message):
                    continue
                assert message == {"type": 6}, message  # nothing but pings, and no Close
                ping_times.append(time.monotonic())
            completion = await connection.invoke("1", "SendTestMessage", "alive")
            expect.assert_test_message(completion["result"], "alive")
        finally:
            pinger.cancel()
    assert len(ping_times) >= 2, ping_times
    gaps = [later - earlier for earlier, later in itertools.pairwise(ping_times)]
    assert max(gaps) < KEEP_ALIVE_SECONDS + 2, gaps  # ticks are 1 s apart, so up to ~2 s; never silent


async def test_expired_token_closes_the_connection_with_allow_reconnect(
    http: aiohttp.ClientSession, timer_gateway: GatewayProcess
) -> None:
    token = admin_token(ttl=2)
    connection, _ = await open_connected(http, timer_gateway, token)
    async with connection:
        pinger = asyncio.create_task(_keep_pinging(connection))
        try:
            records = await connection.wait_closed(within=6)
        finally:
            pinger.cancel()
    assert [r for r in records if r.get("type") != 6] == [{"type": 7, "allowReconnect": True}]


async def test_js_client_reconnects_with_a_fresh_token_after_expiry(timer_gateway: GatewayProcess) -> None:
    sub = str(uuid.uuid4())
    short, fresh = admin_token(sub=sub, ttl=3), admin_token(sub=sub)
    result: dict[str, Any] = await run_js(
        "wait-close",
        url=timer_gateway.hub_url,
        tokens=[short, fresh],
        keepAliveMs=1000,
        until="reconnected",
        waitMs=10000,
    )
    assert result.get("startError") is None, result
    assert result["reached"], result
    # A Close without error and with allowReconnect: the client reconnects on its own, with no error.
    assert [event["error"] for event in result["reconnecting"]] == [None], result
    (reconnected,) = result["reconnected"]
    first_id = result["connectionId"]
    assert reconnected["connectionId"] and reconnected["connectionId"] != first_id
    assert result["connectionIdAfterWait"] == reconnected["connectionId"]
    assert [message["connectionId"] for message in result["established"]] == [first_id, reconnected["connectionId"]]
    assert all(message["userId"] == sub for message in result["established"])
    assert result["afterWait"]["ok"], result
    expect.assert_connection_count(result["afterWait"]["value"], reconnected["connectionId"])
    assert result["stopError"] is None and result["closed"] == [{"error": None}]


async def test_shutdown_asks_clients_to_reconnect(
    http: aiohttp.ClientSession, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    doomed = gateway_factory(REALTIME_SHUTDOWN_GRACE_SECONDS="3")
    connection, _ = await open_connected(http, doomed, admin_token())
    async with connection:
        started = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(doomed.stop, timeout=15))
        records = await connection.wait_closed(within=10)
        closed_after = time.monotonic() - started
        exit_code = await stopping
    assert [r for r in records if r.get("type") != 6] == [{"type": 7, "allowReconnect": True}]
    assert closed_after < 3, closed_after  # asked to leave at once, not at the end of the grace period
    assert exit_code == 0  # exited by itself after SIGTERM (stop() would have killed it otherwise: -9)


async def test_a_client_that_closes_its_websocket_is_forgotten_at_once(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    """Not after the 5 s the server gives its own Close to reach a client: the client is already gone."""

    async def open_connections() -> float:
        async with http.get(f"{gateway.base_url}/metrics") as response:
            return metric_value(await response.text(), "realtime_connections")

    connection, _ = await open_connected(http, gateway, admin_token())
    before = await open_connections()
    started = time.monotonic()
    await connection.close()
    while await open_connections() != before - 1:
        assert time.monotonic() - started < 2.5, "the closed connection is still counted"
        await asyncio.sleep(0.05)
