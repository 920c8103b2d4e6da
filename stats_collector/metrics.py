"""Prometheus metrics of the collector, in their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "collector_events_total", "Platform events read from the stream", ["type", "outcome"], registry=r
        )
        self.metric_samples = Counter(
            "collector_metric_samples_total", "Metric samples received", ["outcome"], registry=r
        )
        self.lag = Gauge("collector_stream_lag", "Events in the stream not yet processed", registry=r)
        self.last_sequence = Gauge("collector_last_sequence", "Last stream sequence applied", registry=r)
        self.last_publish = Gauge(
            "collector_last_publish_timestamp_seconds", "Unix time of the last snapshot publish", registry=r
        )
        self.alerts = Counter("collector_alerts_total", "Alert transitions sent", ["rule", "state"], registry=r)
        self.publish_failures = Counter(
            "collector_publish_failures_total", "Snapshot or alert publishes NATS did not take", registry=r
        )
        self.event_loop = Gauge(
            "collector_event_loop_info", "1 for the event loop this process runs on", ["loop", "version"], registry=r
        )

    def record_event_loop(self, loop: str, version: str) -> None:
        self.event_loop.labels(loop=loop, version=version).set(1)
