"""The composition root: builds the gateway's aiohttp application and wires its parts together.

Layers, each importing only those before it: ``gateway.signalr`` (the protocol, pure) ->
``gateway.hub`` (sessions, fan-out, AdminHub) -> ``gateway.http`` (middleware, responses, REST API)
-> ``gateway.transport`` (negotiate, the hub endpoint, WebSockets) -> this module.

Shutdown order (aiohttp runs ``on_shutdown`` before ``cleanup_ctx`` exits): readiness off and new
connections refused -> every client sent a Close with ``allowReconnect`` -> wait up to the grace
period -> stop timers -> withdraw from KV -> drain NATS.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

import nats.errors
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from broker_bridge.alert_store import AlertStore
from broker_bridge.broker_nats import NatsBroker
from broker_bridge.feed_stream import JetStreamFeed
from broker_bridge.feed_subjects import SubjectFeed
from broker_bridge.interface import Broker, BrokerUnavailable, FanoutFeed, Publisher, ReplayableFeed
from broker_bridge.keyvalue import (
    CLAIMS_BUCKET,
    CONNECTIONS_BUCKET,
    PRESENCE_BUCKET,
    REPLICAS_BUCKET,
    SNAPSHOT_BUCKET,
    MemoryKeyValueStore,
    NatsKeyValueStore,
    replica_key,
)
from broker_bridge.nats_options import nats_options_or_exit
from broker_bridge.publisher import RealtimePublisher
from broker_bridge.snapshot_stream import SnapshotStreamReader
from gateway.auth import FixedKeys, KeySet, TokenVerifier, pem_public_key, secret_key
from gateway.gc_policy import run_gc_policy
from gateway.http.api_docs import ApiDocs
from gateway.http.auth_middleware import Authenticator, auth_middleware
from gateway.http.client_address import ClientAddress
from gateway.http.cors import Cors
from gateway.http.rest_api import RestApi
from gateway.http.static_site import DEFAULT_DASHBOARD_DIR, dashboard_routes
from gateway.hub.admin_hub import AdminHub
from gateway.hub.alerts import SharedAlerts
from gateway.hub.cluster_presence import ClusterPresence
from gateway.hub.fanout import FanoutRouter
from gateway.hub.history import MAX_MINUTES, SnapshotHistory
from gateway.hub.host import HubHost
from gateway.hub.memberships import Memberships
from gateway.hub.presence import STALE_FACTOR, ReplicaPresence
from gateway.hub.registry import ConnectionRegistry
from gateway.hub.resumable import ResumableConnections
from gateway.hub.snapshots import KvSnapshotReader
from gateway.jwks import FileJwksLoader, HttpJwksLoader, RefreshingKeySet
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, HubProtocol
from gateway.signalr.connection import ConnectionLimits
from gateway.transport.admission import Admission
from gateway.transport.claims import ConnectionClaims
from gateway.transport.connection_token import ConnectionTokenSigner, derive_secret
from gateway.transport.endpoint import HubEndpoint
from gateway.transport.forwarding import ForwardedOperations, ForwardingClient, ReplicaService
from gateway.transport.http_connections import HttpConnections
from gateway.transport.long_polling import LongPolling
from gateway.transport.negotiate import NegotiateEndpoint
from gateway.transport.server_sent_events import ServerSentEvents
from gateway.transport.services import TransportServices
from gateway.transport.websocket import WebSocketTransport
from shared.background import start_background, stop_background
from shared.event_loop import running_event_loop
from shared.probes import Readiness, probe_routes
from shared.rate_limit import Rate
from shared.retry import retry_until_done
from shared.timeutil import utc_now

log = logging.getLogger(__name__)

# What opening a KV bucket raises while JetStream is off, electing a leader or unreachable.
KV_ERRORS: Final = (nats.errors.Error, TimeoutError, BrokerUnavailable)
# The hub protocols served, by handshake name.
HUB_PROTOCOLS: Final[Mapping[str, HubProtocol]] = {
    JSON_PROTOCOL.name: JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL.name: MESSAGEPACK_PROTOCOL,
}
# The levels a fan-out envelope adds around a payload: the envelope object and its arguments array.
ENVELOPE_LEVELS: Final = 2
# A resumable connection's KV record is re-written at least this often (its bucket's entries live
# four times as long), so the record of a live connection never expires.
CONNECTION_RECORD_REFRESH_SECONDS: Final = 30.0
# Replicas' clocks may differ this much; a claim outlives its token by it.
CLAIM_CLOCK_SKEW_SECONDS: Final = 5.0


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings (they may carry ``access_token``) and without headers.

    aiohttp makes one per TCP connection and keeps it while the connection is open: slots only, no
    instance dict under every idle WebSocket."""

    __slots__ = ()

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


