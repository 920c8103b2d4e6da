"""The platform figures as a pure state machine over the event stream (no I/O, no clock).

Every stream message passes through :meth:`PlatformAggregate.advance` in sequence order, with its
**arrival time** (the time JetStream stored it); a valid event is then given to
:meth:`PlatformAggregate.apply`. Methods that depend on the wall clock take ``now``; the caller owns it.

Rules, in the order :meth:`PlatformAggregate.apply` checks them:

* **Timestamps from the future.** An event stamped more than ``future_tolerance_seconds`` after its own
  arrival is refused (:attr:`Outcome.FUTURE`, the caller dead-letters it): it is not counted and not
  remembered, so it moves no window.
* **Duplicates, by arrival.** An event whose ``id`` was accepted before counts once if it arrives again
  within ``dedup_window_seconds`` of the accepted copy's arrival, whatever its event timestamp. Arrival
  times come from the stream, so a replay after a restart decides exactly as the first pass did. At most
  ``max_remembered_ids`` ids are kept: beyond that the oldest are forgotten early (counted in
  :attr:`PlatformAggregate.evicted_ids`; the caller makes that loud).
* **Currency.** Revenue is kept in one currency; a payment in another is refused
  (:attr:`Outcome.OTHER_CURRENCY`) and not remembered.
* **Counting.** totalUsers is the seeded baseline plus one per ``user.registered`` event. A user is active
  when any event whose timestamp is at or after ``now - active_window_seconds`` carries their id (events a
  little in the future count too). At most ``max_active_users`` are kept; beyond that the least recently
  active are dropped (counted in :attr:`PlatformAggregate.evicted_users`). averageGenerationTime is the mean
  ``generationTime`` of ``website.generated`` events.
* **activeUsers <= totalUsers.** Users are known by count, not by id (the seeded baseline is a count), so
  an active user cannot be told apart as one from before the stream or one whose registration has not
  been read (it may come later, or never: no baseline seeded). activeUsers is therefore the number of
  distinct active users, but at most totalUsers: activity beyond the users known is not counted as
  active, and is reported as :attr:`PlatformAggregate.active_beyond_total` (as of the last snapshot) so
  a missing baseline shows. Both sides depend only on the set of events read, never on their order.
* **Days.** newUsersToday and revenueToday count events whose own timestamp falls on the day of ``now`` in
  the configured time zone, so a late event counts on its own day (and in the totals), never today. Buckets
  are kept for yesterday, today and tomorrow relative to ``now``; an event outside them counts in the
  totals only.
* **Exact sums.** Money in integer cents (each payment rounded half-to-even to the cent), generation times
  in integer microseconds: totals do not depend on the arrival order.
* **Gaps.** A message whose sequence is more than one past the last one seen means the stream no longer
  holds the messages between (limits, purge, a restored backup): :meth:`advance` returns the :class:`Gap`
  and the figures stay marked incomplete until :meth:`clear_gap` (a new baseline).

Saving: :meth:`to_checkpoint` is a small record (counters, days, gap, sequence: its size does not grow with
users or ids). Remembered ids and active users are saved as journal entries instead:
:meth:`take_delta` hands over what changed since the last call, each entry stamped with the stream
sequence that caused it, and :meth:`restore` rebuilds the exact state of a checkpoint from the checkpoint
and every journal entry at or below its sequence (entries above it are ignored).
"""

from __future__ import annotations

import enum
import heapq
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from shared.models import PlatformSnapshot, SnapshotGap
from stats_collector.events import EventKind, PlatformEvent
from stats_collector.journal import Entry

CHECKPOINT_VERSION: Final = 2

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_MICROS_PER_SECOND: Final = 1_000_000
_CENT: Final = Decimal("0.01")
_CENTS_PER_UNIT: Final = 100
# Lazily deleted heap entries are rebuilt away once they outnumber live entries by this factor (plus slack).
_HEAP_SLACK_FACTOR: Final = 2
_HEAP_SLACK_ENTRIES: Final = 64
_GENERATION_KINDS: Final = frozenset({EventKind.WEBSITE_GENERATED, EventKind.IMAGE_GENERATED})


class Outcome(enum.Enum):
    """What :meth:`PlatformAggregate.apply` did with an event (the value is the metrics label)."""

    COUNTED = "counted"
    DUPLICATE = "duplicate"
    OTHER_CURRENCY = "other_currency"
    FUTURE = "future_timestamp"


