"""The GC policy: what it freezes and collects, when the full collection comes, and that it acts on the real gc."""

from __future__ import annotations

import asyncio
import gc
import inspect
import re
from typing import Any

import pytest

from gateway.gc_policy import GcAction, GcPolicy, PauseRecorder, run_gc_policy


class RecordingCollector:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.middle_count = 0

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect{generation}")
        return 3

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def get_count(self) -> tuple[int, int, int]:
        return (0, self.middle_count, 0)

    def get_threshold(self) -> tuple[int, int, int]:
        return (700, 10, 10)


def policy(collector: RecordingCollector, *, full_interval: float = 3600) -> GcPolicy:
    return GcPolicy(full_interval=full_interval, started_at=0, collector=collector)


def test_survivors_of_middle_and_full_collections_are_frozen() -> None:
    collector = RecordingCollector()
    hook = policy(collector).on_collection
    hook("start", {"generation": 1})
    hook("stop", {"generation": 0})
    assert collector.calls == []  # the youngest generation's survivors stay collectable
    hook("stop", {"generation": 1})
    hook("stop", {"generation": 2})
    assert collector.calls == ["freeze", "freeze"]


def test_young_collections_until_the_full_one_is_due() -> None:
    collector = RecordingCollector()
    gc_policy = policy(collector)
    assert gc_policy.due(3599.9) is GcAction.YOUNG
    assert gc_policy.apply(GcAction.YOUNG, 3599.9) == 3
    assert collector.calls == ["collect0"]
    assert gc_policy.due(3600) is GcAction.FULL
    collector.calls.clear()
    gc_policy.apply(GcAction.FULL, 3600)
    # Everything frozen so far becomes collectable again; the hook freezes what survives.
    assert collector.calls == ["unfreeze", "collect2"]
    assert gc_policy.due(3601) is GcAction.YOUNG
    assert gc_policy.due(7200) is GcAction.FULL


def test_the_middle_generation_is_collected_once_its_threshold_is_reached() -> None:
    collector = RecordingCollector()
    gc_policy = policy(collector)
    collector.middle_count = 9
    gc_policy.apply(GcAction.YOUNG, 1)
    collector.middle_count = 10
    gc_policy.apply(GcAction.YOUNG, 2)
    assert collector.calls == ["collect0", "collect1"]


def test_a_zero_full_interval_never_schedules_one() -> None:
    assert policy(RecordingCollector(), full_interval=0).due(10**9) is GcAction.YOUNG


async def test_the_loop_installs_its_hook_collects_and_removes_the_hook() -> None:
    collector = RecordingCollector()
    hooks: list[Any] = []
    task = asyncio.create_task(
        run_gc_policy(young_interval=0.01, full_interval=0.05, collector=collector, callbacks=hooks)
    )
    for _ in range(200):
        await asyncio.sleep(0.01)
        if "collect2" in collector.calls:
            break
    assert collector.calls[:3] == ["collect1", "freeze", "collect0"]  # start-up: collect, freeze, then young
    assert "unfreeze" in collector.calls and "collect2" in collector.calls
    assert len(hooks) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hooks == []


async def test_on_the_real_collector_survivors_end_up_frozen() -> None:
    task = asyncio.create_task(run_gc_policy(young_interval=0.01, full_interval=0))
    try:
        await asyncio.sleep(0.05)
        frozen_before = gc.get_freeze_count()
        survivors = [[index] for index in range(5000)]  # tracked, alive
        gc.collect(1)  # a middle-generation collection: the hook freezes what survived it
        assert gc.get_freeze_count() >= frozen_before + len(survivors)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.unfreeze()


async def test_a_zero_young_interval_leaves_the_collector_alone() -> None:
    collector = RecordingCollector()
    await asyncio.wait_for(run_gc_policy(young_interval=0, full_interval=1, collector=collector), 1)
    assert collector.calls == []


def test_pause_recorder_times_each_collection_into_its_buckets() -> None:
    ticks = iter([10.0, 10.004, 20.0, 20.25, 30.0, 35.0])
    recorder = PauseRecorder((0.001, 0.01, 0.1), clock=lambda: next(ticks))
    recorder.on_collection("stop", {"generation": 0})  # installed mid-collection: nothing to time
    recorder.on_collection("start", {"generation": 0})
    recorder.on_collection("stop", {"generation": 0})  # 4 ms
    recorder.on_collection("start", {"generation": 2})
    recorder.on_collection("stop", {"generation": 2})  # 250 ms
    recorder.on_collection("start", {"generation": 2})
    recorder.on_collection("stop", {"generation": 2})  # 5 s
    (young, young_counts, young_sum), (_, middle_counts, _), (full, full_counts, full_sum) = recorder.snapshot()
    assert (young, young_counts, round(young_sum, 6)) == (0, [0, 1, 1, 1], 0.004)
    assert middle_counts == [0, 0, 0, 0]
    assert (full, full_counts, round(full_sum, 6)) == (2, [0, 0, 0, 2], 5.25)


def test_pause_recorder_works_as_a_real_gc_callback_and_takes_no_lock() -> None:
    recorder = PauseRecorder((0.001, 1.0))
    gc.callbacks.append(recorder.on_collection)
    try:
        gc.collect(1)
    finally:
        gc.callbacks.remove(recorder.on_collection)
    assert recorder.snapshot()[1][1][-1] >= 1
    # Only plain arithmetic on its own lists: nothing a collection inside a locked section could block on.
    source = inspect.getsource(PauseRecorder.on_collection)
    assert not re.search(r"\block\b|acquire|labels|observe", source)


def test_gc_pauses_are_exported_as_a_histogram() -> None:
    from prometheus_client import generate_latest

    from gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    metrics.gc_pauses.on_collection("start", {"generation": 1})
    metrics.gc_pauses.on_collection("stop", {"generation": 1})
    text = generate_latest(metrics.registry).decode()
    assert 'realtime_gc_pause_seconds_bucket{generation="1",le="+Inf"} 1.0' in text
    assert 'realtime_gc_pause_seconds_count{generation="0"} 0.0' in text
