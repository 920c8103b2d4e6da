"""bench/gcwatch: the fan-out window's long collections are listed with when they came, within a bound, and the
report says when."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

from bench.gcwatch import MAX_LISTED_PAUSES, GcWatch
from bench.loadclient import PING_INTERVAL_SECONDS
from bench.report import misses_section


class Clock:
    """A perf_counter_ns that moves on only when told."""

    def __init__(self) -> None:
        self.now = 10**9

    def __call__(self) -> int:
        return self.now


def collect(watch: GcWatch, generation: int, *, clock: Clock | None = None, pause_ns: int = 0) -> None:
    watch.callback("start", {"generation": generation})
    if clock is not None:
        clock.now += pause_ns
    watch.callback("stop", {"generation": generation})


def test_long_collections_are_listed_with_their_time_and_generation_until_the_next_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "gc.json"
    watch = GcWatch(path, long_pause_ns=0)  # every collection counts as long
    collect(watch, 1)
    collect(watch, 0)
    watch.write()
    listed = json.loads(path.read_text())["window_long_pauses"]
    assert [generation for _offset, generation, _ms in listed] == [1, 0]
    assert all(offset >= 0 and ms >= 0 for offset, _generation, ms in listed)
    assert listed[0][0] <= listed[1][0]

    watch.write()  # a new window
    assert json.loads(path.read_text())["window_long_pauses"] == []


def test_offsets_count_from_the_last_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "gc.json"
    clock = Clock()
    watch = GcWatch(path, long_pause_ns=2_000_000, clock=clock)
    clock.now += 5 * 10**9
    collect(watch, 1, clock=clock, pause_ns=3_000_000)
    collect(watch, 0, clock=clock, pause_ns=1_000_000)  # short: counted, not listed
    watch.write()
    figures = json.loads(path.read_text())
    assert figures["window_long_pauses"] == [[5.0, 1, 3.0]]
    assert (figures["window_long_count"], figures["window_collections"]) == (1, 2)

    clock.now += 2 * 10**9
    collect(watch, 0, clock=clock, pause_ns=2_500_000)
    watch.write()
    assert json.loads(path.read_text())["window_long_pauses"] == [[2.0, 0, 2.5]]


def test_a_snapshot_taken_during_a_collection_puts_it_at_the_window_start(tmp_path: Path) -> None:
    path = tmp_path / "gc.json"
    clock = Clock()
    watch = GcWatch(path, long_pause_ns=0, clock=clock)
    watch.callback("start", {"generation": 1})
    clock.now += 10**6
    watch.write()  # SIGUSR2's handler, run between two bytecodes of the collection's callbacks
    clock.now += 10**6
    watch.callback("stop", {"generation": 1})
    watch.write()
    assert json.loads(path.read_text())["window_long_pauses"] == [[0.0, 1, 2.0]]


def test_short_collections_are_only_counted(tmp_path: Path) -> None:
    path = tmp_path / "gc.json"
    watch = GcWatch(path, long_pause_ns=10**12)
    collect(watch, 0)
    watch.write()
    figures = json.loads(path.read_text())
    assert (figures["window_collections"], figures["window_long_pauses"]) == (1, [])


def test_the_list_is_bounded_and_the_counts_cover_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "gc.json"
    watch = GcWatch(path, long_pause_ns=0)
    for _ in range(MAX_LISTED_PAUSES + 5):
        collect(watch, 0)
    watch.write()
    figures = json.loads(path.read_text())
    assert len(figures["window_long_pauses"]) == MAX_LISTED_PAUSES
    assert figures["window_long_count"] == figures["window_collections"] == MAX_LISTED_PAUSES + 5


def test_a_real_collection_is_timed(tmp_path: Path) -> None:
    path = tmp_path / "gc.json"
    watch = GcWatch(path, long_pause_ns=0)
    gc.callbacks.append(watch.callback)
    try:
        gc.collect(1)
    finally:
        gc.callbacks.remove(watch.callback)
    watch.write()
    figures = json.loads(path.read_text())
    assert figures["collections"][1] >= 1
    assert any(generation == 1 for _offset, generation, _ms in figures["window_long_pauses"])


def gc_note(**gc_fanout: Any) -> str:
    window = {"window_max_pause_ms": 4.5, "window_pauses_over_5ms": 0, "window_collections": 1800, **gc_fanout}
    entry = {"size": 5000, "gc_fanout": window, "gc": {"collections": [1800, 180, 1]}}
    (note,) = [line for line in misses_section({"results": {"S3": {"ours": {"5000": entry}}}}, []) if "**GC.**" in line]
    assert "largest pause was 4.5 ms, and 0 of 1,800 collections in that window exceeded 5 ms." in note
    return note


def test_the_report_says_when_the_long_collections_came_and_names_the_ping_sweep_when_they_follow_it() -> None:
    listed = [[13.1, 1, 3.7], [14.0, 0, 2.2], [28.4, 1, 3.1], [43.3, 0, 4.2]]
    note = gc_note(window_long_count=5, window_long_pauses=listed)
    assert "5 took 2 ms or more, at 13\u201314, 28, 43 s into that window (the first 4)." in note
    assert f"They come every {PING_INTERVAL_SECONDS:.0f} s, with the load client's keep-alive pings" in note


def test_the_report_names_no_cause_for_long_collections_out_of_step_with_the_pings() -> None:
    note = gc_note(window_long_count=3, window_long_pauses=[[13.1, 1, 3.7], [20.0, 1, 3.1], [43.3, 0, 4.2]])
    assert "3 took 2 ms or more, at 13, 20, 43 s into that window." in note
    assert "keep-alive" not in note


def test_the_report_says_when_none_was_long_and_nothing_for_runs_that_did_not_record_them() -> None:
    assert "None took 2 ms or more." in gc_note(window_long_count=0, window_long_pauses=[])
    assert "took 2 ms or more" not in gc_note()
