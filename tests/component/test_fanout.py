"""FanoutRouter with the in-memory broker: reference-counted subscriptions, rollback, encode-once delivery."""

from __future__ import annotations

import asyncio
import random

import pytest

from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.envelope import encode_event
from broker_bridge.feed_subjects import SubjectFeed
from broker_bridge.interface import BrokerUnavailable, MessageCallback, Subscription
from gateway.hub.fanout import FanoutRouter
from gateway.hub.outbound import SharedMessage
from gateway.metrics import GatewayMetrics
from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, HubMessage, HubProtocol, Invocation, MessageReader
from gateway.signalr.protocol import TransferFormat
from gateway.signalr.reader import RecordReader
from gateway.transport.ws_frames import binary_frame, text_frame

GROUP = "alerts"
SUBJECT = "realtime.group.alerts"


class CountingProtocol:
    """Wraps a real hub protocol and counts encode calls."""

    def __init__(self, inner: HubProtocol) -> None:
        self._inner = inner
        self.encoded: list[HubMessage] = []

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def transfer_format(self) -> TransferFormat:
        return self._inner.transfer_format

    @property
    def max_version(self) -> int:
        return self._inner.max_version

    def encode(self, message: HubMessage) -> bytes:
        self.encoded.append(message)
        return self._inner.encode(message)

    def new_reader(self, *, max_message_bytes: int | None) -> MessageReader:
        return self._inner.new_reader(max_message_bytes=max_message_bytes)

    def record_reader(self, *, max_message_bytes: int | None) -> RecordReader:
        return self._inner.record_reader(max_message_bytes=max_message_bytes)

    def decode(self, record: bytes, /, *, max_depth: int | None) -> HubMessage | None:
        return self._inner.decode(record, max_depth=max_depth)


class RecordingMember:
    def __init__(self, protocol_name: str = "json") -> None:
        self.protocol_name = protocol_name
        self.messages: list[SharedMessage] = []

    @property
    def frames(self) -> list[bytes]:
        return [message.payload for message in self.messages]

    def deliver(self, message: SharedMessage, now: float, position: int) -> bool:
        self.messages.append(message)
        return True


