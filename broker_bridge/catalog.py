"""The payload catalog: every hub event's client method, its group and the shape of its argument.

Everything a dashboard receives is built here and nowhere else: the REST API, the stats collector and
any internal service call these builders and send the result with
:meth:`broker_bridge.publisher.RealtimePublisher.publish`; the hub uses the connection-level ones
(``ConnectionEstablished``, ``ErrorOccurred``). Builders are pure: time comes in as ``timestamp``
(ISO 8601 UTC with a ``Z``, see :func:`shared.timeutil.iso_utc`).

Every alert carries an ``id`` (:func:`shared.alert_state.new_alert_id`) by which it is acknowledged, and
is recorded in the shared alert state (:mod:`broker_bridge.alert_store`) from :func:`alert_record`;
changes of that state reach the ``alerts`` group as ``AlertStateChanged``.

Shapes: every payload is declared once as an :class:`EventShape` (its client method, group and fields,
in the language of :mod:`broker_bridge.shapes`); builders return ``SHAPE.event(payload)``, which checks
the payload against the declaration (a mismatch is a programming error: :class:`PayloadShapeError`), and
the published contracts (``/asyncapi.json``, ``/openapi.json``) are generated from the same declarations
(:data:`EVENT_SHAPES`, :data:`HUB_METHOD_RESULTS`). A new payload is a new ``EventShape`` listed in
:data:`EVENT_SHAPES`; ``tests/unit/test_catalog.py`` fails for a ``HubEvent`` built any other way.

Alert severity rule (one place): the severity given explicitly, else ``data.severity`` when it is a
known severity (the API document's example puts it there), else by alert type: ``info`` and
``success`` low, ``warning`` medium, ``error`` high. A performance alert is a ``warning`` with
severity ``high`` unless one is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

from broker_bridge.shapes import (
    AnyJson,
    Boolean,
    Const,
    Integer,
    ListOf,
    Nullable,
    Number,
    PayloadShapeError,
    Record,
    Shape,
    Text,
    Timestamp,
    checked,
    optional,
)
from shared.alert_state import ALERT_ID, MAX_TARGET_LENGTH, AlertRecord
from shared.models import PlatformSnapshot, SnapshotGap, SnapshotRecord

__all__ = ["PayloadShapeError"]  # re-exported: what a builder raises when its payload breaks its shape

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
PRESENCE_ACTIONS: Final[tuple[PresenceAction, ...]] = ("online", "offline")
# What an AlertStateChanged reports: an acknowledgement, a silence made or lifted, an alert the collector
# held back because of a silence.
AlertChange = Literal["acknowledged", "silenced", "unsilenced", "suppressed"]
ALERT_CHANGES: Final[tuple[AlertChange, ...]] = ("acknowledged", "silenced", "unsilenced", "suppressed")


@dataclass(frozen=True, slots=True)
class HubEvent:
    """One client method call for every connection in ``group``: ``target(payload)``."""

    group: str
    target: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventShape:
    """A payload of client method ``target``: sent to ``group``, or to one connection (``group`` None).

    A client method may have several (``AdminNotification`` has one per ``type``); ``name`` tells them apart.
    """

    target: str
    group: str | None
    name: str
    summary: str
    payload: Shape

    def event(self, payload: dict[str, Any]) -> HubEvent:
        """``payload`` for the whole group, checked against this shape."""
        assert self.group is not None, f"{self.name} is sent to one connection"
        return HubEvent(self.group, self.target, checked(self.name, self.payload, payload))

    def argument(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` as the argument of a call to one connection, checked against this shape."""
        return checked(self.name, self.payload, payload)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class MethodResult:
    """What a hub method answers (its Completion's ``result``)."""

    summary: str
    result: Shape


# -- shapes ---------------------------------------------------------------------------------------

TIMESTAMP: Final = Timestamp("ISO 8601 UTC, millisecond precision, with a Z")
COUNT: Final = Integer(minimum=0)


