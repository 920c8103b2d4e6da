"""The collector's asyncio side: read the event stream, keep the aggregate exact, save it, publish, alert.

Every replica reads the whole stream and keeps its own aggregate (a pure function of the stream), so a
standby is always warm. Only the **active** replica — the holder of the lease (:mod:`stats_collector.lease`)
— saves state, publishes snapshots and sends alerts. A standby seals its journal deltas like the active
one and drops those the active one has saved (it reads the checkpoint's sequence), so on taking over it
writes exactly what is not saved yet and goes on from where it is.

Saving (:mod:`stats_collector.state_store`): every ``persist_interval_seconds`` the journal delta (ids
accepted and users made active since the last one) is sealed together with a copy of the small
checkpoint, in one synchronous step, so both describe the same stream sequence. The journal records are
written first, the checkpoint last; a SIGKILL at any point leaves either the previous checkpoint (the
newer journal entries are above its sequence and ignored on load) or the new one with all its entries.
Reading never waits for saving: at most ``max_unsaved_entries`` wait for KV, beyond which reading pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker_bridge import catalog
from broker_bridge.alert_store import AlertStore
from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import SNAPSHOT_BUCKET, SNAPSHOT_KEY, NatsKeyValueStore
from broker_bridge.publisher import RealtimePublisher
from broker_bridge.snapshot_stream import append_snapshot, snapshots_stream_config
from shared.alert_state import new_alert_id
from shared.models import PlatformSnapshot, encode_snapshot_record
from shared.timeutil import iso_utc, utc_now
from stats_collector.aggregate import Gap, JournalDelta, Outcome, PlatformAggregate, to_micros
from stats_collector.alerting import Alerting
from stats_collector.alerts import GENERATION_FAILURE_METRIC
from stats_collector.consumer import ConsumerLost, StreamReader, position
from stats_collector.events import (
    METRICS_SUBJECT_PREFIX,
    EventKind,
    InvalidEvent,
    parse_event,
    parse_metric,
)
from stats_collector.jetstream import (
    DEADLETTER_PREFIX,
    EVENTS_STREAM,
    LEASE_BUCKET,
    deadletter_stream_config,
    ensure_stream,
    events_stream_config,
)
from stats_collector.lease import LeaderLease
from stats_collector.metrics import CollectorMetrics
from stats_collector.settings import CollectorSettings
from stats_collector.state_store import Fenced, StateStore, open_expiring_bucket

log = logging.getLogger(__name__)

# Alert rules are evaluated this often (seconds); "for" durations are at least this coarse.
ALERT_EVALUATION_INTERVAL: Final = 1.0
# How long one pull request waits for events before the loop checks for shutdown.
FETCH_TIMEOUT_SECONDS: Final = 1.0
# A standby tries to take the lease this often at most; the active replica renews it this many times per ttl.
STANDBY_POLL_MAX_SECONDS: Final = 1.0
RENEWALS_PER_TTL: Final = 4
_GENERATION_OUTCOME: Final = {
    EventKind.GENERATION_FAILED: 1.0,
    EventKind.WEBSITE_GENERATED: 0.0,
    EventKind.IMAGE_GENERATED: 0.0,
}


class Role(enum.Enum):
    STANDBY = "standby"
    ACTIVE = "active"


class CollectorService:
    """Owns the aggregate, the alert engine and the loops that feed, save and publish them."""

    def __init__(
        self,
        settings: CollectorSettings,
        *,
        client: Client,
        publisher: RealtimePublisher,
        metrics: CollectorMetrics,
        alerting: Alerting,
        replica: str,
    ) -> None:
        self._settings = settings
        self._client = client
        self._js = client.jetstream()
        self._publisher = publisher
        self._metrics = metrics
        self.alerting = alerting
        self._replica = replica
        self.aggregate = self._restore(None, ids=[], users=[])
        self.role = Role.STANDBY
        self._store: StateStore | None = None
        self._snapshots: NatsKeyValueStore | None = None
        self._lease: LeaderLease | None = None
        self._unsaved: deque[JournalDelta] = deque()
        self._checkpoint_revision = 0
        self._checkpoint_sequence = 0
        self._saved_checkpoint: dict[str, Any] | None = None
        self._baseline: dict[str, Any] | None = None
        self._last_published: tuple[PlatformSnapshot, Gap | None] | None = None
        self._last_publish_at = 0.0
        self._logged_invalid: set[str] = set()
        self._dead_letters: list[tuple[Msg, int, str]] = []
        self._suspect_jump: int | None = None
        self._evictions_reported: set[str] = set()
        self._stopping = asyncio.Event()

    @property
    def sequence(self) -> int:
        return self.aggregate.sequence

    def _restore(self, checkpoint: dict[str, Any] | None, *, ids: Any, users: Any) -> PlatformAggregate:
        s = self._settings
        return PlatformAggregate.restore(
            checkpoint,
            ids=ids,
            users=users,
            now=utc_now(),
            active_window_seconds=s.active_window_seconds,
            dedup_window_seconds=s.dedup_window_seconds,
            future_tolerance_seconds=s.future_tolerance_seconds,
            timezone=s.zone,
            currency=s.currency,
            max_remembered_ids=s.max_remembered_ids,
            max_active_users=s.max_active_users,
        )

    # -- start-up -----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create streams and buckets if missing, then restore the saved state and baseline."""
        s = self._settings
        await ensure_stream(
            self._js,
            events_stream_config(
                max_age_seconds=s.stream_max_age_seconds,
                max_bytes=s.stream_max_bytes,
                replicas=s.stream_replicas,
                duplicate_window=s.stream_duplicate_window_seconds,
            ),
        )
        await ensure_stream(self._js, deadletter_stream_config(replicas=s.stream_replicas))
        await ensure_stream(
            self._js,
            snapshots_stream_config(
                max_age_seconds=s.history_max_age_seconds, max_bytes=s.history_max_bytes, replicas=s.stream_replicas
            ),
        )
        self._store = await StateStore.open(
            self._client,
            replicas=s.stream_replicas,
            dedup_window_seconds=s.dedup_window_seconds,
            user_window_seconds=s.user_window_seconds,
            record_bytes=s.journal_record_bytes,
            read_batch=s.fetch_batch,
        )
        self._snapshots = await NatsKeyValueStore.open(self._client, bucket=SNAPSHOT_BUCKET, replicas=s.stream_replicas)
        lease_store = await open_expiring_bucket(
            self._client, LEASE_BUCKET, ttl_seconds=s.lease_ttl_seconds, replicas=s.stream_replicas
        )
        self._lease = LeaderLease(lease_store, holder=self._replica, ttl_seconds=s.lease_ttl_seconds)
        self.alerting.attach(
            await AlertStore.open(
                self._client,
                retention_seconds=s.alert_retention_seconds,
                max_alerts=s.max_alert_records,
                replicas=s.stream_replicas,
            )
        )
        saved = await self._store.load()
        self.aggregate = self._restore(saved.checkpoint, ids=saved.ids, users=saved.users)
        self._checkpoint_revision, self._checkpoint_sequence = saved.revision, saved.sequence
        self._saved_checkpoint = saved.checkpoint
        self._metrics.last_sequence.set(self.sequence)
        self._metrics.checkpoint_sequence.set(saved.sequence)
        if saved.checkpoint is not None:
            log.info(
                "resuming after stream sequence %d (%d ids and %d users from the journal)",
                self.sequence,
                self.aggregate.remembered_ids,
                self.aggregate.tracked_users,
            )
        await self._load_baseline()

    async def _load_baseline(self) -> None:
        assert self._store is not None
        baseline = await self._store.read_baseline()
        if baseline and baseline != self._baseline:
            mark = baseline.get("seededAt")
            counts = {key: value for key, value in baseline.items() if key != "seededAt"}
            self.aggregate.seed(**counts, mark=mark if isinstance(mark, str) else None)
            self._baseline = baseline
            log.info("baseline applied: %s", sorted(counts))

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
        s = self._settings
        metrics_sub = await self._client.subscribe(METRICS_SUBJECT_PREFIX + ">", cb=self._on_metric)
        rule_requests = await self.alerting.serve(self._client)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._consume())
                group.create_task(self._every(s.persist_interval_seconds, self.persist))
                group.create_task(self._every(s.publish_interval_seconds, self.publish))
                group.create_task(self._every(ALERT_EVALUATION_INTERVAL, self.evaluate_alerts))
                group.create_task(self._hold_lease())
        finally:
            for subscription in (metrics_sub, *rule_requests):
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()

    async def _every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await self._pause(interval)
            if self._stopping.is_set():
                return
            try:
                await action()
            except BrokerUnavailable:
                self._metrics.publish_failures.inc()
                log.warning("NATS unavailable during %s; will retry", getattr(action, "__name__", action))

    async def _hold_lease(self) -> None:
        assert self._lease is not None
        ttl = self._settings.lease_ttl_seconds
        while not self._stopping.is_set():
            if self.role is Role.ACTIVE:
                if not await self._lease.keep():
                    self._stand_down("lease lost")
                await self._pause(ttl / RENEWALS_PER_TTL)
            else:
                if await self._lease.acquire():
                    try:
                        await self._take_over()
                    except BrokerUnavailable:
                        await self._lease.release()
                await self._pause(min(STANDBY_POLL_MAX_SECONDS, ttl / RENEWALS_PER_TTL))

    async def _take_over(self) -> None:
        """Become the active replica: from the newest checkpoint's revision, with what it does not cover."""
        assert self._store is not None
        checkpoint, revision = await self._store.read_checkpoint()
        self._adopt_checkpoint(checkpoint, revision)
        self.role = Role.ACTIVE
        self._metrics.active.set(1)
        log.info(
            "active (replica %s) at stream sequence %d; last checkpoint at %d",
            self._replica,
            self.sequence,
            self._checkpoint_sequence,
        )

    def _stand_down(self, reason: str) -> None:
        if self.role is Role.ACTIVE:
            log.warning("standing by (%s)", reason)
        self.role = Role.STANDBY
        self._metrics.active.set(0)

    def _adopt_checkpoint(self, checkpoint: dict[str, Any] | None, revision: int) -> None:
        """Another replica saved ``checkpoint``: forget the deltas it covers."""
        sequence = int(checkpoint["sequence"]) if checkpoint else 0
        self._checkpoint_revision, self._checkpoint_sequence = revision, sequence
        self._saved_checkpoint = checkpoint
        while self._unsaved and self._unsaved[0].upto <= sequence:
            self._unsaved.popleft()
        self._metrics.checkpoint_sequence.set(sequence)

    # -- reading the stream -------------------------------------------------------------------

    def _unsaved_entries(self) -> int:
        return sum(delta.entries for delta in self._unsaved)

    async def _consume(self) -> None:
        reader: StreamReader | None = None
        paused = False
        try:
            while not self._stopping.is_set():
                if self._unsaved_entries() > self._settings.max_unsaved_entries:
                    if not paused:
                        log.warning("%d journal entries wait for KV; reading pauses", self._unsaved_entries())
                        paused = True
                    self._metrics.reading_paused.set(1)
                    await self._pause(self._settings.persist_interval_seconds)
                    continue
                if paused:
                    log.info("reading resumes")
                    paused = False
                    self._metrics.reading_paused.set(0)
                if reader is None:
                    reader = await self._open_reader()
                    if reader is None:
                        continue
                try:
                    messages = await reader.read(timeout=FETCH_TIMEOUT_SECONDS)
                except (ConsumerLost, nats.errors.Error, TimeoutError) as error:
                    # The consumer is R1 and lives on one NATS node; if that node died (or the consumer was
                    # removed), make a new one from where we are rather than fetching forever.
                    log.warning("reading failed (%s: %s); recreating the consumer", type(error).__name__, error)
                    await reader.close()
                    reader = None
                    await self._pause(FETCH_TIMEOUT_SECONDS)
                    continue
                if messages and self.apply_batch(messages):
                    await reader.close()
                    reader = None
                if self._dead_letters:
                    await self._send_dead_letters()
        finally:
            if reader is not None:
                await reader.close()

    async def _open_reader(self) -> StreamReader | None:
        try:
            info = await self._js.stream_info(EVENTS_STREAM)
            if int(info.state.last_seq) < self.sequence:
                self._rewind(int(info.state.last_seq))
            reader = StreamReader(
                self._client, stream=EVENTS_STREAM, start_sequence=self.sequence + 1, batch=self._settings.fetch_batch
            )
            await reader.start()
        except (nats.errors.Error, TimeoutError) as error:
            log.warning("could not create the consumer (%s); retrying", type(error).__name__)
            await self._pause(FETCH_TIMEOUT_SECONDS)
            return None
        return reader

    def apply_batch(self, messages: list[Msg]) -> bool:
        """Apply a batch in stream order, without awaiting; True when the reader must start over (a sequence
        was skipped: the first time, it is read again from the next expected sequence to rule out a delivery
        lost on the way; a second time, the messages are gone and it is a gap)."""
        aggregate = self.aggregate
        now_micros = to_micros(utc_now())
        outcomes: Counter[tuple[str, str]] = Counter()
        observe = self.alerting.observe
        pending = None
        restart = False
        for message in messages:
            sequence, arrival, pending = position(message.reply)
            if sequence <= aggregate.sequence:
                continue  # already reflected (a redelivery)
            if sequence != aggregate.sequence + 1 and self._suspect_jump != sequence:
                self._suspect_jump = sequence
                restart = True
                break
            expected = aggregate.sequence + 1
            if aggregate.advance(sequence, arrival) is not None:
                self._on_gap(expected, sequence - 1)
            try:
                event = parse_event(message.subject, message.data)
            except InvalidEvent as error:
                self._dead_letter(message, sequence, error.kind)
                continue
            outcome = aggregate.apply_current(event, now_micros=now_micros)
            if outcome is Outcome.FUTURE or outcome is Outcome.OTHER_CURRENCY:
                self._dead_letter(message, sequence, outcome.value)
                continue
            outcomes[event.kind.value, outcome.value] += 1
            if outcome is Outcome.COUNTED and event.kind in _GENERATION_OUTCOME:
                observe(GENERATION_FAILURE_METRIC, _GENERATION_OUTCOME[event.kind], event.timestamp.timestamp())
        for (kind, outcome_label), count in outcomes.items():
            self._metrics.events.labels(type=kind, outcome=outcome_label).inc(count)
        self._metrics.last_sequence.set(aggregate.sequence)
        if pending is not None and not restart:
            self._metrics.lag.set(pending)
            behind = time.time() - aggregate.newest_arrival_micros / 1_000_000 if pending else 0.0
            self._metrics.lag_seconds.set(max(0.0, behind))
        self._report_evictions()
        return restart

    def _rewind(self, last: int) -> None:
        """The stream ends before our sequence (replaced or restored): read its new events after ``last``."""
        previous = self.sequence
        self.aggregate.rewind(last)
        self._checkpoint_sequence = min(self._checkpoint_sequence, last)
        self._metrics.gaps.inc()
        self._metrics.missing_events.inc(previous - last)
        log.error(
            "stream %s ends at sequence %d, before the %d already read: it was replaced or restored; reading "
            "its new events from %d, the figures are incomplete until a new baseline is seeded",
            EVENTS_STREAM,
            last,
            previous,
            last + 1,
        )

    def _on_gap(self, first: int, last: int) -> None:
        count = last - first + 1
        self._metrics.gaps.inc()
        self._metrics.missing_events.inc(count)
        log.error(
            "stream sequences %d..%d were gone before they were read (%d events); the figures are incomplete "
            "until a new baseline is seeded",
            first,
            last,
            count,
        )

    def _dead_letter(self, message: Msg, sequence: int, kind: str) -> None:
        self._metrics.events.labels(type="invalid", outcome=kind).inc()
        if kind not in self._logged_invalid:
            self._logged_invalid.add(kind)
            log.warning(
                "malformed event on %s: %s (logged once per kind; kept on %s>)",
                message.subject,
                kind,
                DEADLETTER_PREFIX,
            )
        self._dead_letters.append((message, sequence, kind))

    async def _send_dead_letters(self) -> None:
        """Copy the batch's dead letters to PLATFORM_DEADLETTER, concurrently; the id makes a replay after a
        crash, or the same copy from every replica, land once (the dead-letter stream deduplicates)."""
        letters, self._dead_letters = self._dead_letters, []

        async def send(message: Msg, sequence: int, kind: str) -> None:
            headers = {
                "Realtime-Reason": kind,
                "Realtime-Subject": message.subject,
                "Nats-Msg-Id": f"{EVENTS_STREAM}-{sequence}",
            }
            try:
                await self._js.publish(DEADLETTER_PREFIX + kind, message.data, headers=headers)
            except (nats.errors.Error, TimeoutError) as error:
                log.warning("dead-letter publish failed: %s", type(error).__name__)

        await asyncio.gather(*(send(*letter) for letter in letters))

    def _report_evictions(self) -> None:
        aggregate = self.aggregate
        self._metrics.remembered_ids.set(aggregate.remembered_ids)
        self._metrics.tracked_users.set(aggregate.tracked_users)
        for name, count, gauge in (
            ("ids", aggregate.evicted_ids, self._metrics.evicted_ids),
            ("users", aggregate.evicted_users, self._metrics.evicted_users),
        ):
            gauge.set(count)
            if count and name not in self._evictions_reported:
                self._evictions_reported.add(name)
                log.error(
                    "more %s than max_remembered_ids / max_active_users: the oldest are dropped early (%s)",
                    name,
                    "duplicates of forgotten ids count again" if name == "ids" else "activeUsers is a lower bound",
                )

    async def _on_metric(self, message: Msg) -> None:
        try:
            sample = parse_metric(message.subject, message.data)
        except InvalidEvent as error:
            self._metrics.metric_samples.labels(outcome=error.kind).inc()
            return
        self._metrics.metric_samples.labels(outcome="ok").inc()
        self.alerting.observe(sample.name, sample.value, sample.timestamp.timestamp())

    # -- saving -------------------------------------------------------------------------------

    async def persist(self) -> None:
        """Seal the journal delta with a copy of the checkpoint; the active replica writes both (journal first),
        a standby drops what the active one has saved."""
        assert self._store is not None
        aggregate = self.aggregate
        delta = aggregate.take_delta()
        checkpoint = aggregate.to_checkpoint(now=utc_now())
        if delta.entries or delta.upto > delta.after:
            self._unsaved.append(delta)
        self._metrics.unsaved_entries.set(self._unsaved_entries())
        if self.role is not Role.ACTIVE:
            self._adopt_checkpoint(*await self._store.read_checkpoint())
            return
        if checkpoint["sequence"] < self._checkpoint_sequence or checkpoint == self._saved_checkpoint:
            return  # behind the last checkpoint (just took over) or nothing changed
        await self._alert_new_gap(checkpoint)
        while self._unsaved:
            await self._store.write_journal(self._unsaved[0])
            self._unsaved.popleft()
        try:
            revision = await self._store.write_checkpoint(checkpoint, revision=self._checkpoint_revision)
        except Fenced as error:
            self._stand_down(str(error))
            return
        self._checkpoint_revision, self._checkpoint_sequence = revision, checkpoint["sequence"]
        self._saved_checkpoint = checkpoint
        self._metrics.checkpoint_sequence.set(checkpoint["sequence"])
        self._metrics.unsaved_entries.set(self._unsaved_entries())
        self._metrics.largest_write.set(self._store.largest_write)

    async def _alert_new_gap(self, checkpoint: dict[str, Any]) -> None:
        """One SystemAlert per gap, sent before the first checkpoint that records it (so never lost)."""
        gap = checkpoint.get("gap")
        saved = (self._saved_checkpoint or {}).get("gap")
        if gap is None or gap == saved:
            return
        alert = catalog.system_alert(
            alert_id=new_alert_id(time.time()),
            alert_type="error",
            severity="high",
            message=(
                f"Platform events {gap['first']}..{gap['last']} were discarded from the stream before the "
                "collector read them; the figures are incomplete until a new baseline is seeded"
            ),
            timestamp=iso_utc(),
            data={"firstSequence": gap["first"], "lastSequence": gap["last"], "missing": gap["missing"]},
        )
        await self.alerting.send(alert)

    # -- publishing ---------------------------------------------------------------------------

    def snapshot(self) -> PlatformSnapshot:
        snapshot = self.aggregate.snapshot(now=utc_now())
        self._metrics.active_beyond_total.set(self.aggregate.active_beyond_total)
        return replace(snapshot, average_generation_time=round(self.aggregate.average_generation_time(), 3))

    async def publish(self, *, force: bool = False) -> None:
        """Store the snapshot for the gateways and push it to the analytics group when it changed (or at least
        every heartbeat); a standby only follows the baseline."""
        await self._load_baseline()
        if self.role is not Role.ACTIVE:
            return
        snapshot = self.snapshot()
        gap = self.aggregate.gap
        now = time.monotonic()
        due = now - self._last_publish_at >= self._settings.heartbeat_seconds
        if not force and (snapshot, gap) == self._last_published and not due:
            return
        timestamp = iso_utc()
        record = encode_snapshot_record(timestamp, snapshot, gap=gap.to_snapshot_gap() if gap else None)
        if self._snapshots is not None:
            await self._snapshots.put(SNAPSHOT_KEY, record)
        await self._publisher.publish(catalog.analytics_update(snapshot, timestamp=timestamp))
        await self._publisher.publish(catalog.user_count_update(snapshot, timestamp=timestamp))
        self._last_published, self._last_publish_at = (snapshot, gap), now
        self._metrics.last_publish.set(time.time())
        await self._append_history(record)

    async def _append_history(self, record: bytes) -> None:
        """Keep the published snapshot in PLATFORM_SNAPSHOTS for the gateways' history. A failure leaves
        one point out of the history and nothing else: counted, logged, the live figures went out."""
        try:
            await append_snapshot(self._js, record)
        except BrokerUnavailable as error:
            self._metrics.publish_failures.inc()
            log.warning("snapshot not kept in the history stream (%s)", error.__cause__ or error)

    async def evaluate_alerts(self) -> None:
        """Every replica evaluates (so a standby takes over with the rules' state); only the active one sends."""
        await self.alerting.evaluate(active=self.role is Role.ACTIVE)

    # -- stopping -----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """After the loops stopped: the active replica saves, publishes once more and releases the lease."""
        if self.role is not Role.ACTIVE:
            return
        with contextlib.suppress(BrokerUnavailable):
            await self.persist()
            await self.publish(force=True)
        if self._lease is not None:
            await self._lease.release()