class YieldingBroker(InMemoryBroker):
    """Yields to the event loop inside subscribe and unsubscribe, so concurrent joins really interleave."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribe_calls = 0

    async def subscribe(self, subject: str, callback: MessageCallback) -> Subscription:  # type: ignore[override]
        self.subscribe_calls += 1
        for _ in range(3):
            await asyncio.sleep(0)
        subscription = await super().subscribe(subject, callback)
        return _YieldingSubscription(subscription)


class _YieldingSubscription:
    def __init__(self, inner: Subscription) -> None:
        self._inner = inner

    async def unsubscribe(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        await self._inner.unsubscribe()


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
def json_protocol() -> CountingProtocol:
    return CountingProtocol(JSON_PROTOCOL)


@pytest.fixture
def msgpack_protocol() -> CountingProtocol:
    return CountingProtocol(MESSAGEPACK_PROTOCOL)


def make_router(
    broker: InMemoryBroker,
    metrics: GatewayMetrics,
    *protocols: CountingProtocol,
) -> FanoutRouter:
    chosen = protocols or (CountingProtocol(JSON_PROTOCOL),)
    return FanoutRouter(feed=SubjectFeed(broker), protocols={p.name: p for p in chosen}, metrics=metrics)


async def churn(
    router: FanoutRouter, name: str, member: RecordingMember, *, rounds: int, rng: random.Random, user: bool = False
) -> None:
    """Join and leave group (or user) ``name`` ``rounds`` times, yielding to the loop 0-2 times in between."""
    join, leave = (router.join_user, router.leave_user) if user else (router.join_group, router.leave_group)
    for _ in range(rounds):
        await join(name, member)
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        await leave(name, member)


async def test_first_join_subscribes_once_and_last_leave_unsubscribes(metrics: GatewayMetrics) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics)
    first, second = RecordingMember(), RecordingMember()

    await router.join_group(GROUP, first)
    assert broker.subscriber_count(SUBJECT) == 1
    assert router.subscribed_subjects == frozenset({SUBJECT})

    await router.join_group(GROUP, second)
    assert broker.subscriber_count(SUBJECT) == 1
    assert router.group_size(GROUP) == 2

    await router.leave_group(GROUP, first)
    assert broker.subscriber_count(SUBJECT) == 1
    assert not router.in_group(GROUP, first)
    assert router.in_group(GROUP, second)

    await router.leave_group(GROUP, second)
    assert broker.subscriber_count(SUBJECT) == 0
    assert router.group_size(GROUP) == 0
    assert router.subscribed_subjects == frozenset()


async def test_joining_twice_and_leaving_an_unknown_member_are_harmless(metrics: GatewayMetrics) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics)
    member = RecordingMember()
    await router.leave_group(GROUP, member)
    await router.join_group(GROUP, member)
    await router.join_group(GROUP, member)
    assert router.group_size(GROUP) == 1
    await router.leave_group(GROUP, member)
    await router.leave_group(GROUP, member)
    assert broker.subscriber_count(SUBJECT) == 0


async def test_failed_subscribe_leaves_nothing_behind(metrics: GatewayMetrics) -> None:
    broker = InMemoryBroker()
    broker.fail_subscribe = True
    router = make_router(broker, metrics)
    member = RecordingMember()

    with pytest.raises(BrokerUnavailable):
        await router.join_group(GROUP, member)

    assert not router.in_group(GROUP, member)
    assert router.group_size(GROUP) == 0
    assert router.subscribed_subjects == frozenset()
    assert broker.subscriber_count(SUBJECT) == 0

    broker.fail_subscribe = False
    await router.join_group(GROUP, member)
    assert broker.subscriber_count(SUBJECT) == 1
    assert router.group_size(GROUP) == 1


async def test_failed_subscribe_does_not_disturb_other_subjects(metrics: GatewayMetrics) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics)
    member = RecordingMember()
    await router.join_all(member)
    broker.fail_subscribe = True
    with pytest.raises(BrokerUnavailable):
        await router.join_group(GROUP, member)
    assert router.subscribed_subjects == frozenset({"realtime.all"})
    await broker.publish("realtime.all", encode_event("Hello"))
    assert len(member.frames) == 1


async def test_concurrent_joins_subscribe_exactly_once(metrics: GatewayMetrics) -> None:
    broker = YieldingBroker()
    router = make_router(broker, metrics)
    members = [RecordingMember() for _ in range(50)]
    async with asyncio.timeout(5):
        await asyncio.gather(*(router.join_group(GROUP, member) for member in members))
    assert broker.subscribe_calls == 1
    assert broker.subscriber_count(SUBJECT) == 1
    assert router.group_size(GROUP) == 50


async def test_concurrent_joins_and_leaves_leak_no_subscription(metrics: GatewayMetrics) -> None:
    broker = YieldingBroker()
    router = make_router(broker, metrics)
    members = [RecordingMember() for _ in range(40)]
    rng = random.Random(1234)

    async with asyncio.timeout(5):
        await asyncio.gather(*(churn(router, GROUP, member, rounds=5, rng=rng) for member in members))

    assert broker.subscriber_count(SUBJECT) == 0
    assert router.subscribed_subjects == frozenset()
    assert router.group_size(GROUP) == 0


async def test_concurrent_churn_with_a_staying_member_keeps_one_subscription(metrics: GatewayMetrics) -> None:
    broker = YieldingBroker()
    router = make_router(broker, metrics)
    stayer = RecordingMember()
    members = [RecordingMember() for _ in range(30)]

    async def churn(member: RecordingMember) -> None:
        for _ in range(4):
            await router.join_group(GROUP, member)
            await router.leave_group(GROUP, member)

    async with asyncio.timeout(5):
        await asyncio.gather(router.join_group(GROUP, stayer), *(churn(member) for member in members))

    assert broker.subscriber_count(SUBJECT) == 1
    assert router.group_size(GROUP) == 1
    await broker.publish(SUBJECT, encode_event("Still"))
    assert stayer.frames == [b'{"type":1,"target":"Still","arguments":[]}\x1e']


async def test_event_is_encoded_once_per_protocol_and_shared(
    metrics: GatewayMetrics, json_protocol: CountingProtocol, msgpack_protocol: CountingProtocol
) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics, json_protocol, msgpack_protocol)
    json_members = [RecordingMember("json") for _ in range(20)]
    msgpack_members = [RecordingMember("messagepack") for _ in range(7)]
    for member in [*json_members, *msgpack_members]:
        await router.join_group(GROUP, member)

    await broker.publish(SUBJECT, encode_event("SystemAlert", {"level": "critical", "message": "disk"}))

    expected = Invocation(target="SystemAlert", arguments=({"level": "critical", "message": "disk"},))
    assert json_protocol.encoded == [expected]
    assert msgpack_protocol.encoded == [expected]
    json_frame = b'{"type":1,"target":"SystemAlert","arguments":[{"level":"critical","message":"disk"}]}\x1e'
    assert all(member.frames == [json_frame] for member in json_members)
    msgpack_frame = MESSAGEPACK_PROTOCOL.encode(expected)
    assert all(member.frames == [msgpack_frame] for member in msgpack_members)
    # One shared object per protocol, not copies; a transport frames it once for everyone too.
    assert json_members[0].messages[0] is json_members[-1].messages[0]
    assert msgpack_members[0].messages[0] is msgpack_members[-1].messages[0]
    first = json_members[0].messages[0].framed(text_frame)
    assert first == text_frame(json_frame)
    assert json_members[-1].messages[0].framed(text_frame) is first
    assert msgpack_members[0].messages[0].framed(binary_frame) == binary_frame(msgpack_frame)
    delivered = metrics.registry.get_sample_value("realtime_messages_delivered_total", {"target": "SystemAlert"})
    assert delivered == 27.0


async def test_no_encoding_for_a_protocol_without_members(
    metrics: GatewayMetrics, json_protocol: CountingProtocol, msgpack_protocol: CountingProtocol
) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics, json_protocol, msgpack_protocol)
    await router.join_group(GROUP, RecordingMember("json"))
    await broker.publish(SUBJECT, encode_event("A"))
    assert len(json_protocol.encoded) == 1
    assert msgpack_protocol.encoded == []


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"not json", "not_json"),
        (b"[1,2]", "not_an_object"),
        (b'{"arguments":[]}', "bad_target"),
        (b'{"target":"A","arguments":7}', "bad_arguments"),
    ],
)
async def test_invalid_payloads_are_counted_and_not_delivered(
    metrics: GatewayMetrics, json_protocol: CountingProtocol, payload: bytes, kind: str
) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics, json_protocol)
    member = RecordingMember()
    await router.join_group(GROUP, member)

    await broker.publish(SUBJECT, payload)
    await broker.publish(SUBJECT, payload)

    assert member.frames == []
    assert json_protocol.encoded == []
    assert metrics.registry.get_sample_value("realtime_invalid_broker_messages_total", {"kind": kind}) == 2.0


async def test_invalid_payload_is_logged_once_per_kind(
    metrics: GatewayMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics)
    await router.join_group(GROUP, RecordingMember())
    for _ in range(3):
        await broker.publish(SUBJECT, b"garbage")
    warnings = [record for record in caplog.records if record.name == "gateway.hub.fanout"]
    assert len(warnings) == 1
    assert "not_json" in warnings[0].getMessage()
    assert "garbage" not in warnings[0].getMessage()


async def test_member_that_left_receives_nothing_more(metrics: GatewayMetrics) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics)
    leaving, staying = RecordingMember(), RecordingMember()
    await router.join_group(GROUP, leaving)
    await router.join_group(GROUP, staying)

    await broker.publish(SUBJECT, encode_event("First"))
    await router.leave_group(GROUP, leaving)
    await broker.publish(SUBJECT, encode_event("Second"))

    assert leaving.frames == [b'{"type":1,"target":"First","arguments":[]}\x1e']
    assert staying.frames == [
        b'{"type":1,"target":"First","arguments":[]}\x1e',
        b'{"type":1,"target":"Second","arguments":[]}\x1e',
    ]


async def test_a_subject_going_from_one_member_to_two_and_back_delivers_to_exactly_its_members(
    metrics: GatewayMetrics,
) -> None:
    """A subject's one member is held without a map of its own; a second one, and leaves, change that."""
    broker = InMemoryBroker()
    router = make_router(broker, metrics)
    first, second = RecordingMember(), RecordingMember()
    user = "user-1"
    subject = "realtime.user.user-1"

    await router.join_user(user, first)
    await router.join_user(user, first)  # harmless twice
    await broker.publish(subject, encode_event("One"))
    await router.join_user(user, second)
    await broker.publish(subject, encode_event("Two"))
    await router.leave_user(user, first)
    await broker.publish(subject, encode_event("Three"))
    assert router.reaches_user(user, second) and not router.reaches_user(user, first)
    await router.leave_user(user, first)  # harmless: it left already
    await router.leave_user(user, second)
    await broker.publish(subject, encode_event("Four"))

    assert [frame.split(b'"target":"')[1].split(b'"')[0] for frame in first.frames] == [b"One", b"Two"]
    assert [frame.split(b'"target":"')[1].split(b'"')[0] for frame in second.frames] == [b"Two", b"Three"]
    assert not router.reaches_user(user, second)
    assert router.subscribed_subjects == frozenset()


