"""Per-replica fan-out: local members of groups, users and "all", fed by a fan-out feed.

The hub joins and leaves in terms of groups and users; the subjects behind them come from
:mod:`broker_bridge.subjects`. Each subject maps to interest in the feed
(:func:`broker_bridge.subjects.subscription_subject`: the subject itself, or ``realtime.user.*`` for
every user subject): with plain NATS subscriptions the first local member behind one makes it and the
last one leaving ends it; joins and leaves behind one subscription are serialised, and a failed
subscribe leaves nothing behind. With the fan-out stream every message arrives anyway, with its
stream position, and the records of resumable connections (``realtime.conn.<key>``) go to the handler
registered for that connection. A received event is encoded once per hub protocol into a
:class:`gateway.hub.outbound.SharedMessage` and the same object goes to every member without
awaiting any socket, so one slow client cannot set everyone's pace and a recipient costs no
allocation.

A fair loop: one message to a large group is delivered in slices of ``slice_seconds`` of work, the
router yielding to the event loop between them (``loop.call_soon``), so reads, invocations and pings
of every connection go on while 10,000 members are fed. Messages are routed strictly in arrival
order: one that arrives while another is still being delivered waits behind it (a backlog), so no
connection sees them overtake each other. Each message is delivered to the members it had when its
delivery began; a member that leaves before its slice is skipped, one that joins meanwhile waits for
the next message. :attr:`FanoutRouter.pending_position` says which stream position is not fully
routed yet (resumable connections checkpoint before it). Over :data:`MAX_BACKLOG_MESSAGES` waiting,
the router stops yielding until the backlog is delivered: the backlog stays bounded, and the feed is
held back as it was by a single synchronous pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final, Protocol

from broker_bridge.catalog import CLIENT_METHODS
from broker_bridge.envelope import InvalidEnvelope, InvalidEnvelopeKind, decode_event
from broker_bridge.interface import FanoutFeed, FeedCallback, Subscription
from broker_bridge.subjects import (
    ALL_SUBJECT,
    CONNECTION_PREFIX,
    group_subject,
    subscription_subject,
    user_subject,
)
from gateway.hub.outbound import SharedMessage
from gateway.metrics import GatewayMetrics
from gateway.signalr.messages import Invocation
from gateway.signalr.protocol import HubProtocol

log = logging.getLogger(__name__)

# Members delivered between two readings of the clock: a clock read costs about what one delivery
# does, so 64 keep it under 2 % of the pass and a slice overshoots its time by well under 1 ms.
MEMBERS_PER_CLOCK_READ: Final = 64
# Messages waiting behind one being delivered in slices; more and delivery stops yielding until the
# backlog is through (a bound on memory; the broker's own buffers hold what comes meanwhile).
MAX_BACKLOG_MESSAGES: Final = 10_000


class Member(Protocol):
    """A local connection that takes broadcasts encoded for its protocol."""

    @property
    def protocol_name(self) -> str: ...

    def deliver(self, message: SharedMessage, now: float, position: int) -> bool:
        """Write or queue ``message``; never blocks, never raises. True when it reached the socket now.

        ``position`` is the message's place in the fan-out stream (0 without the stream)."""
        ...


RecordHandler = Callable[[bytes, int], None]
"""Takes one record of a resumable connection (payload, stream position); must not block."""


