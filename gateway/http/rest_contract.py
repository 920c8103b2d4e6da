"""What each REST route takes and answers, for the generated OpenAPI document (``/openapi.json``).

Keyed by method and path, as the routes are registered (:mod:`gateway.http.rest_api`,
:mod:`gateway.http.api_docs`, :mod:`shared.probes`); :func:`gateway.http.openapi.openapi_document` walks
the app's route table and looks each route up here, so a route without an entry is still documented
(method, path, authentication, the common errors) and says that its shapes are not declared. Payloads are
the catalog's (:mod:`broker_bridge.catalog`): a broadcast body is its event's payload less what the server
fills in. Request bodies are open objects (unknown fields are ignored, as :class:`BodyValidator` does);
``tests/contracts`` sends each declared body to the real routes to keep the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, cast

from broker_bridge import catalog
from broker_bridge.shapes import AnyJson, Either, Field, Integer, Number, Record, Shape, Text, optional
from gateway.http.validation import MAX_NAME_LENGTH, MAX_TEXT_LENGTH
from gateway.hub.history import MAX_MINUTES, MIN_MINUTES
from gateway.paths import (
    ALERT_ACKNOWLEDGE_PATH,
    ALERT_RULES_PATH,
    ALERT_RULES_RELOAD_PATH,
    ALERT_SILENCES_PATH,
    ALERT_STATE_PATH,
    ANALYTICS_HISTORY_PATH,
    ASYNCAPI_PATH,
    OPENAPI_PATH,
    PRESENCE_PATH,
    PUBLIC_HEALTH_PATH,
    api_path,
)
from shared.alert_state import MAX_TARGET_LENGTH
from shared.probes import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH

JSON: Final = "application/json"
TEXT: Final = "text/plain"


@dataclass(frozen=True, slots=True)
class RouteContract:
    """One route: what it does, its JSON body (None: none is read) and its successful answer."""

    summary: str
    answer: Shape | None
    body: Record | None = None
    answer_type: str = JSON
    tag: str = "REST API"
    # Statuses beyond 200 and the common errors (401/403 when authenticated, 400/413/429/503 for bodies).
    also: Mapping[int, str] | None = None
    # Like ``also``, for refusals answered as problem+json (a common status takes the route's description).
    refusals: Mapping[int, str] | None = None
    # Query parameters (each field one parameter; required ones answer 400 naming it when missing).
    query: Record | None = None


def _name(description: str = "") -> Text:
    return Text(description, min_length=1, max_length=MAX_NAME_LENGTH)


_MESSAGE: Final = Text(min_length=1, max_length=MAX_TEXT_LENGTH)
_UUID: Final = Text("a UUID", pattern=r"^[0-9A-Fa-f]{8}-?([0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}$")
_FREE_OBJECT: Final = Field(AnyJson("a JSON object of at most REALTIME_MAX_DETAILS_BYTES", object_only=True), False)
_SENT: Final = Record({"message": Text()}, "Accepted by NATS and on its way to every replica")
_ALERT_SENT: Final = Record(
    {"message": Text(), "id": catalog.ALERT_ID_TEXT},
    "Recorded in the shared alert state, accepted by NATS and on its way to every replica",
)
_ALERT_FIELDS: Final[dict[str, Field | Shape]] = {
    "message": _MESSAGE,
    "data": _FREE_OBJECT,
    "severity": optional(Text(choices=catalog.SEVERITIES, description="else data.severity, else by type")),
}
_SNAPSHOT_ANSWER: Final = Record(
    {"timestamp": catalog.TIMESTAMP, "data": catalog.SNAPSHOT_FIGURES, **catalog.SNAPSHOT_COMPLETENESS}
)
_NOT_READY: Final = {503: "Not ready: the body names the unmet checks (`not ready: nats`)"}
# The alert-state and rules routes' refusals, problem+json with the reason as title (not field errors).
_ADMIN_ONLY: Final = (
    "A token without a required role (empty body), or not an Admin: changing the shared alert state takes the "
    "Admin role itself"
)
_KV_AWAY: Final = "NATS or the alert state's KV bucket unavailable: nothing was changed"
_COLLECTOR_AWAY: Final = {
    502: "The stats collector's answer could not be read",
    503: "No stats collector is running (or NATS is unavailable)",
    504: "The stats collector did not answer in time (REALTIME_COLLECTOR_REQUEST_TIMEOUT_SECONDS)",
}

ROUTE_CONTRACTS: Final[Mapping[tuple[str, str], RouteContract]] = {
    ("GET", PUBLIC_HEALTH_PATH): RouteContract(
        "Health for probes without a token (public)",
        Record(
            {
                "status": Text(choices=("healthy", "degraded")),
                "service": Text(),
                "timestamp": catalog.TIMESTAMP,
                "websocketEndpoint": Text("the hub path"),
            }
        ),
        also={503: "Degraded (same body, status degraded)"},
    ),
    ("GET", api_path("status")): RouteContract(
        "Whether the real-time broker is reachable",
        Record({"status": Text(choices=("connected", "degraded")), "timestamp": catalog.TIMESTAMP, "message": Text()}),
    ),
    ("GET", api_path("platform-snapshot")): RouteContract("The latest platform snapshot", _SNAPSHOT_ANSWER),
    ("POST", api_path("broadcast/platform-update")): RouteContract(
        "Send the latest snapshot to `analytics` as AnalyticsUpdate", _SENT
    ),
    ("POST", api_path("broadcast/user-count")): RouteContract(
        "Send the latest user counts to `analytics` as UserCountUpdate",
        cast(Record, catalog.USER_COUNT_SHAPE.payload).without("timestamp").extended(message=Text()),
    ),
    ("POST", api_path("broadcast/generation-metrics")): RouteContract(
        "Send GenerationMetricsUpdate to `analytics`",
        _SENT,
        Record(
            {
                "websitesGenerated": Integer(minimum=0),
                "imagesGenerated": Integer(minimum=0),
                "failedGenerations": Integer(minimum=0),
                "averageGenerationTime": Number("seconds", minimum=0),
            },
            open=True,
        ),
    ),
    ("POST", api_path("broadcast/revenue")): RouteContract(
        "Send RevenueUpdate to `analytics`",
        _SENT,
        Record({"dailyRevenue": Number(), "totalRevenue30d": Number()}, open=True),
    ),
    ("GET", PRESENCE_PATH): RouteContract(
        "Who is connected across every replica, per group (as the hub's GetPresence); while KV cannot be read, "
        "this replica's users alone with complete: false",
        catalog.PRESENCE,
    ),
    ("GET", ANALYTICS_HISTORY_PATH): RouteContract(
        "The collector's snapshots of the last `minutes`, at most 500 points (as the hub's GetAnalyticsHistory)",
        catalog.ANALYTICS_HISTORY,
        query=Record(
            {"minutes": Integer(f"the window, {MIN_MINUTES}-{MAX_MINUTES}", minimum=MIN_MINUTES, maximum=MAX_MINUTES)}
        ),
        refusals={400: "minutes missing, not an integer or out of range: ValidationProblemDetails naming `minutes`"},
    ),
    ("POST", api_path("alert")): RouteContract(
        "Send SystemAlert to `alerts`, recorded in the shared alert state",
        _ALERT_SENT,
        Record({"type": Text(choices=catalog.ALERT_TYPES), **_ALERT_FIELDS}, open=True),
    ),
    ("POST", api_path("alert/warning")): RouteContract(
        "Send a warning SystemAlert to `alerts`, recorded in the shared alert state",
        _ALERT_SENT,
        Record(_ALERT_FIELDS, open=True),
    ),
    ("POST", api_path("alert/error")): RouteContract(
        "Send an error SystemAlert to `alerts`, recorded in the shared alert state",
        _ALERT_SENT,
        Record(_ALERT_FIELDS, open=True),
    ),
    ("POST", api_path("alert/performance")): RouteContract(
        "Send a performance SystemAlert (a high warning) to `alerts`, recorded in the shared alert state",
        _ALERT_SENT,
        Record(
            {
                "metric": _name(),
                "value": Number(),
                "threshold": Either((Number(), _name())),
                "severity": optional(Text(choices=catalog.SEVERITIES)),
            },
            open=True,
        ),
    ),
    ("GET", ALERT_STATE_PATH): RouteContract(
        "The kept alerts with their status, newest first, and the live silences (as the hub's GetAlertStates)",
        catalog.ALERT_STATES,
        refusals={503: _KV_AWAY},
    ),
    ("POST", ALERT_ACKNOWLEDGE_PATH): RouteContract(
        "Acknowledge an alert (the first acknowledgement stands); AlertStateChanged to `alerts`. Admin role only",
        catalog.ALERT_VIEW,
        refusals={
            400: "Not an alert id (1 to 64 letters, digits, '-' or '_')",
            403: _ADMIN_ONLY,
            404: "No such alert is kept (unknown, or expired)",
            409: "The alert kept changing while it was acknowledged; try again",
        },
    ),
    ("POST", ALERT_SILENCES_PATH): RouteContract(
        "Hold back the collector's alerts of a rule or alert type for `minutes` (0 lifts the silence); "
        "AlertStateChanged to `alerts`. Admin role only",
        catalog.SILENCE_VIEW,
        Record(
            {
                "target": Text("a rule name or an alert type", min_length=1, max_length=MAX_TARGET_LENGTH),
                "minutes": Number("0 lifts the silence; at most the alert retention", minimum=0),
            },
            open=True,
        ),
        refusals={
            400: "Invalid body, or minutes over the alert retention",
            403: _ADMIN_ONLY,
            409: "Too many live silences (REALTIME_MAX_ALERT_SILENCES); lift one first",
        },
    ),
    ("GET", ALERT_RULES_PATH): RouteContract(
        "The stats collector's alert rules in use", catalog.ALERT_RULES, refusals=_COLLECTOR_AWAY
    ),
    ("POST", ALERT_RULES_RELOAD_PATH): RouteContract(
        "The stats collector reads its rules file again: the new rules, or the file's problem (the rules in "
        "use kept). Admin role only",
        catalog.ALERT_RULES,
        refusals={
            400: "The rules file is invalid: `detail` names the line, rule and key; `line`, `file` beside it",
            403: "A token without a required role (empty body), or not an Admin: reloading takes the Admin role itself",
            **_COLLECTOR_AWAY,
        },
    ),
    ("POST", api_path("notify/user-action")): RouteContract(
        "Send UserActivityUpdate to `user-activity`",
        _SENT,
        Record({"userId": _UUID, "action": _name(), "details": _FREE_OBJECT}, open=True),
    ),
    ("POST", api_path("notify/role-assignment")): RouteContract(
        "Send AdminNotification (role-assignment) to `admins`",
        _SENT,
        Record(
            {"userId": _UUID, "roleName": _name(), "action": Text(choices=catalog.ROLE_ACTIONS)},
            open=True,
        ),
    ),
    ("POST", api_path("notify/system-event")): RouteContract(
        "Send AdminNotification (system-event) to `admins`",
        _SENT,
        Record({"eventType": _name(), "description": _MESSAGE, "data": _FREE_OBJECT}, open=True),
    ),
    ("GET", ASYNCAPI_PATH): RouteContract(
        "This service's AsyncAPI 3.0 document: the hub and the NATS subjects", AnyJson(), tag="Contracts"
    ),
    ("GET", OPENAPI_PATH): RouteContract("This OpenAPI 3.1 document", AnyJson(), tag="Contracts"),
    ("GET", HEALTHZ_PATH): RouteContract(
        "Liveness: 200 while the process serves HTTP", Text(), answer_type=TEXT, tag="Probes"
    ),
    ("GET", READYZ_PATH): RouteContract(
        "Readiness: 200 when NATS, KV and forwarding are up and the replica is not draining",
        Text(),
        answer_type=TEXT,
        tag="Probes",
        also=_NOT_READY,
    ),
    ("GET", METRICS_PATH): RouteContract("Prometheus metrics", Text(), answer_type=TEXT, tag="Probes"),
}
