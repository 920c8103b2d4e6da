"""Resumable connections (stateful reconnect) end to end inside one process: HubHost + AdminHub +
FanoutRouter + ResumableConnections per "replica", sharing the in-memory fan-out stream and KV.

A :class:`Client` stands for the JS client with ``withStatefulReconnect``: it reads what the server
wrote to its (recording) link, numbers trackable messages and drops repeats after a Sequence, Acks,
and after a lost socket resumes on any replica with Sequence + its unacknowledged messages. The resume
itself follows ``WebSocketTransport.resume``: take over, replay, ``resume_after``, adopt.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker_bridge import catalog
from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.connection_stream import RecordKind, decode_record
from broker_bridge.envelope import encode_event
from broker_bridge.keyvalue import MemoryKeyValueStore
from broker_bridge.subjects import ALL_SUBJECT, connection_subject, group_subject, user_subject
from gateway.auth import Principal
from gateway.hub import resumable as resumable_module
from gateway.hub.admin_hub import AdminHub
from gateway.hub.connection_log import Checkpoint
from gateway.hub.fanout import FanoutRouter
from gateway.hub.history import SnapshotHistory
from gateway.hub.host import HubHost
from gateway.hub.memberships import Memberships
from gateway.hub.presence import ReplicaPresence
from gateway.hub.registry import ConnectionRegistry
from gateway.hub.resumable import ConnectionRecord, Resumable, ResumableConnections, ResumeRefused
from gateway.hub.session import HubSession
from gateway.hub.snapshots import KvSnapshotReader
from gateway.metrics import GatewayMetrics
from gateway.signalr import HANDSHAKE_OK, JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, HubMessage, Invocation
from gateway.signalr.connection import CLOSED_WITH_ERROR, CloseReason, ConnectionLimits, ServerConnection
from gateway.signalr.messages import Ack, Close, Completion, Ping, Sequence
from gateway.signalr.protocol import HubProtocol
from gateway.signalr.sequencing import is_trackable
from tests.component.http_hub import cluster_presence
from tests.support.alerts import memory_shared_alerts
from tests.support.links import RecordingLink
from tests.support.memory_stream import MemoryStream

pytestmark = pytest.mark.timeout(10)

PROTOCOLS = {JSON_PROTOCOL.name: JSON_PROTOCOL, MESSAGEPACK_PROTOCOL.name: MESSAGEPACK_PROTOCOL}
USER = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
ALERTS = group_subject(catalog.ALERTS)
ADMINS = group_subject(catalog.ADMINS)
BUFFER_BYTES = 100_000
DISCONNECT_TIMEOUT_SECONDS = 15.0
CHECKPOINT_INTERVAL_SECONDS = 5.0
REFRESH_INTERVAL_SECONDS = 30.0
WAIT_SECONDS = 3.0


class Clock:
    """A clock the test moves by hand (for ResumableConnections' timers)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def alert(number: int) -> bytes:
    return encode_event(catalog.SYSTEM_ALERT, {"n": number})


def numbered(target: str, number: int) -> bytes:
    return encode_event(target, {"n": number})


class Replica:
    """One gateway replica's hub over the shared stream and KV."""

    def __init__(
        self,
        name: str,
        stream: MemoryStream,
        store: MemoryKeyValueStore,
        clock: Clock,
        *,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self.name = name
        self.metrics = GatewayMetrics()
        self.feed = stream.feed()
        self.router = FanoutRouter(feed=self.feed, protocols=PROTOCOLS, metrics=self.metrics)
        self.cluster_presence = cluster_presence(name, self.metrics)
        self.log_group_changes = 0
        self.resumables = ResumableConnections(
            router=self.router,
            feed=self.feed,
            protocols=PROTOCOLS,
            replica=name,
            metrics=self.metrics,
            checkpoint_interval_seconds=CHECKPOINT_INTERVAL_SECONDS,
            refresh_interval_seconds=REFRESH_INTERVAL_SECONDS,
            disconnect_timeout_seconds=DISCONNECT_TIMEOUT_SECONDS,
            buffer_bytes=buffer_bytes,
            groups_changed=self._log_groups_changed,
            clock=clock,
            wall_clock=clock,
        )
        self.resumables.attach_store(store)
        self.registry = ConnectionRegistry()
        presence = ReplicaPresence(replica_id=name, registry=self.registry, interval_seconds=2.0)
        memberships = Memberships(router=self.router, resumables=self.resumables)
        hub = AdminHub(
            memberships=memberships,
            snapshots=KvSnapshotReader(),
            presence=presence,
            cluster_presence=self.cluster_presence,
            alerts=memory_shared_alerts(InMemoryBroker(), self.metrics),
            history=SnapshotHistory(max_points=100, metrics=self.metrics),
        )
        self.host = HubHost(hub=hub, registry=self.registry, metrics=self.metrics, max_parallel_invocations=1)

    def _log_groups_changed(self) -> None:
        self.log_group_changes += 1
        self.cluster_presence.groups_changed()

    def session_for(self, client: Client, connection: ServerConnection) -> tuple[HubSession, RecordingLink]:
        link = RecordingLink()
        link.bind(connection)
        session = HubSession(
            connection=connection,
            connection_id=f"id-{client.key}",
            connection_token=client.key,
            principal=Principal(
                user_id=client.user_id, name="Alice", roles=client.roles, expires_at=time.time() + 3600
            ),
            client_ip="192.0.2.1",
            transport="websockets",
            link=link,
            token_leeway_seconds=30.0,
        )
        self.host.add(session)
        return session, link

    async def connect(self, client: Client) -> HubSession:
        """A new connection with stateful reconnect: handshake version 2, then the client's Ping."""
        connection = ServerConnection(
            limits=ConnectionLimits(), now=time.monotonic(), transfer_formats=("Text", "Binary"), stateful_allowed=True
        )
        session, link = self.session_for(client, connection)
        await self.host.receive(session, b'{"protocol":"%s","version":2}\x1e' % client.protocol.name.encode())
        assert link.take_output() == HANDSHAKE_OK, "only the handshake reply goes out before the client's Ping"
        client.use(self, session, link, resumed=False)
        await client.send(client.protocol.encode(Ping()))
        await client.until(lambda: client.events(catalog.CONNECTION_ESTABLISHED) != [])
        return session

    async def take_over(self, client: Client) -> tuple[HubSession, Resumable]:
        """The first half of a resume: the client's new socket lands here, the record is taken over."""
        found = await self.resumables.lookup(client.key)
        assert found is not None, "the connection has no record"
        record, revision = found
        connection = ServerConnection.resumed(
            protocol=PROTOCOLS[record.protocol],
            limits=ConnectionLimits(),
            now=time.monotonic(),
            next_message_id=record.checkpoint.sent + 1,
            latest_processed=record.checkpoint.inbound,
        )
        session, link = self.session_for(client, connection)
        try:
            state = await self.resumables.take_over(session, record, revision)
        except BaseException:
            await self.host.end(session)
            raise
        client.use(self, session, link, resumed=True)
        return session, state

    async def finish_resume(self, client: Client, session: HubSession, state: Resumable) -> int:
        """The second half: replay, then live; the client's Sequence and resent messages are read only
        now (the transport reads the socket once the replay is done). How many messages were replayed."""
        try:
            replayed = await self.resumables.replay(session, state)
        except BaseException:
            await self.host.end(session)
            raise
        assert session.connection.received is not None
        session.connection.received.resume_after(state.log.inbound)
        self.host.adopt(session)
        await client.resend()
        return replayed

    async def resume(self, client: Client) -> int:
        session, state = await self.take_over(client)
        return await self.finish_resume(client, session, state)

    def record_kinds(self, client: Client, stream: MemoryStream) -> list[RecordKind]:
        return [decode_record(message.payload).kind for message in stream.messages(connection_subject(client.key))]


class Client:
    """The JS client's side of one stateful connection (see the module docstring)."""

    def __init__(
        self,
        key: str,
        *,
        user_id: str | None = USER,
        roles: frozenset[str] = frozenset({"Admin"}),
        protocol: HubProtocol = JSON_PROTOCOL,
    ) -> None:
        self.key = key
        self.protocol = protocol
        self.user_id = user_id
        self.roles = roles
        self.replica: Replica | None = None
        self.session: HubSession | None = None
        self.link: RecordingLink | None = None
        # Receiving: the numbering of what the server sends, and what reached the application.
        self.next_expected = 1
        self.latest = 0
        self.repeats = 0
        self.received: list[HubMessage] = []
        self.server_acked = 0
        self.acked = 0
        self.closes: list[Close] = []
        self.first_after_resume: list[HubMessage] = []
        self._awaiting_sequence = False
        # Sending: what it numbered and keeps until the server acknowledges it.
        self.sent = 0
        self.unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        self._ids = itertools.count(1)

    def use(self, replica: Replica, session: HubSession, link: RecordingLink, *, resumed: bool) -> None:
        self.replica, self.session, self.link = replica, session, link
        self._awaiting_sequence = resumed

    # -- receiving ----------------------------------------------------------------------------

    def read(self) -> None:
        assert self.link is not None
        data = self.link.take_output()
        for message in self.protocol.new_reader(max_message_bytes=None).feed(data):
            if self._awaiting_sequence:  # the JS client ignores everything until the Sequence
                self.first_after_resume.append(message)
                if not isinstance(message, Sequence):
                    continue
                self._awaiting_sequence = False
            self._take(message)

    def _take(self, message: HubMessage) -> None:
        match message:
            case Sequence(sequence_id=sequence_id):
                assert sequence_id <= self.next_expected, "Sequence ID greater than amount of messages we've received."
                self.next_expected = sequence_id
            case Ack(sequence_id=sequence_id):
                self.server_acked = max(self.server_acked, sequence_id)
                while self.unacked and self.unacked[0][0] <= sequence_id:
                    self.unacked.popleft()
            case Close():
                self.closes.append(message)
            case _ if is_trackable(message):
                number = self.next_expected
                self.next_expected += 1
                if number <= self.latest:
                    self.repeats += 1
                    return
                self.latest = number
                self.received.append(message)

    def events(self, target: str) -> list[Any]:
        return [
            message.arguments[0]
            for message in self.received
            if isinstance(message, Invocation) and message.target == target
        ]

    @property
    def alerts(self) -> list[int]:
        return [event["n"] for event in self.events(catalog.SYSTEM_ALERT)]

    def completion(self, invocation_id: str) -> Completion | None:
        for message in self.received:
            if isinstance(message, Completion) and message.invocation_id == invocation_id:
                return message
        return None

    async def until(self, predicate: Callable[[], bool], *, seconds: float = WAIT_SECONDS) -> None:
        """Read whatever the server writes until ``predicate`` holds."""
        assert self.link is not None
        async with asyncio.timeout(seconds):
            while True:
                self.read()
                if predicate():
                    return
                await self.link.changed()

    # -- sending ------------------------------------------------------------------------------

    async def send(self, frame: bytes) -> None:
        assert self.replica is not None and self.session is not None
        for message in self.protocol.new_reader(max_message_bytes=None).feed(frame):
            if is_trackable(message):
                self.sent += 1
                self.unacked.append((self.sent, frame))
        await self.replica.host.receive(self.session, frame)

    async def ack(self) -> None:
        """Acknowledge everything received so far."""
        self.read()
        self.acked = self.latest
        await self.send(self.protocol.encode(Ack(self.latest)))

    async def invoke(self, target: str, *arguments: Any) -> Completion:
        invocation_id = str(next(self._ids))
        await self.send(self.protocol.encode(Invocation(target, arguments, invocation_id)))
        await self.until(lambda: self.completion(invocation_id) is not None)
        completion = self.completion(invocation_id)
        assert completion is not None
        return completion

    async def resend(self) -> None:
        """On a resumed socket: Sequence with its oldest unacknowledged number, then those messages."""
        assert self.replica is not None and self.session is not None
        first = self.unacked[0][0] if self.unacked else self.sent + 1
        frames = self.protocol.encode(Sequence(first)) + b"".join(frame for _, frame in self.unacked)
        await self.replica.host.receive(self.session, frames)


class Cluster:
    """The shared stream and KV, a clock, and replicas made on demand."""

    def __init__(self) -> None:
        self.stream = MemoryStream()
        self.store = MemoryKeyValueStore()
        self.clock = Clock()
        self.replicas: list[Replica] = []

    def replica(self, name: str, **options: Any) -> Replica:
        replica = Replica(name, self.stream, self.store, self.clock, **options)
        self.replicas.append(replica)
        return replica

    async def publish(self, subject: str, *payloads: bytes) -> None:
        for payload in payloads:
            await self.stream.publish(subject, payload)

    async def settled(self) -> None:
        """Every record queued is stored and every stored message delivered, on every replica."""
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                busy = [
                    session.resumable.outbox_task
                    for replica in self.replicas
                    for session in replica.registry
                    if session.resumable is not None and session.resumable.outbox_task is not None
                ]
                if not busy:
                    break
                await asyncio.wait(busy)
            for replica in self.replicas:
                await replica.feed.settled()

    async def record(self, client: Client) -> tuple[ConnectionRecord, int]:
        found = await self.store.entry(client.key)
        assert found is not None
        return ConnectionRecord.decode(found[0]), found[1]

    async def drop(self, client: Client) -> None:
        """The client's socket dies (no close handshake): the transport ends the session."""
        assert client.replica is not None and client.session is not None
        await client.replica.host.end(client.session)
        client.session = None

    async def close(self) -> None:
        for replica in self.replicas:
            for session in replica.registry.snapshot():
                session.connection.mark_closed()
                await replica.host.end(session)
        await self.settled()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    running = Cluster()
    yield running
    await running.close()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resumable_module, "APPEND_RETRY_DELAYS_SECONDS", (0.0, 0.0, 0.0))


def counter(replica: Replica, name: str, **labels: str) -> float:
    value = replica.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# -- a new resumable connection -----------------------------------------------------------------------


async def test_a_stateful_handshake_makes_a_resumable_connection(cluster: Cluster) -> None:
    a = cluster.replica("a")
    await cluster.publish(ALL_SUBJECT, numbered("Before", 0))
    await cluster.settled()
    before = cluster.stream.last_position
    client = Client("c1")
    session = await a.connect(client)
    assert session.resumable is not None and session.connection.stateful
    record, _ = await cluster.record(client)
    assert (record.owner, record.epoch, record.attached, record.protocol, record.user_id) == (
        "a",
        1,
        True,
        "json",
        USER,
    )
    assert record.checkpoint == Checkpoint(position=before, sent=0, groups=(), inbound=0, started=False)
    [start, greeting] = cluster.stream.messages(connection_subject("c1"))
    assert decode_record(start.payload).fields == {"groups": [catalog.ADMINS]}
    assert decode_record(greeting.payload).kind is RecordKind.MESSAGE
    assert [message.target for message in client.received if isinstance(message, Invocation)] == [
        catalog.CONNECTION_ESTABLISHED
    ]
    assert client.latest == 1
    assert counter(a, "realtime_resumable_connections") == 1


async def test_broadcasts_reach_it_through_all_its_user_and_its_groups_numbered_in_order(cluster: Cluster) -> None:
    a = cluster.replica("a")
    client = Client("c1")
    await a.connect(client)
    await cluster.publish(ALL_SUBJECT, numbered("ToAll", 1))
    await cluster.publish(user_subject(USER), numbered("ToUser", 2))
    await cluster.publish(user_subject("someone-else"), numbered("ToOtherUser", 3))
    await cluster.publish(ADMINS, numbered("ToAdmins", 4))
    await cluster.publish(ALERTS, numbered("ToAlerts", 5))  # not joined
    await cluster.publish(ALL_SUBJECT, numbered("ToAll", 6))
    await client.until(lambda: len(client.events("ToAll")) == 2)
    targets = [message.target for message in client.received if isinstance(message, Invocation)]
    assert targets == [catalog.CONNECTION_ESTABLISHED, "ToAll", "ToUser", "ToAdmins", "ToAll"]
    assert client.latest == 5 and client.repeats == 0


async def test_join_and_leave_are_stored_before_their_answer(cluster: Cluster) -> None:
    a = cluster.replica("a")
    client = Client("c1")
    await a.connect(client)
    assert (await client.invoke("SubscribeToAlerts")).error is None
    assert a.record_kinds(client, cluster.stream)[-2:] == [RecordKind.JOIN, RecordKind.MESSAGE]
    await cluster.publish(ALERTS, alert(1))
    await client.until(lambda: client.alerts == [1])
    assert (await client.invoke("UnsubscribeFromAlerts")).error is None
    assert a.record_kinds(client, cluster.stream)[-2:] == [RecordKind.LEAVE, RecordKind.MESSAGE]
    await cluster.settled()
    assert a.log_group_changes == 3, "the start (admins), the join and the leave each told presence"
    await cluster.publish(ALERTS, alert(2))
    await cluster.publish(ALL_SUBJECT, numbered("Marker", 0))
    await client.until(lambda: client.events("Marker") != [])
    assert client.alerts == [1]


# -- resuming on another replica ------------------------------------------------------------------------


async def subscribed_with_alerts(cluster: Cluster, replica: Replica, client: Client, count: int) -> None:
    await replica.connect(client)
    await client.invoke("SubscribeToAlerts")
    await cluster.publish(ALERTS, *(alert(n) for n in range(count)))
    await client.until(lambda: len(client.alerts) == count)


@pytest.mark.parametrize("protocol", [JSON_PROTOCOL, MESSAGEPACK_PROTOCOL], ids=lambda protocol: protocol.name)
async def test_a_resume_on_another_replica_sends_exactly_what_was_not_acknowledged(
    cluster: Cluster, protocol: HubProtocol
) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1", protocol=protocol)
    await subscribed_with_alerts(cluster, a, client, 5)  # greeting 1, answer 2, alerts 0-4 as 3-7
    await client.ack()
    assert client.session is not None
    client.session.tick(time.monotonic())  # the server's timer takes the Ack
    await cluster.publish(ALERTS, *(alert(n) for n in range(5, 10)))  # 8-12: never read, lost with the socket
    await cluster.settled()
    await cluster.drop(client)
    record, _ = await cluster.record(client)
    assert (record.attached, record.checkpoint.sent, record.checkpoint.groups) == (
        False,
        7,
        (catalog.ADMINS, catalog.ALERTS),
    )

    replayed = await b.resume(client)
    await cluster.publish(ALERTS, alert(10))
    await client.until(lambda: client.alerts[-1:] == [10])
    assert client.first_after_resume[0] == Sequence(8)
    assert replayed == 5
    assert client.alerts == list(range(11))
    assert client.repeats == 0
    assert counter(b, "realtime_replayed_messages_total") == 5
    assert counter(b, "realtime_resumable_connections") == 1 and counter(a, "realtime_resumable_connections") == 0
    record, _ = await cluster.record(client)
    assert (record.owner, record.epoch, record.attached, record.protocol) == ("b", 2, True, protocol.name)


async def present(replica: Replica) -> dict[str, list[str]]:
    """Group -> the user ids the replica's presence lists in it (its own users: no KV here)."""
    groups = (await replica.cluster_presence.view()).to_wire(timestamp="t")["groups"]
    return {group: [user["userId"] for user in value["users"]] for group, value in groups.items() if value["users"]}


async def test_presence_leaves_with_the_socket_and_comes_back_with_the_groups_where_it_resumes(
    cluster: Cluster,
) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await subscribed_with_alerts(cluster, a, client, 1)
    assert await present(a) == {catalog.ALERTS: [client.user_id], catalog.ADMINS: [client.user_id]}
    await cluster.drop(client)
    assert await present(a) == {}, "a detached connection is not present"
    await b.resume(client)
    assert await present(b) == {catalog.ALERTS: [client.user_id], catalog.ADMINS: [client.user_id]}


async def test_repeats_the_client_already_had_are_dropped_by_its_numbering(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await subscribed_with_alerts(cluster, a, client, 6)
    await client.ack()  # the server never takes this Ack (no tick): its checkpoint is older
    await cluster.drop(client)
    record, _ = await cluster.record(client)
    had = client.latest
    assert record.checkpoint.sent < had
    await b.resume(client)
    await cluster.publish(ALERTS, alert(6))
    await client.until(lambda: client.alerts[-1:] == [6])
    assert client.first_after_resume[0] == Sequence(record.checkpoint.sent + 1)
    assert client.alerts == list(range(7))
    assert client.repeats == had - record.checkpoint.sent


async def test_live_messages_published_during_the_replay_follow_it_once(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await subscribed_with_alerts(cluster, a, client, 3)
    await cluster.publish(ALERTS, *(alert(n) for n in range(3, 8)))
    await cluster.settled()
    await cluster.drop(client)
    cluster.stream.hold_replays()
    session, state = await b.take_over(client)
    resuming = asyncio.create_task(b.finish_resume(client, session, state))
    await cluster.stream.replay_waiting()
    await cluster.publish(ALERTS, *(alert(n) for n in range(8, 12)))  # after the replay's end
    await cluster.publish(ALL_SUBJECT, numbered("ToAll", 0))
    await cluster.settled()  # routed on b while the replay is stopped: only its catch-up has them
    cluster.stream.release_replays()
    await resuming
    await cluster.publish(ALERTS, alert(12))
    await client.until(lambda: client.alerts[-1:] == [12])
    assert client.alerts == list(range(13))
    assert client.events("ToAll") == [{"n": 0}]


async def test_two_replicas_taking_over_the_same_revision_conflict(cluster: Cluster) -> None:
    a, b, c = cluster.replica("a"), cluster.replica("b"), cluster.replica("c")
    client = Client("c1")
    await a.connect(client)
    await cluster.drop(client)
    found = await b.resumables.lookup("c1")
    assert found is not None
    record, revision = found
    await b.take_over(client)
    other = Client("c1")
    connection = ServerConnection.resumed(
        protocol=JSON_PROTOCOL, limits=ConnectionLimits(), now=0.0, next_message_id=1, latest_processed=0
    )
    session, _ = c.session_for(other, connection)
    with pytest.raises(ResumeRefused) as refused:
        await c.resumables.take_over(session, record, revision)
    assert refused.value.outcome == "conflict"
    assert session.resumable is None
    await c.host.end(session)
    record, _ = await cluster.record(client)
    assert (record.owner, record.epoch) == ("b", 2)


async def test_a_stream_trimmed_past_the_checkpoint_refuses_the_resume_as_a_gap(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await subscribed_with_alerts(cluster, a, client, 3)
    await cluster.drop(client)
    record, _ = await cluster.record(client)
    cluster.stream.trim(before=record.checkpoint.position + 2)
    session, state = await b.take_over(client)
    with pytest.raises(ResumeRefused) as refused:
        await b.finish_resume(client, session, state)
    assert refused.value.outcome == "gap"
    assert client.alerts == [0, 1, 2]


@pytest.mark.parametrize(("limit", "value"), [("MAX_CATCH_UP_MESSAGES", 3), ("MAX_CATCH_UP_BYTES", 150)])
async def test_live_traffic_outrunning_the_replay_refuses_the_resume(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, limit: str, value: int
) -> None:
    monkeypatch.setattr(resumable_module, limit, value)
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await subscribed_with_alerts(cluster, a, client, 2)
    await cluster.drop(client)
    cluster.stream.hold_replays()
    session, state = await b.take_over(client)
    resuming = asyncio.create_task(b.finish_resume(client, session, state))
    await cluster.stream.replay_waiting()
    await cluster.publish(ALL_SUBJECT, *(numbered("ToAll", n) for n in range(4)))
    await cluster.settled()
    cluster.stream.release_replays()
    with pytest.raises(ResumeRefused) as refused:
        await resuming
    assert refused.value.outcome == "too_far_behind"


# -- the unacknowledged buffer: pause, catch up as Acks come in -------------------------------------------------

SMALL_BUFFER_BYTES = 400


async def test_a_fast_publisher_pauses_the_connection_and_acks_let_it_catch_up(cluster: Cluster) -> None:
    a = cluster.replica("a", buffer_bytes=SMALL_BUFFER_BYTES)
    client = Client("c1")
    state = await paused(cluster, a, client, 20)
    cluster.stream.release_replays()
    await acknowledged_up_to(client, 19)
    assert not state.paused and state.live
    await cluster.publish(ALL_SUBJECT, *(alert(n) for n in range(20, 40)))
    await cluster.settled()
    assert state.paused
    await acknowledged_up_to(client, 39)
    assert client.alerts == list(range(40))
    assert client.repeats == 0
    assert counter(a, "realtime_resumable_paused_total") == 2
    assert not state.paused


async def acknowledged_up_to(client: Client, last: int) -> None:
    """Read and acknowledge until alert ``last`` has arrived and the catch-up under way is over."""
    assert client.session is not None and client.session.resumable is not None
    catch_up = client.session.resumable.catch_up
    async with asyncio.timeout(WAIT_SECONDS):
        while client.alerts[-1:] != [last]:
            await client.until(lambda: client.latest > client.acked)
            await client.ack()
        if catch_up is not None:
            await catch_up


async def paused(cluster: Cluster, replica: Replica, client: Client, count: int) -> Resumable:
    """Connect, then publish ``count`` alerts that the client reads and does not acknowledge: the
    connection pauses once it has sent more than its buffer. Returns with its catch-up stopped before
    the first message it would send (the stream's replays are held until ``release_replays``)."""
    await replica.connect(client)
    await client.ack()
    cluster.stream.hold_replays()
    await cluster.publish(ALL_SUBJECT, *(alert(n) for n in range(count)))
    await cluster.stream.replay_waiting()
    await cluster.settled()
    assert client.session is not None and client.session.resumable is not None
    state = client.session.resumable
    assert state.paused
    client.read()
    assert 0 < len(client.alerts) < count
    return state


async def test_a_paused_connection_without_acks_is_dropped_after_the_ack_wait(cluster: Cluster) -> None:
    a, b = cluster.replica("a", buffer_bytes=SMALL_BUFFER_BYTES), cluster.replica("b")
    client = Client("c1")
    state = await paused(cluster, a, client, 20)
    assert client.session is not None
    connection = client.session.connection
    had = len(client.alerts)
    cluster.stream.release_replays()
    await client.until(lambda: len(client.alerts) > had)  # the catch-up sent one and waits for an Ack
    cluster.clock.now += resumable_module.ACK_WAIT_SECONDS + 1
    await client.until(lambda: connection.must_abort)
    assert connection.close_reason is CloseReason.SLOW_CONSUMER
    assert client.closes == []  # dropped: the client resumes
    assert counter(a, "realtime_resumable_failures_total", reason="catch_up_unacknowledged") == 1
    assert state.catch_up is None and not state.paused
    received = list(client.alerts)
    assert received == list(range(len(received))) and len(received) < 20
    await cluster.drop(client)
    await b.resume(client)
    await client.until(lambda: client.alerts[-1:] == [19])
    assert client.alerts == list(range(20))


async def test_a_socket_lost_during_the_catch_up_resumes_after_the_last_ack(cluster: Cluster) -> None:
    """Regression: a detach while the catch-up was behind the routed position, with everything sent
    acknowledged, moved the checkpoint up to the routed position: the rest was never sent."""
    a, b = cluster.replica("a", buffer_bytes=SMALL_BUFFER_BYTES), cluster.replica("b")
    client = Client("c1")
    await paused(cluster, a, client, 20)  # the catch-up has not sent anything yet
    await client.ack()
    assert client.session is not None
    client.session.tick(time.monotonic())  # the log takes the Ack: nothing unacknowledged
    received = list(client.alerts)
    await cluster.drop(client)
    cluster.stream.release_replays()
    await cluster.settled()
    record, _ = await cluster.record(client)
    assert record.checkpoint.sent == client.latest
    await b.resume(client)
    await client.until(lambda: client.alerts[-1:] == [19])
    assert client.alerts == list(range(20)) and len(received) < 20


async def test_a_catch_up_ahead_of_the_consumer_sends_nothing_twice(cluster: Cluster) -> None:
    """Regression: a catch-up reads the stream to its end; what the replica's consumer delivered after
    it went live again was sent a second time, with new numbers."""
    a = cluster.replica("a", buffer_bytes=SMALL_BUFFER_BYTES)
    client = Client("c1")
    await a.connect(client)
    await client.ack()
    a.feed.hold(after=cluster.stream.last_position + 10)  # the consumer falls behind at the tenth alert
    await cluster.publish(ALL_SUBJECT, *(alert(n) for n in range(20)))
    await cluster.settled()
    assert client.session is not None and client.session.resumable is not None
    assert client.session.resumable.paused
    await acknowledged_up_to(client, 19)
    a.feed.release()
    await cluster.publish(ALL_SUBJECT, alert(20))
    await acknowledged_up_to(client, 20)
    assert client.alerts == list(range(21))


async def test_a_resume_on_a_replica_whose_consumer_lags_sends_nothing_twice(cluster: Cluster) -> None:
    """Regression: the replay reads the stream to its end; what the replica's consumer delivered after
    the resume went live was sent a second time, with new numbers."""
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await subscribed_with_alerts(cluster, a, client, 3)
    await cluster.drop(client)
    b.feed.hold()
    await cluster.publish(ALERTS, *(alert(n) for n in range(3, 6)))
    await b.resume(client)
    await client.until(lambda: client.alerts[-1:] == [5])
    b.feed.release()
    await cluster.publish(ALERTS, alert(6))
    await client.until(lambda: client.alerts[-1:] == [6])
    assert client.alerts == list(range(7))


# -- the client's messages ------------------------------------------------------------------------------


async def test_a_request_resent_after_a_resume_is_not_handled_twice(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await a.connect(client)
    assert (await client.invoke("SendTestMessage", "once")).error is None
    assert client.unacked, "the server has not acknowledged the request yet"
    await cluster.drop(client)
    await b.resume(client)  # the client resends the request behind its Sequence
    await cluster.publish(ALL_SUBJECT, numbered("Marker", 0))
    await client.until(lambda: client.events("Marker") != [])
    completions = [message for message in client.received if isinstance(message, Completion)]
    assert len(completions) == 1
    assert counter(a, "realtime_hub_invocations_total", method="SendTestMessage", outcome="ok") == 1
    assert counter(b, "realtime_hub_invocations_total", method="SendTestMessage", outcome="ok") == 0


async def test_the_server_acknowledges_stored_answers_also_after_a_resume(cluster: Cluster) -> None:
    """Regression: after a resume whose replay brought answers newer than the checkpoint, the
    server's count of stored client messages never moved again, so the client got no more Acks."""
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await a.connect(client)
    await client.invoke("SendTestMessage", "first")
    assert client.session is not None
    client.session.tick(time.monotonic())
    await client.until(lambda: client.server_acked == 1)
    await cluster.drop(client)  # the answer is unacknowledged: the checkpoint is before it
    record, _ = await cluster.record(client)
    assert record.checkpoint.inbound == 0
    await b.resume(client)
    await client.invoke("SendTestMessage", "second")
    client.session.tick(time.monotonic())
    await client.until(lambda: client.server_acked == 2)
    assert not client.unacked


async def test_invalid_records_are_counted_and_skipped_live_and_in_a_replay(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await a.connect(client)
    await cluster.publish(connection_subject("c1"), b"junk")
    await cluster.publish(ALL_SUBJECT, numbered("ToAll", 1))
    await client.until(lambda: client.events("ToAll") == [{"n": 1}])
    assert counter(a, "realtime_invalid_broker_messages_total", kind="bad_connection_record") == 1
    await cluster.drop(client)
    await b.resume(client)
    await cluster.publish(ALL_SUBJECT, numbered("ToAll", 2))
    await client.until(lambda: client.events("ToAll")[-1:] == [{"n": 2}])
    assert client.events("ToAll") == [{"n": 1}, {"n": 2}]
    assert counter(b, "realtime_invalid_broker_messages_total", kind="bad_connection_record") == 1


async def test_an_invalid_kv_record_is_no_connection(cluster: Cluster) -> None:
    a = cluster.replica("a")
    await cluster.store.put("c1", b'{"owner": "a"}')
    assert await a.resumables.lookup("c1") is None
    assert await a.resumables.lookup("unknown") is None
    assert counter(a, "realtime_invalid_broker_messages_total", kind="bad_connection_record") == 1


# -- losing, ending and expiring --------------------------------------------------------------------------------


async def test_a_takeover_with_a_higher_epoch_makes_the_old_replica_drop_its_copy(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    old = await a.connect(client)
    old_link = client.link
    state = old.resumable
    assert state is not None and old_link is not None
    # The client's socket to a is half open: it resumes on b, whose takeover record reaches a.
    await b.resume(client)
    await cluster.settled()
    _, revision = await cluster.record(client)
    assert state.lost
    assert old.connection.should_close
    assert JSON_PROTOCOL.encode(Close(allow_reconnect=True)) in old_link.take_output()
    assert counter(a, "realtime_resumable_failures_total", reason="taken_over") == 1
    await a.host.end(old)
    record, after = await cluster.record(client)
    assert (record.owner, record.epoch, record.attached) == ("b", 2, True)
    assert after == revision, "the old copy leaves the record alone"
    await cluster.publish(ALL_SUBJECT, numbered("ToAll", 1))
    await client.until(lambda: client.events("ToAll") == [{"n": 1}])


async def test_a_client_close_ends_the_connection_for_good(cluster: Cluster) -> None:
    a = cluster.replica("a")
    client = Client("c1")
    await a.connect(client)
    await client.send(JSON_PROTOCOL.encode(Close()))
    assert client.session is not None
    await a.host.end(client.session)
    await cluster.settled()
    assert await cluster.store.entry("c1") is None
    assert a.record_kinds(client, cluster.stream)[-1] is RecordKind.END
    assert await a.resumables.lookup("c1") is None


async def test_a_detached_connection_expires_and_its_record_goes(cluster: Cluster) -> None:
    a = cluster.replica("a")
    client = Client("c1")
    await a.connect(client)
    await cluster.drop(client)
    record, _ = await cluster.record(client)
    assert (record.attached, record.detached_at) == (False, cluster.clock.now)
    assert a.resumables.resumable_now(record)
    await a.resumables.end_expired()
    assert await cluster.store.entry("c1") is not None  # not yet
    cluster.clock.now += DISCONNECT_TIMEOUT_SECONDS + 1
    assert not a.resumables.resumable_now(record)
    await a.resumables.end_expired()
    assert await cluster.store.entry("c1") is None
    assert counter(a, "realtime_resumable_expired_total") == 1


async def test_expiry_leaves_a_record_another_replica_changed(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    client = Client("c1")
    await a.connect(client)
    await cluster.drop(client)
    await b.resume(client)
    cluster.clock.now += DISCONNECT_TIMEOUT_SECONDS + 1
    await a.resumables.end_expired()
    record, _ = await cluster.record(client)
    assert record.owner == "b"
    assert counter(a, "realtime_resumable_expired_total") == 0


# -- checkpoints --------------------------------------------------------------------------------------------------


async def test_checkpoints_follow_the_clients_acks(cluster: Cluster) -> None:
    a = cluster.replica("a")
    client = Client("c1")
    await subscribed_with_alerts(cluster, a, client, 3)  # numbers 3-5
    _, revision = await cluster.record(client)
    await client.ack()
    assert client.session is not None
    client.session.tick(time.monotonic())
    await a.resumables.write_checkpoints()
    assert (await cluster.record(client))[1] == revision, "not before the checkpoint interval"
    cluster.clock.now += CHECKPOINT_INTERVAL_SECONDS
    await a.resumables.write_checkpoints()
    record, revision = await cluster.record(client)
    assert record.checkpoint == Checkpoint(
        position=cluster.stream.last_position, sent=5, groups=(catalog.ADMINS, catalog.ALERTS), inbound=1
    )
    cluster.clock.now += CHECKPOINT_INTERVAL_SECONDS
    await a.resumables.write_checkpoints()
    assert (await cluster.record(client))[1] == revision, "unchanged: not written again"
    cluster.clock.now += REFRESH_INTERVAL_SECONDS
    await a.resumables.write_checkpoints()
    assert (await cluster.record(client))[1] > revision, "refreshed"
    assert counter(a, "realtime_resumable_checkpoints_total") == 2


async def test_a_checkpoint_write_that_finds_the_record_changed_drops_the_connection(cluster: Cluster) -> None:
    a = cluster.replica("a")
    client = Client("c1")
    session = await a.connect(client)
    found = await cluster.store.entry("c1")
    assert found is not None
    await cluster.store.put("c1", found[0])  # someone else wrote it (another replica took it over)
    cluster.clock.now += REFRESH_INTERVAL_SECONDS
    await a.resumables.write_checkpoints()
    assert session.resumable is not None and session.resumable.lost
    assert session.connection.should_close


# -- when the stream does not take records -------------------------------------------------------------------


async def test_appends_are_retried(cluster: Cluster, quick_retries: None) -> None:
    a = cluster.replica("a")
    client = Client("c1")
    await a.connect(client)
    cluster.stream.fail_appends(3)  # the fourth try is the last
    assert (await client.invoke("SendTestMessage", "retried")).error is None
    assert client.session is not None and not client.session.connection.should_close


async def test_a_stream_that_does_not_take_records_closes_the_connection(cluster: Cluster, quick_retries: None) -> None:
    a = cluster.replica("a")
    client = Client("c1")
    session = await a.connect(client)
    cluster.stream.unavailable = True
    await client.send(JSON_PROTOCOL.encode(Invocation("SendTestMessage", ("lost",), "1")))
    await client.until(lambda: client.closes != [])
    assert client.closes == [Close(error=CLOSED_WITH_ERROR, allow_reconnect=True)]
    assert session.resumable is not None and session.resumable.lost
    assert counter(a, "realtime_resumable_failures_total", reason="records_not_stored") == 1


async def test_too_many_records_waiting_close_the_connection(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resumable_module, "MAX_OUTBOX_RECORDS", 3)
    a = cluster.replica("a")
    client = Client("c1")
    session = await a.connect(client)
    state = session.resumable
    assert state is not None
    for number in range(4):  # queued in one go: the outbox task has not run yet
        session.send("Queued", number)
    assert state.lost
    assert session.connection.should_close
    with pytest.raises(resumable_module.BrokerUnavailable):
        await a.resumables.join(session, state, catalog.ALERTS)
