"""Two gateway replicas on one NATS server behave as one hub.

Replica A and replica B share the session's nats-server. Clients are the official
``@microsoft/signalr`` client (``tests/js/fanout_client.mjs``); NATS publishes come from a plain
nats-py client that imports nothing from the project, so the subject contract is tested as any
other service would use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient

from scripts.processes import NatsServer, free_port, wait_until_async
from tests.support.expect import assert_recent_iso_z
from tests.support.fanout import ClientPool, FanoutClient, http, metric_value
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token

pytestmark = pytest.mark.integration

PRESENCE_INTERVAL = 0.5
ALERT_KEYS = {"id", "type", "message", "severity", "timestamp", "data"}


@pytest.fixture(scope="module")
def replica_pair(gateway_factory: Callable[..., GatewayProcess]) -> tuple[GatewayProcess, GatewayProcess]:
    env = {"REALTIME_PRESENCE_INTERVAL_SECONDS": str(PRESENCE_INTERVAL)}
    return gateway_factory(REALTIME_REPLICA_ID="replica-a", **env), gateway_factory(
        REALTIME_REPLICA_ID="replica-b", **env
    )


@pytest.fixture
def replicas(replica_pair: tuple[GatewayProcess, GatewayProcess]) -> tuple[GatewayProcess, GatewayProcess]:
    """Both replicas, running (B is restarted if a previous test stopped it)."""
    for gateway in replica_pair:
        if not gateway.is_running():
            gateway.start()
    return replica_pair


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    async with ClientPool() as clients:
        yield clients


@pytest.fixture
async def plain_nats(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url, name="plain-test-publisher")
    yield client
    await client.close()


async def publish(client: NatsClient, subject: str, payload: bytes | dict[str, Any]) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await client.publish(subject, data)
    await client.flush()


async def subscribe_alerts(*clients: FanoutClient) -> None:
    for client in clients:
        answer = await client.invoke("SubscribeToAlerts")
        assert answer["group"] == "alerts" and answer["subscribed"] is True, answer


async def synced(*clients: FanoutClient) -> None:
    """Wait until the subjects joined at connect time are subscribed (start() may resolve before that)."""
    await asyncio.gather(*(client.sync_with_broker() for client in clients))


async def assert_silent(name: str, *clients: FanoutClient, within: float = 0.6) -> None:
    await asyncio.gather(*(client.assert_no_event(name, within=within) for client in clients))


def assert_alert(value: Any, *, type_: str, message: str, severity: str, data: Any) -> None:
    assert set(value) == ALERT_KEYS, value
    assert value["type"] == type_
    assert value["message"] == message
    assert value["severity"] == severity
    assert value["data"] == data
    assert_recent_iso_z(value["timestamp"])


async def test_alert_posted_to_b_reaches_subscriber_on_a_and_nobody_else(
    replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool
) -> None:
    a, b = replicas
    subscriber_a, witness_b, outsider_a, outsider_b = await pool.connect_many(
        (a.hub_url, admin_token(), "subscriber-a"),
        (b.hub_url, admin_token(), "witness-b"),
        (a.hub_url, admin_token(), "outsider-a"),
        (b.hub_url, admin_token(), "outsider-b"),
    )
    await subscribe_alerts(subscriber_a, witness_b)

    body = {"type": "warning", "message": "Disk almost full", "severity": "high", "data": {"disk": "/var", "used": 93}}
    answer = await http("POST", b.base_url, "alert", token=admin_token(), json_body=body)
    alert = await subscriber_a.wait_event("SystemAlert")
    assert (answer.status, answer.json) == (200, {"message": "Alert sent successfully", "id": alert["id"]}), answer
    assert_alert(alert, type_="warning", message="Disk almost full", severity="high", data=body["data"])
    assert await witness_b.wait_event("SystemAlert") == alert
    await assert_silent("SystemAlert", outsider_a, outsider_b)
    assert subscriber_a.events("SystemAlert") == [alert], "delivered more than once"

    answer_unsub = await subscriber_a.invoke("UnsubscribeFromAlerts")
    assert answer_unsub["group"] == "alerts" and answer_unsub["subscribed"] is False, answer_unsub
    for client in (subscriber_a, witness_b, outsider_a, outsider_b):
        client.mark()
    second = {"type": "error", "message": "After unsubscribe"}
    answer = await http("POST", b.base_url, "alert", token=admin_token(), json_body=second)
    assert answer.status == 200, answer
    # The witness on B proves the second alert was fanned out; A's former subscriber gets nothing.
    got = await witness_b.wait_event("SystemAlert")
    assert_alert(got, type_="error", message="After unsubscribe", severity="high", data=None)
    await assert_silent("SystemAlert", subscriber_a, outsider_a, outsider_b, within=0.5)
    for client in pool.clients:
        assert client.errors_logged() == [], client.diagnostics()


async def test_plain_nats_publish_reaches_subscribers_on_both_replicas(
    replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool, plain_nats: NatsClient
) -> None:
    a, b = replicas
    on_a, on_b, outsider = await pool.connect_many(
        (a.hub_url, admin_token(), "alerts-a"),
        (b.hub_url, admin_token(), "alerts-b"),
        (b.hub_url, admin_token(), "outsider-b"),
    )
    await subscribe_alerts(on_a, on_b)

    alert = {
        "type": "info",
        "message": "Published by another service",
        "severity": "low",
        "timestamp": "2025-10-17T10:30:00Z",
        "data": {"source": "billing", "ids": [1, 2, 3]},
    }
    await publish(plain_nats, "realtime.group.alerts", {"target": "SystemAlert", "arguments": [alert]})

    got_a, got_b = await asyncio.gather(on_a.wait_event("SystemAlert"), on_b.wait_event("SystemAlert"))
    assert got_a == alert
    assert got_b == alert
    await assert_silent("SystemAlert", outsider)
    assert len(on_a.events("SystemAlert")) == 1 and len(on_b.events("SystemAlert")) == 1


async def test_invalid_payloads_are_counted_and_crash_no_replica(
    replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool, plain_nats: NatsClient
) -> None:
    a, b = replicas
    on_a, on_b = await pool.connect_many((a.hub_url, admin_token(), "alerts-a"), (b.hub_url, admin_token(), "alerts-b"))
    await subscribe_alerts(on_a, on_b)
    on_a.mark()
    on_b.mark()
    before = {gw.port: (await http("GET", gw.base_url, "/metrics")).text for gw in (a, b)}

    invalid: list[bytes] = [
        b"this is not json {",
        b"also \xff not json",
        json.dumps({"arguments": [{"message": "no target"}]}).encode(),
        json.dumps({"target": "", "arguments": []}).encode(),
        json.dumps([{"target": "SystemAlert"}]).encode(),
        json.dumps({"target": "SystemAlert", "arguments": "not a list"}).encode(),
    ]
    for payload in invalid:
        await publish(plain_nats, "realtime.group.alerts", payload)
    valid = {"type": "success", "message": "still alive", "severity": "low", "timestamp": "2025-10-17T10:30:00Z"}
    await publish(plain_nats, "realtime.group.alerts", {"target": "SystemAlert", "arguments": [valid]})

    # NATS keeps one publisher's order: the valid message arrives after every invalid one.
    assert await on_a.wait_event("SystemAlert") == valid
    assert await on_b.wait_event("SystemAlert") == valid
    assert on_a.events() == [valid] and on_b.events() == [valid], "an invalid payload reached a client"

    expected = {"not_json": 2, "bad_target": 2, "not_an_object": 1, "bad_arguments": 1}
    for gateway in (a, b):
        assert gateway.is_running(), gateway.log()
        assert (await http("GET", gateway.base_url, "/healthz")).status == 200
        after = (await http("GET", gateway.base_url, "/metrics")).text
        assert "realtime_invalid_broker_messages_total" in after
        for kind, count in expected.items():
            grown = metric_value(after, "realtime_invalid_broker_messages_total", kind=kind) - metric_value(
                before[gateway.port], "realtime_invalid_broker_messages_total", kind=kind
            )
            assert grown == count, (gateway.port, kind, grown)
        # Logged once per kind, not once per message.
        assert gateway.log().count("dropping invalid fan-out payload on realtime.group.alerts: not_json") == 1
    assert (await on_a.invoke("SendTestMessage", "after junk"))["echo"] == "after junk"


async def test_user_messages_reach_every_connection_of_that_user_only(
    replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool, plain_nats: NatsClient
) -> None:
    a, b = replicas
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    user_on_a, user_on_b, other_on_a = await pool.connect_many(
        (a.hub_url, admin_token(sub=user), "user-a"),
        (b.hub_url, admin_token(sub=user), "user-b"),
        (a.hub_url, admin_token(sub=other), "other-a"),
    )

    await synced(user_on_a, user_on_b, other_on_a)
    message = {"text": "only for you", "n": 1}
    await publish(plain_nats, f"realtime.user.{user}", {"target": "ReceiveMessage", "arguments": [message]})
    assert await user_on_a.wait_event("ReceiveMessage") == message
    assert await user_on_b.wait_event("ReceiveMessage") == message
    await assert_silent("ReceiveMessage", other_on_a)

    # The other way round: the other user's subject reaches only the other user.
    for client in (user_on_a, user_on_b, other_on_a):
        client.mark()
    for_other = {"text": "for the other user"}
    await publish(plain_nats, f"realtime.user.{other}", {"target": "ReceiveMessage", "arguments": [for_other]})
    assert await other_on_a.wait_event("ReceiveMessage") == for_other
    await assert_silent("ReceiveMessage", user_on_a, user_on_b, within=0.4)

    # realtime.all reaches everyone on both replicas, with several arguments kept in order.
    await publish(plain_nats, "realtime.all", {"target": "ReceiveMessage", "arguments": ["everyone", 2]})
    for client in (user_on_a, user_on_b, other_on_a):
        line = await client.wait_event("ReceiveMessage", lambda data: data == "everyone")
        assert line == "everyone"
        assert [entry["args"] for entry in client.lines if entry.get("event") == "ReceiveMessage"][-1] == [
            "everyone",
            2,
        ]


class DelayingProxy:
    """A TCP proxy to nats-server that holds every client->server chunk for ``delay`` seconds.

    It stands for a busy or distant NATS server: whatever a gateway sends reaches NATS late.
    """

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for task in (self._pipe(reader, up_writer, self.delay), self._pipe(up_reader, writer, 0)):
            handle = asyncio.create_task(task)
            self._tasks.add(handle)
            handle.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_subscribe_is_acknowledged_only_after_nats_has_the_interest(
    nats_server: NatsServer, pool: ClientPool, plain_nats: NatsClient
) -> None:
    proxy = DelayingProxy(nats_server.port, delay=0.2)
    await proxy.start()
    gateway = GatewayProcess(proxy.url)
    try:
        await asyncio.to_thread(gateway.start)
        client = await pool.connect(gateway.hub_url, admin_token(), label="slow-nats")
        answer = await client.invoke("SubscribeToAlerts")
        assert answer["subscribed"] is True
        # Published after the hub said "subscribed": the client must get it.
        alert = {"type": "info", "message": "right after subscribing", "severity": "low", "timestamp": "x"}
        await publish(plain_nats, "realtime.group.alerts", {"target": "SystemAlert", "arguments": [alert]})
        assert await client.wait_event("SystemAlert", seconds=2) == alert
    finally:
        await pool.close()
        await asyncio.to_thread(gateway.stop)
        await proxy.close()


async def _counts(*clients: FanoutClient) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(client.invoke("GetConnectionCount") for client in clients)))


async def _poll_counts(
    clients: tuple[FanoutClient, ...], done: Callable[[list[dict[str, Any]]], bool], *, seconds: float
) -> list[dict[str, Any]]:
    counts: list[dict[str, Any]] = []

    async def settled() -> bool:
        counts[:] = await _counts(*clients)
        return done(counts)

    async def last_counts() -> str:
        return f"connection counts {counts}"

    await wait_until_async(settled, timeout=seconds, what="the counts to settle", interval=0.1, describe=last_counts)
    return counts


async def test_connection_count_totals_across_replicas_and_drops_a_stopped_replica(
    replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool
) -> None:
    """Runs last in this module: it stops replica B (the ``replicas`` fixture restarts it if needed)."""
    a, b = replicas
    a1, a2, b1 = await pool.connect_many(
        (a.hub_url, admin_token(), "a1"), (a.hub_url, admin_token(), "a2"), (b.hub_url, admin_token(), "b1")
    )

    def settled(counts: list[dict[str, Any]]) -> bool:
        return all(c["totalConnections"] == 3 and c["replicas"] == 2 for c in counts)

    counts = await _poll_counts((a1, a2, b1), settled, seconds=10)
    assert [c["connectionsOnReplica"] for c in counts] == [2, 2, 1], counts
    assert [c["connectionId"] for c in counts] == [a1.connection_id, a2.connection_id, b1.connection_id]
    for c in counts:
        assert_recent_iso_z(c["timestamp"])

    exit_code = await asyncio.to_thread(b.stop)
    assert exit_code == 0, b.log()[-3000:]
    started = time.monotonic()
    counts = await _poll_counts(
        (a1, a2), lambda cs: all(c["totalConnections"] == 2 and c["replicas"] == 1 for c in cs), seconds=5
    )
    assert [c["connectionsOnReplica"] for c in counts] == [2, 2]
    assert time.monotonic() - started < 5
