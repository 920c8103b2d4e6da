"""The in-memory fan-out stream behaves as JetStreamFeed does (the component tests rely on it)."""

from __future__ import annotations

import pytest

from broker_bridge.interface import BrokerUnavailable, ReplayGap, StreamMessage
from tests.support.memory_stream import MemoryStream, MemoryStreamFeed

pytestmark = pytest.mark.timeout(5)


def recording(feed: MemoryStreamFeed) -> list[tuple[str, bytes, int]]:
    delivered: list[tuple[str, bytes, int]] = []
    feed.deliver_to(lambda subject, payload, position: delivered.append((subject, payload, position)))
    return delivered


async def replayed(stream: MemoryStream, subjects: list[str], after: int) -> list[StreamMessage]:
    return [message async for message in stream.feed().replay(subjects, after=after)]


async def test_positions_count_from_one_and_delivery_comes_later_in_order() -> None:
    stream = MemoryStream()
    feed = stream.feed()
    delivered = recording(feed)
    assert await feed.append("realtime.all", b"a") == 1
    assert await stream.publish("realtime.group.x", b"b") == 2
    assert delivered == [] and feed.last_position == 0  # asynchronous, as nats-py's consumer
    await feed.settled()
    assert delivered == [("realtime.all", b"a", 1), ("realtime.group.x", b"b", 2)]
    assert feed.last_position == 2


async def test_a_feed_starts_at_the_streams_end() -> None:
    stream = MemoryStream()
    await stream.publish("realtime.all", b"old")
    feed = stream.feed()
    delivered = recording(feed)
    assert feed.last_position == 1
    await stream.publish("realtime.all", b"new")
    await feed.settled()
    assert delivered == [("realtime.all", b"new", 2)]


async def test_a_held_feed_delivers_up_to_its_hold_then_the_rest_on_release() -> None:
    stream = MemoryStream()
    feed = stream.feed()
    delivered = recording(feed)
    feed.hold(after=1)
    for payload in (b"1", b"2", b"3"):
        await stream.publish("realtime.all", payload)
    await feed.settled()
    assert [position for _, _, position in delivered] == [1]
    feed.release()
    await feed.settled()
    assert [position for _, _, position in delivered] == [1, 2, 3]


async def test_a_replay_reads_its_subjects_after_a_position_up_to_the_end_when_it_began() -> None:
    stream = MemoryStream()
    for subject in ("realtime.all", "realtime.group.a", "realtime.user.u", "realtime.group.b"):
        await stream.publish(subject, subject.encode())
    replay = stream.feed().replay(["realtime.group.>", "realtime.user.u"], after=1)
    first = await anext(replay)
    await stream.publish("realtime.group.a", b"later")
    assert [first.position] + [message.position async for message in replay] == [2, 3, 4]
    assert await replayed(stream, ["realtime.all"], 1) == []


async def test_a_trimmed_stream_refuses_a_replay_from_before_its_start() -> None:
    stream = MemoryStream()
    for _ in range(4):
        await stream.publish("realtime.all", b"x")
    stream.trim(before=3)
    assert [message.position for message in await replayed(stream, ["realtime.all"], 2)] == [3, 4]
    with pytest.raises(ReplayGap) as gap:
        await replayed(stream, ["realtime.all"], 1)
    assert (gap.value.wanted, gap.value.first) == (2, 3)
    stream.trim(before=5)  # every message expired: still a gap for a replay from before them
    with pytest.raises(ReplayGap):
        await replayed(stream, ["realtime.all"], 1)
    assert await replayed(stream, ["realtime.all"], 4) == [], "nothing was missed after the last one"


async def test_appends_fail_on_demand() -> None:
    stream = MemoryStream()
    feed = stream.feed()
    stream.fail_appends(1)
    with pytest.raises(BrokerUnavailable):
        await feed.append("realtime.all", b"x")
    assert await feed.append("realtime.all", b"x") == 1
    stream.unavailable = True
    with pytest.raises(BrokerUnavailable):
        await feed.append("realtime.all", b"y")
    assert stream.last_position == 1
