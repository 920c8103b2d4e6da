"""Prometheus metrics of one gateway process, in their own registry (no global state)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.gc_policy import PauseRecorder
from shared.interning import SharedValues

# Young collections take well under a millisecond with the GC policy; scheduled full ones tens to hundreds.
_GC_PAUSE_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Fan-out latency is sub-millisecond when healthy; the upper buckets catch event-loop stalls.
_FANOUT_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class GatewayMetrics:
    """Every metric the gateway exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("realtime_connections", "Open hub connections", ["transport", "protocol"], registry=r)
        self.connections_closed = Counter(
            "realtime_connections_closed_total", "Hub connections ended, by reason", ["reason"], registry=r
        )
        self.invocations = Counter(
            "realtime_hub_invocations_total", "Hub method invocations", ["method", "outcome"], registry=r
        )
        self.messages_delivered = Counter(
            "realtime_messages_delivered_total",
            "Fan-out messages queued to connections",
            ["target"],
            registry=r,
        )
        self.invalid_broker_messages = Counter(
            "realtime_invalid_broker_messages_total",
            "Fan-out payloads dropped as invalid",
            ["kind"],
            registry=r,
        )
        self.fanout_seconds = Histogram(
            "realtime_fanout_seconds",
            "Time from the start of a broker message's delivery to the end of its pass over local members "
            "(written to each socket, or queued for a busy one), the event-loop turns between its slices included",
            buckets=_FANOUT_BUCKETS,
            registry=r,
        )
        self.fanout_backlog = Gauge(
            "realtime_fanout_backlog_messages",
            "Fan-out messages received and not yet delivered to every local member (one being delivered in "
            "slices and those waiting behind it; over 10,000 delivery stops yielding to the event loop)",
            registry=r,
        )
        self.event_loop = Gauge(
            "realtime_event_loop_info", "1 for the event loop this process runs on", ["loop", "version"], registry=r
        )
        self.nats_connected = Gauge("realtime_nats_connected", "1 when connected to NATS", registry=r)
        self.ready = Gauge(
            "realtime_ready", "1 when /readyz answers 200 (NATS, KV, forwarding, not draining)", registry=r
        )
        # Observed by a gc.callbacks hook, which must take no lock: kept by the recorder, exported at scrape.
        self.gc_pauses = PauseRecorder(_GC_PAUSE_BUCKETS)
        r.register(_GcPauseExport(self.gc_pauses))
        self.nats_reconnects = Counter("realtime_nats_reconnects_total", "NATS reconnections", registry=r)
        self.alert_actions = Counter(
            "realtime_alert_actions_total",
            "Changes of the shared alert state made here (acknowledged, silenced, unsilenced) and rule reloads "
            "asked for (rules_reloaded, rules_refused)",
            ["action"],
            registry=r,
        )
        self.alert_records = Gauge(
            "realtime_alert_records",
            "Alert records in KV when the state was last read (at most REALTIME_MAX_ALERT_RECORDS; beyond, "
            "the oldest are dropped)",
            registry=r,
        )
        self.http_requests = Counter("realtime_http_requests_total", "REST requests", ["route", "status"], registry=r)
        self.auth_failures = Counter("realtime_auth_failures_total", "Rejected requests", ["status"], registry=r)
        self.jwks_fetch_failures = Counter(
            "realtime_jwks_fetch_failures_total",
            "JWKS loads that failed, by reason (the last good key set stays in use)",
            ["reason"],
            registry=r,
        )
        self.local_connection_claims = Counter(
            "realtime_local_connection_claims_total",
            "Connection tokens claimed on this replica only, because the shared claims bucket did not answer",
            registry=r,
        )
        self.resumable_connections = Gauge(
            "realtime_resumable_connections", "Connections with stateful reconnect live on this replica", registry=r
        )
        self.resumes = Counter(
            "realtime_resumes_total", "Stateful reconnects taken up here, by outcome", ["outcome"], registry=r
        )
        self.replayed_messages = Counter(
            "realtime_replayed_messages_total", "Messages sent again to resumed connections", registry=r
        )
        self.resumable_checkpoints = Counter(
            "realtime_resumable_checkpoints_total", "Checkpoints of resumable connections written to KV", registry=r
        )
        self.resumable_detached = Counter(
            "realtime_resumable_detached_total", "Resumable connections whose socket dropped", registry=r
        )
        self.resumable_expired = Counter(
            "realtime_resumable_expired_total",
            "Detached resumable connections ended because no resume came in time",
            registry=r,
        )
        self.resumable_paused = Counter(
            "realtime_resumable_paused_total",
            "Times a resumable connection reached its unacknowledged-bytes limit and caught up from the stream",
            registry=r,
        )
        self.resumable_failures = Counter(
            "realtime_resumable_failures_total",
            "Resumable connections this replica gave up on, by reason",
            ["reason"],
            registry=r,
        )
        self.forwarded_requests = Counter(
            "realtime_forwarded_requests_total",
            "Long-polling and Server-Sent Events requests sent to the replica owning their connection",
            ["operation"],
            registry=r,
        )
        self.forwarded_failures = Counter(
            "realtime_forwarded_failures_total",
            "Forwarded requests that got no answer from the owning replica, or were refused before being sent",
            ["operation", "reason"],
            registry=r,
        )
        self.forwarded_in_flight = Gauge(
            "realtime_forwarded_in_flight",
            "Forwarded requests under way from this replica, open forwarded event streams included",
            registry=r,
        )
        self.forwarded_served = Counter(
            "realtime_forwarded_served_total",
            "Requests forwarded by other replicas and run here, on connections this replica owns",
            ["operation"],
            registry=r,
        )
        self.presence_users = Gauge(
            "realtime_presence_users", "Users with at least one connection on this replica", registry=r
        )
        self.presence_unlisted = Gauge(
            "realtime_presence_unlisted_users",
            "Users left out at REALTIME_PRESENCE_MAX_USERS: of this replica's presence entry (list=entry, "
            "counted in totals only) or of the announced state (list=announced, not notified)",
            ["list"],
            registry=r,
        )
        self.presence_notifications = Counter(
            "realtime_presence_notifications_total",
            "Presence notifications (AdminNotification to admins) this replica sent, by action",
            ["action"],
            registry=r,
        )
        self.history_points = Gauge(
            "realtime_history_points", "Platform snapshots held in memory for analytics history", registry=r
        )
        self.history_dropped = Counter(
            "realtime_history_dropped_total",
            "Snapshots left out of the analytics history, by reason (limit: over the most held; invalid record)",
            ["reason"],
            registry=r,
        )
        self.limit_refusals = Counter(
            "realtime_limit_refusals_total", "Requests refused by a connection or rate limit", ["limit"], registry=r
        )

    def record_event_loop(self, loop: str, version: str) -> None:
        self.event_loop.labels(loop=loop, version=version).set(1)

    def watch_shared_values(self, tables: Mapping[str, SharedValues[Any]]) -> None:
        """Export the size and the unshared count of each shared-value table, by name."""
        self.registry.register(_SharedValuesExport(dict(tables)))


class _SharedValuesExport(Collector):
    """``realtime_shared_values{table}`` and ``realtime_shared_values_unshared_total{table}``."""

    def __init__(self, tables: dict[str, SharedValues[Any]]) -> None:
        self._tables = tables

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "realtime_shared_values", "Distinct values held once for every connection, by table", labels=["table"]
        )
        unshared = CounterMetricFamily(
            "realtime_shared_values_unshared",
            "Values a connection holds its own copy of because their table was full",
            labels=["table"],
        )
        for name, table in self._tables.items():
            held.add_metric([name], len(table))
            unshared.add_metric([name], table.unshared)
        yield held
        yield unshared


class _GcPauseExport(Collector):
    """``realtime_gc_pause_seconds{generation}`` from the lock-free :class:`PauseRecorder`."""

    def __init__(self, recorder: PauseRecorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "realtime_gc_pause_seconds",
            "Pauses of the cyclic garbage collector (every collection, by generation)",
            labels=["generation"],
        )
        bounds = [f"{bound:g}" for bound in self._recorder.buckets] + ["+Inf"]
        for generation, cumulative, total in self._recorder.snapshot():
            family.add_metric([str(generation)], list(zip(bounds, cumulative, strict=True)), total)
        yield family
