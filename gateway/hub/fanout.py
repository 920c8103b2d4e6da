"""Per-replica fan-out: local members of groups, users and "all", fed by broker subscriptions.

Each subject maps to a broker subscription (:func:`broker_bridge.subjects.subscription_subject`:
the subject itself, or ``realtime.user.*`` for every user subject). The first local member behind a
subscription makes it; the last one leaving ends it. Joins and leaves behind one subscription are
serialised, and a failed subscribe leaves nothing behind. A received event is encoded (and framed
for WebSocket) once per hub protocol and the same bytes go to every member without awaiting any
socket, so one slow client cannot set everyone's pace and a recipient costs no allocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from broker_bridge.envelope import InvalidEnvelope, InvalidEnvelopeKind, decode_event
from broker_bridge.hub_events import CLIENT_METHODS
from broker_bridge.interface import Broker, Subscription
from broker_bridge.subjects import subscription_subject
from gateway.metrics import GatewayMetrics
from gateway.signalr.messages import Invocation
from gateway.signalr.protocol import HubProtocol
from gateway.transport.ws_frames import OPCODE_BINARY, OPCODE_TEXT, websocket_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EncodedBroadcast:
    """One fan-out message for one hub protocol, shared by every recipient using that protocol.

    ``payload`` is the hub-protocol frame (what a transport queues); ``websocket_frame`` is the same
    bytes behind their WebSocket header, so a WebSocket that can take it now needs one write.
    """

    payload: bytes
    websocket_frame: bytes

    @classmethod
    def encode(cls, protocol: HubProtocol, message: Invocation) -> EncodedBroadcast:
        payload = protocol.encode(message)
        opcode = OPCODE_BINARY if protocol.transfer_format == "Binary" else OPCODE_TEXT
        return cls(payload, websocket_frame(opcode, payload))


class Member(Protocol):
    """A local connection that can take pre-encoded frames."""

    @property
    def protocol_name(self) -> str: ...

    def deliver(self, frame: EncodedBroadcast, received_at: float) -> bool:
        """Write or queue ``frame`` (encoded for this member's protocol); never blocks, never raises.

        ``received_at`` (``time.monotonic()``) is when the broker message arrived, for the
        receive-to-socket-write latency histogram. Returns True if the frame reached the socket now.
        """
        ...


class FanoutRouter:
    """Maps subjects to local members and keeps exactly one broker subscription per one in use."""

    def __init__(
        self,
        *,
        broker: Broker,
        protocols: Mapping[str, HubProtocol],
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._broker = broker
        self._protocols = protocols
        self._metrics = metrics
        self._clock = clock
        # subject -> local member -> its protocol name (fixed at the handshake, so read once at join)
        self._members: dict[str, dict[Member, str]] = {}
        # broker subscription subject -> the subscription, and how many (subject, member) pairs it carries
        self._subscriptions: dict[str, Subscription] = {}
        self._carried: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self._logged_invalid: set[InvalidEnvelopeKind] = set()

    def member_count(self, subject: str) -> int:
        return len(self._members.get(subject, ()))

    @property
    def subscribed_subjects(self) -> frozenset[str]:
        """The subjects of the broker subscriptions held now (``realtime.user.*`` for users)."""
        return frozenset(self._subscriptions)

    def is_member(self, subject: str, member: Member) -> bool:
        return member in self._members.get(subject, ())

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
            else:  # so per-user locks do not pile up
                del self._lock_users[subject]
                del self._locks[subject]

    async def join(self, subject: str, member: Member) -> None:
        """Add ``member``; subscribe first if nothing local uses the subscription carrying ``subject``.

        Raises :class:`broker_bridge.interface.BrokerUnavailable` (and changes nothing) when the
        subscription cannot be made.
        """
        carrier = subscription_subject(subject)
        async with self._subject_lock(carrier):
            if carrier not in self._subscriptions:
                self._subscriptions[carrier] = await self._broker.subscribe(carrier, self._on_message)
            members = self._members.setdefault(subject, {})
            if member not in members:
                members[member] = member.protocol_name
                self._carried[carrier] = self._carried.get(carrier, 0) + 1

    async def leave(self, subject: str, member: Member) -> None:
        """Remove ``member`` at once; unsubscribe when it was the last local member behind its subscription."""
        members = self._members.get(subject)
        if members is None or member not in members:
            return
        del members[member]  # before any await: nothing more is delivered to it
        if not members:
            del self._members[subject]
        carrier = subscription_subject(subject)
        self._carried[carrier] -= 1
        async with self._subject_lock(carrier):
            if self._carried.get(carrier) == 0:
                del self._carried[carrier]
                await self._subscriptions.pop(carrier).unsubscribe()

    def _on_message(self, subject: str, payload: bytes) -> None:
        members = self._members.get(subject)
        if not members:  # e.g. a user connected to another replica
            return
        started = self._clock()
        try:
            event = decode_event(payload)
        except InvalidEnvelope as error:
            self._metrics.invalid_broker_messages.labels(kind=error.kind.value).inc()
            if error.kind not in self._logged_invalid:
                self._logged_invalid.add(error.kind)
                log.warning(
                    "dropping invalid fan-out payload on %s: %s (logged once per kind)",
                    subject,
                    error.kind.value,
                )
            return
        frames: dict[str, EncodedBroadcast] = {}
        message = Invocation(target=event.target, arguments=event.arguments)
        written_now = False
        for member, name in members.items():
            frame = frames.get(name)
            if frame is None:
                frame = frames[name] = EncodedBroadcast.encode(self._protocols[name], message)
            if member.deliver(frame, started):
                written_now = True
        if written_now:  # once per broadcast: receive -> last synchronous socket write
            self._metrics.fanout_seconds.observe(self._clock() - started)
        delivered = len(members)
        target = event.target if event.target in CLIENT_METHODS else "other"
        self._metrics.messages_delivered.labels(target=target).inc(delivered)
