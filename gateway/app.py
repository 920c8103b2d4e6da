"""Builds the gateway's aiohttp application and wires its parts together.

Shutdown order (aiohttp runs ``on_shutdown`` before ``cleanup_ctx`` exits): readiness off ->
refuse new connections -> send every client a Close with ``allowReconnect`` -> wait up to the
grace period -> stop timers -> withdraw from KV -> drain NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from broker_bridge.broker_nats import NatsBroker, NatsOptions
from broker_bridge.interface import Broker
from broker_bridge.keyvalue import REPLICAS_BUCKET, SNAPSHOT_BUCKET, NatsKeyValueStore
from broker_bridge.publisher import RealtimePublisher
from gateway.auth import verifier_from_key_material
from gateway.context import CONTEXT, GatewayContext
from gateway.gc_policy import run_gc_policy
from gateway.http.auth_middleware import auth_middleware
from gateway.http.cors import cors_middleware
from gateway.http.health import add_health_routes
from gateway.http.rest_api import add_rest_routes, rest_errors
from gateway.http.static_site import DEFAULT_DASHBOARD_DIR, add_dashboard_routes
from gateway.hub.admin_hub import AdminHub
from gateway.hub.fanout import FanoutRouter
from gateway.hub.host import HubHost
from gateway.hub.platform_data import STALE_FACTOR, KvSnapshotReader, ReplicaPresence
from gateway.hub.registry import ConnectionRegistry
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL
from gateway.transport.connection_token import ConnectionTokenSigner, derive_secret
from gateway.transport.negotiate import negotiate
from gateway.transport.websocket import hub_endpoint

log = logging.getLogger(__name__)

HUB_PATH = "/hubs/admin"


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings (they may carry ``access_token``) and without headers."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


def connection_token_secret(settings: GatewaySettings) -> bytes:
    if settings.connection_token_secret:
        return settings.connection_token_secret.encode()
    if settings.jwt_secret:
        return derive_secret(settings.jwt_secret.encode())
    raise SystemExit(
        "python -m gateway: error: REALTIME_CONNECTION_TOKEN_SECRET is required with a public-key JWT setup "
        "(every replica must share it)"
    )


def build_app(
    settings: GatewaySettings,
    *,
    broker: Broker,
    metrics: GatewayMetrics | None = None,
    snapshots: KvSnapshotReader | None = None,
    presence: ReplicaPresence | None = None,
) -> web.Application:
    """The gateway app around ``broker``; the caller owns the broker's connection lifecycle."""
    metrics = metrics or GatewayMetrics()
    registry = ConnectionRegistry()
    snapshots = snapshots or KvSnapshotReader()
    presence = presence or ReplicaPresence(
        replica_id=settings.replica_name, registry=registry, interval_seconds=settings.presence_interval_seconds
    )
    router = FanoutRouter(
        broker=broker,
        protocols={JSON_PROTOCOL.name: JSON_PROTOCOL, MESSAGEPACK_PROTOCOL.name: MESSAGEPACK_PROTOCOL},
        metrics=metrics,
    )
    hub = AdminHub(router=router, snapshots=snapshots, presence=presence)
    host = HubHost(
        hub=hub, registry=registry, metrics=metrics, max_parallel_invocations=settings.max_parallel_invocations
    )
    verifier = verifier_from_key_material(
        secret=settings.jwt_secret,
        public_key_file=settings.jwt_public_key_file,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
    )
    signer = ConnectionTokenSigner(
        secret=connection_token_secret(settings), ttl_seconds=settings.connect_window_seconds, clock=time.time
    )
    app = web.Application(
        middlewares=[
            cors_middleware(settings.cors_origins),
            auth_middleware(verifier, required_roles=settings.required_roles, metrics=metrics),
            rest_errors,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[CONTEXT] = GatewayContext(
        settings=settings,
        broker=broker,
        signer=signer,
        host=host,
        metrics=metrics,
        publisher=RealtimePublisher(broker),
        snapshots=snapshots,
    )
    app.router.add_post(f"{HUB_PATH}/negotiate", negotiate)
    app.router.add_get(HUB_PATH, hub_endpoint)
    add_rest_routes(app)
    add_health_routes(app)
    dashboard = Path(settings.dashboard_dir) if settings.dashboard_dir else DEFAULT_DASHBOARD_DIR
    if not add_dashboard_routes(app, dashboard):
        log.info("no dashboard build at %s; serving the API only", dashboard)
    app.cleanup_ctx.append(_session_timers)
    app.cleanup_ctx.append(_gc_policy)
    app.on_shutdown.append(_close_connections)
    return app


async def _gc_policy(app: web.Application) -> AsyncIterator[None]:
    settings = app[CONTEXT].settings
    task = asyncio.create_task(
        run_gc_policy(
            young_interval=settings.gc_young_interval_seconds,
            full_interval=settings.gc_full_collect_interval_seconds,
        )
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _session_timers(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[CONTEXT].host.run_timers())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_connections(app: web.Application) -> None:
    context = app[CONTEXT]
    context.readiness.draining = True
    await context.host.close_all(grace_seconds=context.settings.shutdown_grace_seconds)


def create_gateway(settings: GatewaySettings) -> web.Application:
    """The production app: NATS connected in the background, KV attached once it is, drained on shutdown."""
    metrics = GatewayMetrics()

    def on_state(state: str) -> None:
        metrics.nats_connected.set(1 if state in ("connected", "reconnected") else 0)
        if state == "reconnected":
            metrics.nats_reconnects.inc()

    broker = NatsBroker(NatsOptions(servers=settings.nats_servers, name="realtime-gateway"), on_state=on_state)
    snapshots = KvSnapshotReader()
    app = build_app(settings, broker=broker, metrics=metrics, snapshots=snapshots)
    presence = app[CONTEXT].host.hub.presence

    async def connect_and_attach() -> None:
        await broker.connect()
        try:
            replicas = settings.kv_replicas
            snapshots.attach(await NatsKeyValueStore.open(broker.client, bucket=SNAPSHOT_BUCKET, replicas=replicas))
            presence.attach(
                await NatsKeyValueStore.open(
                    broker.client,
                    bucket=REPLICAS_BUCKET,
                    ttl_seconds=settings.presence_interval_seconds * STALE_FACTOR,
                    replicas=replicas,
                )
            )
        except Exception as error:  # no JetStream: run with local figures rather than not at all
            log.error("NATS KV unavailable (is JetStream enabled?): %s", type(error).__name__)
            return
        await presence.run()

    async def broker_lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(connect_and_attach())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await presence.withdraw()
        await broker.close()

    # cleanup_ctx contexts exit in reverse order: first in the list, so NATS is drained last.
    app.cleanup_ctx.insert(0, broker_lifecycle)
    return app
