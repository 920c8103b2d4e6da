"""HubHost + AdminHub with real ServerConnections and the in-memory broker, fed literal bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.envelope import encode_event
from broker_bridge.feed_subjects import SubjectFeed
from broker_bridge.interface import MessageCallback, Subscription
from gateway.auth import Principal
from gateway.hub.admin_hub import AdminHub
from gateway.hub.fanout import FanoutRouter
from gateway.hub.history import SnapshotHistory
from gateway.hub.host import UNLIMITED, HubHost
from gateway.hub.memberships import Memberships
from gateway.hub.presence import ReplicaPresence
from gateway.hub.registry import ConnectionRegistry, DuplicateConnection
from gateway.hub.session import HubSession
from gateway.hub.snapshots import KvSnapshotReader
from gateway.metrics import GatewayMetrics
from gateway.signalr import HANDSHAKE_OK, JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, Close, Completion, HubMessage, Invocation
from gateway.signalr.connection import CloseReason, ConnectionLimits, ConnectionState, ServerConnection
from shared.models import PlatformSnapshot
from shared.rate_limit import Rate
from tests.component.http_hub import cluster_presence
from tests.support.alerts import memory_shared_alerts
from tests.support.frames import JSON_HANDSHAKE
from tests.support.links import RecordingLink

USER_ID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
ALERTS = "realtime.group.alerts"


class Harness:
    def __init__(
        self,
        *,
        broker: InMemoryBroker | None = None,
        max_parallel_invocations: int = 1,
        invocation_rate: Rate = UNLIMITED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker or InMemoryBroker()
        self.metrics = GatewayMetrics()
        self.registry = ConnectionRegistry()
        self.router = FanoutRouter(
            feed=SubjectFeed(self.broker),
            protocols={JSON_PROTOCOL.name: JSON_PROTOCOL, MESSAGEPACK_PROTOCOL.name: MESSAGEPACK_PROTOCOL},
            metrics=self.metrics,
        )
        presence = ReplicaPresence(replica_id="replica-a", registry=self.registry, interval_seconds=2.0)
        self.history = SnapshotHistory(max_points=100, metrics=self.metrics)
        hub = AdminHub(
            memberships=Memberships(router=self.router, resumables=None),
            snapshots=KvSnapshotReader(),
            presence=presence,
            cluster_presence=cluster_presence("replica-a", self.metrics),
            alerts=memory_shared_alerts(self.broker, self.metrics, clock=clock),
            history=self.history,
        )
        self.host = HubHost(
            hub=hub,
            registry=self.registry,
            metrics=self.metrics,
            max_parallel_invocations=max_parallel_invocations,
            invocation_rate=invocation_rate,
            clock=clock,
        )
        self.sessions: list[HubSession] = []
        self.links: dict[HubSession, RecordingLink] = {}

    def session(
        self,
        *,
        user_id: str | None = USER_ID,
        roles: frozenset[str] = frozenset({"Admin"}),
        key: str = "conn-1",
        limits: ConnectionLimits | None = None,
        wall_clock: Any = time.time,
    ) -> HubSession:
        connection = ServerConnection(
            limits=limits or ConnectionLimits(), now=time.monotonic(), transfer_formats=("Text", "Binary")
        )
        link = RecordingLink()
        link.bind(connection)
        session = HubSession(
            connection=connection,
            connection_id=f"id-{key}",
            connection_token=key,
            principal=Principal(user_id=user_id, name="Alice", roles=roles, expires_at=time.time() + 3600),
            client_ip="192.0.2.1",
            transport="websockets",
            link=link,
            token_leeway_seconds=30.0,
            wall_clock=wall_clock,
        )
        self.links[session] = link
        self.host.add(session)
        self.sessions.append(session)
        return session

    async def connect(self, **kwargs: Any) -> HubSession:
        session = self.session(**kwargs)
        await self.host.receive(session, JSON_HANDSHAKE)
        data = self.output(session)
        assert data.startswith(HANDSHAKE_OK)
        self.greeting = decode(data[len(HANDSHAKE_OK) :])
        return session

    def output(self, session: HubSession) -> bytes:
        """Everything sent to ``session`` since the last call, in order."""
        return self.links[session].take_output()


def decode(data: bytes) -> list[HubMessage]:
    return JSON_PROTOCOL.new_reader(max_message_bytes=None).feed(data)


def invocation(invocation_id: str, target: str, *arguments: Any) -> bytes:
    return JSON_PROTOCOL.encode(Invocation(target, arguments, invocation_id))


async def next_messages(harness: Harness, session: HubSession) -> list[HubMessage]:
    """Wait (bounded) until the session has output, then decode it."""
    link = harness.links[session]
    async with asyncio.timeout(2):
        while not (session.connection.pending_bytes or link.wire):
            await link.wait_for_output()
    return decode(harness.output(session))


async def call(harness: Harness, session: HubSession, invocation_id: str, target: str, *arguments: Any) -> Completion:
    await harness.host.receive(session, invocation(invocation_id, target, *arguments))
    messages = await next_messages(harness, session)
    completion = messages[0]
    assert isinstance(completion, Completion)
    assert completion.invocation_id == invocation_id
    if completion.error is None:
        assert len(messages) == 1
    else:  # the caller's ErrorOccurred handler hears of it too, with the same safe text
        [error] = messages[1:]
        assert isinstance(error, Invocation) and error.target == "ErrorOccurred"
        body = error.arguments[0]
        assert (body["type"], body["message"]) == ("error", completion.error)
        assert body["timestamp"].endswith("Z")
    return completion


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    for session in harness.sessions:
        await harness.host.end(session)


async def test_handshake_joins_default_subjects_and_greets(harness: Harness) -> None:
    session = await harness.connect()
    assert session.groups == ("admins",)
    for subject in ("realtime.all", "realtime.user.*", "realtime.group.admins"):
        assert harness.broker.subscriber_count(subject) == 1
    assert harness.router.reaches_user(USER_ID, session)
    assert harness.router.in_group("admins", session)
    [greeting] = harness.greeting
    assert isinstance(greeting, Invocation)
    assert greeting.target == "ConnectionEstablished"
    assert greeting.invocation_id is None
    body = greeting.arguments[0]
    assert {key: body[key] for key in ("connectionId", "userId", "userName", "groups", "message")} == {
        "connectionId": "id-conn-1",
        "userId": USER_ID,
        "userName": "Alice",
        "groups": ["admins"],
        "message": "Connected to admin real-time hub",
    }
    assert body["timestamp"].endswith("Z")
    gauge = harness.metrics.registry.get_sample_value(
        "realtime_connections", {"transport": "websockets", "protocol": "json"}
    )
    assert gauge == 1.0


async def test_non_admin_without_user_joins_only_all(harness: Harness) -> None:
    session = await harness.connect(user_id=None, roles=frozenset({"Support"}))
    assert session.groups == ()
    assert harness.router.subscribed_subjects == frozenset({"realtime.all"})
    assert harness.greeting[0].arguments[0]["groups"] == []  # type: ignore[union-attr]


async def test_subscribe_receive_unsubscribe(harness: Harness) -> None:
    session = await harness.connect()

    completion = await call(harness, session, "1", "SubscribeToAlerts")
    assert completion.error is None
    assert {key: completion.result[key] for key in ("group", "subscribed")} == {"group": "alerts", "subscribed": True}
    assert harness.broker.subscriber_count(ALERTS) == 1

    await harness.broker.publish(ALERTS, encode_event("SystemAlert", {"level": "critical"}))
    assert harness.output(session) == (b'{"type":1,"target":"SystemAlert","arguments":[{"level":"critical"}]}\x1e')

    completion = await call(harness, session, "2", "unsubscribefromalerts")
    assert completion.result["subscribed"] is False
    assert harness.broker.subscriber_count(ALERTS) == 0
    await harness.broker.publish(ALERTS, encode_event("SystemAlert", {"level": "low"}))
    assert session.connection.pending_bytes == 0


async def test_subscribing_to_analytics_sends_the_latest_figures_first(harness: Harness) -> None:
    session = await harness.connect()
    await harness.host.receive(session, invocation("1", "SubscribeToAnalytics"))
    messages = await next_messages(harness, session)
    while len(messages) < 3:
        messages += await next_messages(harness, session)
    figures, counts, completion = messages
    assert isinstance(figures, Invocation) and figures.target == "AnalyticsUpdate"
    assert isinstance(counts, Invocation) and counts.target == "UserCountUpdate"
    assert figures.arguments[0]["totalUsers"] == 0 and counts.arguments[0]["newUsersToday"] == 0
    assert isinstance(completion, Completion) and completion.result["subscribed"] is True
    # Subscribed already: no figures again.
    assert (await call(harness, session, "2", "SubscribeToAnalytics")).result["subscribed"] is True


async def test_subscribing_twice_keeps_one_membership(harness: Harness) -> None:
    session = await harness.connect()
    await harness.host.receive(session, invocation("1", "SubscribeToAnalytics"))
    first = await next_messages(harness, session)
    while len(first) < 3:  # the latest figures, then the Completion
        first += await next_messages(harness, session)
    await call(harness, session, "2", "SubscribeToAnalytics")
    assert harness.router.group_size("analytics") == 1
    await harness.broker.publish("realtime.group.analytics", encode_event("Stats"))
    assert len(decode(harness.output(session))) == 1


async def test_subscribe_when_the_broker_fails(harness: Harness) -> None:
    session = await harness.connect()
    harness.broker.fail_subscribe = True
    completion = await call(harness, session, "1", "SubscribeToUserActivity")
    assert completion.error == (
        "An unexpected error occurred invoking 'SubscribeToUserActivity' on the server. "
        "HubException: The real-time broker is unavailable; try again shortly."
    )
    assert "user-activity" not in session.groups
    assert harness.router.group_size("user-activity") == 0


async def test_other_hub_methods(harness: Harness) -> None:
    session = await harness.connect()
    harness.session(key="token-2")  # a second (not yet handshaken) session on this replica

    echo = await call(harness, session, "1", "SendTestMessage", "hello")
    assert (echo.result["message"], echo.result["echo"]) == ("Test received", "hello")
    echo_null = await call(harness, session, "2", "SendTestMessage", None)
    assert echo_null.result["echo"] is None

    bad = await call(harness, session, "3", "SendTestMessage", 5)
    assert bad.error == "Failed to invoke 'SendTestMessage' due to an error on the server."

    count = await call(harness, session, "4", "GetConnectionCount")
    assert {key: count.result[key] for key in ("connectionId", "connectionsOnReplica", "totalConnections")} == {
        "connectionId": "id-conn-1",
        "connectionsOnReplica": 2,
        "totalConnections": 2,
    }
    assert count.result["replicas"] == 1

    stats = await call(harness, session, "5", "GetPlatformStats")
    assert stats.result["totalUsers"] == 0
    assert stats.result["totalRevenue"] == 0.0
    assert stats.result["timestamp"].endswith("Z")

    unknown = await call(harness, session, "6", "Shutdown")
    assert (
        unknown.error
        == "Failed to invoke 'Shutdown' due to an error on the server. HubException: Method does not exist."
    )


async def test_analytics_history_answers_the_held_snapshots_and_refuses_bad_minutes(harness: Harness) -> None:
    session = await harness.connect()
    now_ms = int(time.time() * 1000)
    for age_seconds, users in ((7200, 1), (600, 2), (5, 3)):
        harness.history.add(now_ms - age_seconds * 1000, PlatformSnapshot(total_users=users, total_revenue=0.5))
    harness.history.mark_loaded()

    answer = await call(harness, session, "1", "GetAnalyticsHistory", 30)
    assert answer.error is None
    assert (answer.result["minutes"], answer.result["complete"], answer.result["bucketSeconds"]) == (30, True, 0)
    assert [point["totalUsers"] for point in answer.result["points"]] == [2, 3]
    assert answer.result["points"][0]["totalRevenue"] == 0.5 and answer.result["points"][0]["timestamp"].endswith("Z")

    out_of_range = "An unexpected error occurred invoking 'GetAnalyticsHistory' on the server. HubException: "
    for number, minutes in enumerate((0, 1441, -5), start=2):
        refused = await call(harness, session, str(number), "GetAnalyticsHistory", minutes)
        assert refused.error == out_of_range + "The field minutes must be between 1 and 1440."
    wrong_type = "Failed to invoke 'GetAnalyticsHistory' due to an error on the server."
    for number, arguments in enumerate(((1.5,), ("30",), (None,), (True,), ()), start=5):
        refused = await call(harness, session, str(number), "GetAnalyticsHistory", *arguments)
        assert refused.error == wrong_type


async def test_non_blocking_invocation_gets_no_answer(harness: Harness) -> None:
    session = await harness.connect()
    await harness.host.receive(session, JSON_PROTOCOL.encode(Invocation("SubscribeToAlerts", ())))
    await harness.host.receive(session, invocation("2", "SendTestMessage", "marker"))
    messages = await next_messages(harness, session)
    assert [type(message) for message in messages] == [Completion]
    assert messages[0].invocation_id == "2"  # type: ignore[union-attr]
    assert session.groups == ("admins", "alerts")


async def test_handshake_and_invocation_in_one_chunk(harness: Harness) -> None:
    session = harness.session()
    await harness.host.receive(session, JSON_HANDSHAKE + invocation("1", "SendTestMessage", "x"))
    data = harness.output(session)
    assert data.startswith(HANDSHAKE_OK)
    queued = decode(data[len(HANDSHAKE_OK) :])
    if len(queued) == 1:
        queued += await next_messages(harness, session)
    assert [getattr(message, "target", None) for message in queued] == ["ConnectionEstablished", None]
    assert queued[1] == Completion.with_result("1", queued[1].result)  # type: ignore[union-attr]


async def test_end_leaves_every_subject(harness: Harness) -> None:
    session = await harness.connect()
    await call(harness, session, "1", "SubscribeToAlerts")
    subjects = harness.router.subscribed_subjects
    assert subjects == {"realtime.all", "realtime.user.*", "realtime.group.admins", ALERTS}
    await harness.host.end(session)
    harness.sessions.remove(session)
    assert all(harness.broker.subscriber_count(subject) == 0 for subject in subjects)
    assert harness.router.subscribed_subjects == frozenset()
    assert len(harness.registry) == 0
    assert session.connection.state is ConnectionState.CLOSED
    closed = harness.metrics.registry.get_sample_value(
        "realtime_connections_closed_total", {"reason": "transport_closed"}
    )
    assert closed == 1.0
    gauge = harness.metrics.registry.get_sample_value(
        "realtime_connections", {"transport": "websockets", "protocol": "json"}
    )
    assert gauge == 0.0


async def test_shared_subject_survives_one_session_leaving(harness: Harness) -> None:
    first = await harness.connect(key="a")
    second = await harness.connect(key="b")
    assert harness.broker.subscriber_count("realtime.all") == 1
    await harness.host.end(first)
    harness.sessions.remove(first)
    assert harness.broker.subscriber_count("realtime.all") == 1
    await harness.broker.publish("realtime.all", encode_event("Everyone"))
    assert decode(harness.output(second)) == [Invocation("Everyone", ())]


async def test_broker_failure_on_connect_closes_with_reconnect(harness: Harness) -> None:
    harness.broker.fail_subscribe = True
    session = harness.session()
    await harness.host.receive(session, JSON_HANDSHAKE)
    data = harness.output(session)
    assert data == HANDSHAKE_OK + b'{"type":7,"error":"Connection closed with an error.","allowReconnect":true}\x1e'
    assert session.connection.close_reason is CloseReason.PROTOCOL_ERROR
    assert session.groups == ()
    assert not harness.router.in_group("admins", session)


async def test_duplicate_connection_token_is_refused(harness: Harness) -> None:
    harness.session(key="same")
    with pytest.raises(DuplicateConnection):
        harness.session(key="same")
    harness.sessions.pop()


async def test_slow_consumer_is_cut(harness: Harness) -> None:
    session = await harness.connect(limits=ConnectionLimits(max_outbound_bytes=1000))
    await call(harness, session, "1", "SubscribeToAlerts")
    frame_bytes = len(JSON_PROTOCOL.encode(Invocation("SystemAlert", ("x" * 150,))))
    for _ in range(1000 // frame_bytes):
        await harness.broker.publish(ALERTS, encode_event("SystemAlert", "x" * 150))
    assert session.connection.state is ConnectionState.OPEN
    await harness.broker.publish(ALERTS, encode_event("SystemAlert", "x" * 150))
    assert session.connection.close_reason is CloseReason.SLOW_CONSUMER
    assert session.connection.should_close
    await harness.broker.publish(ALERTS, encode_event("SystemAlert", "x" * 150))
    assert session.connection.pending_bytes == 0


async def test_expired_access_token_closes_on_tick(harness: Harness) -> None:
    clock = {"now": time.time()}
    session = await harness.connect(wall_clock=lambda: clock["now"])
    session.tick(time.monotonic())
    assert session.connection.state is ConnectionState.OPEN
    clock["now"] += 3600 + 31
    session.tick(time.monotonic())
    assert session.connection.close_reason is CloseReason.TOKEN_EXPIRED
    assert decode(harness.output(session)) == [Close(allow_reconnect=True)]


async def test_close_all_asks_clients_to_reconnect(harness: Harness) -> None:
    session = await harness.connect()

    async def transport_finishes() -> None:
        await harness.links[session].wait_for_output()
        await harness.host.end(session)

    ending = asyncio.ensure_future(transport_finishes())
    async with asyncio.timeout(2):
        await harness.host.close_all(grace_seconds=1.0)
        await ending
    harness.sessions.remove(session)
    assert session.connection.close_reason is CloseReason.SERVER_SHUTDOWN
    assert len(harness.registry) == 0


class GatedBroker(InMemoryBroker):
    """Subscriptions wait until the gate opens, so hub methods that join a group stay in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def subscribe(self, subject: str, callback: MessageCallback) -> Subscription:  # type: ignore[override]
        self.waiting += 1
        await self.gate.wait()
        return await super().subscribe(subject, callback)


