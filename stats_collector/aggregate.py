"""The platform figures as pure state: apply events, take snapshots, save and restore (no I/O, no clock).

Every method that depends on the time takes ``now`` (an aware datetime); the caller owns the clock.

Rules, in the order :meth:`PlatformAggregate.apply` checks them:

* **Duplicates.** An event whose ``id`` was seen before is ignored, as long as the first copy is still
  remembered: ids are kept while their event timestamp is within ``dedup_window_seconds`` of the newest
  event timestamp seen (event time, not arrival time, so a replay after a restart decides the same way).
  A copy of an event older than that horizon is counted again; JetStream's own ``Nats-Msg-Id`` window and
  the collector's resume-after-sequence cover the transport, this is the second line of defence.
* **Currency.** Revenue is kept in one currency; a payment in another currency is ignored (``apply``
  returns False, like for a duplicate; compare ``event.currency`` with :attr:`PlatformAggregate.currency` to
  tell the two apart).
* **Counting.** totalUsers is the seeded baseline plus one per ``user.registered`` event. activeUsers is the
  number of distinct user ids carried by any event (of any type) whose timestamp is at or after
  ``now - active_window_seconds``; events stamped in the future (a producer clock ahead) count as active too.
  Events arriving out of order count as long as they are inside that window. averageGenerationTime is the
  mean ``generationTime`` of ``website.generated`` events.
* **Days.** newUsersToday and revenueToday count events whose timestamp falls on the day of ``now`` in the
  configured time zone. The aggregate keeps buckets for yesterday, today and tomorrow (relative to the
  ``now`` of each call), so a late event from yesterday never counts today, an event a little ahead of a
  producer's midnight counts once the day starts, and a snapshot after midnight shows 0 even when no
  event arrived since. An event outside those three days counts in the totals only.
* **Exact sums.** Money is summed in integer cents (each payment rounded half-to-even to the cent) and
  generation times in integer microseconds, so totals do not depend on the order events arrive in;
  figures are exposed as floats rounded to 2 decimals.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final, assert_never

from shared.models import PlatformSnapshot
from stats_collector.events import EventKind, PlatformEvent

STATE_VERSION: Final = 1

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_MICROS_PER_SECOND: Final = 1_000_000
_CENT: Final = Decimal("0.01")
_CENTS_PER_UNIT: Final = 100
# Lazily deleted heap entries are rebuilt away once they outnumber live entries by this factor (plus slack).
_HEAP_SLACK_FACTOR: Final = 2
_HEAP_SLACK_ENTRIES: Final = 64


@dataclass(slots=True)
class _Day:
    new_users: int = 0
    revenue_cents: int = 0


class PlatformAggregate:
    """The live platform figures built from :class:`PlatformEvent` values; see the module docstring."""

    def __init__(
        self,
        *,
        active_window_seconds: float = 900,
        dedup_window_seconds: float = 120,
        timezone: tzinfo = UTC,
        currency: str = "USD",
    ) -> None:
        self._active_window = _window_micros("active_window_seconds", active_window_seconds)
        self._dedup_window = _window_micros("dedup_window_seconds", dedup_window_seconds)
        self._active_window_seconds = float(active_window_seconds)
        self._dedup_window_seconds = float(dedup_window_seconds)
        self._tz = timezone
        if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isalpha()):
            raise ValueError("currency must be a three-letter ISO 4217 code")
        self._currency = currency.upper()
        # Baseline that predates the stream (set by seed()).
        self._base_users = 0
        self._base_websites = 0
        self._base_images = 0
        self._base_failed = 0
        self._base_revenue_cents = 0
        # Counted from the stream.
        self._registered = 0
        self._websites = 0
        self._images = 0
        self._failed = 0
        self._revenue_cents = 0
        self._generation_micros = 0
        self._timed_generations = 0
        self._days: dict[date, _Day] = {}
        # user id -> newest activity (µs since the epoch); the heap orders entries for expiry and may hold
        # stale entries (older activity of a user seen again), which are skipped when popped.
        self._active: dict[str, int] = {}
        self._active_heap: list[tuple[int, str]] = []
        # event id -> event timestamp (µs); the heap has exactly one entry per remembered id.
        self._seen: dict[str, int] = {}
        self._seen_heap: list[tuple[int, str]] = []
        self._newest_event: int | None = None
        self._last_now: int | None = None

    # -- configuration ------------------------------------------------------------------------

    @property
    def currency(self) -> str:
        return self._currency

    @property
    def timezone(self) -> tzinfo:
        return self._tz

    @property
    def active_window_seconds(self) -> float:
        return self._active_window_seconds

    @property
    def dedup_window_seconds(self) -> float:
        return self._dedup_window_seconds

    # -- events -------------------------------------------------------------------------------

    def apply(self, event: PlatformEvent, *, now: datetime) -> bool:
        """Count ``event``; False (and nothing changes) for a duplicate or a payment in another currency."""
        now_micros = _micros(now)
        if event.id in self._seen:
            return False
        if event.kind is EventKind.PAYMENT_SUCCEEDED and (event.currency or "").upper() != self._currency:
            return False
        at = _micros(event.timestamp)
        self._remember(event.id, at)
        today = self._day_of(now_micros)
        self._prune_days(today)
        day = self._day_bucket(at, today)
        match event.kind:
            case EventKind.USER_REGISTERED:
                self._registered += 1
                if day is not None:
                    day.new_users += 1
            case EventKind.USER_ACTIVE:
                pass
            case EventKind.WEBSITE_GENERATED:
                self._websites += 1
                if event.generation_time is not None:
                    self._generation_micros += round(event.generation_time * _MICROS_PER_SECOND)
                    self._timed_generations += 1
            case EventKind.IMAGE_GENERATED:
                self._images += 1
            case EventKind.GENERATION_FAILED:
                self._failed += 1
            case EventKind.PAYMENT_SUCCEEDED:
                cents = to_cents(event.amount or 0.0)
                self._revenue_cents += cents
                if day is not None:
                    day.revenue_cents += cents
            case _:
                assert_never(event.kind)
        if event.user_id is not None:
            self._touch(event.user_id, at, now_micros)
        self._expire_users(now_micros)
        self._last_now = now_micros
        return True

    def seed(
        self,
        *,
        total_users: int | None = None,
        websites_generated: int | None = None,
        images_generated: int | None = None,
        failed_generations: int | None = None,
        total_revenue: float | None = None,
    ) -> None:
        """Set the baseline counts that predate the stream (None leaves a baseline as it is).

        The figures are baseline + counted events; seeding sets the baseline, so repeating it is harmless.
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

    # -- reading ------------------------------------------------------------------------------

    def snapshot(self, *, now: datetime) -> PlatformSnapshot:
        """The figures as of ``now`` (expired active users are forgotten)."""
        now_micros = _micros(now)
        self._expire_users(now_micros)
        self._last_now = now_micros
        today = self._days.get(self._day_of(now_micros)) or _Day()
        return PlatformSnapshot(
            total_users=self._base_users + self._registered,
            active_users=len(self._active),
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

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable copy of the state, without expired ids and users (relative to the last ``now``)."""
        if self._last_now is not None:
            self._expire_users(self._last_now)
            self._prune_days(self._day_of(self._last_now))
        return {
            "version": STATE_VERSION,
            "currency": self._currency,
            "baseline": {
                "totalUsers": self._base_users,
                "websitesGenerated": self._base_websites,
                "imagesGenerated": self._base_images,
                "failedGenerations": self._base_failed,
                "totalRevenueCents": self._base_revenue_cents,
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
            "activeUsers": dict(self._active),
            "seenIds": dict(self._seen),
            "newestEventMicros": self._newest_event,
            "lastNowMicros": self._last_now,
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        *,
        active_window_seconds: float = 900,
        dedup_window_seconds: float = 120,
        timezone: tzinfo = UTC,
        currency: str = "USD",
    ) -> PlatformAggregate:
        """Restore what :meth:`to_state` saved; ValueError naming the key on anything else.

        A state saved in another currency is refused: its revenue cannot be mixed with the configured one.
        """
        aggregate = cls(
            active_window_seconds=active_window_seconds,
            dedup_window_seconds=dedup_window_seconds,
            timezone=timezone,
            currency=currency,
        )
        if not isinstance(state, dict):
            raise ValueError("state must be an object")
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"unsupported state version {version!r} (expected {STATE_VERSION})")
        if state.get("currency") != aggregate._currency:
            raise ValueError(f"state currency {state.get('currency')!r} differs from {aggregate._currency!r}")
        baseline = _object(state, "baseline")
        aggregate._base_users = _count(baseline, "totalUsers")
        aggregate._base_websites = _count(baseline, "websitesGenerated")
        aggregate._base_images = _count(baseline, "imagesGenerated")
        aggregate._base_failed = _count(baseline, "failedGenerations")
        aggregate._base_revenue_cents = _count(baseline, "totalRevenueCents")
        counts = _object(state, "counts")
        aggregate._registered = _count(counts, "registeredUsers")
        aggregate._websites = _count(counts, "websitesGenerated")
        aggregate._images = _count(counts, "imagesGenerated")
        aggregate._failed = _count(counts, "failedGenerations")
        aggregate._revenue_cents = _count(counts, "revenueCents")
        aggregate._generation_micros = _count(counts, "generationMicros")
        aggregate._timed_generations = _count(counts, "timedGenerations")
        for key, bucket in _object(state, "days").items():
            try:
                day = date.fromisoformat(key)
            except (TypeError, ValueError):
                raise ValueError(f"days: {key!r} is not a date") from None
            if not isinstance(bucket, dict):
                raise ValueError(f"days.{key} must be an object")
            aggregate._days[day] = _Day(_count(bucket, "newUsers"), _count(bucket, "revenueCents"))
        aggregate._active = _micros_map(state, "activeUsers")
        aggregate._active_heap = [(at, user) for user, at in aggregate._active.items()]
        heapq.heapify(aggregate._active_heap)
        aggregate._seen = _micros_map(state, "seenIds")
        aggregate._seen_heap = [(at, event_id) for event_id, at in aggregate._seen.items()]
        heapq.heapify(aggregate._seen_heap)
        aggregate._newest_event = _optional_micros(state, "newestEventMicros")
        aggregate._last_now = _optional_micros(state, "lastNowMicros")
        return aggregate

    # -- internals ----------------------------------------------------------------------------

    def _remember(self, event_id: str, at: int) -> None:
        self._seen[event_id] = at
        heapq.heappush(self._seen_heap, (at, event_id))
        if self._newest_event is None or at > self._newest_event:
            self._newest_event = at
        horizon = self._newest_event - self._dedup_window
        heap = self._seen_heap
        while heap and heap[0][0] < horizon:
            _, expired = heapq.heappop(heap)
            del self._seen[expired]

    def _touch(self, user_id: str, at: int, now_micros: int) -> None:
        if at < now_micros - self._active_window:
            return  # already outside the window: cannot make anyone active
        previous = self._active.get(user_id)
        if previous is not None and previous >= at:
            return
        self._active[user_id] = at
        heapq.heappush(self._active_heap, (at, user_id))
        if len(self._active_heap) > _HEAP_SLACK_FACTOR * len(self._active) + _HEAP_SLACK_ENTRIES:
            self._active_heap = [(when, user) for user, when in self._active.items()]
            heapq.heapify(self._active_heap)

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

    def _day_bucket(self, at: int, today: date) -> _Day | None:
        """The bucket for the day of ``at`` if it is yesterday, today or tomorrow (relative to ``today``)."""
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


def to_cents(amount: float) -> int:
    """``amount`` in whole cents, rounded half to even from its shortest decimal form (19.99 -> 1999)."""
    return int(Decimal(repr(float(amount))).quantize(_CENT, rounding=ROUND_HALF_EVEN) * _CENTS_PER_UNIT)


def from_cents(cents: int) -> float:
    """The float nearest to ``cents / 100`` (so already rounded to 2 decimals)."""
    return cents / _CENTS_PER_UNIT


def _micros(moment: datetime) -> int:
    if moment.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware")
    return (moment - _EPOCH) // _MICROSECOND


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


def _optional_micros(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key} must be an integer or null")
    return value


def _micros_map(state: dict[str, Any], key: str) -> dict[str, int]:
    data = _object(state, key)
    for value in data.values():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} values must be integers")
    return dict(data)
