"""ClusterPresence of several replicas over one in-memory KV bucket, on a clock the test moves.

The bucket ages entries out on the same clock, as NATS KV's TTL does, so a replica that stops writing
(killed) drops out. Notifications go to a recording publisher: each change must be sent exactly once
however many replicas decide at the same moment.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker_bridge.envelope import decode_event
from broker_bridge.keyvalue import MemoryKeyValueStore
from broker_bridge.publisher import RealtimePublisher
from gateway.hub.cluster_presence import ANNOUNCED_KEY, ClusterPresence
from gateway.hub.session import HubSession
from gateway.metrics import GatewayMetrics
from tests.support.links import linked_session

pytestmark = pytest.mark.timeout(10)

TTL = 4.0
DEBOUNCE = 5.0
MAX_NOTIFICATIONS = 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RacingStore(MemoryKeyValueStore):
    """Yields to the event loop inside every read, so replicas deciding at once interleave: both read
    the announced state before either writes it."""

    async def entry(self, key: str) -> tuple[bytes, int] | None:
        found = await super().entry(key)
        await asyncio.sleep(0)  # the answer is on its way while the others read
        return found


class Unaware:
    """The shared bucket as a replica sees it that has not yet heard of ``hidden`` replicas' entries
    in its listing of keys: it believes it decides (as a replica does for a moment after starting)."""

    def __init__(self, store: MemoryKeyValueStore, *hidden: str) -> None:
        self._store = store
        self._hidden = {f"replica.{name}" for name in hidden}

    async def keys(self) -> list[str]:
        return [key for key in await self._store.keys() if key not in self._hidden]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        envelope = decode_event(payload)
        self.sent.append((subject, {"target": envelope.target, **envelope.arguments[0]}))


def replica(name: str, store: MemoryKeyValueStore, clock: Clock, recorder: Recorder) -> ClusterPresence:
    presence = ClusterPresence(
        replica_id=name,
        publisher=RealtimePublisher(recorder),
        metrics=GatewayMetrics(),
        ttl_seconds=TTL,
        debounce_seconds=DEBOUNCE,
        max_users=100,
        max_notifications=MAX_NOTIFICATIONS,
        wall_clock=clock,
        clock=clock,
    )
    presence.attach(store)
    return presence


def session(user_id: str, name: str, key: str, groups: tuple[str, ...] = ("admins",)) -> HubSession:
    made = linked_session(key=key, user_id=user_id, name=name)
    made.groups = groups
    return made


class Cluster:
    def __init__(self, *names: str) -> None:
        self.clock = Clock()
        self.store = RacingStore(ttl_seconds=TTL, clock=self.clock)
        self.recorder = Recorder()
        self.replicas = {name: replica(name, self.store, self.clock, self.recorder) for name in names}

    async def beat(self, seconds: float, *, alive: tuple[str, ...] | None = None) -> None:
        """Move the clock by ``seconds`` in heartbeats; the ``alive`` replicas write and decide, all at once."""
        step = TTL / 3
        moved = 0.0
        while moved < seconds:
            self.clock.now += step
            moved += step
            live = [self.replicas[name] for name in (alive or tuple(self.replicas))]
            for presence in live:
                await presence.write()
            await asyncio.gather(*(presence.decide() for presence in live))

    def notifications(self) -> list[tuple[str, str]]:
        return [(payload["userId"], payload["action"]) for _, payload in self.recorder.sent]


async def test_presence_of_another_replica_is_merged_into_the_view() -> None:
    cluster = Cluster("a", "b")
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    a.connected(session("u1", "Ann", "k1", ("admins", "alerts")))
    b.connected(session("u1", "Ann", "k2"))
    b.connected(session("u2", "Bob", "k3"))
    await cluster.beat(0.1)
    cluster.clock.now += 1  # past the view's cache
    wire = (await a.view()).to_wire(timestamp="t")
    assert (wire["replicas"], wire["totalUsers"], wire["totalConnections"], wire["complete"]) == (2, 2, 3, True)
    admins = {user["userId"]: user["connections"] for user in wire["groups"]["admins"]["users"]}
    assert admins == {"u1": 2, "u2": 1}
    assert [user["userId"] for user in wire["groups"]["alerts"]["users"]] == ["u1"]


async def test_online_and_offline_are_sent_once_although_every_replica_decides() -> None:
    """Three replicas each believe they decide and step at the same moment: compare-and-set on the
    announced state lets one of them send each change."""
    cluster = Cluster("a", "b", "c")
    cluster.replicas["b"].attach(Unaware(cluster.store, "a"))  # type: ignore[arg-type]
    cluster.replicas["c"].attach(Unaware(cluster.store, "a", "b"))  # type: ignore[arg-type]
    await cluster.beat(1)  # the announced state is made, from an empty view
    ann = session("u1", "Ann", "k1")
    cluster.replicas["b"].connected(ann)
    await cluster.beat(DEBOUNCE + 2)
    cluster.replicas["b"].disconnected(ann)
    await cluster.beat(DEBOUNCE + 2)
    assert cluster.notifications() == [("u1", "online"), ("u1", "offline")]
    assert {subject for subject, _ in cluster.recorder.sent} == {"realtime.group.admins"}
    assert cluster.recorder.sent[0][1]["userName"] == "Ann"


async def test_a_quick_reconnect_on_another_replica_sends_nothing() -> None:
    cluster = Cluster("a", "b")
    await cluster.beat(1)
    cluster.replicas["a"].connected(first := session("u1", "Ann", "k1"))
    await cluster.beat(DEBOUNCE + 2)
    assert cluster.notifications() == [("u1", "online")]
    cluster.replicas["a"].disconnected(first)
    await cluster.beat(2)
    cluster.replicas["b"].connected(session("u1", "Ann", "k2"))
    await cluster.beat(DEBOUNCE * 2)
    assert cluster.notifications() == [("u1", "online")]


async def test_a_killed_replicas_users_expire_and_go_offline_once() -> None:
    cluster = Cluster("a", "b")
    await cluster.beat(1)
    cluster.replicas["b"].connected(session("u2", "Bob", "k1"))
    await cluster.beat(DEBOUNCE + 2)
    assert cluster.notifications() == [("u2", "online")]
    await cluster.beat(TTL + 0.1, alive=("a",))  # b killed: it writes nothing more
    cluster.clock.now += 1
    assert (await cluster.replicas["a"].view()).online() == {}
    await cluster.beat(DEBOUNCE + 2, alive=("a",))
    assert cluster.notifications() == [("u2", "online"), ("u2", "offline")]


async def test_when_the_deciding_replica_is_killed_the_next_one_decides() -> None:
    cluster = Cluster("a", "b")
    await cluster.beat(1)
    cluster.replicas["a"].connected(session("u1", "Ann", "k1"))
    await cluster.beat(DEBOUNCE + 2)
    assert cluster.notifications() == [("u1", "online")]
    await cluster.beat(TTL + DEBOUNCE + 3, alive=("b",))  # a (deciding, and u1's replica) killed
    assert cluster.notifications() == [("u1", "online"), ("u1", "offline")]


@pytest.mark.parametrize("replacement", [None, b"not json", b"[]"], ids=["missing", "not-json", "not-an-object"])
async def test_a_missing_or_unreadable_announced_state_is_made_again_without_greeting_anyone(
    replacement: bytes | None,
) -> None:
    cluster = Cluster("a")
    await cluster.beat(1)
    cluster.replicas["a"].connected(session("u1", "Ann", "k1"))
    await cluster.beat(DEBOUNCE + 2)
    if replacement is None:
        await cluster.store.delete(ANNOUNCED_KEY)  # e.g. nobody wrote it for a TTL
    else:
        await cluster.store.put(ANNOUNCED_KEY, replacement)
    await cluster.beat(DEBOUNCE * 2)
    assert cluster.notifications() == [("u1", "online")]
    cluster.replicas["a"].connected(session("u2", "Bob", "k2"))
    await cluster.beat(DEBOUNCE + 2)
    assert cluster.notifications() == [("u1", "online"), ("u2", "online")], "and works on from there"
