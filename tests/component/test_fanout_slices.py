"""FanoutRouter's fair loop: a message to a large group is delivered in slices, the event loop runs
between them, messages never overtake each other, and members that leave meanwhile are skipped.

The router's clock is a fake that each delivery moves on by one millisecond, so where a slice ends
depends on the member count only (nothing here depends on how fast the machine is).
"""

from __future__ import annotations

import asyncio
import weakref

import pytest

from broker_bridge.envelope import encode_event
from broker_bridge.interface import FeedCallback, Subscription
from broker_bridge.subjects import group_subject
from gateway.hub import fanout as fanout_module
from gateway.hub.fanout import MEMBERS_PER_CLOCK_READ, FanoutRouter
from gateway.hub.outbound import SharedMessage
from gateway.hub.resumable import ResumableConnections
from gateway.metrics import GatewayMetrics
from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL

pytestmark = pytest.mark.timeout(10)

SUBJECT = group_subject("alerts")
OTHER = group_subject("admins")
WORK_SECONDS = 0.001  # what one delivery costs on the fake clock
SLICE_SECONDS = 0.005  # so a slice ends at the first clock read: MEMBERS_PER_CLOCK_READ deliveries
GROUP_SIZE = 3 * MEMBERS_PER_CLOCK_READ + 10  # four slices


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _NoSubscription:
    async def unsubscribe(self) -> None:
        return None


class DirectFeed:
    """A fan-out feed whose messages the test hands to the router itself, with stream positions."""

    def __init__(self) -> None:
        self.callback: FeedCallback | None = None
        self.position = 0

    @property
    def positions(self) -> bool:
        return True

    def deliver_to(self, callback: FeedCallback) -> None:
        self.callback = callback

    async def attach(self, subject: str) -> Subscription:
        return _NoSubscription()

    @property
    def last_position(self) -> int:
        """As :class:`broker_bridge.feed_stream.JetStreamFeed`: the newest position handed on."""
        return self.position

    def send(self, subject: str, target: str) -> int:
        assert self.callback is not None
        self.position += 1
        self.callback(subject, encode_event(target), self.position)
        return self.position


class Member:
    def __init__(self, clock: Clock, protocol_name: str = "json") -> None:
        self.protocol_name = protocol_name
        self.positions: list[int] = []
        self._clock = clock

    def deliver(self, message: SharedMessage, now: float, position: int) -> bool:
        self._clock.now += WORK_SECONDS
        self.positions.append(position)
        return True


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def feed() -> DirectFeed:
    return DirectFeed()


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
def router(feed: DirectFeed, clock: Clock, metrics: GatewayMetrics) -> FanoutRouter:
    return FanoutRouter(
        feed=feed,
        protocols={JSON_PROTOCOL.name: JSON_PROTOCOL, MESSAGEPACK_PROTOCOL.name: MESSAGEPACK_PROTOCOL},
        metrics=metrics,
        slice_seconds=SLICE_SECONDS,
        clock=clock,
    )


def group(router: FanoutRouter, clock: Clock, size: int, subject: str = SUBJECT) -> list[Member]:
    members = [Member(clock, "json" if number % 3 else "messagepack") for number in range(size)]
    for member in members:
        router.enter(subject, member)
    return members


async def delivered(router: FanoutRouter) -> None:
    """Let the event loop turn until the router has delivered everything (one slice a turn)."""
    for _ in range(1000):
        if not router.backlog:
            return
        await asyncio.sleep(0)
    raise AssertionError("the router did not finish its deliveries")


async def test_a_large_group_is_fed_in_slices_with_the_loop_running_between(
    router: FanoutRouter, feed: DirectFeed, clock: Clock, metrics: GatewayMetrics
) -> None:
    members = group(router, clock, GROUP_SIZE)
    seen_between: list[int] = []
    loop = asyncio.get_running_loop()

    position = feed.send(SUBJECT, "Alert")
    # The first slice went out inside the feed's callback; the rest waits for the loop.
    assert sum(1 for member in members if member.positions) == MEMBERS_PER_CLOCK_READ
    assert router.backlog == 1
    assert metrics.registry.get_sample_value("realtime_fanout_backlog_messages") == 1
    assert router.pending_position == position
    loop.call_soon(lambda: seen_between.append(sum(1 for member in members if member.positions)))

    await delivered(router)

    assert seen_between and MEMBERS_PER_CLOCK_READ <= seen_between[0] < GROUP_SIZE
    assert all(member.positions == [position] for member in members)
    assert router.pending_position is None
    assert metrics.registry.get_sample_value("realtime_fanout_backlog_messages") == 0


async def test_a_small_group_is_fed_at_once(router: FanoutRouter, feed: DirectFeed, clock: Clock) -> None:
    members = group(router, clock, MEMBERS_PER_CLOCK_READ)
    position = feed.send(SUBJECT, "Alert")
    assert all(member.positions == [position] for member in members)
    assert router.backlog == 0


