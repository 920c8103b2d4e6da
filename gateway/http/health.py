"""Probe and status endpoints: ``/healthz`` (alive), ``/readyz`` (NATS up, not draining), ``/metrics``,
and the API document's public ``GET /api/admin/realtime/health``."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.context import CONTEXT
from shared import jsoncodec
from shared.timeutil import iso_utc


def _ready(app: web.Application) -> bool:
    context = app[CONTEXT]
    return context.broker.is_connected and not context.readiness.draining


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    if _ready(request.app):
        return web.Response(text="ready")
    return web.Response(status=503, text="not ready")


async def health(request: web.Request) -> web.Response:
    healthy = _ready(request.app)
    body = {
        "status": "healthy" if healthy else "degraded",
        "service": "real-time",
        "timestamp": iso_utc(),
        "websocketEndpoint": "/hubs/admin",
    }
    return web.Response(body=jsoncodec.dumps(body), status=200 if healthy else 503, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    context.metrics.nats_connected.set(1 if context.broker.is_connected else 0)
    return web.Response(body=generate_latest(context.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/admin/realtime/health", health)