async def read_behind_a_gate(
    max_parallel_invocations: int, targets: tuple[str, ...]
) -> tuple[Harness, GatedBroker, HubSession, asyncio.Task[None]]:
    """A connected session whose joins hang until the gate opens, reading one invocation per target."""
    broker = GatedBroker()
    harness = Harness(broker=broker, max_parallel_invocations=max_parallel_invocations)
    broker.gate.set()
    session = await harness.connect()
    broker.gate.clear()
    broker.waiting = 0
    batch = b"".join(invocation(str(i), target) for i, target in enumerate(targets))
    reading = asyncio.create_task(harness.host.receive(session, batch))
    for _ in range(20):
        await asyncio.sleep(0)
    return harness, broker, session, reading


async def test_reading_pauses_while_the_parallel_invocation_limit_is_reached() -> None:
    harness, broker, session, reading = await read_behind_a_gate(
        2, ("SubscribeToAlerts", "SubscribeToAnalytics", "SubscribeToUserActivity")
    )
    assert broker.waiting == 2, "two invocations run, the third waits for a free slot"
    assert not reading.done(), "the reader is held back while the limit is reached"

    broker.gate.set()
    async with asyncio.timeout(2):
        await reading
        completions: list[HubMessage] = []
        while len(completions) < 3:
            completions += await next_messages(harness, session)
    assert sorted(c.invocation_id for c in completions if isinstance(c, Completion)) == ["0", "1", "2"]
    assert broker.waiting == 3
    await harness.host.end(session)


