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
        self.lag_seconds = Gauge(
            "collector_lag_seconds",
            "How far reading is behind the stream: age of the last event applied while more wait (0 when caught up)",
            registry=r,
        )
        self.last_sequence = Gauge("collector_last_sequence", "Last stream sequence applied", registry=r)
        self.last_publish = Gauge(
            "collector_last_publish_timestamp_seconds", "Unix time of the last snapshot publish", registry=r
        )
        self.alerts = Counter("collector_alerts_total", "Alert transitions sent", ["rule", "state"], registry=r)
        self.alerts_suppressed = Counter(
            "collector_alerts_suppressed_total",
            "Alert transitions recorded but not sent because a silence covered the rule or its type",
            ["rule"],
            registry=r,
        )
        self.alert_record_failures = Counter(
            "collector_alert_record_failures_total",
            "Alerts sent that could not be recorded in the shared alert state (KV unavailable)",
            registry=r,
        )
        self.alert_rules = Gauge("collector_alert_rules", "Alert rules in use", registry=r)
        self.rule_reloads = Counter(
            "collector_alert_rule_reloads_total",
            "Reloads of the alert rules file, by outcome (invalid: the rules in use were kept)",
            ["outcome"],
            registry=r,
        )
        self.publish_failures = Counter(
            "collector_publish_failures_total", "Snapshot or alert publishes NATS did not take", registry=r
        )
        self.active = Gauge("collector_active", "1 on the replica holding the lease, 0 on a standby", registry=r)
        self.checkpoint_sequence = Gauge(
            "collector_checkpoint_sequence", "Stream sequence of the newest checkpoint in KV", registry=r
        )
        self.unsaved_entries = Gauge(
            "collector_unsaved_journal_entries", "Journal entries (ids, users) not yet saved to KV", registry=r
        )
        self.reading_paused = Gauge(
            "collector_reading_paused", "1 while reading waits for the journal to be saved", registry=r
        )
        self.largest_write = Gauge(
            "collector_largest_kv_write_bytes", "Largest single value this process wrote to KV", registry=r
        )
        self.remembered_ids = Gauge("collector_remembered_ids", "Event ids remembered for the dedup window", registry=r)
        self.tracked_users = Gauge("collector_tracked_users", "Users held as possibly active", registry=r)
        self.active_beyond_total = Gauge(
            "collector_active_users_beyond_total",
            "Distinct active users beyond totalUsers, not counted in activeUsers (no baseline seeded, or "
            "registrations not read yet)",
            registry=r,
        )
        self.evicted_ids = Gauge(
            "collector_evicted_ids", "Ids forgotten before their window ended (max_remembered_ids)", registry=r
        )
        self.evicted_users = Gauge(
            "collector_evicted_users", "Active users dropped before their window ended (max_active_users)", registry=r
        )
        self.gaps = Counter("collector_stream_gaps_total", "Gaps found in the event stream", registry=r)
        self.missing_events = Counter(
            "collector_missing_events_total", "Stream sequences gone before they were read", registry=r
        )
        self.event_loop = Gauge(
            "collector_event_loop_info", "1 for the event loop this process runs on", ["loop", "version"], registry=r
        )

    def record_event_loop(self, loop: str, version: str) -> None:
        self.event_loop.labels(loop=loop, version=version).set(1)
