"""JetStreamFeed against a real nats-server: replays and the gaps they report."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from broker_bridge.feed_stream import JetStreamFeed
from broker_bridge.interface import ReplayGap
from scripts.processes import wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MAX_AGE_SECONDS = 1.0


async def replayed(feed: JetStreamFeed, after: int) -> list[int]:
    return [message.position async for message in feed.replay(["realtime.>"], after=after)]


async def test_a_replay_from_before_messages_that_all_expired_is_a_gap(nc: Client) -> None:
    feed = JetStreamFeed(lambda: nc, max_age_seconds=MAX_AGE_SECONDS, replicas=1)
    await feed.start()
    try:
        positions = [await feed.append("realtime.group.alerts", b"x") for _ in range(3)]
        assert await replayed(feed, positions[0]) == positions[1:]

        async def expired() -> bool:
            return (await nc.jetstream().stream_info("REALTIME_FANOUT")).state.messages == 0

        await wait_until_async(expired, timeout=10, what="every message expired", interval=0.2)
        with pytest.raises(ReplayGap) as gap:
            await replayed(feed, positions[0])
        assert gap.value.wanted == positions[1]
        assert await replayed(feed, positions[-1]) == [], "a connection that had everything missed nothing"
    finally:
        await feed.stop()
        await asyncio.sleep(0)