def connection_token_secret(settings: GatewaySettings) -> bytes:
    if settings.connection_token_secret:
        return settings.connection_token_secret.encode()
    jwt_secret = settings.hs256_secret()
    if jwt_secret:
        return derive_secret(jwt_secret.encode())
    raise SystemExit(
        "python -m gateway: error: REALTIME_CONNECTION_TOKEN_SECRET is required unless the JWT key is one HS256 "
        "secret (every replica must share it)"
    )


def verification_keys(settings: GatewaySettings, metrics: GatewayMetrics) -> FixedKeys | RefreshingKeySet:
    """The access-token keys of the one key source the settings name (GatewaySettings checked it loads)."""
    jwt_secret = settings.hs256_secret()
    if jwt_secret is not None:
        return FixedKeys(KeySet([secret_key(jwt_secret)]))
    if settings.jwt_public_key_file is not None:
        return FixedKeys(KeySet([pem_public_key(settings.jwt_public_key_file)]))

    def count_failure(kind: str) -> None:
        metrics.jwks_fetch_failures.labels(reason=kind).inc()

    if settings.jwt_jwks_file is not None:
        file = FileJwksLoader(path=settings.jwt_jwks_file, max_bytes=settings.jwt_jwks_max_bytes)
        load, initial = file.load, file.load_now()
    else:
        assert settings.jwt_jwks_url is not None
        url = HttpJwksLoader(
            url=settings.jwt_jwks_url,
            timeout_seconds=settings.jwt_jwks_fetch_timeout_seconds,
            max_bytes=settings.jwt_jwks_max_bytes,
        )
        load, initial = url.load, None
    return RefreshingKeySet(
        load=load,
        initial=initial,
        refresh_interval_seconds=settings.jwt_jwks_refresh_interval_seconds,
        refresh_min_seconds=settings.jwt_jwks_refresh_min_seconds,
        on_failure=count_failure,
    )


def connection_limits(settings: GatewaySettings) -> ConnectionLimits:
    return ConnectionLimits(
        max_message_bytes=settings.max_message_bytes,
        max_depth=settings.max_json_depth,
        max_outbound_bytes=settings.max_outbound_bytes,
        keep_alive_interval_seconds=settings.keep_alive_interval_seconds,
        client_timeout_seconds=settings.client_timeout_seconds,
        handshake_timeout_seconds=settings.handshake_timeout_seconds,
        write_timeout_seconds=settings.write_timeout_seconds,
    )


def claims_ttl_seconds(settings: GatewaySettings) -> float:
    """A claim must outlive the token it guards (plus the clock skew allowed between replicas)."""
    return settings.connect_window_seconds + CLAIM_CLOCK_SKEW_SECONDS


@dataclass(frozen=True, slots=True)
class Gateway:
    """The parts of one gateway the process lifecycle needs beyond the routes."""

    app: web.Application
    host: HubHost
    presence: ReplicaPresence
    cluster_presence: ClusterPresence
    snapshots: KvSnapshotReader
    history: SnapshotHistory
    claims: ConnectionClaims
    resumables: ResumableConnections | None
    readiness: Readiness
    forwarding: ReplicaService
    alerts: SharedAlerts


