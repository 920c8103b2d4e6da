"""The fan-out feed of plain NATS subscriptions: one per subject in use, messages without positions."""

from __future__ import annotations

import functools

from broker_bridge.interface import Broker, FeedCallback, Subscription


def _without_position(callback: FeedCallback, subject: str, payload: bytes) -> None:
    callback(subject, payload, 0)


class SubjectFeed:
    """Subscribes through a :class:`Broker` (NATS, or in memory for component tests)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._callback: FeedCallback | None = None

    @property
    def positions(self) -> bool:
        return False

    def deliver_to(self, callback: FeedCallback) -> None:
        self._callback = callback

    async def attach(self, subject: str) -> Subscription:
        if self._callback is None:
            raise RuntimeError("deliver_to() comes before attach()")
        return await self._broker.subscribe(subject, functools.partial(_without_position, self._callback))
