"""Keeps the cyclic garbage collector's pauses off the fan-out path.

A collection walks every object of the generations it collects. A hub connection holds about 130
tracked objects (coroutines, tasks, futures, dicts), and CPython runs a full collection whenever the
long-lived objects have grown by a quarter: while 5,000 clients connect that is a handful of full
collections of 45 to 330 ms each (measured), every broadcast stalled behind them. Between those,
a waiting connection replaces its futures and coroutines on every message without growing the
allocation count, so the youngest generation fills with live objects and its rare collections
take 5 to 15 ms.

Almost all of a connection's objects are freed by reference counting when it closes; the collector
is only needed for the few that end in a cycle (a connection that ended with an exception keeps its
traceback in one: about one close in ten, some 50 objects). A cycle that holds a whole connection
would keep it until the next full collection if it was frozen while alive; the one such cycle known,
the error aiohttp keeps on a WebSocket cut for a bad frame or a failed write (its traceback refers back
to the socket), is broken when the connection ends (``forget_traceback`` in
gateway/transport/websocket.py). So the policy is:

* after every collection of the middle generation (or a full one), :func:`gc.freeze` the survivors.
  Freezing is a constant-time list splice; frozen objects are never walked again, so every
  automatic collection, full ones included, sees only what was allocated since the last freeze;
* every ``young_interval`` seconds collect the youngest generation (or the middle one, when as many
  young collections have passed as its threshold asks), so neither holds more than a few intervals'
  allocations;
* every ``full_interval`` seconds :func:`gc.unfreeze` and run one full collection, reclaiming the
  cycles of objects that were frozen while alive. That pause is as long as an automatic full
  collection, but scheduled and rare instead of random and frequent.

:class:`GcPolicy` decides and acts through a :class:`Collector` (the :mod:`gc` module, or a fake in
tests); :func:`run_gc_policy` is the asyncio loop that drives it. Whatever the policy, every collection's
pause is measured by :class:`PauseRecorder` (``realtime_gc_pause_seconds{generation}``), so the budget
(the PrometheusRule ``RealtimeGcPausesOverBudget``: p99 of young and middle collections under 20 ms) is
checked in production, not only in the benchmark.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

# The middle generation: its survivors are what would otherwise pile up for a full collection.
_MIDDLE_GENERATION = 1


class GcAction(Enum):
    YOUNG = "young"  # collect generation 0, or 1 when its threshold is reached
    FULL = "full"  # unfreeze everything, one full collection, freeze the survivors


class Collector(Protocol):
    """The parts of the :mod:`gc` module the policy uses."""

    def collect(self, generation: int = 2) -> int: ...

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...

    def get_count(self) -> tuple[int, int, int]: ...

    def get_threshold(self) -> tuple[int, int, int]: ...


class GcPolicy:
    """Freezes survivors after each middle-generation collection and schedules the full ones."""

    def __init__(self, *, full_interval: float, started_at: float, collector: Collector) -> None:
        self.full_interval = full_interval
        self.last_full = started_at
        self._collector = collector

    def on_collection(self, phase: str, info: dict[str, Any]) -> None:
        """A :data:`gc.callbacks` hook: freeze what survived a middle-generation or full collection."""
        if phase == "stop" and info.get("generation", 0) >= _MIDDLE_GENERATION:
            self._collector.freeze()

    def due(self, now: float) -> GcAction:
        if self.full_interval > 0 and now - self.last_full >= self.full_interval:
            return GcAction.FULL
        return GcAction.YOUNG

    def apply(self, action: GcAction, now: float) -> int:
        """Carry out ``action``; returns how many unreachable objects the collection found."""
        if action is GcAction.FULL:
            self._collector.unfreeze()
            self.last_full = now
            return self._collector.collect(2)  # on_collection freezes the survivors
        # Explicit young collections count towards the middle generation without ever triggering it
        # (only allocations do), so it is collected here once its threshold is reached.
        middle_due = self._collector.get_count()[1] >= self._collector.get_threshold()[1]
        return self._collector.collect(_MIDDLE_GENERATION if middle_due else 0)


class PauseRecorder:
    """A :data:`gc.callbacks` hook timing each collection, from its "start" to its "stop" callback, into
    histogram buckets of its own.

    It takes no lock and calls nothing that may: a collection can start inside any allocation, also
    while a metrics library holds its (non-reentrant) lock in this very thread, so observing into a
    ``prometheus_client`` metric from here can deadlock the process. The counts are plain integers in
    preallocated lists, read at scrape time (:meth:`snapshot`); a scrape that a collection interrupts may
    see one observation in the count but not yet in the sum, never anything worse.
    """

    GENERATIONS: Final = 3

    def __init__(self, buckets: Sequence[float], *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.buckets = tuple(sorted(buckets))
        self._clock = clock
        self._started: float | None = None
        # Per generation: the count per bucket (the last one is +Inf) and the sum of seconds.
        self._counts = [[0] * (len(self.buckets) + 1) for _ in range(self.GENERATIONS)]
        self._sums = [0.0] * self.GENERATIONS

    def on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
        elif self._started is not None:
            seconds = self._clock() - self._started
            self._started = None
            generation = min(max(int(info.get("generation", 0)), 0), self.GENERATIONS - 1)
            self._counts[generation][bisect.bisect_left(self.buckets, seconds)] += 1
            self._sums[generation] += seconds

    def snapshot(self) -> list[tuple[int, list[int], float]]:
        """Per generation: the cumulative count at each bucket bound (then +Inf), and the sum of seconds."""
        taken = []
        for generation in range(self.GENERATIONS):
            counts = list(self._counts[generation])
            cumulative = list(itertools.accumulate(counts))
            taken.append((generation, cumulative, self._sums[generation]))
        return taken


async def run_gc_policy(
    *,
    young_interval: float,
    full_interval: float,
    collector: Collector | None = None,
    callbacks: list[Callable[[str, dict[str, Any]], None]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Install the policy and drive it until cancelled; with ``young_interval`` 0 it does nothing."""
    if young_interval <= 0:
        return
    target: Collector = collector if collector is not None else gc
    hooks = callbacks if callbacks is not None else gc.callbacks
    policy = GcPolicy(full_interval=full_interval, started_at=clock(), collector=target)
    target.collect(_MIDDLE_GENERATION)  # start-up garbage out, then everything loaded so far frozen
    target.freeze()
    hooks.append(policy.on_collection)
    try:
        while True:
            await asyncio.sleep(young_interval)
            now = clock()
            action = policy.due(now)
            started = time.perf_counter()
            found = policy.apply(action, now)
            if action is GcAction.FULL:
                log.info(
                    "scheduled full collection: %d unreachable objects, %.1f ms",
                    found,
                    (time.perf_counter() - started) * 1000,
                )
    finally:
        hooks.remove(policy.on_collection)