def build_gateway(
    settings: GatewaySettings,
    *,
    broker: Broker,
    metrics: GatewayMetrics | None = None,
    feed: FanoutFeed | None = None,
    publish_to: Publisher | None = None,
    replay_feed: ReplayableFeed | None = None,
) -> Gateway:
    """The gateway around ``broker``; the caller owns the broker's connection lifecycle and attaches
    the shared stores once they are open. Fan-out comes from ``feed`` (default: subscriptions through
    the broker), REST publishes go to ``publish_to`` (default: the broker); with ``replay_feed`` (the
    fan-out stream) connections that negotiated stateful reconnect can resume on any replica."""
    metrics = metrics or GatewayMetrics()
    registry = ConnectionRegistry()
    snapshots = KvSnapshotReader()
    presence = ReplicaPresence(
        replica_id=settings.replica_name, registry=registry, interval_seconds=settings.presence_interval_seconds
    )
    router = FanoutRouter(
        feed=feed or SubjectFeed(broker),
        protocols=HUB_PROTOCOLS,
        metrics=metrics,
        max_payload_bytes=settings.max_broadcast_bytes,
        # The envelope object and its arguments array wrap a payload as deep as a REST body may be.
        max_payload_depth=settings.max_json_depth + ENVELOPE_LEVELS,
        slice_seconds=settings.fanout_slice_seconds,
    )
    publisher = RealtimePublisher(publish_to or broker)
    cluster_presence = ClusterPresence(
        replica_id=settings.replica_name,
        publisher=publisher,
        metrics=metrics,
        ttl_seconds=settings.presence_ttl_seconds,
        debounce_seconds=settings.presence_debounce_seconds,
        max_users=settings.presence_max_users,
        max_notifications=settings.presence_max_notifications,
    )
    resumables = (
        ResumableConnections(
            router=router,
            feed=replay_feed,
            protocols=HUB_PROTOCOLS,
            replica=replica_key(settings.replica_name),
            metrics=metrics,
            checkpoint_interval_seconds=settings.resume_checkpoint_interval_seconds,
            refresh_interval_seconds=CONNECTION_RECORD_REFRESH_SECONDS,
            disconnect_timeout_seconds=settings.disconnect_timeout_seconds,
            buffer_bytes=settings.stateful_buffer_bytes,
            groups_changed=cluster_presence.groups_changed,
        )
        if replay_feed is not None and settings.stateful_reconnect
        else None
    )
    memberships = Memberships(router=router, resumables=resumables)
    history = SnapshotHistory(max_points=settings.history_max_points, metrics=metrics)
    alerts = SharedAlerts(
        broker=broker,
        publisher=publisher,
        metrics=metrics,
        retention_seconds=settings.alert_retention_seconds,
        max_alerts=settings.max_alert_records,
        max_silences=settings.max_alert_silences,
        max_answer_bytes=settings.max_alert_state_bytes,
        collector_timeout_seconds=settings.collector_request_timeout_seconds,
    )
    hub = AdminHub(
        memberships=memberships,
        snapshots=snapshots,
        presence=presence,
        cluster_presence=cluster_presence,
        alerts=alerts,
        history=history,
    )
    host = HubHost(
        hub=hub,
        registry=registry,
        metrics=metrics,
        max_parallel_invocations=settings.max_parallel_invocations,
        invocation_rate=Rate(settings.invocation_rate_per_connection, settings.invocation_burst_per_connection),
    )
    readiness = Readiness()
    readiness.require("nats", lambda: broker.is_connected)
    readiness.require("accepting", lambda: host.accepting)
    keys = verification_keys(settings, metrics)
    verifier = TokenVerifier(
        keys=keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
    )
    signer = ConnectionTokenSigner(
        secret=connection_token_secret(settings),
        ttl_seconds=settings.connect_window_seconds,
        replica=replica_key(settings.replica_name),
        clock=time.time,
    )
    authenticator = Authenticator(verifier, required_roles=settings.required_roles, metrics=metrics)
    metrics.watch_shared_values({"role_sets": verifier.role_sets, "group_sets": hub.group_sets})
    admission = Admission(
        host=host,
        authenticator=authenticator,
        client_address=ClientAddress(settings.trusted_proxies),
        max_connections_per_user=settings.max_connections_per_user,
        max_connections_per_ip=settings.max_connections_per_ip,
        negotiate_rate=Rate(settings.negotiate_rate_per_ip, settings.negotiate_burst_per_ip),
        max_tracked_ips=settings.rate_limit_max_keys,
        metrics=metrics,
    )
    claims = ConnectionClaims(
        replica_id=settings.replica_name, ttl_seconds=claims_ttl_seconds(settings), metrics=metrics
    )
    services = TransportServices(
        host=host,
        admission=admission,
        claims=claims,
        signer=signer,
        token_leeway_seconds=settings.jwt_leeway_seconds,
    )
    websocket = WebSocketTransport(
        services=services,
        limits=connection_limits(settings),
        max_frame_bytes=settings.max_frame_bytes,
        resumables=resumables,
        protocols=HUB_PROTOCOLS,
    )
    http_transports = HttpTransports.build(settings, broker=broker, services=services, metrics=metrics)
    readiness.require("forwarding", lambda: http_transports.service.serving)
    rest = RestApi(
        publisher=publisher,
        alerts=alerts,
        snapshots=snapshots,
        presence=cluster_presence,
        history=history,
        readiness=readiness,
        broker_connected=lambda: broker.is_connected,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        max_details_bytes=settings.max_details_bytes,
        post_rate_per_user=Rate(settings.rest_post_rate_per_user, settings.rest_post_burst_per_user),
        max_tracked_users=settings.rate_limit_max_keys,
    )
    app = web.Application(client_max_size=settings.max_body_bytes)
    # CORS first: a preflight carries no token.
    Cors(settings.cors_origins).install(app)
    app.middlewares.append(auth_middleware(authenticator))
    dashboard = Path(settings.dashboard_dir) if settings.dashboard_dir else DEFAULT_DASHBOARD_DIR
    static = dashboard_routes(dashboard)
    if not static:
        log.info("no dashboard build at %s; serving the API only", dashboard)

    def refresh_gauges() -> None:
        metrics.nats_connected.set(1 if broker.is_connected else 0)
        metrics.ready.set(1 if readiness.ready else 0)

    app.add_routes(
        [
            *NegotiateEndpoint(
                admission=admission,
                signer=signer,
                transports=settings.transports,
                offer_stateful_reconnect=settings.stateful_reconnect and settings.fanout_stream,
            ).routes(),
            *HubEndpoint(
                services=services,
                websocket=websocket,
                resumables=resumables,
                connections=http_transports.connections,
                long_polling=http_transports.long_polling,
                events=http_transports.events,
                forwarding=http_transports.client,
                transports=settings.transports,
                max_frame_bytes=settings.max_frame_bytes,
            ).routes(),
            *rest.routes(),
            *ApiDocs(hub_methods=hub.methods).routes(),
            *probe_routes(readiness=readiness, registry=metrics.registry, before_scrape=refresh_gauges),
            *static,
        ]
    )
    app.cleanup_ctx.append(_background("session timers", host.run_timers))
    app.cleanup_ctx.append(_background("long-polling and event-stream timers", http_transports.connections.run_timers))
    if isinstance(keys, RefreshingKeySet):
        readiness.require("jwks", lambda: keys.loaded)
        app.cleanup_ctx.append(_background("jwks refresh", keys.run))
    app.cleanup_ctx.append(_gc_pause_metrics(metrics))
    app.cleanup_ctx.append(
        _background(
            "gc policy",
            lambda: run_gc_policy(
                young_interval=settings.gc_young_interval_seconds,
                full_interval=settings.gc_full_collect_interval_seconds,
            ),
        )
    )

    async def close_connections(app: web.Application) -> None:
        await host.close_all(grace_seconds=settings.shutdown_grace_seconds)

    async def record_event_loop(app: web.Application) -> None:
        metrics.record_event_loop(*running_event_loop())

    app.on_startup.append(record_event_loop)
    app.on_shutdown.append(close_connections)
    return Gateway(
        app=app,
        host=host,
        presence=presence,
        cluster_presence=cluster_presence,
        snapshots=snapshots,
        history=history,
        claims=claims,
        resumables=resumables,
        readiness=readiness,
        forwarding=http_transports.service,
        alerts=alerts,
    )


