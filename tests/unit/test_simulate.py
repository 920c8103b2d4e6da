"""The demo traffic model: every user it makes active registered first, so its figures agree."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stats_collector.aggregate import PlatformAggregate
from stats_collector.events import EventKind
from stats_collector.simulate import TrafficModel

START = datetime(2025, 10, 17, 12, 0, tzinfo=UTC)


@settings(max_examples=30)
@given(st.integers(0, 2**32), st.integers(1, 400))
def test_every_active_user_of_the_simulator_registered_before(seed: int, count: int) -> None:
    model = TrafficModel(random.Random(seed))
    aggregate = PlatformAggregate()  # no baseline: only the simulated registrations make users known
    registered: set[str] = set()
    for n in range(count):
        now = START + timedelta(milliseconds=50 * n)
        event = model.next_event(now)
        if event.kind is EventKind.USER_REGISTERED:
            assert event.user_id is not None
            registered.add(event.user_id)
        else:
            assert event.user_id in registered
        aggregate.apply(event, now=now)
        snapshot = aggregate.snapshot(now=now)
        assert snapshot.active_users <= snapshot.total_users
        assert aggregate.active_beyond_total == 0
