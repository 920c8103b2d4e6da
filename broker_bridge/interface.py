"""The broker interface: publish bytes to a subject, subscribe a callback to a subject, and
request/reply between replicas.

Implementations: :mod:`broker_bridge.broker_nats` (production) and
:mod:`broker_bridge.broker_memory` (fast component tests, one process only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

MessageCallback = Callable[[str, bytes], None]
"""Called with (subject, payload) for each message; must not block (no awaits on the hot path)."""

RequestHandler = Callable[[bytes], Awaitable[bytes]]
"""Answers one request: its payload in, the reply payload out."""


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
