"""bench/gcwatch: the fan-out window's long collections are listed with when they came, within a bound, and the
report says when."""

from __future__ import annotations

import gc
import json
from pathlib import Path

from bench.gcwatch import MAX_LISTED_PAUSES, GcWatch
from bench.report import misses_section


def collect(watch: GcWatch, generation: int) -> None:
    watch.callback("start", {"generation": generation})
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
    assert figures["window_collections"] == MAX_LISTED_PAUSES + 5


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


def test_the_report_says_when_the_long_collections_came() -> None:
    gc_fanout = {
        "window_max_pause_ms": 4.5,
        "window_pauses_over_5ms": 0,
        "window_collections": 1800,
        "window_long_pauses": [[13.1, 1, 3.7], [28.5, 1, 3.1], [43.3, 0, 4.2]],
    }
    entry = {"size": 5000, "gc_fanout": gc_fanout, "gc": {"collections": [1800, 180, 1]}}
    (note,) = [line for line in misses_section({"results": {"S3": {"ours": {"5000": entry}}}}, []) if "**GC.**" in line]
    assert "largest pause was 4.5 ms, and 0 of 1,800 collections" in note
    assert "3 took 2 ms or more, at 13, 28, 43 s into that window." in note


def test_the_report_lists_nothing_for_a_run_that_did_not_record_them() -> None:
    gc_fanout = {"window_max_pause_ms": 4.5, "window_pauses_over_5ms": 0, "window_collections": 1800}
    entry = {"size": 5000, "gc_fanout": gc_fanout, "gc": {"collections": [1800, 180, 1]}}
    (note,) = [line for line in misses_section({"results": {"S3": {"ours": {"5000": entry}}}}, []) if "**GC.**" in line]
    assert "took 2 ms or more" not in note
