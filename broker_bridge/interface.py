"""The broker interface: publish bytes to a subject, subscribe a callback to a subject, and
request/reply between replicas.

Implementations: :mod:`broker_bridge.broker_nats` (production) and
:mod:`broker_bridge.broker_memory` (fast component tests, one process only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

MessageCallback = Callable[[str, bytes], None]
"""Called with (subject, payload) for each message; must not block (no awaits on the hot path)."""

RequestHandler = Callable[[bytes], Awaitable[bytes]]
"""Answers one request: its payload in, the reply payload out."""

FeedCallback = Callable[[str, bytes, int], None]
"""Called with (subject, payload, position) for each fan-out message; ``position`` is the message's
sequence in the fan-out stream, 0 when the feed has none. Must not block."""


class BrokerUnavailable(Exception):
    """The broker cannot take a publish or subscribe right now (disconnected or draining)."""


class NoResponder(Exception):
    """A request found nobody serving its subject (the replica it was meant for is gone)."""


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Broker(Protocol):
    @property
    def is_connected(self) -> bool: ...

    async def publish(self, subject: str, payload: bytes) -> None:
        """Send ``payload``; raise :class:`BrokerUnavailable` instead of dropping it silently."""
        ...

    async def request(self, subject: str, payload: bytes, *, timeout_seconds: float) -> bytes:
        """Send ``payload`` to whoever serves ``subject`` and return the reply.

        Raises :class:`NoResponder` when nobody serves it, TimeoutError when the reply takes longer
        than ``timeout_seconds``, :class:`BrokerUnavailable` when the broker is away.
        """
        ...

    async def serve(
        self, subject: str, handler: RequestHandler, *, max_in_flight: int, busy_reply: bytes
    ) -> Subscription:
        """Answer every request on ``subject`` with ``handler``, each in its own task; beyond
        ``max_in_flight`` handlers at once, a request is answered with ``busy_reply`` at once."""
        ...

    async def subscribe(self, subject: str, callback: MessageCallback) -> Subscription:
        """Deliver every message on ``subject`` to ``callback`` until unsubscribed."""
        ...


class Publisher(Protocol):
    async def publish(self, subject: str, payload: bytes) -> None:
        """Send ``payload``; raise :class:`BrokerUnavailable` instead of dropping it silently."""
        ...


class FanoutFeed(Protocol):
    """Where a replica's fan-out messages come from: a subscription per subject in use, or one consumer
    of the fan-out stream that brings every message with its position."""

    @property
    def positions(self) -> bool:
        """Whether messages carry their stream position (and connections can be replayed)."""
        ...

    async def attach(self, subject: str, callback: FeedCallback) -> Subscription:
        """Start delivering ``subject`` (wildcards allowed) to ``callback`` until unsubscribed."""
        ...


class ReplayGap(Exception):
    """The fan-out stream no longer holds every message after the requested position."""

    def __init__(self, *, wanted: int, first: int) -> None:
        super().__init__(f"stream starts at {first}, replay wanted {wanted}")
        self.wanted = wanted
        self.first = first


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message of the fan-out stream, with its position."""

    subject: str
    payload: bytes
    position: int


class ReplayableFeed(Protocol):
    """The fan-out stream as resumable connections use it: append records, replay from a position."""

    @property
    def last_position(self) -> int:
        """Every message up to this position has been routed on this replica."""
        ...

    async def append(self, subject: str, payload: bytes) -> int:
        """Store ``payload`` and return its position; BrokerUnavailable when the stream does not take it."""
        ...

    def replay(self, subjects: Sequence[str], *, after: int) -> AsyncIterator[StreamMessage]:
        """Every stored message on ``subjects`` after ``after``, in order, up to the stream's end when
        the replay began; raises :class:`ReplayGap` when the stream no longer starts early enough."""
        ...
