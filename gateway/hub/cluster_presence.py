"""Who is connected across every replica, and the online/offline notifications to ``admins``.

Each replica keeps its own users (:class:`~gateway.hub.presence_view.LocalPresence`, told by the hub
at connect, disconnect and group changes) and writes them as one entry, ``replica.<id>`` in the KV
bucket ``REALTIME_PRESENCE``: after a change (changes within :data:`COALESCE_SECONDS` make one write)
and every third of the bucket's TTL. A killed replica stops writing and its entry expires with the
TTL, as Phoenix Presence and Centrifugo let a dead node's presence lapse. Readers merge the entries
(:func:`~gateway.hub.presence_view.merge`) on demand, at most once per :data:`VIEW_MAX_AGE_SECONDS`.

Notifications: one replica decides, the live one with the smallest key (an announcer lost with its
replica is replaced once its entry expires). Every heartbeat it merges the entries, steps the
debouncer against the announced state kept under the key ``announced``, and writes the new state with
compare-and-set on the revision it read *before* it publishes anything: two replicas that both believe
they decide (one just started, or the other's entry is still expiring) cannot both succeed, so each
change is sent once, or, if the publish fails after the write, not at all. The announced state lives
in the bucket too, so every replica re-writes it as it is (compare-and-set, unchanged) every heartbeat
and it outlives a killed decider, whose users the next decider then reports offline. When it is
missing (a new cluster, or nobody wrote it for a TTL: every replica down or NATS away) the decider
makes it again from the current view and announces nobody, rather than greeting every connected user
a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import KeyValueStore, replica_key
from broker_bridge.publisher import RealtimePublisher
from gateway.hub.presence_debounce import PresenceDebouncer, notifications
from gateway.hub.presence_view import LocalPresence, PresenceView, ReplicaEntry, merge
from gateway.hub.session import HubSession
from gateway.metrics import GatewayMetrics
from shared import jsoncodec
from shared.timeutil import iso_utc

log = logging.getLogger(__name__)

ENTRY_PREFIX: Final = "replica."
ANNOUNCED_KEY: Final = "announced"
# Changes this close together make one write: a burst of connects costs one entry, and the view is
# still fresh well within a second.
COALESCE_SECONDS: Final = 0.25
# Entries are re-written this many times per TTL, so one lost write does not make a live replica's
# users lapse.
HEARTBEATS_PER_TTL: Final = 3
# GetPresence and the REST route share one read of the bucket for this long.
VIEW_MAX_AGE_SECONDS: Final = 0.5


def session_groups(session: HubSession) -> Sequence[str]:
    """The groups of a connection. A resumable one's are in its log, which follows a join or leave once
    its record is back from the stream (and holds those of before a resume, which the hub never set on
    this session): the groups of either, so a join shows at once."""
    state = session.resumable
    if state is None:
        return session.groups
    return tuple(dict.fromkeys((*state.log.groups, *session.groups)))


class ClusterPresence:
    """This replica's part of cluster presence: its entry, the merged view, and (when it decides) the
    notifications."""

    def __init__(
        self,
        *,
        replica_id: str,
        publisher: RealtimePublisher | None,
        metrics: GatewayMetrics,
        ttl_seconds: float,
        debounce_seconds: float,
        max_users: int,
        max_notifications: int,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._replica = replica_key(replica_id)
        self._key = ENTRY_PREFIX + self._replica
        self._publisher = publisher
        self._metrics = metrics
        self._heartbeat = ttl_seconds / HEARTBEATS_PER_TTL
        self._max_users = max_users
        self._max_notifications = max_notifications
        self._wall_clock = wall_clock
        self._clock = clock
        self._local: LocalPresence[HubSession] = LocalPresence(groups_of=session_groups)
        self._debouncer = PresenceDebouncer(debounce_seconds=debounce_seconds, max_users=max_users)
        self._deciding = False
        self._store: KeyValueStore | None = None
        self._changed = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._view: tuple[float, PresenceView] | None = None

    def attach(self, store: KeyValueStore) -> None:
        self._store = store

    # -- told by the hub ----------------------------------------------------------------------

    def connected(self, session: HubSession) -> None:
        user_id = session.user_id
        if user_id:
            self._local.add(user_id, session.principal.name, session, self._wall_clock())
            self._changed.set()

    def disconnected(self, session: HubSession) -> None:
        user_id = session.user_id
        if user_id:
            self._local.remove(user_id, session)
            self._changed.set()

    def groups_changed(self) -> None:
        """A connection here joined or left a group (the hub's methods, or a resumable connection's log)."""
        self._local.groups_changed()
        self._changed.set()

    # -- the view -----------------------------------------------------------------------------

    def _entry(self) -> ReplicaEntry:
        entry = self._local.entry(replica=self._replica, now=self._wall_clock(), max_users=self._max_users)
        self._metrics.presence_users.set(entry.users)
        self._metrics.presence_unlisted.labels(list="entry").set(entry.unlisted)
        return entry

    async def view(self) -> PresenceView:
        """Every live replica's users, merged; at most :data:`VIEW_MAX_AGE_SECONDS` old. While KV cannot
        be read, this replica's users alone (``complete: false``)."""
        store = self._store
        if store is None:
            return merge([self._entry()], readable=False)
        async with self._read_lock:
            cached = self._view
            if cached is not None and self._clock() - cached[0] < VIEW_MAX_AGE_SECONDS:
                return cached[1]
            try:
                view = await self._read_view(store)
            except BrokerUnavailable:
                return merge([self._entry()], readable=False)
            self._view = (self._clock(), view)
            return view

    async def _read_view(self, store: KeyValueStore) -> PresenceView:
        """Read every entry now (this replica's own from memory: it may be newer than its last write)."""
        entries = [self._entry()]
        for key, value in (await store.items()).items():
            if key == self._key or not key.startswith(ENTRY_PREFIX):
                continue
            try:
                entries.append(ReplicaEntry.decode(value))
            except ValueError as error:
                log.debug("skipping presence entry %s: %s", key, error)
        return merge(entries)

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Write the entry after changes and every heartbeat; decide notifications on each heartbeat."""
        next_beat = self._clock()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, next_beat - self._clock()))
            if self._changed.is_set():
                await asyncio.sleep(COALESCE_SECONDS)
                self._changed.clear()
            beat = self._clock() >= next_beat
            if beat:
                next_beat = self._clock() + self._heartbeat
            try:
                await self.write()
                if beat:
                    await self.decide()
            except BrokerUnavailable:
                log.debug("presence refresh skipped: NATS unavailable")

    async def write(self) -> None:
        if self._store is not None:
            await self._store.put(self._key, self._entry().encode())

    async def decide(self) -> None:
        """If this replica decides (the smallest live key), send the changes that are due, once."""
        store = self._store
        if store is None:
            return
        replicas = sorted(key for key in await store.keys() if key.startswith(ENTRY_PREFIX))
        deciding = bool(replicas) and replicas[0] == self._key
        if deciding != self._deciding:
            log.info("presence notifications: %s", "this replica decides" if deciding else "another replica decides")
            self._deciding = deciding
            self._debouncer.reset()
        found = await store.entry(ANNOUNCED_KEY)
        if not deciding:
            if found is not None:  # kept alive by every replica, so it outlives the one that decides
                await store.compare_and_set(ANNOUNCED_KEY, found[0], found[1])
            return
        view = await self._read_view(store)
        self._view = (self._clock(), view)
        revision = 0 if found is None else found[1]
        current = None if found is None else _readable_announced(found[0])
        if current is None:  # made again from the view, announcing nobody
            announced = dict(list(view.online().items())[: self._max_users])
            await store.compare_and_set(ANNOUNCED_KEY, jsoncodec.dumps(announced), revision)
            return
        decision = self._debouncer.step(online=view.online(), announced=current, now=self._clock())
        self._metrics.presence_unlisted.labels(list="announced").set(decision.left_out)
        if await store.compare_and_set(ANNOUNCED_KEY, jsoncodec.dumps(decision.announced), revision) is None:
            log.debug("presence notifications: another replica wrote the announced state first")
            return
        if self._publisher is None:
            return
        for event, action in notifications(decision.changes, limit=self._max_notifications, timestamp=iso_utc()):
            await self._publisher.publish(event)
            self._metrics.presence_notifications.labels(action=action).inc()

    async def withdraw(self) -> None:
        """Shutdown: take this replica's entry out at once (its clients reconnect elsewhere)."""
        if self._store is not None:
            with contextlib.suppress(BrokerUnavailable):
                await self._store.delete(self._key)


def _readable_announced(data: bytes) -> dict[str, str | None] | None:
    """The announced state (user id -> name), or None when it cannot be read (it is then made again)."""
    try:
        raw = jsoncodec.loads(data)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        log.warning("replacing the unreadable announced presence state")
        return None
    return {str(user_id): None if name is None else str(name) for user_id, name in raw.items()}
