"""The REST API under ``/api/admin/realtime`` (Admin role, enforced by the auth middleware).

Every POST validates its body, sends its hub event through :class:`RealtimePublisher` (so through
NATS, to every replica) and answers only after NATS accepted it: 400 for invalid bodies
(ValidationProblemDetails), 413 for bodies over the limit, 503 when NATS is unavailable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.typedefs import Handler

from broker_bridge import hub_events
from broker_bridge.interface import BrokerUnavailable
from gateway.context import CONTEXT, GatewayContext
from gateway.http.auth_middleware import API_PREFIX
from gateway.http.validation import BodyValidator, ValidationFailed, parse_json_object, validation_problem
from shared import jsoncodec
from shared.timeutil import iso_utc

PROBLEM_JSON: Final = "application/problem+json"
ROUTE_PREFIX: Final = API_PREFIX.rstrip("/")


def json_response(body: dict[str, Any], *, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(body=jsoncodec.dumps(body), status=status, content_type=content_type)


# RFC 9110 sections, as ASP.NET Core's ProblemDetails uses for "type".
_PROBLEM_TYPES: Final = {
    413: "https://tools.ietf.org/html/rfc9110#section-15.5.14",
    503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
}


def problem(status: int, title: str, detail: str | None = None) -> web.Response:
    body: dict[str, Any] = {"type": _PROBLEM_TYPES[status], "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return json_response(body, status=status, content_type=PROBLEM_JSON)


@web.middleware
async def rest_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns validation, size and broker failures of API handlers into problem+json answers."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    context = request.app[CONTEXT]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except ValidationFailed as error:
        response = json_response(validation_problem(error.errors), status=400, content_type=PROBLEM_JSON)
    except web.HTTPRequestEntityTooLarge:
        limit = context.settings.max_body_bytes
        response = problem(413, "Request body too large.", f"The request body must be at most {limit} bytes.")
    except BrokerUnavailable:
        response = problem(503, "Service Unavailable", "The real-time broker is unavailable; nothing was sent.")
    except web.HTTPException as error:
        context.metrics.http_requests.labels(route=route, status=str(error.status)).inc()
        raise
    context.metrics.http_requests.labels(route=route, status=str(response.status)).inc()
    return response


async def _body(request: web.Request) -> BodyValidator:
    return BodyValidator(parse_json_object(await request.read()))


def _context(request: web.Request) -> GatewayContext:
    return request.app[CONTEXT]


# -- status and data --------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    connected = _context(request).broker.is_connected
    return json_response(
        {
            "status": "connected" if connected else "degraded",
            "timestamp": iso_utc(),
            "message": "Real-time service is operational"
            if connected
            else "Real-time broker unavailable; connected clients stay connected",
        }
    )


async def platform_snapshot(request: web.Request) -> web.Response:
    snapshot = await _context(request).snapshots.latest()
    return json_response({"timestamp": snapshot.timestamp, "data": snapshot.data.to_wire()})


# -- broadcasts -------------------------------------------------------------------------------


async def broadcast_platform_update(request: web.Request) -> web.Response:
    context = _context(request)
    snapshot = await context.snapshots.latest()
    await context.publisher.analytics_update(snapshot.data, timestamp=snapshot.timestamp)
    return json_response({"message": "Platform update broadcasted"})


async def broadcast_user_count(request: web.Request) -> web.Response:
    context = _context(request)
    snapshot = await context.snapshots.latest()
    payload = await context.publisher.user_count_update(snapshot.data, timestamp=snapshot.timestamp)
    return json_response(
        {
            "message": "User count update broadcasted",
            "totalUsers": payload["totalUsers"],
            "activeUsers": payload["activeUsers"],
            "newUsersToday": payload["newUsersToday"],
        }
    )


async def broadcast_generation_metrics(request: web.Request) -> web.Response:
    body = await _body(request)
    metrics = {
        "websitesGenerated": body.number("websitesGenerated", integer=True, minimum=0),
        "imagesGenerated": body.number("imagesGenerated", integer=True, minimum=0),
        "failedGenerations": body.number("failedGenerations", integer=True, minimum=0),
        "averageGenerationTime": body.number("averageGenerationTime", minimum=0),
    }
    body.check()
    await _context(request).publisher.generation_metrics(metrics)
    return json_response({"message": "Generation metrics broadcasted"})


async def broadcast_revenue(request: web.Request) -> web.Response:
    body = await _body(request)
    revenue = {"dailyRevenue": body.number("dailyRevenue"), "totalRevenue30d": body.number("totalRevenue30d")}
    body.check()
    await _context(request).publisher.revenue_update(revenue)
    return json_response({"message": "Revenue update broadcasted"})


# -- alerts -----------------------------------------------------------------------------------


def _severity(body: BodyValidator, data: dict[str, Any] | None) -> hub_events.Severity | None:
    """``severity`` from the body, else ``data.severity`` (the document's example), else by type."""
    severity = body.text("severity", required=False, choices=hub_events.SEVERITIES)
    if severity is None and data is not None and data.get("severity") in hub_events.SEVERITIES:
        severity = data["severity"]
    return cast(hub_events.Severity | None, severity)


def _alert_handler(fixed_type: hub_events.AlertType | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def send_alert(request: web.Request) -> web.Response:
        body = await _body(request)
        alert_type = fixed_type or body.text("type", choices=hub_events.ALERT_TYPES)
        message = body.text("message")
        data = body.obj("data")
        severity = _severity(body, data)
        body.check()
        await _context(request).publisher.send_alert(
            alert_type=cast(hub_events.AlertType, alert_type), message=cast(str, message), severity=severity, data=data
        )
        return json_response({"message": "Alert sent successfully"})

    return send_alert


async def performance_alert(request: web.Request) -> web.Response:
    body = await _body(request)
    metric = body.text("metric", max_length=200)
    value = body.number("value")
    threshold = body.text_or_number("threshold")
    severity = _severity(body, None)
    body.check()
    await _context(request).publisher.send_alert(
        alert_type="warning",
        message=f"Performance alert: {metric} is {value:g} (threshold {threshold})",
        severity=severity or "high",
        data={"metric": metric, "value": value, "threshold": threshold},
    )
    return json_response({"message": "Performance alert sent successfully"})


# -- notifications ----------------------------------------------------------------------------


async def notify_user_action(request: web.Request) -> web.Response:
    body = await _body(request)
    user_id = body.uuid("userId")
    action = body.text("action", max_length=200)
    details = body.obj("details")
    body.check()
    await _context(request).publisher.notify_user_action(
        user_id=cast(str, user_id), action=cast(str, action), details=details
    )
    return json_response({"message": "User action notification sent"})


async def notify_role_assignment(request: web.Request) -> web.Response:
    body = await _body(request)
    user_id = body.uuid("userId")
    role_name = body.text("roleName", max_length=200)
    action = body.text("action", choices=("assigned", "revoked"))
    body.check()
    await _context(request).publisher.notify_role_assignment(
        user_id=cast(str, user_id), role_name=cast(str, role_name), action=cast(str, action)
    )
    return json_response({"message": "Role assignment notification sent"})


async def notify_system_event(request: web.Request) -> web.Response:
    body = await _body(request)
    event_type = body.text("eventType", max_length=200)
    description = body.text("description")
    data = body.obj("data")
    body.check()
    await _context(request).publisher.notify_system_event(
        event_type=cast(str, event_type), description=cast(str, description), data=data
    )
    return json_response({"message": "System event notification sent"})


def add_rest_routes(app: web.Application) -> None:
    p = ROUTE_PREFIX
    app.router.add_get(f"{p}/status", status)
    app.router.add_get(f"{p}/platform-snapshot", platform_snapshot)
    app.router.add_post(f"{p}/broadcast/platform-update", broadcast_platform_update)
    app.router.add_post(f"{p}/broadcast/user-count", broadcast_user_count)
    app.router.add_post(f"{p}/broadcast/generation-metrics", broadcast_generation_metrics)
    app.router.add_post(f"{p}/broadcast/revenue", broadcast_revenue)
    app.router.add_post(f"{p}/alert", _alert_handler(None))
    app.router.add_post(f"{p}/alert/warning", _alert_handler("warning"))
    app.router.add_post(f"{p}/alert/error", _alert_handler("error"))
    app.router.add_post(f"{p}/alert/performance", performance_alert)
    app.router.add_post(f"{p}/notify/user-action", notify_user_action)
    app.router.add_post(f"{p}/notify/role-assignment", notify_role_assignment)
    app.router.add_post(f"{p}/notify/system-event", notify_system_event)