async def test_leaving_member_is_removed_before_the_unsubscribe_completes(metrics: GatewayMetrics) -> None:
    broker = YieldingBroker()
    router = make_router(broker, metrics)
    member = RecordingMember()
    await router.join_group(GROUP, member)
    leaving = asyncio.ensure_future(router.leave_group(GROUP, member))
    await asyncio.sleep(0)
    assert not router.in_group(GROUP, member)
    await broker.publish(SUBJECT, encode_event("Late"))
    async with asyncio.timeout(5):
        await leaving
    assert member.frames == []
    assert broker.subscriber_count(SUBJECT) == 0


async def test_subjects_are_independent(metrics: GatewayMetrics) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics)
    alerts, analytics = RecordingMember(), RecordingMember()
    await router.join_group(GROUP, alerts)
    await router.join_group("analytics", analytics)
    await broker.publish(SUBJECT, encode_event("Alert"))
    assert len(alerts.frames) == 1
    assert analytics.frames == []


async def test_user_subjects_share_one_wildcard_subscription(metrics: GatewayMetrics) -> None:
    broker = InMemoryBroker()
    router = make_router(broker, metrics)
    alice, alice_tab, bob = RecordingMember(), RecordingMember(), RecordingMember()
    await router.join_user("alice", alice)
    await router.join_user("alice", alice_tab)
    await router.join_user("bob", bob)
    assert router.subscribed_subjects == frozenset({"realtime.user.*"})
    assert broker.subscriber_count("realtime.user.*") == 1

    await broker.publish("realtime.user.alice", encode_event("ReceiveMessage", "for alice"))
    await broker.publish("realtime.user.carol", b"not json: nobody here reads it")
    assert (len(alice.frames), len(alice_tab.frames), len(bob.frames)) == (1, 1, 0)
    assert metrics.registry.get_sample_value("realtime_invalid_broker_messages_total", {"kind": "not_json"}) is None

    await router.leave_user("alice", alice)
    await router.leave_user("alice", alice_tab)
    assert broker.subscriber_count("realtime.user.*") == 1  # bob still needs it
    await broker.publish("realtime.user.alice", encode_event("ReceiveMessage", "gone"))
    assert len(alice.frames) == 1
    await router.leave_user("bob", bob)
    assert router.subscribed_subjects == frozenset()
    assert broker.subscriber_count("realtime.user.*") == 0


