"""An in-process broker with NATS subject matching (``*``, ``>``), for component tests of one gateway."""

from __future__ import annotations

from collections import defaultdict

from broker_bridge.interface import BrokerUnavailable, MessageCallback
from broker_bridge.subjects import subject_matches


class _MemorySubscription:
    def __init__(self, broker: InMemoryBroker, subject: str, callback: MessageCallback) -> None:
        self._broker = broker
        self._subject = subject
        self._callback = callback

    async def unsubscribe(self) -> None:
        self._broker._remove(self._subject, self._callback)


class InMemoryBroker:
    """Delivers published messages synchronously to the callbacks subscribed to that subject."""

    def __init__(self) -> None:
        self._callbacks: defaultdict[str, list[MessageCallback]] = defaultdict(list)
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
