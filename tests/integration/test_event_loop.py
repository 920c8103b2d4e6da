"""``python -m gateway`` runs on uvloop by default and says so in /metrics; REALTIME_EVENT_LOOP=asyncio
switches it. On either loop a broadcast reaches a WebSocket subscriber through the fast path."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from tests.support.processes import GatewayProcess
from tests.support.rawclient import bearer, open_connected
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def event_loop_series(http: aiohttp.ClientSession, gateway: GatewayProcess) -> list[str]:
    async with http.get(f"{gateway.base_url}/metrics") as response:
        text = await response.text()
    return [line for line in text.splitlines() if line.startswith("realtime_event_loop_info{")]


async def assert_alert_delivered(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    connection, _ = await open_connected(http, gateway, admin_token(), negotiated=False)
    async with connection:
        completion = await connection.invoke("1", "SubscribeToAlerts")
        assert completion["result"]["subscribed"] is True, completion
        url = f"{gateway.base_url}/api/admin/realtime/alert"
        async with http.post(
            url, json={"type": "info", "message": "on this loop"}, headers=bearer(admin_token())
        ) as answer:
            assert answer.status < 300, await answer.text()
        alert = await connection.receive_non_ping()
    assert alert is not None and alert["target"] == "SystemAlert", alert
    assert alert["arguments"][0]["message"] == "on this loop"


@pytest.mark.parametrize(("env", "loop"), [({}, "uvloop"), ({"REALTIME_EVENT_LOOP": "asyncio"}, "asyncio")])
async def test_the_event_loop_is_uvloop_by_default_and_asyncio_on_request(
    gateway_factory: Callable[..., GatewayProcess], env: dict[str, str], loop: str
) -> None:
    gateway = gateway_factory(**env)
    async with aiohttp.ClientSession() as http:
        series = await event_loop_series(http, gateway)
        assert len(series) == 1, series
        assert f'loop="{loop}"' in series[0] and series[0].endswith(" 1.0"), series
        await assert_alert_delivered(http, gateway)
