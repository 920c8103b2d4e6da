"""An in-process broker with NATS subject matching (``*``, ``>``), for component tests of one gateway."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from broker_bridge.interface import BrokerUnavailable, MessageCallback, NoResponder, RequestHandler
from broker_bridge.subjects import subject_matches


class _MemorySubscription:
    def __init__(self, broker: InMemoryBroker, subject: str, callback: MessageCallback) -> None:
        self._broker = broker
        self._subject = subject
        self._callback = callback

    async def unsubscribe(self) -> None:
        self._broker._remove(self._subject, self._callback)


class _MemoryService:
    def __init__(self, broker: InMemoryBroker, subject: str) -> None:
        self._broker = broker
        self._subject = subject

    async def unsubscribe(self) -> None:
        self._broker._handlers.pop(self._subject, None)


class InMemoryBroker:
    """Delivers published messages synchronously to the callbacks subscribed to that subject."""

    def __init__(self) -> None:
        self._callbacks: defaultdict[str, list[MessageCallback]] = defaultdict(list)
        self._handlers: dict[str, tuple[RequestHandler, int, bytes]] = {}
        self._in_flight: dict[str, int] = {}
        self.connected = True
        self.fail_subscribe = False

    @property
    def is_connected(self) -> bool:
        return self.connected

    def subscriber_count(self, subject: str) -> int:
        """Subscriptions made with exactly this subject (a wildcard counts under its pattern)."""
        return len(self._callbacks.get(subject, ()))

    async def publish(self, subject: str, payload: bytes) -> None:
        if not self.connected:
            raise BrokerUnavailable(subject)
        matching = [cb for pattern, cbs in self._callbacks.items() if subject_matches(pattern, subject) for cb in cbs]
        for callback in matching:
            callback(subject, payload)

    async def request(self, subject: str, payload: bytes, *, timeout_seconds: float) -> bytes:
        if not self.connected:
            raise BrokerUnavailable(subject)
        served = self._handlers.get(subject)
        if served is None:
            raise NoResponder(subject)
        handler, max_in_flight, busy_reply = served
        if self._in_flight.get(subject, 0) >= max_in_flight:
            return busy_reply
        self._in_flight[subject] = self._in_flight.get(subject, 0) + 1
        try:
            return await asyncio.wait_for(handler(payload), timeout_seconds)
        finally:
            self._in_flight[subject] -= 1

    async def serve(
        self, subject: str, handler: RequestHandler, *, max_in_flight: int, busy_reply: bytes
    ) -> _MemoryService:
        if not self.connected:
            raise BrokerUnavailable(subject)
        self._handlers[subject] = (handler, max_in_flight, busy_reply)
        return _MemoryService(self, subject)

    async def subscribe(self, subject: str, callback: MessageCallback) -> _MemorySubscription:
        if not self.connected or self.fail_subscribe:
            raise BrokerUnavailable(subject)
        self._callbacks[subject].append(callback)
        return _MemorySubscription(self, subject, callback)

    def _remove(self, subject: str, callback: MessageCallback) -> None:
        callbacks = self._callbacks.get(subject)
        if callbacks and callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:
                del self._callbacks[subject]