@dataclass(frozen=True, slots=True)
class HttpTransports:
    """Long polling and Server-Sent Events: the owner's connections, and forwarding between replicas."""

    connections: HttpConnections
    long_polling: LongPolling
    events: ServerSentEvents
    client: ForwardingClient
    service: ReplicaService

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        broker: Broker,
        services: TransportServices,
        metrics: GatewayMetrics,
    ) -> HttpTransports:
        limits = connection_limits(settings)
        signer = services.signer
        connections = HttpConnections(
            services=services,
            max_frame_bytes=settings.max_frame_bytes,
            disconnect_timeout_seconds=settings.disconnect_timeout_seconds,
        )
        long_polling = LongPolling(
            connections=connections,
            limits=limits,
            poll_timeout_seconds=settings.poll_timeout_seconds,
            max_poll_bytes=settings.max_poll_bytes,
        )
        events = ServerSentEvents(connections=connections, limits=limits, max_event_bytes=settings.max_poll_bytes)
        client = ForwardingClient(
            broker=broker,
            replica=signer.replica,
            metrics=metrics,
            max_in_flight=settings.max_forwarded_requests,
            timeout_seconds=settings.forward_timeout_seconds,
            poll_timeout_seconds=settings.poll_timeout_seconds,
            keep_alive_interval_seconds=settings.keep_alive_interval_seconds,
            handshake_timeout_seconds=settings.handshake_timeout_seconds,
        )
        operations = ForwardedOperations(
            broker=broker,
            signer=signer,
            connections=connections,
            long_polling=long_polling,
            events=events,
            metrics=metrics,
            write_timeout_seconds=settings.write_timeout_seconds,
        )
        service = ReplicaService(
            broker=broker,
            replica=signer.replica,
            client=client,
            operations=operations,
            max_in_flight=settings.max_forwarded_requests,
        )
        return cls(connections, long_polling, events, client, service)


