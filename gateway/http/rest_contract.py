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
from gateway.paths import ASYNCAPI_PATH, OPENAPI_PATH, PUBLIC_HEALTH_PATH, api_path
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


def _name(description: str = "") -> Text:
    return Text(description, min_length=1, max_length=MAX_NAME_LENGTH)


_MESSAGE: Final = Text(min_length=1, max_length=MAX_TEXT_LENGTH)
_UUID: Final = Text("a UUID", pattern=r"^[0-9A-Fa-f]{8}-?([0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}$")
_FREE_OBJECT: Final = Field(AnyJson("a JSON object of at most REALTIME_MAX_DETAILS_BYTES", object_only=True), False)
_SENT: Final = Record({"message": Text()}, "Accepted by NATS and on its way to every replica")
_ALERT_FIELDS: Final[dict[str, Field | Shape]] = {
    "message": _MESSAGE,
    "data": _FREE_OBJECT,
    "severity": optional(Text(choices=catalog.SEVERITIES, description="else data.severity, else by type")),
}
_SNAPSHOT_ANSWER: Final = Record(
    {"timestamp": catalog.TIMESTAMP, "data": catalog.SNAPSHOT_FIGURES, **catalog.SNAPSHOT_COMPLETENESS}
)
_NOT_READY: Final = {503: "Not ready: the body names the unmet checks (`not ready: nats`)"}

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
    ("POST", api_path("alert")): RouteContract(
        "Send SystemAlert to `alerts`",
        _SENT,
        Record({"type": Text(choices=catalog.ALERT_TYPES), **_ALERT_FIELDS}, open=True),
    ),
    ("POST", api_path("alert/warning")): RouteContract(
        "Send a warning SystemAlert to `alerts`", _SENT, Record(_ALERT_FIELDS, open=True)
    ),
    ("POST", api_path("alert/error")): RouteContract(
        "Send an error SystemAlert to `alerts`", _SENT, Record(_ALERT_FIELDS, open=True)
    ),
    ("POST", api_path("alert/performance")): RouteContract(
        "Send a performance SystemAlert (a high warning) to `alerts`",
        _SENT,
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
