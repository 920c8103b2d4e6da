"""The Python API for sending hub events through NATS, used by the REST API, the collector and any
internal service::

    await publisher.publish(catalog.system_event(event_type="deploy", description="Done", data=None, timestamp=now))
    await publisher.to_user(user_id, "ReceiveMessage", {"text": "hello"})

Every publish raises :class:`broker_bridge.interface.BrokerUnavailable` when NATS cannot take it, so
callers can answer 503 instead of dropping the event.
"""

from __future__ import annotations

from typing import Any

from broker_bridge.catalog import HubEvent
from broker_bridge.envelope import encode_event
from broker_bridge.interface import Publisher
from broker_bridge.subjects import ALL_SUBJECT, group_subject, user_subject


class RealtimePublisher:
    """Publishes client method calls to groups, users or everyone."""

    def __init__(self, broker: Publisher) -> None:
        self._broker = broker

    async def publish(self, event: HubEvent) -> None:
        """Send a catalog event to its group."""
        await self.to_group(event.group, event.target, event.payload)

    async def to_group(self, group: str, target: str, *arguments: Any) -> None:
        await self._broker.publish(group_subject(group), encode_event(target, *arguments))

    async def to_user(self, user_id: str, target: str, *arguments: Any) -> None:
        await self._broker.publish(user_subject(user_id), encode_event(target, *arguments))

    async def to_all(self, target: str, *arguments: Any) -> None:
        await self._broker.publish(ALL_SUBJECT, encode_event(target, *arguments))