@dataclass(frozen=True, slots=True)
class Gap:
    """Stream sequences ``first``..``last`` were gone before they were read; ``missing`` counts every
    sequence lost since the last baseline (several gaps add up; ``first`` is the earliest)."""

    first: int
    last: int
    missing: int
    detected_at_micros: int

    def to_snapshot_gap(self) -> SnapshotGap:
        return SnapshotGap(
            first_sequence=self.first,
            last_sequence=self.last,
            missing=self.missing,
            detected_at=_iso(self.detected_at_micros),
        )


@dataclass(slots=True)
class JournalDelta:
    """What changed in the remembered ids and the active users over stream sequences (after, upto].

    ``ids``: (sequence, arrival µs, id) of each accepted event; ``users``: user -> (sequence, timestamp µs)
    of the newest activity that advanced the user within the range.
    """

    after: int
    upto: int
    ids: list[tuple[int, int, str]] = field(default_factory=list)
    users: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        return len(self.ids) + len(self.users)


@dataclass(slots=True)
class _Day:
    new_users: int = 0
    revenue_cents: int = 0


class PlatformAggregate:
    """The live platform figures built from the event stream; see the module docstring."""

    def __init__(
        self,
        *,
        active_window_seconds: float = 900,
        dedup_window_seconds: float = 120,
        future_tolerance_seconds: float = 300,
        timezone: tzinfo = UTC,
        currency: str = "USD",
        max_remembered_ids: int = 1_000_000,
        max_active_users: int = 1_000_000,
    ) -> None:
        self._active_window = _window_micros("active_window_seconds", active_window_seconds)
        self._dedup_window = _window_micros("dedup_window_seconds", dedup_window_seconds)
        self._future_tolerance = _window_micros("future_tolerance_seconds", future_tolerance_seconds)
        self._tz = timezone
        if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isalpha()):
            raise ValueError("currency must be a three-letter ISO 4217 code")
        self._currency = currency.upper()
        for name, limit in (("max_remembered_ids", max_remembered_ids), ("max_active_users", max_active_users)):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"{name} must be an integer >= 1")
        self._max_ids = max_remembered_ids
        self._max_users = max_active_users
        # Baseline that predates the stream (set by seed()).
        self._base_users = 0
        self._base_websites = 0
        self._base_images = 0
        self._base_failed = 0
        self._base_revenue_cents = 0
        self._baseline_mark: str | None = None
        # Counted from the stream.
        self._registered = 0
        self._websites = 0
        self._images = 0
        self._failed = 0
        self._revenue_cents = 0
        self._generation_micros = 0
        self._timed_generations = 0
        self._days: dict[date, _Day] = {}
        # Stream position: the last sequence seen and the newest arrival (µs, never moving back).
        self._sequence = 0
        self._arrival = 0
        self._gap: Gap | None = None
        # user id -> newest activity (µs); the heap orders entries for expiry and may hold stale entries
        # (older activity of a user seen again), which are skipped when popped.
        self._active: dict[str, int] = {}
        self._active_heap: list[tuple[int, str]] = []
        # event id -> arrival (µs) of the accepted copy; the two deques hold ids and arrivals in arrival order (an
        # id accepted again after its window appears twice; the older entry is skipped when it reaches the front).
        self._seen: dict[str, int] = {}
        self._seen_order: deque[str] = deque()
        self._seen_arrivals: deque[int] = deque()
        self._delta = JournalDelta(0, 0)
        self.evicted_ids = 0
        self.evicted_users = 0
        # Distinct active users beyond totalUsers at the last snapshot (not counted as active; see the docstring).
        self.active_beyond_total = 0

    # -- configuration ------------------------------------------------------------------------

    @property
    def currency(self) -> str:
        return self._currency

    @property
    def timezone(self) -> tzinfo:
        return self._tz

    @property
    def sequence(self) -> int:
        """The last stream sequence this state reflects."""
        return self._sequence

    @property
    def newest_arrival_micros(self) -> int:
        return self._arrival

    @property
    def gap(self) -> Gap | None:
        return self._gap

    @property
    def remembered_ids(self) -> int:
        return len(self._seen)

    @property
    def tracked_users(self) -> int:
        return len(self._active)

    # -- the stream ---------------------------------------------------------------------------

    def advance(self, sequence: int, arrival: datetime | int) -> Gap | None:
        """Note stream message ``sequence`` (stored at ``arrival``); call it for every message, valid or not,
        before :meth:`apply`. Returns the new :class:`Gap` when sequences before it are missing."""
        if sequence <= self._sequence:
            raise ValueError(f"sequence {sequence} is not after {self._sequence}")
        at = arrival if isinstance(arrival, int) else _micros(arrival)
        if at > self._arrival:
            self._arrival = at
        found = None
        if sequence > self._sequence + 1:
            first, last = self._sequence + 1, sequence - 1
            missing = last - first + 1 + (self._gap.missing if self._gap else 0)
            found = Gap(self._gap.first if self._gap else first, last, missing, self._arrival)
            self._gap = found
        self._sequence = sequence
        self._delta.upto = sequence
        return found

    def apply(
        self, event: PlatformEvent, *, now: datetime, arrival: datetime | None = None, sequence: int | None = None
    ) -> Outcome:
        """Count ``event``, the message at ``sequence`` (default: the next one) stored at ``arrival`` (default:
        ``now``). Anything but :attr:`Outcome.COUNTED` leaves the figures and the remembered ids unchanged."""
        self.advance(self._sequence + 1 if sequence is None else sequence, now if arrival is None else arrival)
        return self.apply_current(event, now_micros=_micros(now))

    def apply_current(self, event: PlatformEvent, *, now_micros: int) -> Outcome:
        """:meth:`apply` for the message :meth:`advance` has just noted (the collector's hot path)."""
        arrival = self._arrival
        at = _micros(event.timestamp)
        if at > arrival + self._future_tolerance:
            return Outcome.FUTURE
        kind = event.kind
        if kind is EventKind.PAYMENT_SUCCEEDED and (event.currency or "").upper() != self._currency:
            return Outcome.OTHER_CURRENCY
        seen = self._seen
        event_id = event.id
        accepted_at = seen.get(event_id)
        if accepted_at is not None and accepted_at >= arrival - self._dedup_window:
            return Outcome.DUPLICATE
        self._remember(event_id, arrival)
        if kind is EventKind.USER_REGISTERED:
            self._registered += 1
            day = self._day_bucket(at, now_micros)
            if day is not None:
                day.new_users += 1
        elif kind is EventKind.WEBSITE_GENERATED:
            self._websites += 1
            if event.generation_time is not None:
                self._generation_micros += round(event.generation_time * _MICROS_PER_SECOND)
                self._timed_generations += 1
        elif kind is EventKind.IMAGE_GENERATED:
            self._images += 1
        elif kind is EventKind.GENERATION_FAILED:
            self._failed += 1
        elif kind is EventKind.PAYMENT_SUCCEEDED:
            cents = to_cents(event.amount or 0.0)
            self._revenue_cents += cents
            day = self._day_bucket(at, now_micros)
            if day is not None:
                day.revenue_cents += cents
        if event.user_id is not None:
            self._touch(event.user_id, at, now_micros)
        return Outcome.COUNTED

    def seed(
        self,
        *,
        total_users: int | None = None,
        websites_generated: int | None = None,
        images_generated: int | None = None,
        failed_generations: int | None = None,
        total_revenue: float | None = None,
        mark: str | None = None,
    ) -> None:
        """Set the baseline counts that predate the stream (None leaves a baseline as it is).

        The figures are baseline + counted events; seeding sets the baseline, so repeating it is harmless.
        ``mark`` tells one seeding from another (``seed`` stores when it ran): a new mark clears a gap.
        """
        counts = {
            "total_users": total_users,
            "websites_generated": websites_generated,
            "images_generated": images_generated,
            "failed_generations": failed_generations,
        }
        for name, value in counts.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0")
        revenue_cents = None
        if total_revenue is not None:
            if isinstance(total_revenue, bool) or not isinstance(total_revenue, int | float):
                raise ValueError("total_revenue must be a number >= 0")
            if not (math.isfinite(total_revenue) and total_revenue >= 0):
                raise ValueError("total_revenue must be a number >= 0")
            revenue_cents = to_cents(total_revenue)
        if total_users is not None:
            self._base_users = total_users
        if websites_generated is not None:
            self._base_websites = websites_generated
        if images_generated is not None:
            self._base_images = images_generated
        if failed_generations is not None:
            self._base_failed = failed_generations
        if revenue_cents is not None:
            self._base_revenue_cents = revenue_cents
        if mark is not None and mark != self._baseline_mark:
            self._baseline_mark = mark
            self._gap = None

    def rewind(self, last: int) -> Gap:
        """The stream now ends at ``last``, before this state's sequence: it was replaced (a restored backup, a
        re-created stream). What this state counted after ``last`` cannot be told apart from the new stream's
        events under the same sequences, so reading goes on after ``last`` and the figures are marked
        incomplete over the rewound range."""
        if not 0 <= last < self._sequence:
            raise ValueError(f"rewind to {last} from {self._sequence}")
        missing = self._sequence - last + (self._gap.missing if self._gap else 0)
        first = min(self._gap.first, last + 1) if self._gap else last + 1
        self._gap = Gap(first, self._sequence, missing, self._arrival)
        self._sequence = last
        self._delta = JournalDelta(last, last)
        return self._gap

    def clear_gap(self) -> None:
        """A new baseline accounts for what a gap lost: the figures are complete again."""
        self._gap = None

    # -- reading ------------------------------------------------------------------------------

    def snapshot(self, *, now: datetime) -> PlatformSnapshot:
        """The figures as of ``now`` (expired active users are forgotten; activeUsers at most totalUsers)."""
        now_micros = _micros(now)
        self._expire_users(now_micros)
        today = self._days.get(self._day_of(now_micros)) or _Day()
        total_users = self._base_users + self._registered
        active = len(self._active)
        self.active_beyond_total = max(0, active - total_users)
        return PlatformSnapshot(
            total_users=total_users,
            active_users=min(active, total_users),
            new_users_today=today.new_users,
            websites_generated=self._base_websites + self._websites,
            images_generated=self._base_images + self._images,
            failed_generations=self._base_failed + self._failed,
            total_revenue=from_cents(self._base_revenue_cents + self._revenue_cents),
            revenue_today=from_cents(today.revenue_cents),
        )

    def average_generation_time(self) -> float:
        """Mean ``generationTime`` (seconds) of the website generations counted; 0 when there are none."""
        if not self._timed_generations:
            return 0.0
        return self._generation_micros / self._timed_generations / _MICROS_PER_SECOND

    # -- saving -------------------------------------------------------------------------------

    def take_delta(self) -> JournalDelta:
        """The journal entries since the previous call (sequences ``after``..``upto``); starts a new delta."""
        delta = self._delta
        self._delta = JournalDelta(self._sequence, self._sequence)
        return delta

    def to_checkpoint(self, *, now: datetime) -> dict[str, Any]:
        """The small part of the state (JSON-serialisable): everything but remembered ids and active users."""
        self._prune_days(self._day_of(_micros(now)))
        return {
            "version": CHECKPOINT_VERSION,
            "sequence": self._sequence,
            "arrivalMicros": self._arrival,
            "currency": self._currency,
            "baseline": {
                "totalUsers": self._base_users,
                "websitesGenerated": self._base_websites,
                "imagesGenerated": self._base_images,
                "failedGenerations": self._base_failed,
                "totalRevenueCents": self._base_revenue_cents,
                "mark": self._baseline_mark,
            },
            "counts": {
                "registeredUsers": self._registered,
                "websitesGenerated": self._websites,
                "imagesGenerated": self._images,
                "failedGenerations": self._failed,
                "revenueCents": self._revenue_cents,
                "generationMicros": self._generation_micros,
                "timedGenerations": self._timed_generations,
            },
            "days": {
                day.isoformat(): {"newUsers": bucket.new_users, "revenueCents": bucket.revenue_cents}
                for day, bucket in sorted(self._days.items())
            },
            "gap": None
            if self._gap is None
            else {
                "first": self._gap.first,
                "last": self._gap.last,
                "missing": self._gap.missing,
                "detectedAtMicros": self._gap.detected_at_micros,
            },
        }

    def journal_entries(self) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]:
        """Every remembered id and active user as journal entries (sequence 0): for tests and tools."""
        ids = [(0, at, event_id) for event_id, at in zip(self._seen_order, self._seen_arrivals, strict=True)]
        ids = [entry for entry in ids if self._seen.get(entry[2]) == entry[1]]
        return ids, [(0, at, user) for user, at in self._active.items()]

    @classmethod
    def restore(
        cls,
        checkpoint: dict[str, Any] | None,
        *,
        ids: Iterable[tuple[int, int, str]] = (),
        users: Iterable[tuple[int, int, str]] = (),
        now: datetime,
        **options: Any,
    ) -> PlatformAggregate:
        """The state of ``checkpoint`` (None: the empty state at sequence 0) with the journal entries
        (sequence, µs, key) at or below its sequence; ValueError naming the key on a malformed checkpoint.

        A checkpoint in another currency is refused: its revenue cannot be mixed with the configured one.
        """
        aggregate = cls(**options)
        if checkpoint is not None:
            aggregate._load_checkpoint(checkpoint)
        upto = aggregate._sequence
        horizon = aggregate._arrival - aggregate._dedup_window
        accepted: dict[str, tuple[int, int]] = {}
        for sequence, at, event_id in ids:
            if sequence <= upto and at >= horizon:
                known = accepted.get(event_id)
                if known is None or (at, sequence) > known:
                    accepted[event_id] = (at, sequence)
        for event_id, (at, _) in sorted(accepted.items(), key=lambda item: item[1]):
            aggregate._remember(event_id, at)
        now_micros = _micros(now)
        for sequence, at, user in users:
            if sequence <= upto:
                aggregate._touch(user, at, now_micros)
        aggregate._delta = JournalDelta(upto, upto)
        return aggregate

    def _load_checkpoint(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise ValueError("checkpoint must be an object")
        version = state.get("version")
        if version != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {version!r} (expected {CHECKPOINT_VERSION})")
        if state.get("currency") != self._currency:
            raise ValueError(f"checkpoint currency {state.get('currency')!r} differs from {self._currency!r}")
        self._sequence = _count(state, "sequence")
        self._arrival = _count(state, "arrivalMicros")
        baseline = _object(state, "baseline")
        self._base_users = _count(baseline, "totalUsers")
        self._base_websites = _count(baseline, "websitesGenerated")
        self._base_images = _count(baseline, "imagesGenerated")
        self._base_failed = _count(baseline, "failedGenerations")
        self._base_revenue_cents = _count(baseline, "totalRevenueCents")
        mark = baseline.get("mark")
        if mark is not None and not isinstance(mark, str):
            raise ValueError("mark must be a string or null")
        self._baseline_mark = mark
        counts = _object(state, "counts")
        self._registered = _count(counts, "registeredUsers")
        self._websites = _count(counts, "websitesGenerated")
        self._images = _count(counts, "imagesGenerated")
        self._failed = _count(counts, "failedGenerations")
        self._revenue_cents = _count(counts, "revenueCents")
        self._generation_micros = _count(counts, "generationMicros")
        self._timed_generations = _count(counts, "timedGenerations")
        for key, bucket in _object(state, "days").items():
            try:
                day = date.fromisoformat(key)
            except (TypeError, ValueError):
                raise ValueError(f"days: {key!r} is not a date") from None
            if not isinstance(bucket, dict):
                raise ValueError(f"days.{key} must be an object")
            self._days[day] = _Day(_count(bucket, "newUsers"), _count(bucket, "revenueCents"))
        gap = state.get("gap")
        if gap is not None:
            if not isinstance(gap, dict):
                raise ValueError("gap must be an object or null")
            self._gap = Gap(
                _count(gap, "first"), _count(gap, "last"), _count(gap, "missing"), _count(gap, "detectedAtMicros")
            )

    # -- internals ----------------------------------------------------------------------------

    def _remember(self, event_id: str, arrival: int) -> None:
        seen = self._seen
        order = self._seen_order
        arrivals = self._seen_arrivals
        seen[event_id] = arrival
        order.append(event_id)
        arrivals.append(arrival)  # the same int object as the dict value: 8 bytes per id
        self._delta.ids.append((self._sequence, arrival, event_id))
        horizon = arrival - self._dedup_window
        while arrivals:
            at = arrivals[0]
            if at >= horizon and len(seen) <= self._max_ids:
                break
            arrivals.popleft()
            oldest = order.popleft()
            if seen.get(oldest) == at:  # else the id was accepted again later; that entry is further back
                del seen[oldest]
                if at >= horizon:
                    self.evicted_ids += 1

    def _touch(self, user_id: str, at: int, now_micros: int) -> None:
        if at < now_micros - self._active_window:
            return  # already outside the window: cannot make anyone active
        previous = self._active.get(user_id)
        if previous is not None and previous >= at:
            return
        self._active[user_id] = at
        self._delta.users[user_id] = (self._sequence, at)
        heapq.heappush(self._active_heap, (at, user_id))
        if len(self._active_heap) > _HEAP_SLACK_FACTOR * len(self._active) + _HEAP_SLACK_ENTRIES:
            self._active_heap = [(when, user) for user, when in self._active.items()]
            heapq.heapify(self._active_heap)
        while len(self._active) > self._max_users:
            when, user = heapq.heappop(self._active_heap)
            if self._active.get(user) == when:
                del self._active[user]
                self.evicted_users += 1

    def _expire_users(self, now_micros: int) -> None:
        horizon = now_micros - self._active_window
        heap = self._active_heap
        while heap and heap[0][0] < horizon:
            at, user_id = heapq.heappop(heap)
            if self._active.get(user_id) == at:
                del self._active[user_id]

    def _day_of(self, micros: int) -> date:
        return (_EPOCH + micros * _MICROSECOND).astimezone(self._tz).date()

    def _prune_days(self, today: date) -> None:
        oldest = today - timedelta(days=1)
        for day in [day for day in self._days if day < oldest]:
            del self._days[day]

    def _day_bucket(self, at: int, now_micros: int) -> _Day | None:
        """The bucket for the day of ``at`` if it is yesterday, today or tomorrow (relative to ``now``)."""
        today = self._day_of(now_micros)
        self._prune_days(today)
        try:
            day = self._day_of(at)
        except OverflowError:  # a timestamp at the very edge of the datetime range
            return None
        if abs((day - today).days) > 1:
            return None
        bucket = self._days.get(day)
        if bucket is None:
            bucket = self._days[day] = _Day()
        return bucket


def from_single_value_state(record: dict[str, Any]) -> tuple[dict[str, Any], list[Entry], list[Entry]]:
    """Convert the state earlier collectors saved as one KV value (``{"seq": n, "state": {...}}``, state
    version 1) into a checkpoint and journal entries, so an upgrade keeps its figures.

    That state remembered ids by event time; they are taken as arriving at its last save, so a copy arriving
    within the dedup window after the upgrade still counts once. ValueError naming the key on anything else.
    """
    if not isinstance(record, dict) or not isinstance(record.get("state"), dict):
        raise ValueError("state must be an object")
    sequence = _count(record, "seq")
    state = record["state"]
    if state.get("version") != 1:
        raise ValueError(f"unsupported state version {state.get('version')!r} (expected 1)")
    saved_at = state.get("lastNowMicros")
    saved_at = saved_at if isinstance(saved_at, int) and not isinstance(saved_at, bool) and saved_at >= 0 else 0
    baseline = dict(_object(state, "baseline"))
    checkpoint = {
        "version": CHECKPOINT_VERSION,
        "sequence": sequence,
        "arrivalMicros": saved_at,
        "currency": state.get("currency"),
        "baseline": {**baseline, "mark": None},
        "counts": dict(_object(state, "counts")),
        "days": dict(_object(state, "days")),
        "gap": None,
    }
    ids = [(sequence, saved_at, event_id) for event_id in _object(state, "seenIds")]
    users: list[Entry] = []
    for user, at in _object(state, "activeUsers").items():
        if isinstance(at, bool) or not isinstance(at, int):
            raise ValueError("activeUsers values must be integers")
        users.append((sequence, at, user))
    return checkpoint, ids, users


def to_cents(amount: float) -> int:
    """``amount`` in whole cents, rounded half to even from its shortest decimal form (19.99 -> 1999)."""
    return int(Decimal(repr(float(amount))).quantize(_CENT, rounding=ROUND_HALF_EVEN) * _CENTS_PER_UNIT)


def from_cents(cents: int) -> float:
    """The float nearest to ``cents / 100`` (so already rounded to 2 decimals)."""
    return cents / _CENTS_PER_UNIT


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    return _micros(moment)


def _micros(moment: datetime) -> int:
    if moment.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware")
    return (moment - _EPOCH) // _MICROSECOND


def _iso(micros: int) -> str:
    return (_EPOCH + micros * _MICROSECOND).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _window_micros(name: str, seconds: float) -> int:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not (math.isfinite(seconds) and seconds > 0)
    ):
        raise ValueError(f"{name} must be a number > 0")
    return round(seconds * _MICROS_PER_SECOND)


def _object(state: dict[str, Any], key: str) -> dict[str, Any]:
    value = state.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0")
    return value
