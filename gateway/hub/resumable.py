"""Connections that outlive their transport: stateful reconnect on any replica, over the fan-out stream.

A resumable connection (the client negotiated stateful reconnect and shook hands with version 2) keeps
its whole history in the fan-out stream: the broadcasts it receives are stream messages, and everything
sent to it alone (greeting, completions, errors) and every change of its groups is a record on its own
subject ``realtime.conn.<key>`` (:mod:`broker_bridge.connection_stream`), so
:class:`gateway.hub.connection_log.ConnectionLog` numbers it the same way live and in a replay.

NATS KV ``REALTIME_CONNECTIONS`` holds, per connection, its owner, an epoch and a checkpoint (written
with compare-and-set on the revision as the client acknowledges messages). When the client's socket
drops it resumes on whichever replica the load balancer picks, the same one or another, also after
the first one was killed: that replica takes the connection over (a higher epoch), replays the stream
from the checkpoint, sends ``Sequence`` with the number of the first replayed message (the client drops
what it already has) and continues live. A replica that finds its epoch passed drops its copy.

Client messages count as processed once their answer (or a ``processed`` record) is stored in the
stream: only then does the client get an Ack for them, so a message the client sends again after a
resume is recognised (the replay brings the records) and never handled twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from broker_bridge.connection_stream import (
    InvalidRecord,
    RecordKind,
    StreamRecord,
    decode_record,
    marker_record,
    message_record,
    processed_record,
)
from broker_bridge.envelope import InvalidEnvelope
from broker_bridge.interface import BrokerUnavailable, ReplayableFeed, ReplayGap
from broker_bridge.keyvalue import KeyValueStore
from broker_bridge.subjects import ALL_SUBJECT, CONNECTION_PREFIX, GROUP_PREFIX, group_subject, user_subject
from gateway.hub.connection_log import Checkpoint, ConnectionLog
from gateway.hub.fanout import FanoutRouter
from gateway.hub.outbound import SharedMessage
from gateway.metrics import GatewayMetrics
from gateway.signalr.connection import CLOSED_WITH_ERROR, CloseReason
from gateway.signalr.messages import HubMessage
from gateway.signalr.protocol import HubProtocol
from shared import jsoncodec

if TYPE_CHECKING:
    from gateway.hub.session import HubSession

log = logging.getLogger(__name__)

# Appends of one connection's records are retried this many times (seconds between) before the
# connection is closed with an error the client reconnects after.
APPEND_RETRY_DELAYS_SECONDS: Final = (0.2, 0.5, 1.0)
# Records waiting to be stored for one connection; more means the stream is not taking them.
MAX_OUTBOX_RECORDS: Final = 1000
# Live messages kept for a connection while its replay catches up; more and the resume is refused.
MAX_CATCH_UP_MESSAGES: Final = 100_000
MAX_CATCH_UP_BYTES: Final = 32 * 1024 * 1024
# While a replay outruns the socket (or the client's acknowledgements), it waits for the queue (the
# unacknowledged bytes) to fall under this share of its limit.
REPLAY_QUEUE_SHARE: Final = 0.5
REPLAY_WAIT_SECONDS: Final = 0.01
# A replay waiting for acknowledgements gives up (the connection is dropped) after this long without one.
ACK_WAIT_SECONDS: Final = 30.0
BROKER_UNAVAILABLE: Final = "The real-time broker is unavailable; try again shortly."


class ResumeRefused(Exception):
    """The connection cannot be taken up here; ``outcome`` says why (a metric label)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """What NATS KV keeps of a resumable connection."""

    user_id: str | None
    protocol: str
    owner: str
    epoch: int
    attached: bool
    detached_at: float | None
    checkpoint: Checkpoint

    def encode(self) -> bytes:
        return jsoncodec.dumps(
            {
                "user": self.user_id,
                "protocol": self.protocol,
                "owner": self.owner,
                "epoch": self.epoch,
                "attached": self.attached,
                "detachedAt": self.detached_at,
                "checkpoint": self.checkpoint.to_wire(),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> ConnectionRecord:
        """Raises ValueError on anything :meth:`encode` does not write."""
        try:
            value = jsoncodec.loads(raw)
        except jsoncodec.JSONDecodeError:
            raise ValueError("connection record is not JSON") from None
        if not isinstance(value, dict):
            raise ValueError("connection record is not an object")
        user, protocol, owner, epoch = (value.get(name) for name in ("user", "protocol", "owner", "epoch"))
        detached_at = value.get("detachedAt")
        if not (user is None or isinstance(user, str)) or not isinstance(protocol, str) or not isinstance(owner, str):
            raise ValueError("connection record has a bad user, protocol or owner")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not isinstance(value.get("attached"), bool):
            raise ValueError("connection record has a bad epoch or state")
        if detached_at is not None and not isinstance(detached_at, int | float):
            raise ValueError("connection record has a bad detach time")
        return cls(
            user_id=user,
            protocol=protocol,
            owner=owner,
            epoch=epoch,
            attached=value["attached"],
            detached_at=detached_at,
            checkpoint=Checkpoint.from_wire(value.get("checkpoint")),
        )


@dataclass(eq=False, slots=True)
class Resumable:
    """One resumable connection on this replica."""

    coordinator: ResumableConnections
    key: str
    log: ConnectionLog
    epoch: int
    revision: int
    live: bool = False
    lost: bool = False
    paused: bool = False
    """Over its unacknowledged-bytes limit: live messages wait in the stream until a catch-up sends them."""
    catch_up: asyncio.Task[None] | None = None
    replayed_to: int = 0
    """The stream position a replay sent this connection's messages up to: the live path skips what this
    replica's consumer delivers up to there afterwards (the replay read further than it had routed)."""
    handler: Callable[[bytes, int], None] | None = None
    outbox: collections.deque[tuple[bytes, int, asyncio.Future[int] | None]] = field(default_factory=collections.deque)
    outbox_task: asyncio.Task[None] | None = None
    # Client messages whose records are stored: every number up to ``durable``, and those above it.
    durable: int = 0
    durable_above: set[int] = field(default_factory=set)
    acked_to_client: int = 0
    written: Checkpoint | None = None
    written_at: float = 0.0

    def send(self, session: HubSession, message: HubMessage, inbound: int) -> None:
        protocol = session.connection.protocol
        if protocol is None:
            return
        self.coordinator._enqueue(session, self, message_record(protocol.encode(message), inbound=inbound), inbound)

    def processed(self, session: HubSession, inbound: int) -> None:
        if inbound:
            self.coordinator._enqueue(session, self, processed_record(inbound), inbound)

    def tick(self, session: HubSession) -> None:
        self.coordinator._tick(session, self)

    def admit(self, session: HubSession, position: int, size: int) -> bool:
        """Count a message about to be sent live; False while paused (a catch-up sends it later) or when a
        replay sent it already."""
        if self.paused or position <= self.replayed_to:
            return False
        self.log.count_sent(position, size)
        if self.log.unacknowledged_bytes > self.coordinator.buffer_bytes:
            self.log.acknowledged(session.connection.acked)
            if self.log.unacknowledged_bytes > self.coordinator.buffer_bytes:
                self.coordinator._pause(session, self, position)
        return True


class ResumableConnections:
    """Starts, feeds, checkpoints, ends, detaches and takes over resumable connections."""

    def __init__(
        self,
        *,
        router: FanoutRouter,
        feed: ReplayableFeed,
        protocols: Mapping[str, HubProtocol],
        replica: str,
        metrics: GatewayMetrics,
        checkpoint_interval_seconds: float,
        refresh_interval_seconds: float,
        disconnect_timeout_seconds: float,
        buffer_bytes: int,
        groups_changed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._router = router
        self._groups_changed = groups_changed
        """Told when a connection's log changes its groups (cluster presence counts them)."""
        self._feed = feed
        self._protocols = protocols
        self._replica = replica
        self._metrics = metrics
        self._checkpoint_interval = checkpoint_interval_seconds
        self._refresh_interval = refresh_interval_seconds
        self._disconnect_timeout = disconnect_timeout_seconds
        self.buffer_bytes = buffer_bytes
        """What a connection may have sent unacknowledged before it pauses for the client's Acks."""
        self._clock = clock
        self._wall_clock = wall_clock
        self._store: KeyValueStore | None = None
        self._live: dict[str, tuple[HubSession, Resumable]] = {}
        # Connections this replica detached: key -> (when to end them, their KV revision then).
        self._detached: dict[str, tuple[float, int]] = {}
        self._logged_invalid = False

    def attach_store(self, store: KeyValueStore) -> None:
        self._store = store

    def count(self, outcome: str) -> None:
        """Count a resume attempt's outcome (``resumed``, ``not_found``, ``conflict``, ``gap`` ...)."""
        self._metrics.resumes.labels(outcome=outcome).inc()

    @property
    def ready(self) -> bool:
        return self._store is not None

    def _routed_position(self) -> int:
        """How far the stream has been routed here: what the feed received, less a message the router is
        still delivering in slices (its members may not all have it yet) and those behind it."""
        pending = self._router.pending_position
        return self._feed.last_position if pending is None else min(self._feed.last_position, pending - 1)

    def _required_store(self) -> KeyValueStore:
        if self._store is None:
            raise BrokerUnavailable("connections bucket")
        return self._store

    # -- a new connection ---------------------------------------------------------------------

    async def start(self, session: HubSession, groups: Sequence[str]) -> None:
        """Make ``session`` resumable, in ``groups``; raises BrokerUnavailable when KV or the stream
        do not answer (the host then closes the connection)."""
        store = self._required_store()
        key = session.connection_key
        protocol = session.connection.protocol
        assert protocol is not None
        # Its start record comes after this position: until it is routed, the connection receives nothing.
        checkpoint = Checkpoint(position=self._routed_position(), sent=0, groups=(), inbound=0, started=False)
        record = self._record(session, checkpoint, epoch=1, attached=True)
        revision = await store.compare_and_set(key, record.encode(), 0)
        if revision is None:
            raise BrokerUnavailable(f"connection {key} is already recorded")
        state = Resumable(
            coordinator=self,
            key=key,
            log=ConnectionLog(key=key, user_id=session.user_id, checkpoint=checkpoint),
            epoch=1,
            revision=revision,
            live=True,
            written=checkpoint,
            written_at=self._clock(),
        )
        session.resumable = state
        self._go_live(session, state)
        self._enqueue(session, state, marker_record(RecordKind.START, groups=list(groups)), 0)
        self._metrics.resumable_connections.inc()

    def _go_live(self, session: HubSession, state: Resumable) -> None:
        """Take the connection's records, and be in the subjects its log says, from now on (no await)."""
        state.live = True
        self._live[state.key] = (session, state)
        state.handler = self._handler(session, state)
        self._router.handle_records(state.key, state.handler)
        self._enter_log_subjects(session, state)

    def _enter_log_subjects(self, session: HubSession, state: Resumable) -> None:
        if not state.log.started:
            return
        self._router.enter(ALL_SUBJECT, session)
        if session.user_id:
            self._router.enter(user_subject(session.user_id), session)
        for group in state.log.groups:
            self._router.enter(group_subject(group), session)

    def _leave_subjects(self, session: HubSession, state: Resumable) -> None:
        self._router.exit(ALL_SUBJECT, session)
        if session.user_id:
            self._router.exit(user_subject(session.user_id), session)
        for group in state.log.groups:
            self._router.exit(group_subject(group), session)

    def _handler(self, session: HubSession, state: Resumable) -> Callable[[bytes, int], None]:
        def on_record(payload: bytes, position: int) -> None:
            self._on_record(session, state, payload, position)

        return on_record

    def _on_record(self, session: HubSession, state: Resumable, payload: bytes, position: int) -> None:
        record = self._decode(state, payload)
        if record is None:
            return
        if record.kind is RecordKind.TAKEOVER and _epoch_of(record.fields) > state.epoch:
            self._lose(session, state)
            return
        if state.paused or position <= state.replayed_to:
            return  # the catch-up applies it, or the replay did
        before = state.log.groups
        started = state.log.started
        deliver = state.log.apply(record, position)
        groups_changed = state.log.groups != before
        if not started and state.log.started:
            self._enter_log_subjects(session, state)
        elif groups_changed:
            for group in set(before) - set(state.log.groups):
                self._router.exit(group_subject(group), session)
            for group in set(state.log.groups) - set(before):
                self._router.enter(group_subject(group), session)
        if groups_changed:
            self._groups_changed()
        if deliver and state.admit(session, position, len(record.frame)):
            session.write(SharedMessage(record.frame), self._clock())

    def _decode(self, state: Resumable, payload: bytes) -> StreamRecord | None:
        """The record in ``payload``, or None (counted, logged once) when no gateway wrote it."""
        try:
            return decode_record(payload)
        except InvalidRecord as error:
            self._invalid_record(state.key, error)
            return None

    def _invalid_record(self, key: str, error: Exception) -> None:
        self._metrics.invalid_broker_messages.labels(kind="bad_connection_record").inc()
        if not self._logged_invalid:
            self._logged_invalid = True
            log.warning("dropping an invalid record of connection %s: %s (logged once)", key, error)

    # -- what the hub does with a resumable connection -------------------------------------

    async def join(self, session: HubSession, state: Resumable, group: str) -> None:
        """Record the join; returns once it is stored (answers sent after it come after it)."""
        await self._wait_stored(session, state, marker_record(RecordKind.JOIN, group=group))

    async def leave(self, session: HubSession, state: Resumable, group: str) -> None:
        await self._wait_stored(session, state, marker_record(RecordKind.LEAVE, group=group))

    async def _wait_stored(self, session: HubSession, state: Resumable, payload: bytes) -> None:
        stored: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(session, state, payload, 0, stored)
        await stored

    def _enqueue(
        self,
        session: HubSession,
        state: Resumable,
        payload: bytes,
        inbound: int,
        stored: asyncio.Future[int] | None = None,
    ) -> None:
        if state.lost:
            if stored is not None:
                stored.set_exception(BrokerUnavailable(state.key))
            return
        if len(state.outbox) >= MAX_OUTBOX_RECORDS:
            self._fail_outbox(session, state, "too many records waiting to be stored")
            if stored is not None:
                stored.set_exception(BrokerUnavailable(state.key))
            return
        state.outbox.append((payload, inbound, stored))
        if state.outbox_task is None:
            state.outbox_task = asyncio.create_task(self._store_outbox(session, state))

    async def _store_outbox(self, session: HubSession, state: Resumable) -> None:
        subject = CONNECTION_PREFIX + state.key
        try:
            while state.outbox:
                payload, inbound, stored = state.outbox[0]
                position = await self._append(subject, payload)
                state.outbox.popleft()
                if inbound:
                    self._mark_durable(state, inbound)
                if stored is not None and not stored.done():
                    stored.set_result(position)
        except BrokerUnavailable:
            self._fail_outbox(session, state, "the fan-out stream does not take its records")
        finally:
            state.outbox_task = None

    async def _append(self, subject: str, payload: bytes) -> int:
        for delay in APPEND_RETRY_DELAYS_SECONDS:
            try:
                return await self._feed.append(subject, payload)
            except BrokerUnavailable:
                await asyncio.sleep(delay)
        return await self._feed.append(subject, payload)

    def _fail_outbox(self, session: HubSession, state: Resumable, why: str) -> None:
        log.warning("closing resumable connection %s: %s", state.key, why)
        self._metrics.resumable_failures.labels(reason="records_not_stored").inc()
        for _, _, stored in state.outbox:
            if stored is not None and not stored.done():
                stored.set_exception(BrokerUnavailable(state.key))
        state.outbox.clear()
        state.lost = True  # its log is incomplete: it must not be resumed from here on
        session.close(CloseReason.PROTOCOL_ERROR, error=CLOSED_WITH_ERROR, allow_reconnect=True)

    def _mark_durable(self, state: Resumable, inbound: int) -> None:
        if inbound <= state.durable:
            return  # known already (a replay found its record before the append returned)
        state.durable_above.add(inbound)
        while state.durable + 1 in state.durable_above:
            state.durable += 1
            state.durable_above.discard(state.durable)

    def _pause(self, session: HubSession, state: Resumable, position: int) -> None:
        """The client has not acknowledged ``buffer_bytes``: stop sending live (no await here, inside the
        router's delivery) and catch up from the stream after ``position`` as Acks come in."""
        state.paused = True
        self._metrics.resumable_paused.inc()
        state.catch_up = asyncio.create_task(self._catch_up(session, state, position))

    async def _catch_up(self, session: HubSession, state: Resumable, after: int) -> None:
        self._forget(session, state)
        try:
            await self.replay(session, state, after=after)
        except (ResumeRefused, BrokerUnavailable) as error:
            outcome = error.outcome if isinstance(error, ResumeRefused) else "unavailable"
            log.warning("connection %s dropped: its catch-up failed (%s)", state.key, outcome)
            self._metrics.resumable_failures.labels(reason=f"catch_up_{outcome}").inc()
            session.drop(CloseReason.SLOW_CONSUMER)  # the client resumes from its last checkpoint
        finally:
            state.paused = False
            state.catch_up = None

    def _tick(self, session: HubSession, state: Resumable) -> None:
        """Once a second: take the client's Acks, and Ack what of the client's is stored."""
        state.log.acknowledged(session.connection.acked)
        if state.durable > state.acked_to_client:
            state.acked_to_client = state.durable
            session.connection.acknowledge(state.durable)

    # -- the end of a connection ------------------------------------------------------------

    async def end(self, session: HubSession, state: Resumable) -> None:
        """The client closed the connection: it cannot be resumed any more."""
        self._forget(session, state)
        if state.lost:
            return
        state.lost = True
        with contextlib.suppress(BrokerUnavailable):
            await self._feed.append(CONNECTION_PREFIX + state.key, marker_record(RecordKind.END))
        store = self._store
        if store is not None:
            with contextlib.suppress(BrokerUnavailable):
                await store.delete(state.key)

    async def detach(self, session: HubSession, state: Resumable) -> None:
        """The socket dropped: keep the connection for ``disconnect_timeout`` seconds, resumable on any
        replica from its last checkpoint."""
        live = state.live
        self._forget(session, state)
        if state.lost:
            return
        # A connection catching up (not live) has not counted all that was routed: it resumes after its
        # last acknowledged message, not from the routed position.
        checkpoint = state.log.take_checkpoint(self._routed_position() if live else 0)
        record = await self._write(session, state, checkpoint, attached=False)
        if record is not None:
            deadline = self._clock() + self._disconnect_timeout
            self._detached[state.key] = (deadline, state.revision)
            self._metrics.resumable_detached.inc()

    def _forget(self, session: HubSession, state: Resumable) -> None:
        catch_up = state.catch_up
        if catch_up is not None and catch_up is not asyncio.current_task():
            catch_up.cancel()
        current = self._live.get(state.key)
        if current is not None and current[1] is state:
            del self._live[state.key]
            self._metrics.resumable_connections.dec()
        if state.handler is not None:
            self._router.forget_records(state.key, state.handler)
            state.handler = None
        if state.live:
            state.live = False
            self._leave_subjects(session, state)

    def _lose(self, session: HubSession, state: Resumable) -> None:
        """Another replica took the connection over: drop this copy, change nothing in KV."""
        state.lost = True
        self._forget(session, state)
        self._metrics.resumable_failures.labels(reason="taken_over").inc()
        session.close(CloseReason.TRANSPORT_CLOSED, allow_reconnect=True)

    # -- checkpoints ----------------------------------------------------------------------------

    async def _write(
        self, session: HubSession, state: Resumable, checkpoint: Checkpoint, *, attached: bool
    ) -> ConnectionRecord | None:
        store = self._store
        if store is None:
            return None
        record = self._record(session, checkpoint, epoch=state.epoch, attached=attached)
        try:
            revision = await store.compare_and_set(state.key, record.encode(), state.revision)
        except BrokerUnavailable:
            self._metrics.resumable_failures.labels(reason="checkpoint_unavailable").inc()
            return None
        if revision is None:
            self._lose(session, state)
            return None
        state.revision = revision
        state.written = checkpoint
        state.written_at = self._clock()
        self._metrics.resumable_checkpoints.inc()
        return record

    def _record(self, session: HubSession, checkpoint: Checkpoint, *, epoch: int, attached: bool) -> ConnectionRecord:
        """What KV keeps of ``session``: owned by this replica, at ``checkpoint``."""
        protocol = session.connection.protocol
        return ConnectionRecord(
            user_id=session.user_id,
            protocol=protocol.name if protocol is not None else "json",
            owner=self._replica,
            epoch=epoch,
            attached=attached,
            detached_at=None if attached else self._wall_clock(),
            checkpoint=checkpoint,
        )

    async def run(self) -> None:
        """Write due checkpoints and end connections detached for too long, once a second, until cancelled."""
        while True:
            await asyncio.sleep(1.0)
            await self.write_checkpoints()
            await self.end_expired()

    async def write_checkpoints(self) -> None:
        now = self._clock()
        for session, state in list(self._live.values()):
            if not state.live or state.lost:
                continue
            since = now - state.written_at
            if since < self._checkpoint_interval:
                continue
            checkpoint = state.log.take_checkpoint(self._routed_position())
            if checkpoint != state.written or since >= self._refresh_interval:
                await self._write(session, state, checkpoint, attached=True)

    async def end_expired(self) -> None:
        store = self._store
        now = self._clock()
        for key, (deadline, revision) in list(self._detached.items()):
            if now < deadline:
                continue
            del self._detached[key]
            if store is None:
                continue
            with contextlib.suppress(BrokerUnavailable):
                found = await store.entry(key)
                if found is not None and found[1] == revision:
                    await store.delete(key)
                    self._metrics.resumable_expired.inc()

    # -- resuming -------------------------------------------------------------------------------

    async def lookup(self, key: str) -> tuple[ConnectionRecord, int] | None:
        """The record of a resumable connection and its revision, or None."""
        found = await self._required_store().entry(key)
        if found is None:
            return None
        try:
            return ConnectionRecord.decode(found[0]), found[1]
        except ValueError as error:
            self._invalid_record(key, error)
            return None

    def resumable_now(self, record: ConnectionRecord) -> bool:
        """A detached connection may be resumed for ``disconnect_timeout`` seconds; an attached one
        (its replica may have died without detaching it) as long as its record lives."""
        if record.attached or record.detached_at is None:
            return True
        return self._wall_clock() - record.detached_at <= self._disconnect_timeout

    async def take_over(self, session: HubSession, record: ConnectionRecord, revision: int) -> Resumable:
        """Make this replica the connection's owner (a higher epoch); raises ResumeRefused("conflict")
        when another resume got there first."""
        store = self._required_store()
        key = session.connection_key
        taken = replace(record, owner=self._replica, epoch=record.epoch + 1, attached=True, detached_at=None)
        new_revision = await store.compare_and_set(key, taken.encode(), revision)
        if new_revision is None:
            raise ResumeRefused("conflict")
        self._detached.pop(key, None)
        state = Resumable(
            coordinator=self,
            key=key,
            log=ConnectionLog(key=key, user_id=record.user_id, checkpoint=record.checkpoint),
            epoch=taken.epoch,
            revision=new_revision,
            durable=record.checkpoint.inbound,
            acked_to_client=record.checkpoint.inbound,
            written=record.checkpoint,
            written_at=self._clock(),
        )
        session.resumable = state
        self._enqueue(session, state, marker_record(RecordKind.TAKEOVER, epoch=taken.epoch, owner=self._replica), 0)
        return state

    async def replay(self, session: HubSession, state: Resumable, *, after: int | None = None) -> int:
        """Send everything after stream position ``after`` (default: the checkpoint), then continue live;
        returns how many messages were replayed. Never more than the connection's outbound limit is
        queued, nor more than ``buffer_bytes`` unacknowledged. Raises ResumeRefused when the stream no
        longer holds the start ("gap"), when live traffic outran the replay ("too_far_behind"), when the
        client stopped acknowledging ("unacknowledged") or the connection closed ("closed")."""
        connection = session.connection
        protocol = connection.protocol
        assert protocol is not None
        max_queued = connection.limits.max_outbound_bytes * REPLAY_QUEUE_SHARE
        max_unacknowledged = self.buffer_bytes * REPLAY_QUEUE_SHARE
        subjects = state.log.subjects()
        own = CONNECTION_PREFIX + state.key
        catch_up = _CatchUp(frozenset(s for s in subjects if not s.endswith(">")))
        self._router.watch(catch_up)
        replayed = 0
        reached = state.log.checkpoint.position if after is None else after
        try:
            try:
                async for message in self._feed.replay(subjects, after=reached):
                    replayed += self._replay_one(
                        session, state, protocol, own, message.subject, message.payload, message.position
                    )
                    reached = message.position
                    await self._wait_for_room(session, state, max_queued, max_unacknowledged)
            except ReplayGap as error:
                raise ResumeRefused("gap") from error
            if catch_up.overflowed:
                raise ResumeRefused("too_far_behind")
            # No await from here on: the live feed cannot run before the connection is in it.
            for subject, payload, position in catch_up.caught:
                if position > reached:
                    replayed += self._replay_one(session, state, protocol, own, subject, payload, position)
                    reached = position
        finally:
            self._router.unwatch(catch_up)
        if connection.should_close:
            raise ResumeRefused("closed")
        state.replayed_to = reached
        self._go_live(session, state)
        self._metrics.resumable_connections.inc()
        self._metrics.replayed_messages.inc(replayed)
        return replayed

    async def _wait_for_room(
        self, session: HubSession, state: Resumable, max_queued: float, max_unacknowledged: float
    ) -> None:
        """Wait while the socket or the client's acknowledgements lag behind the replay."""
        connection = session.connection
        waited_since = self._clock()
        acked = connection.acked
        while True:
            if connection.should_close:
                raise ResumeRefused("closed")
            state.log.acknowledged(connection.acked)
            if session.unsent_bytes <= max_queued and state.log.unacknowledged_bytes <= max_unacknowledged:
                return
            if connection.acked != acked:
                acked, waited_since = connection.acked, self._clock()
            elif self._clock() - waited_since > ACK_WAIT_SECONDS:
                raise ResumeRefused("unacknowledged")
            await asyncio.sleep(REPLAY_WAIT_SECONDS)

    def _replay_one(
        self,
        session: HubSession,
        state: Resumable,
        protocol: HubProtocol,
        own: str,
        subject: str,
        payload: bytes,
        position: int,
    ) -> int:
        """Send one stored message if it is for this connection; 1 if it was sent."""
        if subject == own:
            record = self._decode(state, payload)
            if record is None:
                return 0
            before = state.log.groups
            deliver = state.log.apply(record, position)
            if state.log.groups != before:
                self._groups_changed()
            if record.inbound:
                # Stored, by this replica or the one before: the client may be told (its next messages
                # are numbered after it, so the count must move on from here).
                self._mark_durable(state, record.inbound)
            if not deliver:
                return 0
            message = SharedMessage(record.frame)
        elif state.log.admits(subject):
            try:
                message = self._router.encode(protocol.name, self._router.invocation_of(payload))
            except InvalidEnvelope:
                return 0  # the live path refused it too: it was sent to nobody
        else:
            return 0
        state.log.count_sent(position, len(message.payload))
        session.write(message, self._clock())
        return 1


class _CatchUp:
    """Keeps the live messages that may concern a connection while its replay runs (bounded)."""

    def __init__(self, subjects: frozenset[str]) -> None:
        self._subjects = subjects
        self.caught: list[tuple[str, bytes, int]] = []
        self._bytes = 0
        self.overflowed = False

    def __call__(self, subject: str, payload: bytes, position: int) -> None:
        if subject in self._subjects or subject.startswith(GROUP_PREFIX):
            if len(self.caught) >= MAX_CATCH_UP_MESSAGES or self._bytes + len(payload) > MAX_CATCH_UP_BYTES:
                self.overflowed = True
                return
            self._bytes += len(payload)
            self.caught.append((subject, payload, position))


def _epoch_of(fields: Mapping[str, object]) -> int:
    epoch = fields.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0
