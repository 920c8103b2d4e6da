"""Garbage-collector pause timing for a measured server process, written to a JSON file at exit.

``install(path)`` adds a :data:`gc.callbacks` hook that times every collection (start to stop, by
generation) and registers an ``atexit`` handler (and a SIGUSR2 handler for a snapshot while the process
runs) that writes ``{"max_pause_ms", "collections", "total_pause_ms", "by_generation", ...}`` to ``path``.
Each snapshot also carries ``window_max_pause_ms`` and ``window_collections``: the pauses since the
previous snapshot, so the harness can time one phase (S3's fan-out steps, without the connection ramp),
and ``window_long_pauses``: when in that window the collections over 2 ms came, so that what set them off
can be told from their timing.
"""

from __future__ import annotations

import atexit
import gc
import json
import signal
import time
from pathlib import Path
from typing import Any, Final

# A collection this long is listed with its time and generation in ``window_long_pauses``.
LONG_PAUSE_NS: Final = 2_000_000
# At most this many are listed per window (a bound on the file; the counts cover the rest).
MAX_LISTED_PAUSES: Final = 200


class GcWatch:
    def __init__(self, path: Path, *, long_pause_ns: int = LONG_PAUSE_NS) -> None:
        self.path = path
        self.long_pause_ns = long_pause_ns
        self.started = 0
        self.max_pause_ns = 0
        self.max_generation = -1
        self.total_ns = 0
        self.collections = [0, 0, 0]
        self.max_by_generation = [0, 0, 0]
        self.window_max_ns = 0
        self.window_collections = 0
        self.window_over_5ms = 0
        self.window_started = time.perf_counter_ns()
        # (seconds into the window, generation, ms) of each long collection
        self.window_long: list[tuple[float, int, float]] = []

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter_ns()
            return
        pause = time.perf_counter_ns() - self.started
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
        if pause >= self.long_pause_ns and len(self.window_long) < MAX_LISTED_PAUSES:
            offset = (self.started - self.window_started) / 1e9
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
                    "window_long_pauses": self.window_long,
                }
            )
        )
        self.window_max_ns = 0
        self.window_collections = 0
        self.window_over_5ms = 0
        self.window_started = time.perf_counter_ns()
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