def build_app(settings: GatewaySettings, *, broker: Broker, metrics: GatewayMetrics | None = None) -> web.Application:
    """One replica's application around ``broker`` (component tests use it with the in-memory broker,
    connected from the start: this replica serves forwarded requests at once)."""
    gateway = build_gateway(settings, broker=broker, metrics=metrics)
    gateway.alerts.attach(AlertStore(MemoryKeyValueStore(), MemoryKeyValueStore()))

    async def serve_forwarded(app: web.Application) -> AsyncIterator[None]:
        await gateway.forwarding.serve()
        yield
        await gateway.forwarding.withdraw()

    gateway.app.cleanup_ctx.append(serve_forwarded)
    return gateway.app


def _background(name: str, run: Callable[[], object]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        task = start_background(name, run())  # type: ignore[arg-type]
        yield
        await stop_background(task)

    return context


def _gc_pause_metrics(metrics: GatewayMetrics) -> Callable[[web.Application], AsyncIterator[None]]:
    """Time every garbage collection into ``realtime_gc_pause_seconds`` while the app runs."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        hook = metrics.gc_pauses.on_collection
        gc.callbacks.append(hook)
        yield
        gc.callbacks.remove(hook)

    return context


def create_gateway(settings: GatewaySettings) -> web.Application:
    """The production app: NATS connected in the background, KV attached once it is, drained on shutdown."""
    metrics = GatewayMetrics()
    stream_started = False
    stream_resuming: asyncio.Task[None] | None = None
    history_loading: asyncio.Task[None] | None = None
    history_resuming: asyncio.Task[None] | None = None

    def on_state(state: str) -> None:
        nonlocal stream_resuming, history_resuming
        metrics.nats_connected.set(1 if state in ("connected", "reconnected") else 0)
        if state == "reconnected":
            metrics.nats_reconnects.inc()
            if stream is not None and stream_started and (stream_resuming is None or stream_resuming.done()):
                resume = retry_until_done(stream.resume, what="resuming the fan-out stream", retriable=KV_ERRORS)
                stream_resuming = start_background("fan-out stream resume", resume)
            if history_stream.following and (history_resuming is None or history_resuming.done()):
                resume = retry_until_done(
                    history_stream.resume, what="resuming the snapshot history", retriable=KV_ERRORS
                )
                history_resuming = start_background("snapshot history resume", resume)

    options = nats_options_or_exit(settings, name="realtime-gateway", prog="python -m gateway")
    broker = NatsBroker(options, on_state=on_state)
    stream = (
        JetStreamFeed(
            lambda: broker.client,
            max_age_seconds=settings.fanout_stream_max_age_seconds,
            replicas=settings.kv_replicas,
        )
        if settings.fanout_stream
        else None
    )
    gateway = build_gateway(
        settings, broker=broker, metrics=metrics, feed=stream, publish_to=stream, replay_feed=stream
    )
    if stream is not None:
        gateway.readiness.require("fanout stream", lambda: stream.running)
    # Every replica holds the analytics history itself: the stored day first (not ready until then, so a
    # balancer sends history requests only to replicas that can answer them whole), then each new snapshot.
    history_stream = SnapshotStreamReader(
        lambda: broker.client, deliver=gateway.history.add_record, on_loaded=gateway.history.mark_loaded
    )
    gateway.readiness.require("history", lambda: gateway.history.loaded)

    kv_open = False
    gateway.readiness.require("kv", lambda: kv_open)

    async def open_buckets() -> None:
        replicas = settings.kv_replicas
        snapshots = await NatsKeyValueStore.open(broker.client, bucket=SNAPSHOT_BUCKET, replicas=replicas)
        counts = await NatsKeyValueStore.open(
            broker.client,
            bucket=REPLICAS_BUCKET,
            ttl_seconds=settings.presence_interval_seconds * STALE_FACTOR,
            replicas=replicas,
        )
        claims = await NatsKeyValueStore.open(
            broker.client, bucket=CLAIMS_BUCKET, ttl_seconds=claims_ttl_seconds(settings), replicas=replicas
        )
        users = await NatsKeyValueStore.open(
            broker.client, bucket=PRESENCE_BUCKET, ttl_seconds=settings.presence_ttl_seconds, replicas=replicas
        )
        gateway.snapshots.attach(snapshots)
        gateway.presence.attach(counts)
        gateway.cluster_presence.attach(users)
        gateway.claims.attach(claims)
        gateway.alerts.attach(
            await AlertStore.open(
                broker.client,
                retention_seconds=settings.alert_retention_seconds,
                max_alerts=settings.max_alert_records,
                replicas=replicas,
            )
        )
        if gateway.resumables is not None:
            connections = await NatsKeyValueStore.open(
                broker.client,
                bucket=CONNECTIONS_BUCKET,
                ttl_seconds=CONNECTION_RECORD_REFRESH_SECONDS * 4,
                replicas=replicas,
            )
            gateway.resumables.attach_store(connections)

    async def connect_and_attach() -> None:
        nonlocal kv_open, stream_started, history_loading
        await broker.connect()
        # Connections this replica negotiates are served here, whichever replica their requests reach.
        await retry_until_done(
            gateway.forwarding.serve, what="serving forwarded requests", retriable=(BrokerUnavailable,)
        )
        # JetStream may be off, still electing a leader, or unreachable: keep trying, not ready meanwhile.
        await retry_until_done(open_buckets, what="opening the NATS KV buckets", retriable=KV_ERRORS)
        kv_open = True
        if stream is not None:
            await retry_until_done(stream.start, what="starting the fan-out stream", retriable=KV_ERRORS)
            stream_started = True
        history_loading = start_background(
            "snapshot history", history_stream.run(since=lambda: utc_now() - timedelta(minutes=MAX_MINUTES))
        )
        loops = [gateway.presence.run(), gateway.cluster_presence.run()]
        if gateway.resumables is not None:
            loops.append(gateway.resumables.run())
        await asyncio.gather(*loops)

    async def broker_lifecycle(app: web.Application) -> AsyncIterator[None]:
        connecting = start_background("nats connect and presence", connect_and_attach())
        yield
        await stop_background(connecting)
        for task in (stream_resuming, history_loading, history_resuming):
            if task is not None:
                await stop_background(task)
        await history_stream.stop()
        await gateway.presence.withdraw()
        await gateway.cluster_presence.withdraw()
        if stream is not None:
            await stream.stop()
        await broker.close()

    # cleanup_ctx contexts exit in reverse order: first in the list, so NATS is drained last.
    gateway.app.cleanup_ctx.insert(0, broker_lifecycle)
    return gateway.app
