"""The REST API under ``/api/admin/realtime`` (Admin role, enforced by the auth middleware).

Every POST validates its body, builds its hub event with :mod:`broker_bridge.catalog`, publishes it
through NATS (so to every replica) and answers only after NATS accepted it: 400 for invalid bodies
(ValidationProblemDetails), 413 for bodies over the limit, 503 when NATS is unavailable. ``health``
is public, for probes that have no token.

Every alert sent is recorded in the shared alert state first and carries an ``id``; the alert-state
routes (acknowledge, silences, state) and the collector's rules (list, reload) are answered by
:class:`gateway.hub.alerts.SharedAlerts`. Refusals are problem+json: 400, 403 (changing state without the
Admin role), 404 (unknown alert), 409; the collector away or silent: 503 / 504.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from aiohttp import web

from broker_bridge import catalog
from broker_bridge.interface import BrokerUnavailable
from broker_bridge.publisher import RealtimePublisher
from gateway import paths
from gateway.http.auth_middleware import PRINCIPAL
from gateway.http.responses import json_response, problem_response, too_many_requests, validation_problem
from gateway.http.validation import (
    MAX_NAME_LENGTH,
    BodyValidator,
    ValidationFailed,
    parse_json_object,
    query_integer,
)
from gateway.hub.alerts import AlertRefused, CollectorAnswer, CollectorUnreachable, SharedAlerts
from gateway.hub.cluster_presence import ClusterPresence
from gateway.hub.history import MAX_MINUTES, MIN_MINUTES, SnapshotHistory
from gateway.hub.snapshots import SnapshotReader
from gateway.metrics import GatewayMetrics
from shared.alert_state import MAX_TARGET_LENGTH, new_alert_id
from shared.probes import Readiness
from shared.rate_limit import KeyedBuckets, Rate
from shared.timeutil import iso_utc

Handler = Callable[[web.Request], Awaitable[web.Response]]

SERVICE_NAME: Final = "real-time"
RULES_REFUSED_TITLE: Final = "The alert rules file is invalid; the rules in use were kept."


class RestApi:
    """The API document's REST endpoints over the publisher and the snapshot reader."""

    def __init__(
        self,
        *,
        publisher: RealtimePublisher,
        alerts: SharedAlerts,
        snapshots: SnapshotReader,
        presence: ClusterPresence,
        history: SnapshotHistory,
        readiness: Readiness,
        broker_connected: Callable[[], bool],
        metrics: GatewayMetrics,
        max_body_bytes: int,
        max_json_depth: int,
        max_details_bytes: int,
        post_rate_per_user: Rate,
        max_tracked_users: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publisher = publisher
        self._alerts = alerts
        self._snapshots = snapshots
        self._presence = presence
        self._history = history
        self._readiness = readiness
        self._broker_connected = broker_connected
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._max_json_depth = max_json_depth
        self._max_details_bytes = max_details_bytes
        self._posts = KeyedBuckets(post_rate_per_user, max_keys=max_tracked_users)
        self._clock = clock

    def routes(self) -> list[web.RouteDef]:
        table: list[tuple[str, str, Handler]] = [
            ("GET", paths.PUBLIC_HEALTH_PATH, self.health),
            ("GET", paths.api_path("status"), self.status),
            ("GET", paths.api_path("platform-snapshot"), self.platform_snapshot),
            ("GET", paths.PRESENCE_PATH, self.presence),
            ("GET", paths.ANALYTICS_HISTORY_PATH, self.analytics_history),
            ("POST", paths.api_path("broadcast/platform-update"), self.broadcast_platform_update),
            ("POST", paths.api_path("broadcast/user-count"), self.broadcast_user_count),
            ("POST", paths.api_path("broadcast/generation-metrics"), self.broadcast_generation_metrics),
            ("POST", paths.api_path("broadcast/revenue"), self.broadcast_revenue),
            ("POST", paths.api_path("alert"), self._alert_handler(None)),
            ("POST", paths.api_path("alert/warning"), self._alert_handler("warning")),
            ("POST", paths.api_path("alert/error"), self._alert_handler("error")),
            ("POST", paths.api_path("alert/performance"), self.performance_alert),
            ("POST", paths.api_path("notify/user-action"), self.notify_user_action),
            ("POST", paths.api_path("notify/role-assignment"), self.notify_role_assignment),
            ("POST", paths.api_path("notify/system-event"), self.notify_system_event),
            ("GET", paths.ALERT_STATE_PATH, self.alert_states),
            ("POST", paths.ALERT_ACKNOWLEDGE_PATH, self.acknowledge_alert),
            ("POST", paths.ALERT_SILENCES_PATH, self.silence_alerts),
            ("GET", paths.ALERT_RULES_PATH, self.alert_rules),
            ("POST", paths.ALERT_RULES_RELOAD_PATH, self.reload_alert_rules),
        ]
        return [
            web.route(method, path, self._answering_errors(path, handler, rate_limited=method == "POST"))
            for method, path, handler in table
        ]

    def _answering_errors(self, path: str, handler: Handler, *, rate_limited: bool) -> Handler:
        """Validation, size and broker failures as problem+json, POSTs limited per user; every answer
        counted by route and status."""
        requests = self._metrics.http_requests

        async def answer(request: web.Request) -> web.Response:
            try:
                refusal = self._over_post_rate(request) if rate_limited else None
                response = refusal or await handler(request)
            except ValidationFailed as error:
                response = validation_problem(error.errors)
            except web.HTTPRequestEntityTooLarge:
                detail = f"The request body must be at most {self._max_body_bytes} bytes."
                response = problem_response(413, "Request body too large.", detail=detail)
            except BrokerUnavailable:
                detail = "The real-time broker is unavailable; nothing was sent."
                response = problem_response(503, "Service Unavailable", detail=detail)
            except (AlertRefused, CollectorUnreachable) as error:
                response = problem_response(error.status, error.message)
            except web.HTTPException as error:
                requests.labels(route=path, status=str(error.status)).inc()
                raise
            requests.labels(route=path, status=str(response.status)).inc()
            return response

        return answer

    def _over_post_rate(self, request: web.Request) -> web.Response | None:
        user = request[PRINCIPAL].user_id or ""
        wait = self._posts.take(user, self._clock())
        if wait is None:
            return None
        self._metrics.limit_refusals.labels(limit="rest_post_rate").inc()
        return too_many_requests("Too many requests from this user.", wait)

    async def _body(self, request: web.Request) -> BodyValidator:
        return BodyValidator(parse_json_object(await request.read(), max_depth=self._max_json_depth))

    # -- status and data ------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        healthy = self._readiness.ready
        body = {
            "status": "healthy" if healthy else "degraded",
            "service": SERVICE_NAME,
            "timestamp": iso_utc(),
            "websocketEndpoint": paths.HUB_PATH,
        }
        return json_response(body, status=200 if healthy else 503)

    async def status(self, request: web.Request) -> web.Response:
        connected = self._broker_connected()
        message = (
            "Real-time service is operational"
            if connected
            else "Real-time broker unavailable; connected clients stay connected"
        )
        return json_response(
            {"status": "connected" if connected else "degraded", "timestamp": iso_utc(), "message": message}
        )

    async def platform_snapshot(self, request: web.Request) -> web.Response:
        snapshot = await self._snapshots.latest()
        return json_response(
            {"timestamp": snapshot.timestamp, "data": snapshot.data.to_wire(), **snapshot.completeness()}
        )

    async def presence(self, request: web.Request) -> web.Response:
        """Who is connected across every replica: the same document as the hub's GetPresence."""
        view = await self._presence.view()
        return json_response(view.to_wire(timestamp=iso_utc()))

    async def analytics_history(self, request: web.Request) -> web.Response:
        minutes = query_integer(request.query, "minutes", minimum=MIN_MINUTES, maximum=MAX_MINUTES)
        return json_response(self._history.answer(minutes))

    # -- broadcasts -----------------------------------------------------------------------------

    async def broadcast_platform_update(self, request: web.Request) -> web.Response:
        snapshot = await self._snapshots.latest()
        await self._publisher.publish(catalog.analytics_update(snapshot.data, timestamp=snapshot.timestamp))
        return json_response({"message": "Platform update broadcasted"})

    async def broadcast_user_count(self, request: web.Request) -> web.Response:
        snapshot = await self._snapshots.latest()
        event = catalog.user_count_update(snapshot.data, timestamp=snapshot.timestamp)
        await self._publisher.publish(event)
        counts = {key: event.payload[key] for key in ("totalUsers", "activeUsers", "newUsersToday")}
        return json_response({"message": "User count update broadcasted", **counts})

    async def broadcast_generation_metrics(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        websites = body.number("websitesGenerated", integer=True, minimum=0)
        images = body.number("imagesGenerated", integer=True, minimum=0)
        failed = body.number("failedGenerations", integer=True, minimum=0)
        average = body.number("averageGenerationTime", minimum=0)
        body.check()
        event = catalog.generation_metrics(
            websites_generated=cast(int, websites),
            images_generated=cast(int, images),
            failed_generations=cast(int, failed),
            average_generation_time=cast(float, average),
            timestamp=iso_utc(),
        )
        await self._publisher.publish(event)
        return json_response({"message": "Generation metrics broadcasted"})

    async def broadcast_revenue(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        daily = body.number("dailyRevenue")
        thirty_days = body.number("totalRevenue30d")
        body.check()
        event = catalog.revenue_update(
            daily_revenue=cast(float, daily), total_revenue_30d=cast(float, thirty_days), timestamp=iso_utc()
        )
        await self._publisher.publish(event)
        return json_response({"message": "Revenue update broadcasted"})

    # -- alerts ---------------------------------------------------------------------------------

    def _alert_handler(self, fixed_type: catalog.AlertType | None) -> Handler:
        async def send_alert(request: web.Request) -> web.Response:
            body = await self._body(request)
            alert_type = fixed_type or body.text("type", choices=catalog.ALERT_TYPES)
            message = body.text("message")
            data = body.obj("data", max_bytes=self._max_details_bytes)
            severity = body.text("severity", required=False, choices=catalog.SEVERITIES)
            body.check()
            event = catalog.system_alert(
                alert_id=new_alert_id(time.time()),
                alert_type=cast(catalog.AlertType, alert_type),
                message=cast(str, message),
                timestamp=iso_utc(),
                severity=cast(catalog.Severity | None, severity),
                data=data,
            )
            await self._alerts.raise_alert(event)
            return json_response({"message": "Alert sent successfully", "id": event.payload["id"]})

        return send_alert

    async def performance_alert(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        metric = body.text("metric", max_length=MAX_NAME_LENGTH)
        value = body.number("value")
        threshold = body.text_or_number("threshold")
        severity = body.text("severity", required=False, choices=catalog.SEVERITIES)
        body.check()
        event = catalog.performance_alert(
            alert_id=new_alert_id(time.time()),
            metric=cast(str, metric),
            value=cast(float, value),
            threshold=cast(Any, threshold),
            timestamp=iso_utc(),
            severity=cast(catalog.Severity | None, severity),
        )
        await self._alerts.raise_alert(event)
        return json_response({"message": "Performance alert sent successfully", "id": event.payload["id"]})

    # -- shared alert state and rules ------------------------------------------------------------

    async def alert_states(self, request: web.Request) -> web.Response:
        return json_response(await self._alerts.states())

    async def acknowledge_alert(self, request: web.Request) -> web.Response:
        alert_id = request.match_info["alert_id"]
        return json_response(await self._alerts.acknowledge(request[PRINCIPAL], alert_id))

    async def silence_alerts(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        target = body.text("target", max_length=MAX_TARGET_LENGTH)
        minutes = body.number("minutes", minimum=0)
        body.check()
        view = await self._alerts.silence(request[PRINCIPAL], cast(str, target), cast(float, minutes))
        return json_response(view)

    async def alert_rules(self, request: web.Request) -> web.Response:
        return _collector_response(await self._alerts.rules())

    async def reload_alert_rules(self, request: web.Request) -> web.Response:
        return _collector_response(await self._alerts.reload_rules(request[PRINCIPAL]))

    # -- notifications --------------------------------------------------------------------------

    async def notify_user_action(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        user_id = body.uuid("userId")
        action = body.text("action", max_length=MAX_NAME_LENGTH)
        details = body.obj("details", max_bytes=self._max_details_bytes)
        body.check()
        event = catalog.user_activity(
            user_id=cast(str, user_id), action=cast(str, action), details=details, timestamp=iso_utc()
        )
        await self._publisher.publish(event)
        return json_response({"message": "User action notification sent"})

    async def notify_role_assignment(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        user_id = body.uuid("userId")
        role_name = body.text("roleName", max_length=MAX_NAME_LENGTH)
        action = body.text("action", choices=catalog.ROLE_ACTIONS)
        body.check()
        event = catalog.role_assignment(
            user_id=cast(str, user_id), role_name=cast(str, role_name), action=cast(str, action), timestamp=iso_utc()
        )
        await self._publisher.publish(event)
        return json_response({"message": "Role assignment notification sent"})

    async def notify_system_event(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        event_type = body.text("eventType", max_length=MAX_NAME_LENGTH)
        description = body.text("description")
        data = body.obj("data", max_bytes=self._max_details_bytes)
        body.check()
        event = catalog.system_event(
            event_type=cast(str, event_type), description=cast(str, description), data=data, timestamp=iso_utc()
        )
        await self._publisher.publish(event)
        return json_response({"message": "System event notification sent"})


def _collector_response(answer: CollectorAnswer) -> web.Response:
    """The collector's rules (200), or the file's problem as problem+json naming the line (400)."""
    if answer.status == 200:
        return json_response(answer.body)
    body = answer.body
    return problem_response(
        answer.status,
        RULES_REFUSED_TITLE,
        detail=str(body.get("error", "")),
        extensions={"line": body.get("line"), "file": body.get("file")},
    )
