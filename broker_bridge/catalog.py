"""The payload catalog: every hub event's client method, its group and the shape of its argument.

Everything a dashboard receives is built here and nowhere else: the REST API, the stats collector and
any internal service call these builders and send the result with
:meth:`broker_bridge.publisher.RealtimePublisher.publish`; the hub uses the connection-level ones
(``ConnectionEstablished``, ``ErrorOccurred``). Builders are pure: time comes in as ``timestamp``
(ISO 8601 UTC with a ``Z``, see :func:`shared.timeutil.iso_utc`).

Every alert carries an ``id`` (:func:`shared.alert_state.new_alert_id`) by which it is acknowledged, and
is recorded in the shared alert state (:mod:`broker_bridge.alert_store`) from :func:`alert_record`;
changes of that state reach the ``alerts`` group as ``AlertStateChanged``.

Alert severity rule (one place): the severity given explicitly, else ``data.severity`` when it is a
known severity (the API document's example puts it there), else by alert type: ``info`` and
``success`` low, ``warning`` medium, ``error`` high. A performance alert is a ``warning`` with
severity ``high`` unless one is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from shared.alert_state import AlertRecord
from shared.models import PlatformSnapshot, SnapshotRecord

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
CONNECTION_ESTABLISHED: Final = "ConnectionEstablished"
ERROR_OCCURRED: Final = "ErrorOccurred"
RECEIVE_MESSAGE: Final = "ReceiveMessage"
ALERT_STATE_CHANGED: Final = "AlertStateChanged"
CLIENT_METHODS: Final = frozenset(
    {
        ANALYTICS_UPDATE,
        USER_COUNT_UPDATE,
        GENERATION_METRICS_UPDATE,
        REVENUE_UPDATE,
        SYSTEM_ALERT,
        USER_ACTIVITY_UPDATE,
        ADMIN_NOTIFICATION,
        CONNECTION_ESTABLISHED,
        ERROR_OCCURRED,
        RECEIVE_MESSAGE,
        ALERT_STATE_CHANGED,
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
PERFORMANCE_ALERT_TYPE: Final[AlertType] = "warning"
PERFORMANCE_ALERT_SEVERITY: Final[Severity] = "high"
ROLE_ACTIONS: Final = ("assigned", "revoked")
PresenceAction = Literal["online", "offline"]
# What an AlertStateChanged reports: an acknowledgement, a silence made or lifted, an alert the collector
# held back because of a silence.
AlertChange = Literal["acknowledged", "silenced", "unsilenced", "suppressed"]


@dataclass(frozen=True, slots=True)
class HubEvent:
    """One client method call for every connection in ``group``: ``target(payload)``."""

    group: str
    target: str
    payload: dict[str, Any]


def alert_severity(
    alert_type: AlertType, *, explicit: Severity | None = None, data: Mapping[str, Any] | None = None
) -> Severity:
    """The severity of an alert, by the rule in the module docstring."""
    if explicit is not None:
        return explicit
    if data is not None:
        for severity in SEVERITIES:
            if data.get("severity") == severity:
                return severity
    return DEFAULT_SEVERITY[alert_type]


# -- analytics ----------------------------------------------------------------------------------


def analytics_update(snapshot: PlatformSnapshot, *, timestamp: str) -> HubEvent:
    """The document's AnalyticsUpdate (``revenue`` is total revenue) plus every snapshot field."""
    payload = {
        "timestamp": timestamp,
        "totalUsers": snapshot.total_users,
        "activeUsers": snapshot.active_users,
        "websitesGenerated": snapshot.websites_generated,
        "imagesGenerated": snapshot.images_generated,
        "revenue": snapshot.total_revenue,
        **snapshot.to_wire(),
    }
    return HubEvent(ANALYTICS, ANALYTICS_UPDATE, payload)


def user_count_update(snapshot: PlatformSnapshot, *, timestamp: str) -> HubEvent:
    payload = {
        "totalUsers": snapshot.total_users,
        "activeUsers": snapshot.active_users,
        "newUsersToday": snapshot.new_users_today,
        "timestamp": timestamp,
    }
    return HubEvent(ANALYTICS, USER_COUNT_UPDATE, payload)