async def test_ending_a_session_releases_a_reader_held_back_by_the_limit() -> None:
    harness, broker, session, reading = await read_behind_a_gate(1, ("SubscribeToAlerts",) * 3)
    assert broker.waiting == 1 and not reading.done(), "the first runs (stuck), the reader waits for its slot"

    await harness.host.end(session)  # the transport went away while the invocation hangs
    async with asyncio.timeout(2):
        await reading
    for _ in range(20):
        await asyncio.sleep(0)
    assert broker.waiting == 1, "nothing more of the ended session ran"


async def test_invocations_over_the_rate_limit_get_a_rate_limit_error() -> None:
    clock = {"now": 1000.0}
    harness = Harness(invocation_rate=Rate(per_second=1, burst=2), clock=lambda: clock["now"])
    session = await harness.connect()
    assert (await call(harness, session, "1", "SendTestMessage", "a")).error is None
    assert (await call(harness, session, "2", "SendTestMessage", "b")).error is None
    refused = await call(harness, session, "3", "SendTestMessage", "c")
    assert refused.error == "Rate limit exceeded."
    assert session.connection.state is ConnectionState.OPEN, "the connection stays"
    clock["now"] += 1.0  # one token back
    assert (await call(harness, session, "4", "SendTestMessage", "d")).error is None
    refusals = harness.metrics.registry.get_sample_value("realtime_limit_refusals_total", {"limit": "invocation_rate"})
    assert refusals == 1.0
    await harness.host.end(session)


async def test_a_refused_non_blocking_invocation_gets_no_answer() -> None:
    harness = Harness(invocation_rate=Rate(per_second=1, burst=1), clock=lambda: 5.0)
    session = await harness.connect()
    await harness.host.receive(session, JSON_PROTOCOL.encode(Invocation("SendTestMessage", ("x",))))
    await harness.host.receive(session, JSON_PROTOCOL.encode(Invocation("SendTestMessage", ("y",))))
    for _ in range(10):
        await asyncio.sleep(0)
    assert harness.output(session) == b""
    assert (
        harness.metrics.registry.get_sample_value("realtime_limit_refusals_total", {"limit": "invocation_rate"}) == 1.0
    )
    await harness.host.end(session)
