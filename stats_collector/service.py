"""The collector's asyncio side: read the event stream, keep the aggregate exact, publish, alert.

Exactness: the aggregate and the stream sequence it reflects are saved together in one KV value
(``COLLECTOR_STATE/aggregate``). On start the collector loads them and reads the stream from the
next sequence, so events applied after the last save are applied again from the saved state, never
twice on top of it, whatever killed the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Any, Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from broker_bridge import catalog
from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import SNAPSHOT_BUCKET, SNAPSHOT_KEY, NatsKeyValueStore
from broker_bridge.publisher import RealtimePublisher
from shared import jsoncodec
from shared.models import PlatformSnapshot, encode_snapshot_record
from shared.timeutil import iso_utc, utc_now
from stats_collector.aggregate import PlatformAggregate
from stats_collector.alerts import AlertEngine, AlertRule, AlertTransition, derived_samples
from stats_collector.events import (
    METRICS_SUBJECT_PREFIX,
    STREAM_SUBJECTS,
    InvalidEvent,
    parse_event,
    parse_metric,
)
from stats_collector.jetstream import (
    AGGREGATE_KEY,
    BASELINE_KEY,
    DEADLETTER_PREFIX,
    EVENTS_STREAM,
    STATE_BUCKET,
    deadletter_stream_config,
    ensure_stream,
    events_stream_config,
)
from stats_collector.metrics import CollectorMetrics
from stats_collector.settings import CollectorSettings

log = logging.getLogger(__name__)

# Alert rules are evaluated this often (seconds); "for" durations are at least this coarse.
ALERT_EVALUATION_INTERVAL: Final = 1.0
# How long one fetch waits for events before the loop checks for shutdown.
FETCH_TIMEOUT_SECONDS: Final = 1.0
# A consumer left behind by a killed collector is removed by the server after this long.
CONSUMER_INACTIVE_SECONDS: Final = 30.0


class CollectorService:
    """Owns the aggregate, the alert engine and the loops that feed and publish them."""

    def __init__(
        self,
        settings: CollectorSettings,
        *,
        client: Client,
        publisher: RealtimePublisher,
        metrics: CollectorMetrics,
        rules: list[AlertRule],
    ) -> None:
        self._settings = settings
        self._client = client
        self._js = client.jetstream()
        self._publisher = publisher
        self._metrics = metrics
        self._engine = AlertEngine(rules)
        self.aggregate = self._new_aggregate()
        self.sequence = 0
        self._saved_sequence = -1
        self._baseline: dict[str, Any] | None = None
        self._last_published: PlatformSnapshot | None = None
        self._last_publish_at = 0.0
        self._logged_invalid: set[str] = set()
        self._state: NatsKeyValueStore | None = None
        self._stopping = asyncio.Event()
        self._snapshots: NatsKeyValueStore | None = None

    def _new_aggregate(self, state: dict[str, Any] | None = None) -> PlatformAggregate:
        options: dict[str, Any] = {
            "active_window_seconds": self._settings.active_window_seconds,
            "dedup_window_seconds": self._settings.dedup_window_seconds,
            "timezone": self._settings.zone,
            "currency": self._settings.currency,
        }
        return PlatformAggregate.from_state(state, **options) if state else PlatformAggregate(**options)

    # -- start-up -----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create streams and buckets if missing, then load the saved aggregate and baseline."""
        s = self._settings
        await ensure_stream(
            self._js,
            events_stream_config(
                max_age_seconds=s.stream_max_age_seconds,
                max_bytes=s.stream_max_bytes,
                replicas=s.stream_replicas,
                duplicate_window=s.dedup_window_seconds,
            ),
        )
        await ensure_stream(self._js, deadletter_stream_config(replicas=s.stream_replicas))
        self._state = await NatsKeyValueStore.open(self._client, bucket=STATE_BUCKET, replicas=s.stream_replicas)
        self._snapshots = await NatsKeyValueStore.open(self._client, bucket=SNAPSHOT_BUCKET, replicas=s.stream_replicas)
        saved = await self._state.get(AGGREGATE_KEY)
        if saved is not None:
            record = jsoncodec.loads(saved)
            self.aggregate = self._new_aggregate(record["state"])
            self.sequence = self._saved_sequence = int(record["seq"])
            self._metrics.last_sequence.set(self.sequence)
            log.info("resuming after stream sequence %d", self.sequence)
        await self._load_baseline()

    async def _load_baseline(self) -> None:
        assert self._state is not None
        raw = await self._state.get(BASELINE_KEY)
        baseline = jsoncodec.loads(raw) if raw is not None else None
        if baseline and baseline != self._baseline:
            self.aggregate.seed(**baseline)
            self._baseline = baseline
            log.info("baseline applied: %s", sorted(baseline))

    # -- the loops ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask every loop to finish its current step and return (``run`` then returns)."""
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def run(self) -> None:
        """Run every loop until :meth:`stop` (or cancellation)."""
        metrics_sub = await self._client.subscribe(METRICS_SUBJECT_PREFIX + ">", cb=self._on_metric)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._consume())
                group.create_task(self._every(self._settings.persist_interval_seconds, self.persist))
                group.create_task(self._every(self._settings.publish_interval_seconds, self.publish))
                group.create_task(self._every(ALERT_EVALUATION_INTERVAL, self.evaluate_alerts))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await metrics_sub.unsubscribe()

    async def _every(self, interval: float, action: Any) -> None:
        while True:
            await self._pause(interval)
            if self._stopping.is_set():
                return
            try:
                await action()
            except BrokerUnavailable:
                self._metrics.publish_failures.inc()
                log.warning("NATS unavailable during %s; will retry", action.__name__)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        """An ephemeral pull consumer starting right after the last applied sequence."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.sequence + 1,
            ack_policy=AckPolicy.ALL,
            inactive_threshold=CONSUMER_INACTIVE_SECONDS,
        )
        return await self._js.pull_subscribe(STREAM_SUBJECTS[0], stream=EVENTS_STREAM, config=config)

    async def _consume(self) -> None:
        subscription: JetStreamContext.PullSubscription | None = None
        try:
            while not self._stopping.is_set():
                subscription = await self._consume_batch(subscription)
        finally:
            # Unsubscribing empties nats-py's pending queue, which drain() would otherwise wait on.
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await subscription.unsubscribe()

    async def _consume_batch(
        self, subscription: JetStreamContext.PullSubscription | None
    ) -> JetStreamContext.PullSubscription | None:
        """Fetch and apply one batch; returns the subscription to use next (None: make a new one)."""
        try:
            if subscription is None:
                subscription = await self._subscribe()
            messages = await subscription.fetch(self._settings.fetch_batch, timeout=FETCH_TIMEOUT_SECONDS)
        except (nats.errors.TimeoutError, TimeoutError):
            return subscription
        except nats.errors.Error as error:
            # The consumer is R1 and lives on one NATS node; if that node died (or the consumer
            # was removed), make a new one from where we are rather than fetching forever.
            log.warning("fetch failed (%s); recreating the consumer", type(error).__name__)
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await subscription.unsubscribe()
            await self._pause(FETCH_TIMEOUT_SECONDS)
            return None
        for message in messages:
            await self._apply(message)
        if messages:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await messages[-1].ack()
            self._metrics.lag.set(messages[-1].metadata.num_pending)
        return subscription

    async def _apply(self, message: Msg) -> None:
        sequence = message.metadata.sequence.stream
        if sequence <= self.sequence:
            return  # already reflected in the aggregate (a redelivery)
        try:
            event = parse_event(message.subject, message.data)
        except InvalidEvent as error:
            await self._dead_letter(message, error.kind)
        else:
            if event.currency is not None and event.currency != self.aggregate.currency:
                await self._dead_letter(message, "other_currency")
            else:
                counted = self.aggregate.apply(event, now=utc_now())
                outcome = "counted" if counted else "duplicate"
                self._metrics.events.labels(type=event.kind.value, outcome=outcome).inc()
                for metric, value in derived_samples(event):
                    self._engine.observe(metric, value, event.timestamp.timestamp())
        self.sequence = sequence
        self._metrics.last_sequence.set(sequence)

    async def _dead_letter(self, message: Msg, kind: str) -> None:
        self._metrics.events.labels(type="invalid", outcome=kind).inc()
        if kind not in self._logged_invalid:
            self._logged_invalid.add(kind)
            log.warning(
                "malformed event on %s: %s (logged once per kind; kept on %s>)",
                message.subject,
                kind,
                DEADLETTER_PREFIX,
            )
        headers = {"Realtime-Reason": kind, "Realtime-Subject": message.subject}
        try:
            # The id makes a replay after a crash land once (the dead-letter stream deduplicates).
            headers["Nats-Msg-Id"] = f"{EVENTS_STREAM}-{message.metadata.sequence.stream}"
            await self._js.publish(DEADLETTER_PREFIX + kind, message.data, headers=headers)
        except (nats.errors.Error, TimeoutError) as error:
            log.warning("dead-letter publish failed: %s", type(error).__name__)

    async def _on_metric(self, message: Msg) -> None:
        try:
            sample = parse_metric(message.subject, message.data)
        except InvalidEvent as error:
            self._metrics.metric_samples.labels(outcome=error.kind).inc()
            return
        self._metrics.metric_samples.labels(outcome="ok").inc()
        self._engine.observe(sample.name, sample.value, sample.timestamp.timestamp())

    # -- saving and publishing ----------------------------------------------------------------

    async def persist(self) -> None:
        """Save the aggregate with the sequence it reflects (one KV value, so they always agree)."""
        if self._state is None or self.sequence == self._saved_sequence:
            return
        sequence = self.sequence
        record = jsoncodec.dumps({"seq": sequence, "state": self.aggregate.to_state()})
        await self._state.put(AGGREGATE_KEY, record)
        self._saved_sequence = sequence

    def snapshot(self) -> PlatformSnapshot:
        now = utc_now()
        snapshot = self.aggregate.snapshot(now=now)
        return replace(snapshot, average_generation_time=round(self.aggregate.average_generation_time(), 3))

    async def publish(self, *, force: bool = False) -> None:
        """Store the snapshot for the gateways and push it to the analytics group when it changed
        (or at least every heartbeat)."""
        await self._load_baseline()
        snapshot = self.snapshot()
        now = time.monotonic()
        due = now - self._last_publish_at >= self._settings.heartbeat_seconds
        if not force and snapshot == self._last_published and not due:
            return
        timestamp = iso_utc()
        if self._snapshots is not None:
            await self._snapshots.put(SNAPSHOT_KEY, encode_snapshot_record(timestamp, snapshot))
        await self._publisher.publish(catalog.analytics_update(snapshot, timestamp=timestamp))
        await self._publisher.publish(catalog.user_count_update(snapshot, timestamp=timestamp))
        self._last_published, self._last_publish_at = snapshot, now
        self._metrics.last_publish.set(time.time())

    async def evaluate_alerts(self) -> None:
        for transition in self._engine.evaluate(time.time()):
            await self._send_alert(transition)

    async def _send_alert(self, transition: AlertTransition) -> None:
        rule = transition.rule
        firing = transition.state == "firing"
        alert = catalog.system_alert(
            alert_type=rule.alert_type if firing else "success",
            message=transition.message,
            timestamp=iso_utc(),
            severity=rule.severity if firing else "low",
            data={
                "rule": rule.name,
                "state": transition.state,
                "metric": rule.metric,
                "aggregation": rule.aggregation,
                "windowSeconds": rule.window_seconds,
                "comparator": rule.comparator,
                "threshold": rule.threshold,
                "value": transition.value,
            },
        )
        await self._publisher.publish(alert)
        self._metrics.alerts.labels(rule=rule.name, state=transition.state).inc()
