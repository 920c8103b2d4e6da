"""The figures' recent history on this replica: the collector's snapshots of the last day, held in
memory and answered downsampled (``GetAnalyticsHistory``, ``GET analytics/history``).

Filled at start from stream ``PLATFORM_SNAPSHOTS`` and then with each snapshot the collector stores
(:mod:`broker_bridge.snapshot_stream`), so every replica answers alike, without affinity. Held in
columns, one ``array`` of times and one per figure: a day of 5-second snapshots (17,280) takes about
1.4 MB, and no snapshot is a Python object the garbage collector has to visit.

Bounds: snapshots more than :data:`MAX_MINUTES` older than the newest one are dropped as new ones come
(no answer reaches further back); beyond ``max_points`` the oldest are dropped too, counted in
``realtime_history_dropped_total{reason="limit"}``, and the history then reaches back less than a day.
``realtime_history_points`` is the number held.

Downsampling, to at most :data:`MAX_ANSWER_POINTS` (500) points: the window ``[end - minutes, end]``
is cut into 500 equal buckets (3.6 s for 30 minutes, 43.2 s for 6 h, 172.8 s for 24 h) and each bucket
holding snapshots is answered by its **last** one. Last rather than the mean, because every point is
then a snapshot the collector really published: counts stay whole, totals never go down, the midnight
reset of the daily figures stays one clean step, and the newest point equals the live figures. A window
holding no more than 500 snapshots is answered whole. ``end`` is now, or the newest snapshot's time if
the collector's clock is ahead of this replica's.
"""

from __future__ import annotations

import logging
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from broker_bridge import catalog
from gateway.metrics import GatewayMetrics
from shared.models import PlatformSnapshot, SnapshotRecord, decode_snapshot_record
from shared.timeutil import iso_utc

log = logging.getLogger(__name__)

# The longest window a caller may ask for (a day), and the fewest minutes.
MIN_MINUTES: Final = 1
MAX_MINUTES: Final = 1440
# Points in one answer at most: about one per pixel of a dashboard chart, and ~120 KB of JSON.
MAX_ANSWER_POINTS: Final = 500
MINUTES_RANGE_MESSAGE: Final = f"The field minutes must be between {MIN_MINUTES} and {MAX_MINUTES}."
_MINUTE_MS: Final = 60_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FIGURES: Final = tuple(field.name for field in fields(PlatformSnapshot))
_WHOLE: Final = frozenset(field.name for field in fields(PlatformSnapshot) if field.type == "int")


def minutes_in_range(minutes: int) -> bool:
    return MIN_MINUTES <= minutes <= MAX_MINUTES


def epoch_ms(timestamp: str) -> int:
    """Milliseconds since 1970 of an ISO 8601 time (UTC when it names no zone); ValueError if it is none."""
    moment = datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def iso_ms(milliseconds: int) -> str:
    return iso_utc(_EPOCH + timedelta(milliseconds=milliseconds))


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """The snapshots answered for one window: ``points`` in time order, ``bucket_ms`` 0 when not downsampled."""

    start_ms: int
    end_ms: int
    bucket_ms: float
    points: list[SnapshotRecord]


class SnapshotHistory:
    """The bounded, time-ordered series of snapshots; :meth:`add_record` is the stream reader's callback."""

    def __init__(self, *, max_points: int, metrics: GatewayMetrics, clock: Callable[[], float] = time.time) -> None:
        self._max_points = max_points
        self._metrics = metrics
        self._clock = clock
        self._times = array("q")
        self._columns = {name: array("d") for name in _FIGURES}
        self._warned_invalid = False
        self.loaded = False
        """Whether the history stored before this replica started has been read (answers say ``complete``)."""

    def __len__(self) -> int:
        return len(self._times)

    def mark_loaded(self) -> None:
        self.loaded = True

    def add_record(self, position: int, value: bytes) -> None:
        """One record of the stream (:func:`shared.models.encode_snapshot_record`); invalid ones are counted."""
        try:
            record = decode_snapshot_record(value)
            moment = epoch_ms(record.timestamp)
        except ValueError as error:
            self._metrics.history_dropped.labels(reason="invalid").inc()
            if not self._warned_invalid:
                self._warned_invalid = True
                log.warning("ignoring invalid snapshot record at position %d of the history: %s", position, error)
            return
        self.add(moment, record.data)

    def add(self, moment_ms: int, snapshot: PlatformSnapshot) -> None:
        """Keep ``snapshot`` taken at ``moment_ms``, in time order (one stamped earlier than the newest, as
        after a collector failover between clocks that differ, goes to its place)."""
        times = self._times
        if not times or moment_ms >= times[-1]:
            times.append(moment_ms)
            for name, column in self._columns.items():
                column.append(getattr(snapshot, name))
        else:
            index = bisect_right(times, moment_ms)
            times.insert(index, moment_ms)
            for name, column in self._columns.items():
                column.insert(index, getattr(snapshot, name))
        self._trim()

    def _trim(self) -> None:
        times = self._times
        too_old = bisect_left(times, times[-1] - MAX_MINUTES * _MINUTE_MS)
        drop = max(too_old, len(times) - self._max_points)
        if drop:
            del times[:drop]
            for column in self._columns.values():
                del column[:drop]
            if drop > too_old:
                self._metrics.history_dropped.labels(reason="limit").inc(drop - too_old)
        self._metrics.history_points.set(len(times))

    def window(self, minutes: int, *, now_ms: int, max_points: int = MAX_ANSWER_POINTS) -> HistoryWindow:
        """The snapshots of the last ``minutes``, downsampled as the module docstring says."""
        times = self._times
        end = max(now_ms, times[-1]) if times else now_ms
        start = end - minutes * _MINUTE_MS
        low, high = bisect_left(times, start), len(times)
        if high - low <= max_points:
            return HistoryWindow(start, end, 0.0, [self._point(index) for index in range(low, high)])
        width = (end - start) / max_points
        chosen: list[int] = []
        for bucket in range(1, max_points + 1):
            # The first snapshot at or after the bucket's end; the one before it is the bucket's last.
            after = bisect_left(times, start + bucket * width, low, high) if bucket < max_points else high
            if after > low:
                chosen.append(after - 1)
                low = after
        return HistoryWindow(start, end, width, [self._point(index) for index in chosen])

    def _point(self, index: int) -> SnapshotRecord:
        values: dict[str, Any] = {
            name: int(column[index]) if name in _WHOLE else column[index] for name, column in self._columns.items()
        }
        return SnapshotRecord(iso_ms(self._times[index]), PlatformSnapshot(**values))

    def answer(self, minutes: int) -> dict[str, Any]:
        """The answer of the hub method and the REST route (``minutes`` already checked)."""
        window = self.window(minutes, now_ms=round(self._clock() * 1000))
        return catalog.analytics_history(
            window.points,
            minutes=minutes,
            start=iso_ms(window.start_ms),
            bucket_seconds=window.bucket_ms / 1000,
            complete=self.loaded,
            timestamp=iso_ms(window.end_ms),
        )