def generation_metrics(
    *,
    websites_generated: int,
    images_generated: int,
    failed_generations: int,
    average_generation_time: float,
    timestamp: str,
) -> HubEvent:
    payload = {
        "websitesGenerated": websites_generated,
        "imagesGenerated": images_generated,
        "failedGenerations": failed_generations,
        "averageGenerationTime": average_generation_time,
        "timestamp": timestamp,
    }
    return HubEvent(ANALYTICS, GENERATION_METRICS_UPDATE, payload)


def revenue_update(*, daily_revenue: float, total_revenue_30d: float, timestamp: str) -> HubEvent:
    payload = {"dailyRevenue": daily_revenue, "totalRevenue30d": total_revenue_30d, "timestamp": timestamp}
    return HubEvent(ANALYTICS, REVENUE_UPDATE, payload)


def analytics_history(
    points: Sequence[SnapshotRecord],
    *,
    minutes: int,
    start: str,
    bucket_seconds: float,
    complete: bool,
    timestamp: str,
) -> dict[str, Any]:
    """The answer of ``GetAnalyticsHistory(minutes)`` and ``GET analytics/history?minutes=N``: the window
    ``[from, timestamp]``, the bucket width the points were downsampled to (0: not downsampled), whether
    this replica has read all the stored history yet, and ``points`` in time order, each
    ``{timestamp, ...every snapshot field}`` (the fields of ``GetPlatformStats``)."""
    return {
        "minutes": minutes,
        "from": start,
        "timestamp": timestamp,
        "bucketSeconds": bucket_seconds,
        "complete": complete,
        "points": [{"timestamp": point.timestamp, **point.data.to_wire()} for point in points],
    }


# -- alerts -------------------------------------------------------------------------------------


def system_alert(
    *,
    alert_id: str,
    alert_type: AlertType,
    message: str,
    timestamp: str,
    severity: Severity | None = None,
    data: Mapping[str, Any] | None = None,
) -> HubEvent:
    """``{id, type, message, severity, timestamp, data}``; severity by :func:`alert_severity`."""
    payload = {
        "id": alert_id,
        "type": alert_type,
        "message": message,
        "severity": alert_severity(alert_type, explicit=severity, data=data),
        "timestamp": timestamp,
        "data": dict(data) if data is not None else None,
    }
    return HubEvent(ALERTS, SYSTEM_ALERT, payload)


def performance_alert(
    *,
    alert_id: str,
    metric: str,
    value: float,
    threshold: str | float,
    timestamp: str,
    severity: Severity | None = None,
) -> HubEvent:
    """A SystemAlert for a metric over its threshold (the document's ``POST alert/performance``)."""
    return system_alert(
        alert_id=alert_id,
        alert_type=PERFORMANCE_ALERT_TYPE,
        message=f"Performance alert: {metric} is {value:g} (threshold {threshold})",
        timestamp=timestamp,
        severity=severity or PERFORMANCE_ALERT_SEVERITY,
        data={"metric": metric, "value": value, "threshold": threshold},
    )


def alert_record(event: HubEvent, *, rule: str | None = None, suppressed: bool = False) -> AlertRecord:
    """The shared-state record of a SystemAlert built by :func:`system_alert`."""
    return AlertRecord.from_wire({**event.payload, "rule": rule, "suppressed": suppressed})


def alert_state_changed(
    *,
    change: AlertChange,
    by: Mapping[str, Any] | None,
    timestamp: str,
    alert: Mapping[str, Any] | None = None,
    silence: Mapping[str, Any] | None = None,
) -> HubEvent:
    """``{change, alert, silence, by, timestamp}``: ``alert`` is an alert view (the record plus ``status``)
    for ``acknowledged`` and ``suppressed``, ``silence`` a silence for ``silenced`` and ``unsilenced``;
    ``by`` who acted (``{userId, userName}``; null for the collector)."""
    payload = {
        "change": change,
        "alert": dict(alert) if alert is not None else None,
        "silence": dict(silence) if silence is not None else None,
        "by": dict(by) if by is not None else None,
        "timestamp": timestamp,
    }
    return HubEvent(ALERTS, ALERT_STATE_CHANGED, payload)