def _snapshot_record(model: type[PlatformSnapshot] | type[SnapshotGap], description: str) -> Record:
    """A wire model's fields (camelCase, as its ``to_wire`` writes them), typed from the dataclass."""
    types: dict[str, Shape] = {"int": COUNT, "float": Number(), "str": Text()}
    names = [field.name for field in fields(model)]
    wire = {name: name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:]) for name in names}
    return Record({wire[field.name]: types[str(field.type)] for field in fields(model)}, description)


SNAPSHOT_FIGURES: Final = _snapshot_record(
    PlatformSnapshot, "The platform figures (activeUsers is at most totalUsers; averageGenerationTime in seconds)"
)
SNAPSHOT_GAP: Final = _snapshot_record(SnapshotGap, "Stream sequences the collector never read")
# What answers put beside a snapshot when it is incomplete (``SnapshotRecord.completeness``).
SNAPSHOT_COMPLETENESS: Final = {
    "complete": optional(Const(False, "present (false) only when the figures lack a range of events")),
    "gap": optional(SNAPSHOT_GAP),
}
FREE_OBJECT: Final = Nullable(AnyJson("any JSON object", object_only=True))

ANALYTICS_SHAPE: Final = EventShape(
    ANALYTICS_UPDATE,
    ANALYTICS,
    ANALYTICS_UPDATE,
    "The latest platform figures (the API document's fields, revenue = total revenue, plus every snapshot field)",
    SNAPSHOT_FIGURES.extended(timestamp=TIMESTAMP, revenue=Number(description="total revenue")),
)
USER_COUNT_SHAPE: Final = EventShape(
    USER_COUNT_UPDATE,
    ANALYTICS,
    USER_COUNT_UPDATE,
    "User counts",
    Record({"totalUsers": COUNT, "activeUsers": COUNT, "newUsersToday": COUNT, "timestamp": TIMESTAMP}),
)
GENERATION_METRICS_SHAPE: Final = EventShape(
    GENERATION_METRICS_UPDATE,
    ANALYTICS,
    GENERATION_METRICS_UPDATE,
    "Generation figures",
    Record(
        {
            "websitesGenerated": COUNT,
            "imagesGenerated": COUNT,
            "failedGenerations": COUNT,
            "averageGenerationTime": Number(minimum=0, description="seconds"),
            "timestamp": TIMESTAMP,
        }
    ),
)
REVENUE_SHAPE: Final = EventShape(
    REVENUE_UPDATE,
    ANALYTICS,
    REVENUE_UPDATE,
    "Revenue figures",
    Record({"dailyRevenue": Number(), "totalRevenue30d": Number(), "timestamp": TIMESTAMP}),
)
ALERT_ID_TEXT: Final = Text(
    "the alert's id in the shared alert state (acknowledge it by this)", pattern=f"^{ALERT_ID.pattern}$"
)
SYSTEM_ALERT_FIELDS: Final = Record(
    {
        "id": ALERT_ID_TEXT,
        "type": Text(choices=ALERT_TYPES),
        "message": Text(),
        "severity": Text(choices=SEVERITIES, description="explicit, else data.severity, else by type"),
        "timestamp": TIMESTAMP,
        "data": FREE_OBJECT,
    }
)
ALERT_SHAPE: Final = EventShape(
    SYSTEM_ALERT,
    ALERTS,
    SYSTEM_ALERT,
    "An alert (threshold rules of the collector, the REST API, internal services), recorded under its id",
    SYSTEM_ALERT_FIELDS,
)
ACTOR: Final = Record({"userId": Nullable(Text()), "userName": Nullable(Text())}, "Who acted (from the access token)")
ALERT_STATUSES: Final = ("active", "acknowledged", "silenced")
ALERT_VIEW: Final = SYSTEM_ALERT_FIELDS.extended(
    rule=Nullable(Text(), "the collector rule that raised it (null: the REST API, or a stream-gap alert)"),
    suppressed=Boolean("raised while silenced: recorded, never sent as SystemAlert"),
    acknowledgedBy=Nullable(ACTOR),
    acknowledgedAt=Nullable(TIMESTAMP),
    resolvedAt=Nullable(TIMESTAMP, "when its rule cleared"),
    status=Text(
        choices=ALERT_STATUSES,
        description="acknowledged once acknowledged; else silenced when held back or a live silence covers it",
    ),
)
SILENCE_VIEW: Final = Record(
    {
        "target": Text("a rule name or an alert type", min_length=1, max_length=MAX_TARGET_LENGTH),
        "until": Timestamp("collector alerts of the target are held back until then (now: lifted)"),
        "silencedBy": ACTOR,
        "silencedAt": TIMESTAMP,
    },
    "A silence",
)
ALERT_STATES: Final = Record(
    {
        "alerts": ListOf(ALERT_VIEW, "the kept alerts, newest first, as many as fit REALTIME_MAX_ALERT_STATE_BYTES"),
        "omitted": Integer(minimum=0, description="older kept alerts that did not fit in the answer"),
        "silences": ListOf(SILENCE_VIEW, "the live silences"),
        "maxAlerts": Integer(minimum=0, description="alert records kept at most (REALTIME_MAX_ALERT_RECORDS)"),
        "timestamp": TIMESTAMP,
    }
)
ALERT_RULE: Final = Record(
    {
        "name": Text(),
        "metric": Text(),
        "aggregation": Text("last, avg, max, p95 or rate (docs/collector.md)"),
        "windowSeconds": Number(minimum=0),
        "comparator": Text(">, >=, < or <="),
        "threshold": Number(),
        "severity": Text(choices=SEVERITIES),
        "type": Text(choices=ALERT_TYPES),
        "forSeconds": Number(minimum=0),
        "cooldownSeconds": Number(minimum=0),
        "description": Nullable(Text()),
    },
    "One threshold rule of the collector's rules file (its TOML keys, camelCase, seconds as numbers)",
)
ALERT_RULES: Final = Record(
    {"rules": ListOf(ALERT_RULE), "file": Text("the rules file's path"), "loadedAt": TIMESTAMP},
    "The collector's alert rules in use",
)
ALERT_RULES_REFUSED: Final = Record(
    {"error": Text(), "line": Nullable(Integer(minimum=1)), "file": Text()},
    "A rules file the collector refused (the rules in use are kept)",
)
ALERT_STATE_CHANGED_SHAPE: Final = EventShape(
    ALERT_STATE_CHANGED,
    ALERTS,
    ALERT_STATE_CHANGED,
    "The shared alert state changed: an acknowledgement, a silence made or lifted, an alert held back",
    Record(
        {
            "change": Text(choices=ALERT_CHANGES),
            "alert": Nullable(ALERT_VIEW, "the alert's new view (acknowledged, suppressed)"),
            "silence": Nullable(SILENCE_VIEW, "the silence (silenced, unsilenced)"),
            "by": Nullable(ACTOR, "who acted; null for the collector"),
            "timestamp": TIMESTAMP,
        }
    ),
)
ACTIVITY_SHAPE: Final = EventShape(
    USER_ACTIVITY_UPDATE,
    USER_ACTIVITY,
    USER_ACTIVITY_UPDATE,
    "Something a user did",
    Record({"timestamp": TIMESTAMP, "userId": Text(), "action": Text(), "details": FREE_OBJECT}),
)


