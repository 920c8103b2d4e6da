"""Hub groups, client method names and the payload shapes the API document promises.

These builders are pure: they return the argument object of one client method call. The
:class:`broker_bridge.publisher.RealtimePublisher` sends them; nothing else shapes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from shared.models import PlatformSnapshot

# Hub groups (the API document's names).
USER_ACTIVITY: Final = "user-activity"
ANALYTICS: Final = "analytics"
ALERTS: Final = "alerts"
ADMINS: Final = "admins"
GROUPS: Final = (USER_ACTIVITY, ANALYTICS, ALERTS, ADMINS)

# Client methods.
ANALYTICS_UPDATE: Final = "AnalyticsUpdate"
USER_COUNT_UPDATE: Final = "UserCountUpdate"
GENERATION_METRICS_UPDATE: Final = "GenerationMetricsUpdate"
REVENUE_UPDATE: Final = "RevenueUpdate"
SYSTEM_ALERT: Final = "SystemAlert"
USER_ACTIVITY_UPDATE: Final = "UserActivityUpdate"
ADMIN_NOTIFICATION: Final = "AdminNotification"
CLIENT_METHODS: Final = frozenset(
    {
        ANALYTICS_UPDATE,
        USER_COUNT_UPDATE,
        GENERATION_METRICS_UPDATE,
        REVENUE_UPDATE,
        SYSTEM_ALERT,
        USER_ACTIVITY_UPDATE,
        ADMIN_NOTIFICATION,
        "ConnectionEstablished",
        "ErrorOccurred",
        "ReceiveMessage",
    }
)

AlertType = Literal["info", "warning", "error", "success"]
Severity = Literal["low", "medium", "high", "critical"]
ALERT_TYPES: Final[tuple[AlertType, ...]] = ("info", "warning", "error", "success")
SEVERITIES: Final[tuple[Severity, ...]] = ("low", "medium", "high", "critical")
DEFAULT_SEVERITY: Final[Mapping[AlertType, Severity]] = {
    "info": "low",
    "success": "low",
    "warning": "medium",
    "error": "high",
}


def analytics_update(snapshot: PlatformSnapshot, timestamp: str) -> dict[str, Any]:
    """The document's AnalyticsUpdate (``revenue`` is total revenue) plus every snapshot field."""
    return {
        "timestamp": timestamp,
        "totalUsers": snapshot.total_users,
        "activeUsers": snapshot.active_users,
        "websitesGenerated": snapshot.websites_generated,
        "imagesGenerated": snapshot.images_generated,
        "revenue": snapshot.total_revenue,
        **snapshot.to_wire(),
    }


def user_count_update(snapshot: PlatformSnapshot, timestamp: str) -> dict[str, Any]:
    return {
        "totalUsers": snapshot.total_users,
        "activeUsers": snapshot.active_users,
        "newUsersToday": snapshot.new_users_today,
        "timestamp": timestamp,
    }


def system_alert(
    *,
    alert_type: AlertType,
    message: str,
    timestamp: str,
    severity: Severity | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{type, message, severity, timestamp, data}``; severity defaults by type."""
    return {
        "type": alert_type,
        "message": message,
        "severity": severity or DEFAULT_SEVERITY[alert_type],
        "timestamp": timestamp,
        "data": dict(data) if data is not None else None,
    }


def user_activity(*, user_id: str, action: str, details: Mapping[str, Any] | None, timestamp: str) -> dict[str, Any]:
    return {
        "timestamp": timestamp,
        "userId": user_id,
        "action": action,
        "details": dict(details) if details is not None else None,
    }


def role_assignment(*, user_id: str, role_name: str, action: str, timestamp: str) -> dict[str, Any]:
    preposition = "to" if action == "assigned" else "from"
    return {
        "type": "role-assignment",
        "userId": user_id,
        "roleName": role_name,
        "action": action,
        "message": f"Role '{role_name}' {action} {preposition} user {user_id}",
        "timestamp": timestamp,
    }


def system_event(
    *, event_type: str, description: str, data: Mapping[str, Any] | None, timestamp: str
) -> dict[str, Any]:
    return {
        "type": "system-event",
        "eventType": event_type,
        "description": description,
        "data": dict(data) if data is not None else None,
        "timestamp": timestamp,
    }