async def test_concurrent_user_churn_subscribes_once_and_leaks_nothing(metrics: GatewayMetrics) -> None:
    broker = YieldingBroker()
    router = make_router(broker, metrics)
    users = [(f"u{i}", RecordingMember()) for i in range(40)]
    rng = random.Random(99)

    async with asyncio.timeout(5):
        await asyncio.gather(*(churn(router, user, member, rounds=4, rng=rng, user=True) for user, member in users))
        await router.join_user("u0", users[0][1])
    assert router.subscribed_subjects == frozenset({"realtime.user.*"})
    assert broker.subscriber_count("realtime.user.*") == 1
    assert not any(router.reaches_user(user, member) for user, member in users[1:])
    await broker.publish("realtime.user.u0", encode_event("ReceiveMessage", "still here"))
    assert len(users[0][1].frames) == 1


async def test_a_payload_one_protocol_cannot_encode_reaches_nobody(metrics: GatewayMetrics) -> None:
    """orjson refuses to write more than 254 levels, MessagePack writes them: the MessagePack member must
    not get what the JSON member cannot (no half delivery)."""
    broker = InMemoryBroker()
    router = make_router(broker, metrics, CountingProtocol(JSON_PROTOCOL), CountingProtocol(MESSAGEPACK_PROTOCOL))
    json_member, msgpack_member = RecordingMember("json"), RecordingMember("messagepack")
    await router.join_group(GROUP, json_member)
    await router.join_group(GROUP, msgpack_member)
    await broker.publish(SUBJECT, b'{"target":"SystemAlert","arguments":[' + b"[" * 300 + b"]" * 300 + b"]}")
    assert json_member.frames == [] and msgpack_member.frames == []
    assert metrics.registry.get_sample_value("realtime_invalid_broker_messages_total", {"kind": "unencodable"}) == 1.0
    await broker.publish(SUBJECT, encode_event("SystemAlert", 1))
    assert len(json_member.frames) == len(msgpack_member.frames) == 1


async def test_payloads_over_the_size_or_depth_limit_are_counted_and_dropped(metrics: GatewayMetrics) -> None:
    broker = InMemoryBroker()
    router = FanoutRouter(
        feed=SubjectFeed(broker),
        protocols={JSON_PROTOCOL.name: JSON_PROTOCOL},
        metrics=metrics,
        max_payload_bytes=200,
        max_payload_depth=5,
    )
    member = RecordingMember()
    await router.join_group(GROUP, member)
    await broker.publish(SUBJECT, encode_event("A", "x" * 300))
    await broker.publish(SUBJECT, encode_event("A", [[[[1]]]]))
    assert member.frames == []
    counts = {
        kind: metrics.registry.get_sample_value("realtime_invalid_broker_messages_total", {"kind": kind})
        for kind in ("too_large", "too_deep")
    }
    assert counts == {"too_large": 1.0, "too_deep": 1.0}
