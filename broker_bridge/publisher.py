"""The Python API for sending hub events through NATS, used by REST handlers, the collector and
any internal service: ``await publisher.to_group("alerts", "SystemAlert", {...})``.

Every publish raises :class:`broker_bridge.interface.BrokerUnavailable` when NATS cannot take it,
so callers can answer 503 instead of dropping the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker_bridge import hub_events
from broker_bridge.envelope import encode_event
from broker_bridge.interface import Broker
from broker_bridge.subjects import ALL_SUBJECT, group_subject, user_subject
from shared.models import PlatformSnapshot
from shared.timeutil import iso_utc


class RealtimePublisher:
    """Publishes client method calls to groups, users or everyone."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def to_group(self, group: str, target: str, *arguments: Any) -> None:
        await self._broker.publish(group_subject(group), encode_event(target, *arguments))

    async def to_user(self, user_id: str, target: str, *arguments: Any) -> None:
        await self._broker.publish(user_subject(user_id), encode_event(target, *arguments))

    async def to_all(self, target: str, *arguments: Any) -> None:
        await self._broker.publish(ALL_SUBJECT, encode_event(target, *arguments))

    # -- typed helpers for the API document's events ------------------------------------------

    async def analytics_update(self, snapshot: PlatformSnapshot, *, timestamp: str | None = None) -> dict[str, Any]:
        payload = hub_events.analytics_update(snapshot, timestamp or iso_utc())
        await self.to_group(hub_events.ANALYTICS, hub_events.ANALYTICS_UPDATE, payload)
        return payload

    async def user_count_update(self, snapshot: PlatformSnapshot, *, timestamp: str | None = None) -> dict[str, Any]:
        payload = hub_events.user_count_update(snapshot, timestamp or iso_utc())
        await self.to_group(hub_events.ANALYTICS, hub_events.USER_COUNT_UPDATE, payload)
        return payload

    async def generation_metrics(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        payload = {**metrics, "timestamp": iso_utc()}
        await self.to_group(hub_events.ANALYTICS, hub_events.GENERATION_METRICS_UPDATE, payload)
        return payload

    async def revenue_update(self, revenue: Mapping[str, Any]) -> dict[str, Any]:
        payload = {**revenue, "timestamp": iso_utc()}
        await self.to_group(hub_events.ANALYTICS, hub_events.REVENUE_UPDATE, payload)
        return payload

    async def send_alert(
        self,
        *,
        alert_type: hub_events.AlertType,
        message: str,
        severity: hub_events.Severity | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        payload = hub_events.system_alert(
            alert_type=alert_type, message=message, severity=severity, data=data, timestamp=iso_utc()
        )
        await self.to_group(hub_events.ALERTS, hub_events.SYSTEM_ALERT, payload)
        return payload

    async def notify_user_action(
        self, *, user_id: str, action: str, details: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        payload = hub_events.user_activity(user_id=user_id, action=action, details=details, timestamp=iso_utc())
        await self.to_group(hub_events.USER_ACTIVITY, hub_events.USER_ACTIVITY_UPDATE, payload)
        return payload

    async def notify_role_assignment(self, *, user_id: str, role_name: str, action: str) -> dict[str, Any]:
        payload = hub_events.role_assignment(user_id=user_id, role_name=role_name, action=action, timestamp=iso_utc())
        await self.to_group(hub_events.ADMINS, hub_events.ADMIN_NOTIFICATION, payload)
        return payload

    async def notify_system_event(
        self, *, event_type: str, description: str, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        payload = hub_events.system_event(
            event_type=event_type, description=description, data=data, timestamp=iso_utc()
        )
        await self.to_group(hub_events.ADMINS, hub_events.ADMIN_NOTIFICATION, payload)
        return payload