def _admin_notification(kind: str, summary: str, fields: Mapping[str, Shape]) -> EventShape:
    """An ``AdminNotification`` to the admins group, told apart by its ``type`` (``kind``)."""
    payload = Record({"type": Const(kind), **fields, "timestamp": TIMESTAMP})
    return EventShape(ADMIN_NOTIFICATION, ADMINS, f"AdminNotification ({kind})", summary, payload)


ROLE_ASSIGNMENT_SHAPE: Final = _admin_notification(
    "role-assignment",
    "A role was assigned to or revoked from a user",
    {"userId": Text(), "roleName": Text(), "action": Text(choices=ROLE_ACTIONS), "message": Text()},
)
SYSTEM_EVENT_SHAPE: Final = _admin_notification(
    "system-event",
    "A system event reported through the REST API",
    {"eventType": Text(), "description": Text(), "data": FREE_OBJECT},
)
PRESENCE_SHAPE: Final = _admin_notification(
    "presence",
    "A user's first connection in the cluster opened (online) or their last one closed (offline); once cluster-wide",
    {"userId": Text(), "userName": Nullable(Text()), "action": Text(choices=PRESENCE_ACTIONS), "message": Text()},
)
PRESENCE_SUMMARY_SHAPE: Final = _admin_notification(
    "presence-summary",
    "More presence changes were due at once than REALTIME_PRESENCE_MAX_NOTIFICATIONS: their counts, once",
    {
        "online": Integer(minimum=0, description="users whose first connection opened"),
        "offline": Integer(minimum=0, description="users whose last connection closed"),
        "message": Text(),
    },
)
ERROR_SHAPE: Final = EventShape(
    ERROR_OCCURRED,
    None,
    ERROR_OCCURRED,
    "Sent to the caller when a hub method fails, is refused or is rate limited (the Completion error's text)",
    Record({"type": Const("error"), "message": Text(), "timestamp": TIMESTAMP}),
)
GREETING_SHAPE: Final = EventShape(
    CONNECTION_ESTABLISHED,
    None,
    CONNECTION_ESTABLISHED,
    "Sent to a connection right after its handshake",
    Record(
        {
            "connectionId": Text(),
            "userId": Nullable(Text()),
            "userName": Nullable(Text()),
            "groups": ListOf(Text(choices=GROUPS)),
            "message": Text(),
            "timestamp": TIMESTAMP,
        }
    ),
)
MESSAGE_SHAPE: Final = EventShape(
    RECEIVE_MESSAGE,
    None,
    RECEIVE_MESSAGE,
    "Any payload an internal service sends with RealtimePublisher.to_group / to_user / to_all",
    AnyJson("any JSON value"),
)
# Every payload a client can receive, in the order the documents list them.
EVENT_SHAPES: Final[tuple[EventShape, ...]] = (
    ANALYTICS_SHAPE,
    USER_COUNT_SHAPE,
    GENERATION_METRICS_SHAPE,
    REVENUE_SHAPE,
    ALERT_SHAPE,
    ALERT_STATE_CHANGED_SHAPE,
    ACTIVITY_SHAPE,
    ROLE_ASSIGNMENT_SHAPE,
    SYSTEM_EVENT_SHAPE,
    PRESENCE_SHAPE,
    PRESENCE_SUMMARY_SHAPE,
    GREETING_SHAPE,
    ERROR_SHAPE,
    MESSAGE_SHAPE,
)

