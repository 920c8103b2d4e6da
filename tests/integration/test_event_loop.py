"""``python -m gateway`` runs on uvloop by default and says so in /metrics; REALTIME_EVENT_LOOP=asyncio switches it."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from tests.support.processes import GatewayProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def event_loop_series(gateway: GatewayProcess) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.base_url}/metrics") as response:
        text = await response.text()
    return [line for line in text.splitlines() if line.startswith("realtime_event_loop_info{")]


async def test_the_gateway_runs_on_uvloop_by_default(gateway_factory: Callable[..., GatewayProcess]) -> None:
    series = await event_loop_series(gateway_factory())
    assert len(series) == 1
    assert 'loop="uvloop"' in series[0] and series[0].endswith(" 1.0")


async def test_event_loop_asyncio_switches_uvloop_off(gateway_factory: Callable[..., GatewayProcess]) -> None:
    series = await event_loop_series(gateway_factory(REALTIME_EVENT_LOOP="asyncio"))
    assert len(series) == 1
    assert 'loop="asyncio"' in series[0] and series[0].endswith(" 1.0")