async def test_a_message_never_overtakes_one_being_delivered(
    router: FanoutRouter, feed: DirectFeed, clock: Clock
) -> None:
    members = group(router, clock, GROUP_SIZE)
    small = group(router, clock, 2, OTHER)
    both = members[-1]
    router.enter(OTHER, both)

    first = feed.send(SUBJECT, "Alert")
    second = feed.send(OTHER, "Notice")  # another group: waits all the same, the member in both is fed in order
    third = feed.send(SUBJECT, "Alert")
    assert all(not member.positions for member in small)
    assert router.backlog == 3
    assert router.pending_position == first

    await delivered(router)

    assert both.positions == [first, second, third]
    assert all(member.positions == [first, third] for member in members[:-1])
    assert all(member.positions == [second] for member in small)


async def test_members_that_leave_during_a_delivery_are_skipped_and_newcomers_wait_for_the_next(
    router: FanoutRouter, feed: DirectFeed, clock: Clock
) -> None:
    members = group(router, clock, GROUP_SIZE)
    first = feed.send(SUBJECT, "Alert")
    leaving = members[-5:]
    for member in leaving:
        router.exit(SUBJECT, member)
    newcomer = Member(clock)
    router.enter(SUBJECT, newcomer)

    await delivered(router)
    second = feed.send(SUBJECT, "Alert")
    await delivered(router)

    assert all(member.positions == [] for member in leaving)
    assert all(member.positions == [first, second] for member in members[:-5])
    assert newcomer.positions == [second]


async def test_membership_changes_between_messages_reach_the_next_message(
    router: FanoutRouter, feed: DirectFeed, clock: Clock
) -> None:
    # Every message to an unchanged group walks one kept copy of its members; a join or a leave
    # must make the next message see the group as it is then.
    members = group(router, clock, GROUP_SIZE)
    first = feed.send(SUBJECT, "Alert")
    await delivered(router)
    router.exit(SUBJECT, members[0])
    second = feed.send(SUBJECT, "Alert")
    await delivered(router)
    router.enter(SUBJECT, members[0])
    newcomer = Member(clock)
    router.enter(SUBJECT, newcomer)
    third = feed.send(SUBJECT, "Alert")
    await delivered(router)

    assert members[0].positions == [first, third]
    assert newcomer.positions == [third]
    assert all(member.positions == [first, second, third] for member in members[1:])


async def test_one_copy_of_the_members_serves_every_message_until_one_leaves_and_keeps_nobody_alive(
    router: FanoutRouter, feed: DirectFeed, clock: Clock
) -> None:
    # The point of the kept copy: a new one per message would be walked by every young collection.
    members = group(router, clock, GROUP_SIZE)
    feed.send(SUBJECT, "Alert")
    await delivered(router)
    kept = router._snapshots[SUBJECT]
    feed.send(SUBJECT, "Alert")
    await delivered(router)
    assert router._snapshots[SUBJECT] is kept
    router.enter(SUBJECT, members[0])  # already a member: nothing changes
    assert router._snapshots[SUBJECT] is kept

    gone = weakref.ref(members[0])
    router.exit(SUBJECT, members.pop(0))
    del kept
    assert SUBJECT not in router._snapshots
    assert gone() is None


async def test_the_whole_group_leaving_during_a_delivery_ends_it(
    router: FanoutRouter, feed: DirectFeed, clock: Clock
) -> None:
    members = group(router, clock, GROUP_SIZE)
    feed.send(SUBJECT, "Alert")
    for member in members:
        router.exit(SUBJECT, member)
    await delivered(router)
    assert sum(1 for member in members if member.positions) == MEMBERS_PER_CLOCK_READ


async def test_watchers_see_a_message_before_its_members(router: FanoutRouter, feed: DirectFeed, clock: Clock) -> None:
    members = group(router, clock, GROUP_SIZE)
    fed_when_watched: list[int] = []
    router.watch(lambda subject, payload, position: fed_when_watched.append(sum(1 for m in members if m.positions)))
    feed.send(SUBJECT, "Alert")
    await delivered(router)
    assert fed_when_watched == [0]


async def test_over_the_backlog_limit_delivery_stops_yielding(
    router: FanoutRouter, feed: DirectFeed, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout_module, "MAX_BACKLOG_MESSAGES", 2)
    members = group(router, clock, GROUP_SIZE)
    positions = [feed.send(SUBJECT, "Alert") for _ in range(3)]
    # The third message made three wait: everything was delivered inside that callback.
    assert router.backlog == 0
    assert all(member.positions == positions for member in members)


async def test_resumable_checkpoints_stop_before_a_message_still_being_delivered(
    router: FanoutRouter, feed: DirectFeed, clock: Clock
) -> None:
    resumables = ResumableConnections(
        router=router,
        feed=feed,  # type: ignore[arg-type]  # only its last_position is read here
        protocols={JSON_PROTOCOL.name: JSON_PROTOCOL},
        replica="a",
        metrics=GatewayMetrics(),
        checkpoint_interval_seconds=5.0,
        refresh_interval_seconds=30.0,
        disconnect_timeout_seconds=15.0,
        buffer_bytes=100_000,
    )
    group(router, clock, GROUP_SIZE)
    before = feed.send(OTHER, "Notice")  # nobody here: routed at once
    assert resumables._routed_position() == before
    first = feed.send(SUBJECT, "Alert")
    feed.send(OTHER, "Notice")
    # A connection in the group may not have the first yet: a checkpoint must not pass it.
    assert resumables._routed_position() == first - 1
    await delivered(router)
    assert resumables._routed_position() == feed.last_position