PRESENCE_MEMBER: Final = Record(
    {
        "userId": Text(),
        "userName": Nullable(Text()),
        "connections": Integer(minimum=1, description="the user's connections in the group, on every replica"),
        "since": Timestamp("when the user's oldest open connection opened"),
    }
)
PRESENCE_GROUP: Final = Record(
    {
        "totalUsers": COUNT,
        "totalConnections": COUNT,
        "users": ListOf(PRESENCE_MEMBER, "the listed users in the group, connected longest first"),
    }
)
PRESENCE: Final = Record(
    {
        "timestamp": TIMESTAMP,
        "replicas": Integer(minimum=0, description="live replicas whose entries were merged"),
        "totalUsers": COUNT,
        "totalConnections": COUNT,
        "complete": Boolean("false when KV could not be read or a replica lists fewer users than it counts"),
        "groups": Record(
            {group: PRESENCE_GROUP for group in GROUPS},
            "Every hub group (empty ones too); any other group a connection is in is added likewise",
            open=True,
        ),
    }
)
ANALYTICS_HISTORY: Final = Record(
    {
        "minutes": Integer(minimum=1, description="the window asked for (1-1440)"),
        "from": TIMESTAMP,
        "timestamp": Timestamp("the window's end: now, or the newest snapshot's time if later"),
        "bucketSeconds": Number(minimum=0, description="the width points were downsampled to; 0: not downsampled"),
        "complete": Boolean("whether this replica has read all the stored history yet"),
        "points": ListOf(
            SNAPSHOT_FIGURES.extended(timestamp=TIMESTAMP), "at most 500 snapshots in time order (each bucket's last)"
        ),
    }
)

