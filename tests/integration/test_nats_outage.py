"""The NATS server dies and comes back mid-test.

This module owns its nats-server (killed and restarted on the same port and store) and two gateway
replicas. Clients stay connected through the outage, local hub methods keep working, health and
readiness say so, REST broadcasts answer 503, and after NATS returns every subscription works again
on both replicas without any client action.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from scripts.processes import NatsServer, wait_until_async
from tests.support.expect import assert_recent_iso_z
from tests.support.fanout import ClientPool, FanoutClient, HttpAnswer, HubInvocationError, http, metric_value
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token

pytestmark = pytest.mark.integration

ENV = {"REALTIME_PRESENCE_INTERVAL_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def gateway_nats(module_nats: NatsServer) -> NatsServer:
    """The module's gateways use the module's own nats-server, which the tests kill and restart."""
    return module_nats


@pytest.fixture(scope="module")
def replicas(gateway_factory: Callable[..., GatewayProcess]) -> tuple[GatewayProcess, GatewayProcess]:
    a, b = (gateway_factory(**ENV, REALTIME_REPLICA_ID=name) for name in ("outage-a", "outage-b"))
    return a, b


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    async with ClientPool() as clients:
        yield clients


async def health(gateway: GatewayProcess) -> HttpAnswer:
    return await http("GET", gateway.base_url, "health", seconds=3)


async def all_health(gateways: tuple[GatewayProcess, ...], status: int) -> bool:
    answers = await asyncio.gather(*(health(g) for g in gateways))
    return all(answer.status == status for answer in answers)


async def post_alert(gateway: GatewayProcess, message: str) -> HttpAnswer:
    body = {"type": "warning", "message": message}
    return await http("POST", gateway.base_url, "alert", token=admin_token(), json_body=body, seconds=10)


async def expect_alert_everywhere(message: str, clients: list[FanoutClient]) -> None:
    got = await asyncio.gather(
        *(c.wait_event("SystemAlert", lambda d: d["message"] == message, seconds=5) for c in clients)
    )
    for alert in got:
        assert (alert["type"], alert["severity"], alert["data"]) == ("warning", "medium", None), alert
        assert_recent_iso_z(alert["timestamp"])


async def test_clients_ride_out_a_nats_outage_and_fan_out_resumes(
    module_nats: NatsServer, replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool
) -> None:
    a, b = replicas
    a1, a2, b1 = await pool.connect_many(
        (a.hub_url, admin_token(), "a1"), (a.hub_url, admin_token(), "a2"), (b.hub_url, admin_token(), "b1")
    )
    subscribers = [a1, a2, b1]
    for client in subscribers:
        assert (await client.invoke("SubscribeToAlerts"))["subscribed"] is True
    assert (await post_alert(b, "before the outage")).status == 200
    await expect_alert_everywhere("before the outage", subscribers)

    # -- NATS goes away -------------------------------------------------------------------------
    module_nats.kill()
    await wait_until_async(lambda: all_health((a, b), 503), timeout=10, what="degraded on both replicas", interval=0.1)
    for gateway in (a, b):
        answer = await health(gateway)
        assert answer.status == 503
        assert set(answer.json) == {"status", "service", "timestamp", "websocketEndpoint"}, answer
        assert (answer.json["status"], answer.json["service"]) == ("degraded", "real-time")
        assert (await http("GET", gateway.base_url, "/readyz")).status == 503
        assert (await http("GET", gateway.base_url, "/healthz")).status == 200, "alive, only not ready"
        status = await http("GET", gateway.base_url, "status", token=admin_token())
        assert (status.status, status.json["status"]) == (200, "degraded"), status

        refused = await post_alert(gateway, "during the outage")
        assert refused.status == 503, refused
        assert refused.content_type == "application/problem+json"
        assert refused.json["status"] == 503

    # Local hub methods keep working on both replicas; nobody was disconnected.
    for client in subscribers:
        echo = await client.invoke("SendTestMessage", "during outage")
        assert (echo["message"], echo["echo"]) == ("Test received", "during outage"), echo
        count = await client.invoke("GetConnectionCount")
        assert count["connectionId"] == client.connection_id
    assert [len(c.events("SystemAlert")) for c in subscribers] == [1, 1, 1], "only the alert from before"

    # A subscription made during the outage either is refused or works once NATS is back.
    late = await pool.connect(a.hub_url, admin_token(), label="late-subscriber-a")
    try:
        late_answer: dict[str, Any] | None = await late.invoke("SubscribeToAlerts")
    except HubInvocationError as error:
        assert "unavailable" in error.message, error.message
        late_answer = None

    # -- NATS comes back on the same port and store ------------------------------------------------
    module_nats.start()
    await wait_until_async(
        lambda: all_health((a, b), 200), timeout=10, what="healthy again on both replicas", interval=0.1
    )
    for gateway in (a, b):
        assert (await http("GET", gateway.base_url, "/readyz")).status == 200
        metrics = (await http("GET", gateway.base_url, "/metrics")).text
        assert metric_value(metrics, "realtime_nats_reconnects_total") >= 1
        assert metric_value(metrics, "realtime_nats_connected") == 1

    receivers = subscribers + ([late] if late_answer is not None and late_answer["subscribed"] else [])
    for client in receivers:
        client.mark()
    # NATS re-sends the subscriptions as the gateway reconnects; give each replica a barrier first.
    await asyncio.gather(*(client.sync_with_broker(seconds=10) for client in receivers))
    assert (await post_alert(b, "after recovery via B")).status == 200
    await expect_alert_everywhere("after recovery via B", receivers)
    assert (await post_alert(a, "after recovery via A")).status == 200
    await expect_alert_everywhere("after recovery via A", receivers)
    for client in receivers:
        assert [alert["message"] for alert in client.events("SystemAlert")] == [
            "after recovery via B",
            "after recovery via A",
        ]

    for client in [*subscribers, late]:
        assert "reconnecting" not in client.states(), client.diagnostics()
        assert "close" not in client.states(), client.diagnostics()
        assert client.errors_logged() == [], client.diagnostics()
    assert a.is_running() and b.is_running()


async def test_connection_totals_recover_after_the_outage(
    module_nats: NatsServer, replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool
) -> None:
    """Runs after the outage test: each replica still publishes its count to KV (presence survived)."""
    a, b = replicas
    on_a, on_b = await pool.connect_many((a.hub_url, admin_token(), "count-a"), (b.hub_url, admin_token(), "count-b"))

    async def settled() -> bool:
        counts = await asyncio.gather(on_a.invoke("GetConnectionCount"), on_b.invoke("GetConnectionCount"))
        return all(c["replicas"] == 2 and c["totalConnections"] == 2 for c in counts)

    await wait_until_async(settled, timeout=10, what="both replicas counted", interval=0.1)


async def timed(call: Awaitable[Any]) -> tuple[float, Any]:
    started = time.monotonic()
    try:
        result = await call
    except Exception as error:  # the answer's content is checked by the caller
        result = error
    return time.monotonic() - started, result


async def test_snapshot_reads_do_not_stall_while_nats_is_down(
    module_nats: NatsServer, replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool
) -> None:
    a, _ = replicas
    client = await pool.connect(a.hub_url, admin_token(), label="stats-reader")
    module_nats.kill()
    try:
        await wait_until_async(lambda: all_health((a,), 503), timeout=10, what="degraded", interval=0.1)
        token = admin_token()
        results = await asyncio.gather(
            timed(http("GET", a.base_url, "platform-snapshot", token=token, seconds=20)),
            timed(http("POST", a.base_url, "broadcast/platform-update", token=token, seconds=20)),
            timed(http("POST", a.base_url, "broadcast/user-count", token=token, seconds=20)),
            timed(client.invoke("GetPlatformStats", seconds=20)),
        )
        (t_snapshot, snapshot), (t_update, update), (t_count, count), (t_stats, stats) = results
        # What they answer is right; how long they take is the bug.
        assert snapshot.status == 200 and set(snapshot.json) == {"timestamp", "data"}, snapshot
        assert update.status == 503 and count.status == 503, (update, count)
        assert isinstance(stats, dict) and "totalUsers" in stats, stats
        durations = {"snapshot": t_snapshot, "platform-update": t_update, "user-count": t_count, "stats": t_stats}
        assert all(seconds < 1.5 for seconds in durations.values()), durations
    finally:
        module_nats.start()
        await wait_until_async(lambda: all_health((a,), 200), timeout=10, what="healthy again", interval=0.1)