class FanoutRouter:
    """Maps groups, users and "all" to local members, with one broker subscription per one in use."""

    def __init__(
        self,
        *,
        feed: FanoutFeed,
        protocols: Mapping[str, HubProtocol],
        metrics: GatewayMetrics,
        max_payload_bytes: int | None = None,
        max_payload_depth: int | None = None,
        slice_seconds: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = feed
        self._protocols = protocols
        self._metrics = metrics
        self._max_payload_bytes = max_payload_bytes
        self._max_payload_depth = max_payload_depth
        self._slice_seconds = slice_seconds
        self._clock = clock
        # subject -> its one local member, or local member -> its protocol name (fixed at the handshake,
        # so read once at join) when it has several. A user's own subject mostly has one member, and a
        # one-key dict would cost each connection about 270 bytes. What a message is encoded for is
        # read off the names when it arrives (a C-level pass, about 20 µs for 10,000 members).
        self._members: dict[str, Member | dict[Member, str]] = {}
        # subject -> its members as a tuple, for a message delivered in slices (more members than one
        # clock read covers), kept until the membership changes. Every message reuses it instead of
        # copying the members: a copy per message is walked by every young collection during its
        # delivery (5,000 cold references at N=5,000); a kept tuple only until the first middle
        # collection freezes it (gateway/gc_policy.py).
        self._snapshots: dict[str, tuple[Member, ...]] = {}
        # broker subscription subject -> the subscription, and how many (subject, member) pairs it carries
        self._subscriptions: dict[str, Subscription] = {}
        self._carried: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self._logged_invalid: set[InvalidEnvelopeKind] = set()
        # Resumable connections' own records, by connection key, and who sees every message (a
        # connection catching up after a replay).
        self._record_handlers: dict[str, RecordHandler] = {}
        self._watchers: list[FeedCallback] = []
        # The message being delivered in slices, and those waiting behind it (in arrival order).
        self._current: _Delivery | None = None
        self._backlog: deque[tuple[str, bytes, int]] = deque()
        self._resume_scheduled = False
        self._draining = False
        feed.deliver_to(self._on_message)

    # -- what the hub calls ---------------------------------------------------------------------

    async def join_group(self, group: str, member: Member) -> None:
        """Add ``member`` to ``group``; raises BrokerUnavailable (and changes nothing) if the
        subscription cannot be made."""
        await self._join(group_subject(group), member)

    async def leave_group(self, group: str, member: Member) -> None:
        await self._leave(group_subject(group), member)

    async def join_user(self, user_id: str, member: Member) -> None:
        """Deliver what is sent to ``user_id`` to ``member`` (one of that user's connections)."""
        await self._join(user_subject(user_id), member)

    async def leave_user(self, user_id: str, member: Member) -> None:
        await self._leave(user_subject(user_id), member)

    async def join_all(self, member: Member) -> None:
        """Deliver what is sent to every connection to ``member``."""
        await self._join(ALL_SUBJECT, member)

    async def leave_all(self, member: Member) -> None:
        await self._leave(ALL_SUBJECT, member)

    def group_size(self, group: str) -> int:
        """Local members of ``group``."""
        return len(self._member_map(group_subject(group)))

    def in_group(self, group: str, member: Member) -> bool:
        return member in self._member_map(group_subject(group))

    def reaches_user(self, user_id: str, member: Member) -> bool:
        return member in self._member_map(user_subject(user_id))

    @property
    def subscribed_subjects(self) -> frozenset[str]:
        """The subjects of the broker subscriptions held now (``realtime.user.*`` for users)."""
        return frozenset(self._subscriptions)

    # -- subscriptions --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _subject_lock(self, subject: str) -> AsyncIterator[None]:
        """Serialise joins and leaves behind one subscription; forget the lock once nobody needs it."""
        lock = self._locks.get(subject)
        if lock is None:
            lock = self._locks[subject] = asyncio.Lock()
        self._lock_users[subject] = self._lock_users.get(subject, 0) + 1
        try:
            async with lock:
                yield
        finally:
            remaining = self._lock_users[subject] - 1
            if remaining:
                self._lock_users[subject] = remaining
            else:  # so per-subject locks do not pile up
                del self._lock_users[subject]
                del self._locks[subject]

    async def _join(self, subject: str, member: Member) -> None:
        carrier = subscription_subject(subject)
        async with self._subject_lock(carrier):
            if carrier not in self._subscriptions:
                self._subscriptions[carrier] = await self._feed.attach(carrier)
            if self._add_member(subject, member):
                self._carried[carrier] = self._carried.get(carrier, 0) + 1

    async def _leave(self, subject: str, member: Member) -> None:
        """Remove ``member`` at once; unsubscribe when it was the last local member behind its subscription."""
        if not self._remove_member(subject, member):  # before any await: nothing more is delivered to it
            return
        carrier = subscription_subject(subject)
        self._carried[carrier] -= 1
        async with self._subject_lock(carrier):
            if self._carried.get(carrier) == 0:
                del self._carried[carrier]
                await self._subscriptions.pop(carrier).unsubscribe()

    # -- resumable connections ------------------------------------------------------------------

    @property
    def positions(self) -> bool:
        """Whether messages arrive with their stream position (the fan-out stream)."""
        return self._feed.positions

    def handle_records(self, key: str, handler: RecordHandler) -> None:
        """Send the records of connection ``key`` to ``handler`` until :meth:`forget_records`."""
        self._record_handlers[key] = handler

    def forget_records(self, key: str, handler: RecordHandler) -> None:
        if self._record_handlers.get(key) is handler:
            del self._record_handlers[key]

    def watch(self, watcher: FeedCallback) -> None:
        """Also hand every message to ``watcher`` until :meth:`unwatch`: as its routing begins, before any
        member gets it (a replay that ends meanwhile and joins the connection to the subjects finds
        the message among those it caught; the delivery under way does not reach the newcomer)."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: FeedCallback) -> None:
        self._watchers.remove(watcher)

    def _member_map(self, subject: str) -> dict[Member, str]:
        """The local members of ``subject`` and their protocol names (a new dict when it has one)."""
        members = self._members.get(subject)
        if members is None:
            return {}
        if isinstance(members, dict):
            return members
        return {members: members.protocol_name}

    def _recipients(self, subject: str, members: dict[Member, str]) -> tuple[Member, ...] | None:
        """The members of ``subject`` now, for a delivery in slices (None: one pass covers them)."""
        if len(members) <= MEMBERS_PER_CLOCK_READ:
            return None
        snapshot = self._snapshots.get(subject)
        if snapshot is None:
            snapshot = self._snapshots[subject] = tuple(members)
        return snapshot

    def _add_member(self, subject: str, member: Member) -> bool:
        members = self._members.get(subject)
        if members is None:
            self._members[subject] = member
            return True
        if not isinstance(members, dict):
            if members is member:
                return False
            members = self._members[subject] = {members: members.protocol_name}
        elif member in members:
            return False
        members[member] = member.protocol_name
        self._snapshots.pop(subject, None)
        return True

    def _remove_member(self, subject: str, member: Member) -> bool:
        members = self._members.get(subject)
        if members is member:
            del self._members[subject]
            return True
        if not isinstance(members, dict) or member not in members:
            return False
        del members[member]  # a delivery under way reads this map: it must see the member gone
        self._snapshots.pop(subject, None)
        if not members:
            del self._members[subject]
        return True

    def enter(self, subject: str, member: Member) -> None:
        """Add ``member`` to ``subject`` now, without a subscription: with the fan-out stream every
        message arrives anyway (resumable connections change membership inside the feed's callback)."""
        if not self.positions:
            raise RuntimeError("membership without a subscription needs the fan-out stream")
        self._add_member(subject, member)

    def exit(self, subject: str, member: Member) -> None:
        """Undo :meth:`enter`."""
        self._remove_member(subject, member)

    # -- delivery -------------------------------------------------------------------------------

    @property
    def pending_position(self) -> int | None:
        """The stream position of the oldest message not yet delivered to all its members (None when
        every message received is): everything before it has been routed."""
        current = self._current
        if current is not None:
            return current.position
        return self._backlog[0][2] if self._backlog else None

    @property
    def backlog(self) -> int:
        """Messages received and not yet fully delivered."""
        return len(self._backlog) + (self._current is not None)

    def _on_message(self, subject: str, payload: bytes, position: int) -> None:
        backlog = self._backlog
        backlog.append((subject, payload, position))
        if self._draining:
            return  # a member or handler caused it: the delivery under way takes it up in turn
        if self.backlog > MAX_BACKLOG_MESSAGES:
            self._drain(yielding=False)
        elif self._current is None and len(backlog) == 1:
            self._drain(yielding=True)
        # else: behind a message being delivered; the scheduled slice takes it up in turn

    def _resume(self) -> None:
        self._resume_scheduled = False
        self._drain(yielding=True)

    def _drain(self, *, yielding: bool) -> None:
        """Deliver waiting messages in order; when ``yielding``, stop after a slice and continue from the
        event loop's next turn."""
        self._draining = True
        try:
            self._drain_until(self._clock() + self._slice_seconds if yielding else float("inf"))
        except BaseException:
            self._current = None  # a member broke its contract (deliver never raises): the rest go on
            raise
        finally:
            self._draining = False
            self._metrics.fanout_backlog.set(self.backlog)
            if (self._current is not None or self._backlog) and not self._resume_scheduled:
                self._resume_scheduled = True
                asyncio.get_running_loop().call_soon(self._resume)

    def _drain_until(self, deadline: float) -> None:
        backlog = self._backlog
        while True:
            current = self._current
            if current is None:
                if not backlog:
                    return
                current = self._begin(*backlog.popleft())
                if current is None:
                    continue
                self._current = current
            if not self._deliver_slice(current, deadline):
                return  # the event loop's next turn continues it
            self._current = None
            self._finish(current)

    def _begin(self, subject: str, payload: bytes, position: int) -> _Delivery | None:
        """Start routing one message: records and watchers now, members through the returned delivery
        (None when it has none here)."""
        if self._watchers:  # before any member: a replay that ends meanwhile finds it among the caught
            for watcher in tuple(self._watchers):
                watcher(subject, payload, position)
        if subject.startswith(CONNECTION_PREFIX):
            handler = self._record_handlers.get(subject[len(CONNECTION_PREFIX) :])
            if handler is not None:
                handler(payload, position)
            return None
        if subject not in self._members:  # e.g. a user connected to another replica
            return None
        members = self._member_map(subject)
        started = self._clock()
        try:
            message = self.invocation_of(payload)
            # Every protocol in use first, so a payload one of them cannot encode reaches nobody.
            encoded = {name: self.encode(name, message) for name in set(members.values())}
        except InvalidEnvelope as error:
            self._count_invalid(subject, error.kind)
            return None
        target = message.target if message.target in CLIENT_METHODS else "other"
        return _Delivery(members, self._recipients(subject, members), encoded, position, started, target)

    def _deliver_slice(self, delivery: _Delivery, deadline: float) -> bool:
        """Deliver to members of ``delivery`` until ``deadline``; True once every member had its turn."""
        members, encoded, position, now = delivery.members, delivery.encoded, delivery.position, delivery.started
        recipients = delivery.recipients
        if recipients is None:  # one pass
            for member, name in members.items():
                member.deliver(encoded[name], now, position)
            delivery.delivered = len(members)
            return True
        clock = self._clock
        index, total = delivery.index, len(recipients)
        delivered = 0
        while index < total:
            end = min(index + MEMBERS_PER_CLOCK_READ, total)
            for number in range(index, end):
                member = recipients[number]
                protocol_name = members.get(member)
                if protocol_name is not None:  # None: it left since the delivery began
                    member.deliver(encoded[protocol_name], now, position)
                    delivered += 1
            index = end
            if clock() >= deadline and index < total:
                break
        delivery.index = index
        delivery.delivered += delivered
        return index >= total

    def _finish(self, delivery: _Delivery) -> None:
        self._metrics.fanout_seconds.observe(self._clock() - delivery.started)
        self._metrics.messages_delivered.labels(target=delivery.target).inc(delivery.delivered)

    def invocation_of(self, payload: bytes) -> Invocation:
        """The client invocation a fan-out payload stands for, within the payload limits; raises
        InvalidEnvelope. The replay of a resumable connection decides with this too, so it sends
        exactly what the live path sent."""
        envelope = decode_event(payload, max_bytes=self._max_payload_bytes, max_depth=self._max_payload_depth)
        return Invocation(target=envelope.target, arguments=envelope.arguments)

    def encode(self, protocol_name: str, message: Invocation) -> SharedMessage:
        """``message`` in protocol ``protocol_name``; raises InvalidEnvelope when it cannot be encoded."""
        try:
            return SharedMessage(self._protocols[protocol_name].encode(message))
        except (TypeError, ValueError, OverflowError):  # orjson / msgpack refuse the value
            raise InvalidEnvelope(InvalidEnvelopeKind.UNENCODABLE) from None

    def _count_invalid(self, subject: str, kind: InvalidEnvelopeKind) -> None:
        self._metrics.invalid_broker_messages.labels(kind=kind.value).inc()
        if kind not in self._logged_invalid:
            self._logged_invalid.add(kind)
            log.warning("dropping invalid fan-out payload on %s: %s (logged once per kind)", subject, kind.value)


class _Delivery:
    """One message on its way to the members of its subject, possibly over several slices."""

    __slots__ = ("delivered", "encoded", "index", "members", "position", "recipients", "started", "target")

    def __init__(
        self,
        members: dict[Member, str],
        recipients: tuple[Member, ...] | None,
        encoded: dict[str, SharedMessage],
        position: int,
        started: float,
        target: str,
    ) -> None:
        self.members = members
        """The subject's live member map: who left since the delivery began is no longer in it."""
        self.encoded = encoded
        self.position = position
        self.started = started
        self.target = target
        self.recipients = recipients
        """The members when the delivery began (None when one clock read covers them all)."""
        self.index = 0
        self.delivered = 0
