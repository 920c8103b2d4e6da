"""Garbage-collector pause timing for a measured server process, written to a JSON file at exit.

``install(path)`` adds a :data:`gc.callbacks` hook that times every collection (start to stop, by
generation) and registers an ``atexit`` handler (and a SIGUSR2 handler for a snapshot while the process
runs) that writes ``{"max_pause_ms", "collections", "total_pause_ms", "by_generation", ...}`` to ``path``.
Each snapshot also carries ``window_max_pause_ms`` and ``window_collections``: the pauses since the
previous snapshot, so the harness can time one phase (S3's fan-out steps, without the connection ramp),
``window_long_count``: how many of them took 2 ms or more, and ``window_long_pauses``: when in the window
those came (the first 200), so that what set them off can be told from their timing.
"""

from __future__ import annotations

import atexit
import gc
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

# A collection of this length or more is counted in ``window_long_count`` and listed with its time and
# generation in ``window_long_pauses``.
LONG_PAUSE_NS: Final = 2_000_000
# At most this many are listed per window (a bound on the file; the counts cover the rest).
MAX_LISTED_PAUSES: Final = 200


class GcWatch:
    def __init__(
        self, path: Path, *, long_pause_ns: int = LONG_PAUSE_NS, clock: Callable[[], int] = time.perf_counter_ns
    ) -> None:
        self.path = path
        self.long_pause_ns = long_pause_ns
        self._clock = clock
        self.started = 0
        self.max_pause_ns = 0
        self.max_generation = -1
        self.total_ns = 0
        self.collections = [0, 0, 0]
        self.max_by_generation = [0, 0, 0]
        self.window_max_ns = 0
        self.window_collections = 0
        self.window_over_5ms = 0
        self.window_started = clock()
        self.window_long_count = 0
        # (seconds into the window, generation, ms) of the first long collections
        self.window_long: list[tuple[float, int, float]] = []

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = self._clock()
            return
        pause = self._clock() - self.started
        generation = int(info.get("generation", 0))
        self.collections[generation] += 1
        self.total_ns += pause
        if pause > self.max_by_generation[generation]:
            self.max_by_generation[generation] = pause
        self.window_collections += 1
        if pause > 5_000_000:
            self.window_over_5ms += 1
        if pause > self.window_max_ns:
            self.window_max_ns = pause
        if pause >= self.long_pause_ns:
            self.window_long_count += 1
            if len(self.window_long) < MAX_LISTED_PAUSES:
                # A snapshot taken while this collection ran (the signal handler runs between bytecodes)
                # starts the window after it began: it counts as at the window's start.
                offset = max(0, self.started - self.window_started) / 1e9
                self.window_long.append((round(offset, 3), generation, round(pause / 1e6, 3)))
        if pause > self.max_pause_ns:
            self.max_pause_ns = pause
            self.max_generation = generation

    def write(self) -> None:
        self.path.write_text(
            json.dumps(
                {
                    "max_pause_ms": self.max_pause_ns / 1e6,
                    "max_pause_generation": self.max_generation,
                    "total_pause_ms": self.total_ns / 1e6,
                    "collections": self.collections,
                    "max_ms_by_generation": [value / 1e6 for value in self.max_by_generation],
                    "window_max_pause_ms": self.window_max_ns / 1e6,
                    "window_collections": self.window_collections,
                    "window_pauses_over_5ms": self.window_over_5ms,
                    "window_long_count": self.window_long_count,
                    "window_long_pauses": self.window_long,
                }
            )
        )
        self.window_max_ns = 0
        self.window_collections = 0
        self.window_over_5ms = 0
        self.window_started = self._clock()
        self.window_long_count = 0
        self.window_long = []


def install(path: str | Path) -> GcWatch:
    watch = GcWatch(Path(path))
    gc.callbacks.append(watch.callback)
    atexit.register(watch.write)
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: watch.write())
    return watch


def use_loop(name: str) -> None:
    """Make new event loops of this process ``uvloop`` ones (``asyncio``: leave the default)."""
    if name == "uvloop":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif name != "asyncio":
        raise ValueError(f"unknown loop {name!r}")
