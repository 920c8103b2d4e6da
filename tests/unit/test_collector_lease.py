"""The active lease over a KV store with revisions: one holder, renewal, loss, release, lapse while NATS is away."""

from __future__ import annotations

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import MemoryKeyValueStore
from stats_collector.lease import LEASE_KEY, LeaderLease


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Unreachable(MemoryKeyValueStore):
    """A store that can be switched off like a NATS outage."""

    down = False

    async def compare_and_set(self, key: str, value: bytes, revision: int) -> int | None:
        if self.down:
            raise BrokerUnavailable(key)
        return await super().compare_and_set(key, value, revision)


async def test_one_holder_at_a_time_until_the_lease_ages_out() -> None:
    clock = Clock()
    store = MemoryKeyValueStore(ttl_seconds=5, clock=clock)
    first = LeaderLease(store, holder="a", ttl_seconds=5, clock=clock)
    second = LeaderLease(store, holder="b", ttl_seconds=5, clock=clock)
    assert await first.acquire() and first.held
    assert not await second.acquire()
    clock.now = 4
    assert await first.keep()  # renewed: ages out 5 s from now
    clock.now = 8
    assert not await second.acquire()
    clock.now = 9.5  # the holder died after its renewal at 4: the key aged out
    assert await second.acquire()
    assert await store.get(LEASE_KEY) == b"b"
    assert not await first.keep() and not first.held  # the old holder learns it lost the lease


async def test_release_lets_a_standby_take_over_at_once() -> None:
    store = MemoryKeyValueStore(ttl_seconds=5)
    first = LeaderLease(store, holder="a", ttl_seconds=5)
    second = LeaderLease(store, holder="b", ttl_seconds=5)
    assert await first.acquire()
    await first.release()
    assert not first.held
    assert await second.acquire()


async def test_a_holder_that_cannot_reach_nats_for_a_ttl_stands_down() -> None:
    clock = Clock()
    store = Unreachable(ttl_seconds=5, clock=clock)
    lease = LeaderLease(store, holder="a", ttl_seconds=5, clock=clock)
    assert await lease.acquire()
    store.down = True
    clock.now = 4.9
    assert await lease.keep()  # no standby can have taken over yet
    clock.now = 5.0
    assert not await lease.keep() and not lease.held
    assert not await lease.acquire()
