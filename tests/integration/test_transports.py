"""Every transport through a round-robin proxy in front of three gateway replicas: no session affinity.

The official ``@microsoft/signalr`` client under Node, limited to one HttpTransportType, talks to the
proxy (``tests/support/round_robin_proxy.py``), which sends each request - every poll, POST, DELETE,
event-stream GET and WebSocket upgrade - to the next replica in turn. A long-polling or Server-Sent
Events connection is owned by the replica that negotiated it; the others forward its requests over
NATS. Broadcasts are published with a plain nats-py client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from pysignalr.protocol.json import JSONProtocol

from scripts.processes import NatsServer, wait_until_async
from tests.integration.test_pysignalr_client import connected
from tests.support import expect
from tests.support.fanout import ClientPool, FanoutClient, http, metric_value
from tests.support.jsclient import run_js
from tests.support.processes import GatewayProcess
from tests.support.round_robin_proxy import RoundRobinProxy
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TRANSPORTS = ["WebSockets", "ServerSentEvents", "LongPolling"]
HTTP_TRANSPORTS = ["ServerSentEvents", "LongPolling"]
CLIENT_CLASSES = {
    "WebSockets": "WebSocketTransport",
    "ServerSentEvents": "ServerSentEventsTransport",
    "LongPolling": "LongPollingTransport",
}
METRIC_LABELS = {"WebSockets": "websockets", "ServerSentEvents": "serversentevents", "LongPolling": "longpolling"}
BROADCASTS = 500
# Pings every second and a 2 s handshake timeout: a forwarded stream whose owner died is given up
# after max(2 x 1, 2) + 1 = 3 s instead of 31 s (the relay's silence limit).
REPLICA_ENV = {
    "REALTIME_KEEP_ALIVE_INTERVAL_SECONDS": "1",
    "REALTIME_HANDSHAKE_TIMEOUT_SECONDS": "2",
    "REALTIME_SHUTDOWN_GRACE_SECONDS": "2",
    "REALTIME_PRESENCE_INTERVAL_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def trio(gateway_factory: Callable[..., GatewayProcess]) -> list[GatewayProcess]:
    return [gateway_factory(REALTIME_REPLICA_ID=f"rr-{name}", **REPLICA_ENV) for name in "abc"]


@pytest.fixture
def replicas(trio: list[GatewayProcess]) -> list[GatewayProcess]:
    """The three replicas, running (a test that stopped one gets it back, same id and port)."""
    for gateway in trio:
        if not gateway.is_running():
            gateway.start()
    return trio


@pytest.fixture
async def proxy(replicas: list[GatewayProcess]) -> AsyncIterator[RoundRobinProxy]:
    async with RoundRobinProxy([gateway.base_url for gateway in replicas]) as balancer:
        yield balancer


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    async with ClientPool() as clients:
        yield clients


def hub_url(proxy: RoundRobinProxy) -> str:
    return f"{proxy.url}/hubs/admin"


async def metric(gateway: GatewayProcess, name: str, **labels: str) -> float:
    answer = await http("GET", gateway.base_url, "/metrics")
    return metric_value(answer.text, name, **labels)


async def total(replicas: list[GatewayProcess], name: str, **labels: str) -> float:
    return sum([await metric(gateway, name, **labels) for gateway in replicas])


async def owner_of(replicas: list[GatewayProcess], transport: str) -> int:
    """The index of the replica holding the one connection of ``transport`` (where it negotiated)."""

    async def holders() -> list[int] | None:
        counts = [await metric(g, "realtime_connections", transport=METRIC_LABELS[transport]) for g in replicas]
        return [index for index, count in enumerate(counts) if count] if sum(counts) == 1 else None

    (index,) = await wait_until_async(holders, timeout=10, what=f"one {transport} connection on one replica")
    return index


async def publish_alerts(url: str, count: int, *, tag: str) -> None:
    """``count`` SystemAlerts to the alerts group, numbered in ``data.seq``, from one NATS connection."""
    client = await nats.connect(url, name="transport-test-publisher")
    try:
        for seq in range(count):
            alert = {"type": "info", "message": tag, "severity": "low", "timestamp": "2025-01-01T00:00:00Z"}
            payload = {"target": "SystemAlert", "arguments": [{**alert, "data": {"seq": seq}}]}
            await client.publish("realtime.group.alerts", json.dumps(payload).encode())
        await client.flush()
    finally:
        await client.close()


def sequence_of(client: FanoutClient, tag: str) -> list[int]:
    return [alert["data"]["seq"] for alert in client.events("SystemAlert") if alert["message"] == tag]


# -- every hub method ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "protocol"),
    [("WebSockets", "json"), ("ServerSentEvents", "json"), ("LongPolling", "json"), ("LongPolling", "msgpack")],
)
async def test_every_hub_method_through_a_round_robin_balancer(
    proxy: RoundRobinProxy, replicas: list[GatewayProcess], transport: str, protocol: str
) -> None:
    forwarded_before = await total(replicas, "realtime_forwarded_requests_total")
    token = admin_token()
    result = await run_js("full", url=hub_url(proxy), token=token, transport=transport, protocol=protocol)
    expect.assert_full_session(result, token=token)
    assert result["transport"] == CLIENT_CLASSES[transport]
    forwarded = await total(replicas, "realtime_forwarded_requests_total") - forwarded_before
    if transport in HTTP_TRANSPORTS:
        assert all(count > 5 for count in proxy.requests), proxy.requests  # every replica had its share
        # The requests that landed on the two replicas that do not own the connection went to its owner.
        assert forwarded > 5
        assert await total(replicas, "realtime_forwarded_failures_total") == 0
    else:
        assert forwarded == 0  # a WebSocket lives wherever its upgrade landed

    async def all_ended() -> bool:
        return await total(replicas, "realtime_connections", transport=METRIC_LABELS[transport]) == 0

    await wait_until_async(all_ended, timeout=10, what="the connection to end on its replica after stop()")


# -- broadcasts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", HTTP_TRANSPORTS)
async def test_500_broadcasts_arrive_in_order_once_each(
    proxy: RoundRobinProxy, pool: ClientPool, nats_server: NatsServer, replicas: list[GatewayProcess], transport: str
) -> None:
    client = await pool.connect(hub_url(proxy), admin_token(), transport=transport)
    assert client.transport == CLIENT_CLASSES[transport]
    await client.invoke("SubscribeToAlerts")
    await client.sync_with_broker()
    tag = f"{transport}-broadcast"
    await publish_alerts(nats_server.url, BROADCASTS, tag=tag)

    async def all_arrived() -> bool:
        return len(sequence_of(client, tag)) >= BROADCASTS

    await wait_until_async(all_arrived, timeout=60, what=f"{BROADCASTS} alerts", describe=client.diagnostics)
    await client.assert_no_event("SystemAlert", within=0.5, since=len(client.lines))  # nothing more comes
    assert sequence_of(client, tag) == list(range(BROADCASTS))  # in order, none missing, none twice
    await client.invoke("GetConnectionCount")  # and the connection still answers
    await client.close()
    assert client.states()[-1:] == ["close"] and client.errors_logged() == []


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", HTTP_TRANSPORTS)
async def test_the_client_starts_again_when_the_owner_of_its_connection_dies(
    proxy: RoundRobinProxy, pool: ClientPool, nats_server: NatsServer, replicas: list[GatewayProcess], transport: str
) -> None:
    client = await pool.connect(hub_url(proxy), admin_token(), transport=transport)
    first_id = client.connection_id
    owner = await owner_of(replicas, transport)
    mark = client.mark()

    replicas[owner].kill()  # no Close, no drain: its requests find no responder (404) or a reset socket
    proxy.take_out(owner)  # as a balancer's health check would
    await client.wait_state("reconnecting", seconds=15, since=mark)
    reconnected = await client.wait_state("reconnected", seconds=30, since=mark)
    assert reconnected["connectionId"] != first_id  # a new connection, negotiated anew

    await client.invoke("SubscribeToAlerts")
    await client.sync_with_broker()
    await publish_alerts(nats_server.url, 3, tag=f"after-{transport}")

    async def arrived() -> bool:
        return sequence_of(client, f"after-{transport}") == [0, 1, 2]

    await wait_until_async(arrived, timeout=10, what="alerts after the reconnect", describe=client.diagnostics)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sigterm_tells_clients_to_reconnect_elsewhere(
    proxy: RoundRobinProxy, pool: ClientPool, replicas: list[GatewayProcess], transport: str
) -> None:
    client = await pool.connect(hub_url(proxy), admin_token(), transport=transport)
    owner = await owner_of(replicas, transport)
    mark = client.mark()
    proxy.take_out(owner)  # a terminating pod leaves the balancer first
    code = await asyncio.to_thread(replicas[owner].stop)
    assert code == 0
    reconnecting = await client.wait_state("reconnecting", seconds=10, since=mark)
    assert reconnecting["error"] is None  # a Close with allowReconnect and no error, not a dropped socket
    await client.wait_state("reconnected", seconds=15, since=mark)
    count: dict[str, Any] = await client.invoke("GetConnectionCount")
    assert count["connectionsOnReplica"] == 1


# -- pysignalr -------------------------------------------------------------------------------------


@dataclass
class _Balanced:
    """What ``connected`` needs of a gateway: the hub URL (here the balancer's)."""

    hub_url: str


async def test_pysignalr_works_unchanged_through_the_balancer(proxy: RoundRobinProxy) -> None:
    """pysignalr negotiates version 0 (the public id is the token) and ignores the transports offered;
    its WebSocket may land on any replica."""
    token = admin_token()
    negotiated = await http("POST", proxy.url, "/hubs/admin/negotiate", token=token)
    assert [entry["transport"] for entry in negotiated.json["availableTransports"]] == TRANSPORTS
    async with connected(_Balanced(hub_url(proxy)), token, JSONProtocol()) as session:  # type: ignore[arg-type]
        (established,) = await session.wait(session.established.get())
        expect.assert_established(established, user_id=expect.jwt_sub(token))
        echo = await session.invoke("SendTestMessage", "through the balancer")
        expect.assert_test_message(echo.result, "through the balancer")
        count = await session.invoke("GetConnectionCount")
        expect.assert_connection_count(count.result, established["connectionId"])