# What the hub methods answer, by method name; SubscribeTo<X> / UnsubscribeFrom<X> answer SUBSCRIPTION.
SUBSCRIPTION: Final = MethodResult(
    "Join (SubscribeTo...) or leave (UnsubscribeFrom...) a group; harmless when already done",
    Record({"group": Text(choices=GROUPS), "subscribed": Boolean(), "timestamp": TIMESTAMP}),
)
SUBSCRIPTION_PREFIXES: Final = ("SubscribeTo", "UnsubscribeFrom")
HUB_METHOD_RESULTS: Final[Mapping[str, MethodResult]] = {
    "GetPlatformStats": MethodResult(
        "The latest platform snapshot",
        SNAPSHOT_FIGURES.extended(timestamp=TIMESTAMP, **SNAPSHOT_COMPLETENESS),
    ),
    "GetConnectionCount": MethodResult(
        "Connections on this replica and across all replicas (refreshed every few seconds)",
        Record(
            {
                "connectionId": Text(),
                "timestamp": TIMESTAMP,
                "connectionsOnReplica": COUNT,
                "totalConnections": COUNT,
                "replicas": COUNT,
            }
        ),
    ),
    "SendTestMessage": MethodResult(
        "Echoes the payload",
        Record({"timestamp": TIMESTAMP, "message": Const("Test received"), "echo": Nullable(Text())}),
    ),
    "GetPresence": MethodResult("Who is connected across every replica, per group", PRESENCE),
    "GetAnalyticsHistory": MethodResult(
        "The collector's snapshots of the last `minutes` (1-1440), downsampled to at most 500 points",
        ANALYTICS_HISTORY,
    ),
    "AcknowledgeAlert": MethodResult(
        "The alert's view once acknowledged (the first acknowledgement stands); Admin role only",
        ALERT_VIEW,
    ),
    "SilenceAlert": MethodResult(
        "Silence a rule name or alert type for `minutes` (0 lifts it): the silence; Admin role only",
        SILENCE_VIEW,
    ),
    "GetAlertStates": MethodResult("The kept alerts with their status and the live silences", ALERT_STATES),
}


def hub_method_result(name: str) -> MethodResult | None:
    """What hub method ``name`` answers, or None when the catalog does not declare it."""
    if name.startswith(SUBSCRIPTION_PREFIXES):
        return SUBSCRIPTION
    return HUB_METHOD_RESULTS.get(name)


