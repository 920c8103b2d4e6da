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

    @property
    def positions(self) -> bool:
        return False

    async def attach(self, subject: str, callback: FeedCallback) -> Subscription:
        return await self._broker.subscribe(subject, functools.partial(_without_position, callback))
