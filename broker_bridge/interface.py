"""The broker interface: publish bytes to a subject, subscribe a callback to a subject.

Implementations: :mod:`broker_bridge.broker_nats` (production) and
:mod:`broker_bridge.broker_memory` (fast component tests, one process only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

MessageCallback = Callable[[str, bytes], None]
"""Called with (subject, payload) for each message; must not block (no awaits on the hot path)."""


class BrokerUnavailable(Exception):
    """The broker cannot take a publish or subscribe right now (disconnected or draining)."""


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Broker(Protocol):
    @property
    def is_connected(self) -> bool: ...

    async def publish(self, subject: str, payload: bytes) -> None:
        """Send ``payload``; raise :class:`BrokerUnavailable` instead of dropping it silently."""
        ...

    async def subscribe(self, subject: str, callback: MessageCallback) -> Subscription:
        """Deliver every message on ``subject`` to ``callback`` until unsubscribed."""
        ...