def _answer(name: str, shape: Shape, answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` (of a hub method or route) checked against its declaration, as :meth:`EventShape.event` does."""
    checked(name, shape, answer)
    return answer


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
    return ANALYTICS_SHAPE.event(payload)


def user_count_update(snapshot: PlatformSnapshot, *, timestamp: str) -> HubEvent:
    payload = {
        "totalUsers": snapshot.total_users,
        "activeUsers": snapshot.active_users,
        "newUsersToday": snapshot.new_users_today,
        "timestamp": timestamp,
    }
    return USER_COUNT_SHAPE.event(payload)


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
    return GENERATION_METRICS_SHAPE.event(payload)


def revenue_update(*, daily_revenue: float, total_revenue_30d: float, timestamp: str) -> HubEvent:
    payload = {"dailyRevenue": daily_revenue, "totalRevenue30d": total_revenue_30d, "timestamp": timestamp}
    return REVENUE_SHAPE.event(payload)


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
    answer = {
        "minutes": minutes,
        "from": start,
        "timestamp": timestamp,
        "bucketSeconds": bucket_seconds,
        "complete": complete,
        "points": [{"timestamp": point.timestamp, **point.data.to_wire()} for point in points],
    }
    return _answer("GetAnalyticsHistory", ANALYTICS_HISTORY, answer)


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
    return ALERT_SHAPE.event(payload)


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
    return ALERT_STATE_CHANGED_SHAPE.event(payload)


def alert_states(
    *,
    alerts: list[dict[str, Any]],
    omitted: int,
    silences: list[dict[str, Any]],
    max_alerts: int,
    timestamp: str,
) -> dict[str, Any]:
    """The answer of ``GetAlertStates`` and ``GET alerts/state``: alert views newest first (``omitted``
    older ones did not fit in the answer), the live silences. Declared as :data:`ALERT_STATES` but not
    checked here: the views are read from KV, and one odd stored record must not fail every answer."""
    return {
        "alerts": alerts,
        "omitted": omitted,
        "silences": silences,
        "maxAlerts": max_alerts,
        "timestamp": timestamp,
    }


def alert_rules(*, rules: list[dict[str, Any]], file: str, loaded_at: str) -> dict[str, Any]:
    """The collector's rules as ``GET alert-rules`` and a successful reload answer them."""
    return _answer("alert rules", ALERT_RULES, {"rules": rules, "file": file, "loadedAt": loaded_at})


def alert_rules_refused(*, problem: str, line: int | None, file: str) -> dict[str, Any]:
    """A reload the collector refused: the file's problem, its line (when known); the old rules stay."""
    return _answer("alert rules refused", ALERT_RULES_REFUSED, {"error": problem, "line": line, "file": file})


# -- notifications ------------------------------------------------------------------------------


def user_activity(*, user_id: str, action: str, details: Mapping[str, Any] | None, timestamp: str) -> HubEvent:
    payload = {
        "timestamp": timestamp,
        "userId": user_id,
        "action": action,
        "details": dict(details) if details is not None else None,
    }
    return ACTIVITY_SHAPE.event(payload)


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
    return ROLE_ASSIGNMENT_SHAPE.event(payload)


def system_event(*, event_type: str, description: str, data: Mapping[str, Any] | None, timestamp: str) -> HubEvent:
    payload = {
        "type": "system-event",
        "eventType": event_type,
        "description": description,
        "data": dict(data) if data is not None else None,
        "timestamp": timestamp,
    }
    return SYSTEM_EVENT_SHAPE.event(payload)


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
    return PRESENCE_SHAPE.event(payload)


def presence_summary(*, online: int, offline: int, timestamp: str) -> HubEvent:
    """Many presence changes at once, counted instead of one notification each
    (:mod:`gateway.hub.presence_debounce`)."""
    payload = {
        "type": "presence-summary",
        "online": online,
        "offline": offline,
        "message": f"{online} users came online, {offline} went offline",
        "timestamp": timestamp,
    }
    return PRESENCE_SUMMARY_SHAPE.event(payload)


# -- sent to one connection ---------------------------------------------------------------------


def error_occurred(*, message: str, timestamp: str) -> dict[str, Any]:
    """The argument of ``ErrorOccurred``: sent to the caller when a hub method fails, is refused or is
    rate limited, with the same safe text as the Completion error (the API document's shape)."""
    return ERROR_SHAPE.argument({"type": "error", "message": message, "timestamp": timestamp})


def connection_established(
    *, connection_id: str, user_id: str | None, user_name: str | None, groups: list[str], timestamp: str
) -> dict[str, Any]:
    """The argument of ``ConnectionEstablished``, sent to a connection right after its handshake."""
    return GREETING_SHAPE.argument(
        {
            "connectionId": connection_id,
            "userId": user_id,
            "userName": user_name,
            "groups": groups,
            "message": "Connected to admin real-time hub",
            "timestamp": timestamp,
        }
    )