def alert_states(
    *,
    alerts: list[dict[str, Any]],
    omitted: int,
    silences: list[dict[str, Any]],
    max_alerts: int,
    timestamp: str,
) -> dict[str, Any]:
    """The answer of ``GetAlertStates`` and ``GET alerts/state``: alert views newest first (``omitted``
    older ones did not fit in the answer), the live silences."""
    return {
        "alerts": alerts,
        "omitted": omitted,
        "silences": silences,
        "maxAlerts": max_alerts,
        "timestamp": timestamp,
    }


def alert_rules(*, rules: list[dict[str, Any]], file: str, loaded_at: str) -> dict[str, Any]:
    """The collector's rules as ``GET alert-rules`` and a successful reload answer them."""
    return {"rules": rules, "file": file, "loadedAt": loaded_at}


def alert_rules_refused(*, problem: str, line: int | None, file: str) -> dict[str, Any]:
    """A reload the collector refused: the file's problem, its line (when known); the old rules stay."""
    return {"error": problem, "line": line, "file": file}


# -- notifications ------------------------------------------------------------------------------


def user_activity(*, user_id: str, action: str, details: Mapping[str, Any] | None, timestamp: str) -> HubEvent:
    payload = {
        "timestamp": timestamp,
        "userId": user_id,
        "action": action,
        "details": dict(details) if details is not None else None,
    }
    return HubEvent(USER_ACTIVITY, USER_ACTIVITY_UPDATE, payload)


def role_assignment(*, user_id: str, role_name: str, action: str, timestamp: str) -> HubEvent:
    preposition = "to" if action == "assigned" else "from"
    payload = {
        "type": "role-assignment",
        "userId": user_id,
        "roleName": role_name,
        "action": action,
        "message": f"Role '{role_name}' {action} {preposition} user {user_id}",
        "timestamp": timestamp,
    }
    return HubEvent(ADMINS, ADMIN_NOTIFICATION, payload)


def system_event(*, event_type: str, description: str, data: Mapping[str, Any] | None, timestamp: str) -> HubEvent:
    payload = {
        "type": "system-event",
        "eventType": event_type,
        "description": description,
        "data": dict(data) if data is not None else None,
        "timestamp": timestamp,
    }
    return HubEvent(ADMINS, ADMIN_NOTIFICATION, payload)


def presence_change(*, user_id: str, user_name: str | None, action: PresenceAction, timestamp: str) -> HubEvent:
    """A user's first connection in the cluster opened (``online``) or their last one closed
    (``offline``); sent once cluster-wide, after the change held for the debounce
    (:mod:`gateway.hub.cluster_presence`)."""
    payload = {
        "type": "presence",
        "userId": user_id,
        "userName": user_name,
        "action": action,
        "message": f"User {user_name or user_id} is {action}",
        "timestamp": timestamp,
    }
    return HubEvent(ADMINS, ADMIN_NOTIFICATION, payload)


# -- sent to one connection ---------------------------------------------------------------------


def error_occurred(*, message: str, timestamp: str) -> dict[str, Any]:
    """The argument of ``ErrorOccurred``: sent to the caller when a hub method fails, is refused or is
    rate limited, with the same safe text as the Completion error (the API document's shape)."""
    return {"type": "error", "message": message, "timestamp": timestamp}


def connection_established(
    *, connection_id: str, user_id: str | None, user_name: str | None, groups: list[str], timestamp: str
) -> dict[str, Any]:
    """The argument of ``ConnectionEstablished``, sent to a connection right after its handshake."""
    return {
        "connectionId": connection_id,
        "userId": user_id,
        "userName": user_name,
        "groups": groups,
        "message": "Connected to admin real-time hub",
        "timestamp": timestamp,
    }
