"""Stateful reconnect across replicas: the official JS client with ``withStatefulReconnect()`` behind a
round-robin balancer in front of three gateways, alerts published at 50/s while the replica
holding the socket is killed (or every replica restarted in turn): the application sees every alert,
in order, once, and never notices (no ``reconnecting``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest

from scripts.processes import NatsServer
from tests.support.fanout import ClientPool, FanoutClient, http, metric_value
from tests.support.processes import GatewayProcess
from tests.support.round_robin_proxy import RoundRobinProxy
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ALERTS = 1000
RATE_PER_SECOND = 50


@pytest.fixture
def three(gateway_factory: Callable[..., GatewayProcess]) -> list[GatewayProcess]:
    return [gateway_factory(REALTIME_REPLICA_ID=f"resume-{name}") for name in "abc"]


@pytest.fixture
async def balancer(three: list[GatewayProcess]) -> AsyncIterator[RoundRobinProxy]:
    for gateway in three:
        if not gateway.is_running():
            gateway.start()
    async with RoundRobinProxy([gateway.base_url for gateway in three]) as running:
        yield running


async def publish_alerts(nats_url: str, *, count: int, rate: float) -> None:
    client = await nats.connect(nats_url)
    try:
        for number in range(count):
            payload = {
                "target": "SystemAlert",
                "arguments": [{"type": "info", "message": f"alert {number}", "n": number}],
            }
            await client.publish("realtime.group.alerts", json.dumps(payload).encode())
            await asyncio.sleep(1 / rate)
        await client.flush()
    finally:
        await client.close()


async def holder_of(gateways: list[GatewayProcess]) -> GatewayProcess:
    """The gateway that holds the one resumable connection now."""
    for _ in range(100):
        for gateway in gateways:
            if gateway.is_running():
                metrics = (await http("GET", gateway.base_url, "/metrics")).text
                if metric_value(metrics, "realtime_resumable_connections") == 1:
                    return gateway
        await asyncio.sleep(0.05)
    raise AssertionError("no gateway holds the connection")


def received_numbers(client: FanoutClient) -> list[int]:
    return [alert["n"] for alert in client.events("SystemAlert")]


async def wait_for_number(client: FanoutClient, number: int, seconds: float) -> None:
    """Wait until alert ``number`` has arrived (the assertions that follow say what is wrong if not)."""
    with contextlib.suppress(AssertionError):
        await client.wait_event("SystemAlert", lambda alert: alert["n"] >= number, seconds=seconds)


def assert_every_alert_once_in_order(client: FanoutClient) -> None:
    numbers = received_numbers(client)
    missing = sorted(set(range(ALERTS)) - set(numbers))
    assert numbers == list(range(ALERTS)), f"{len(numbers)} received, missing {missing[:20]}, order/dups differ"
    assert client.states() == ["connected"], client.diagnostics()
    assert client.errors_logged() == [], client.diagnostics()


async def stateful_client(pool: ClientPool, balancer: RoundRobinProxy) -> FanoutClient:
    client = await pool.connect(f"{balancer.url}/hubs/admin", admin_token(), options={"statefulReconnect": True})
    assert (await client.invoke("SubscribeToAlerts"))["subscribed"] is True
    return client


async def resumed_on(gateways: list[GatewayProcess]) -> float:
    total = 0.0
    for gateway in gateways:
        metrics = (await http("GET", gateway.base_url, "/metrics")).text
        total += metric_value(metrics, "realtime_resumes_total", outcome="resumed") or 0
    return total


async def kill_the_holder(gateways: list[GatewayProcess], balancer: RoundRobinProxy) -> list[GatewayProcess]:
    """SIGKILL the replica holding the socket (the balancer's health check takes it out); the survivors."""
    victim = await holder_of(gateways)
    balancer.take_out(gateways.index(victim))
    victim.kill()
    return [gateway for gateway in gateways if gateway is not victim]


async def restart_each(gateways: list[GatewayProcess], balancer: RoundRobinProxy) -> list[GatewayProcess]:
    """SIGTERM each replica in turn (out of the balancer while it drains, its connections resume on the
    others) and start it again."""
    for index, gateway in enumerate(gateways):
        balancer.take_out(index)
        await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(gateway.start)
        balancer.put_back(index)
    return gateways


@pytest.mark.parametrize("disruption", [kill_the_holder, restart_each], ids=["sigkill", "rolling_restart"])
async def test_every_alert_arrives_once_in_order(
    nats_server: NatsServer,
    three: list[GatewayProcess],
    balancer: RoundRobinProxy,
    disruption: Callable[[list[GatewayProcess], RoundRobinProxy], Awaitable[list[GatewayProcess]]],
) -> None:
    async with ClientPool() as pool:
        client = await stateful_client(pool, balancer)
        publishing = asyncio.create_task(publish_alerts(nats_server.url, count=ALERTS, rate=RATE_PER_SECOND))
        await wait_for_number(client, 100, seconds=10)
        survivors = await disruption(three, balancer)
        await publishing
        await wait_for_number(client, ALERTS - 1, seconds=30)
        assert_every_alert_once_in_order(client)
        assert await resumed_on(survivors) >= 1
