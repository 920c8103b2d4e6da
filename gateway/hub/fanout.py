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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = feed
        self._protocols = protocols
        self._metrics = metrics
        self._max_payload_bytes = max_payload_bytes
        self._max_payload_depth = max_payload_depth
        self._clock = clock
        # subject -> local member -> its protocol name (fixed at the handshake, so read once at join)
        self._members: dict[str, dict[Member, str]] = {}
        # subject -> protocol name -> how many of its members use it (what a message is encoded for)
        self._protocols_used: dict[str, dict[str, int]] = {}
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
        return len(self._members.get(group_subject(group), ()))

    def in_group(self, group: str, member: Member) -> bool:
        return member in self._members.get(group_subject(group), ())

    def reaches_user(self, user_id: str, member: Member) -> bool:
        return member in self._members.get(user_subject(user_id), ())

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
                self._subscriptions[carrier] = await self._feed.attach(carrier, self._on_message)
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
        """Also hand every message to ``watcher`` (after its members got it) until :meth:`unwatch`."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: FeedCallback) -> None:
        self._watchers.remove(watcher)

    def _add_member(self, subject: str, member: Member) -> bool:
        members = self._members.setdefault(subject, {})
        if member in members:
            return False
        name = members[member] = member.protocol_name
        used = self._protocols_used.setdefault(subject, {})
        used[name] = used.get(name, 0) + 1
        return True

    def _remove_member(self, subject: str, member: Member) -> bool:
        members = self._members.get(subject)
        if members is None or member not in members:
            return False
        name = members.pop(member)
        if not members:
            del self._members[subject]
        used = self._protocols_used[subject]
        used[name] -= 1
        if not used[name]:
            del used[name]
            if not used:
                del self._protocols_used[subject]
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

    def _on_message(self, subject: str, payload: bytes, position: int) -> None:
        self._route(subject, payload, position)
        if self._watchers:
            for watcher in tuple(self._watchers):
                watcher(subject, payload, position)

    def _route(self, subject: str, payload: bytes, position: int) -> None:
        if subject.startswith(CONNECTION_PREFIX):
            handler = self._record_handlers.get(subject[len(CONNECTION_PREFIX) :])
            if handler is not None:
                handler(payload, position)
            return
        members = self._members.get(subject)
        if not members:  # e.g. a user connected to another replica
            return
        started = self._clock()
        try:
            envelope = decode_event(payload, max_bytes=self._max_payload_bytes, max_depth=self._max_payload_depth)
            message = Invocation(target=envelope.target, arguments=envelope.arguments)
            # Every protocol in use first, so a payload one of them cannot encode reaches nobody.
            encoded = {name: self._encode(name, message) for name in self._protocols_used[subject]}
        except InvalidEnvelope as error:
            self._count_invalid(subject, error.kind)
            return
        for member, name in members.items():
            member.deliver(encoded[name], started, position)
        self._metrics.fanout_seconds.observe(self._clock() - started)
        target = envelope.target if envelope.target in CLIENT_METHODS else "other"
        self._metrics.messages_delivered.labels(target=target).inc(len(members))

    def _encode(self, protocol_name: str, message: Invocation) -> SharedMessage:
        try:
            return SharedMessage(self._protocols[protocol_name].encode(message))
        except (TypeError, ValueError, OverflowError):  # orjson / msgpack refuse the value
            raise InvalidEnvelope(InvalidEnvelopeKind.UNENCODABLE) from None

    def _count_invalid(self, subject: str, kind: InvalidEnvelopeKind) -> None:
        self._metrics.invalid_broker_messages.labels(kind=kind.value).inc()
        if kind not in self._logged_invalid:
            self._logged_invalid.add(kind)
            log.warning("dropping invalid fan-out payload on %s: %s (logged once per kind)", subject, kind.value)
