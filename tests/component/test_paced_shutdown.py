"""Shutdown tells clients to reconnect a few at a time over most of the grace period, not all at once."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from broker_bridge.broker_memory import InMemoryBroker
from gateway.hub.host import SHUTDOWN_BATCH_INTERVAL_SECONDS, SHUTDOWN_SPREAD_SHARE, HubHost, paced
from gateway.hub.registry import ConnectionRegistry
from gateway.hub.session import HubSession
from gateway.metrics import GatewayMetrics
from gateway.signalr import JSON_PROTOCOL, Close
from gateway.signalr.connection import CloseReason
from tests.component.http_hub import hub_host
from tests.support.frames import JSON_HANDSHAKE
from tests.support.links import RecordingLink, linked_session


class FakeSleep:
    """Records each pause instead of waiting; ``marks`` says after how many actions each came."""

    def __init__(self, acted: list[int]) -> None:
        self.pauses: list[float] = []
        self.marks: list[int] = []
        self._acted = acted

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.marks.append(len(self._acted))


@pytest.mark.parametrize(("count", "spread", "batches"), [(25, 1.0, 10), (1000, 4.0, 40), (3, 4.0, 3), (7, 0.0, 1)])
async def test_actions_come_in_equal_batches_over_the_spread(count: int, spread: float, batches: int) -> None:
    acted: list[int] = []
    sleep = FakeSleep(acted)
    await paced(list(range(count)), acted.append, spread_seconds=spread, interval_seconds=0.1, sleep=sleep)
    assert acted == list(range(count))  # each once, in order
    size = math.ceil(count / batches)
    assert sleep.marks == list(range(size, count, size))  # a pause after every full batch, none at the end
    assert sleep.pauses == [0.1] * len(sleep.marks)
    assert sum(sleep.pauses) <= spread + 1e-9


async def test_nothing_to_close_takes_no_time() -> None:
    sleep = FakeSleep([])
    await paced([], lambda _: None, spread_seconds=4.0, sleep=sleep)
    assert sleep.pauses == []


class TimedLink(RecordingLink):
    """Notes when the connection was first told to close (synchronously, inside ``close_all``)."""

    def __init__(self) -> None:
        super().__init__()
        self.told_at: float | None = None

    def output_queued(self) -> None:
        if self.told_at is None and self.connection is not None and self.connection.should_close:
            self.told_at = time.monotonic()
        super().output_queued()


def open_session(host: HubHost, key: int) -> tuple[HubSession, TimedLink]:
    link = TimedLink()
    session = linked_session(key=f"token-{key}", user_id=f"user-{key}", link=link)
    connection = session.connection
    host.add(session)
    connection.receive_data(JSON_HANDSHAKE, time.monotonic())
    link.take_output()
    return session, link


async def test_close_all_spreads_the_close_messages_over_the_grace_period() -> None:
    registry = ConnectionRegistry()
    host = hub_host(InMemoryBroker(), GatewayMetrics(), registry)
    opened = [open_session(host, key) for key in range(20)]

    async def client(session: HubSession, link: RecordingLink) -> None:
        """Reads the Close and goes, as the JS client does."""
        await link.wait_for_output()
        await host.end(session)

    clients = [asyncio.ensure_future(client(session, link)) for session, link in opened]
    grace = 1.0
    async with asyncio.timeout(10):
        await host.close_all(grace_seconds=grace)
        await asyncio.gather(*clients)

    assert not host.accepting
    assert len(registry) == 0
    assert all(session.connection.close_reason is CloseReason.SERVER_SHUTDOWN for session, _ in opened)
    # A batch is closed in one synchronous pass and batches are a sleep apart, and sleeps never end
    # early: however loaded the machine, the gaps between batches are at least the batch interval.
    times = [link.told_at for _, link in opened]
    assert None not in times
    batches: list[list[float]] = []
    for moment in sorted(t for t in times if t is not None):
        if batches and moment - batches[-1][-1] < SHUTDOWN_BATCH_INTERVAL_SECONDS / 2:
            batches[-1].append(moment)
        else:
            batches.append([moment])
    # 8 slots in 0.8 s: ceil(20 / 8) = 3 at a time.
    assert int(grace * SHUTDOWN_SPREAD_SHARE / SHUTDOWN_BATCH_INTERVAL_SECONDS) == 8
    assert [len(batch) for batch in batches] == [3, 3, 3, 3, 3, 3, 2]


async def test_every_client_reads_a_close_that_allows_reconnecting() -> None:
    registry = ConnectionRegistry()
    host = hub_host(InMemoryBroker(), GatewayMetrics(), registry)
    session, link = open_session(host, 1)
    async with asyncio.timeout(5):
        closing = asyncio.ensure_future(host.close_all(grace_seconds=0.5))
        await link.wait_for_output()
        reader = JSON_PROTOCOL.new_reader(max_message_bytes=None, max_depth=None)
        reader.append(link.take_output())
        assert reader.next_message() == Close(allow_reconnect=True)
        await host.end(session)
        await closing
