"""The analytics history held by each replica: bounds, order and downsampling (gateway/hub/history.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.http.validation import ValidationFailed, query_integer
from gateway.hub.history import (
    MAX_ANSWER_POINTS,
    MAX_MINUTES,
    MINUTES_RANGE_MESSAGE,
    SnapshotHistory,
    epoch_ms,
    iso_ms,
    minutes_in_range,
)
from gateway.metrics import GatewayMetrics
from shared.models import PlatformSnapshot, encode_snapshot_record
from tests.support.fanout import metric_value

NOW_MS = epoch_ms("2026-11-30T12:00:00.000Z")
DAY_OF_5_SECOND_SNAPSHOTS = 17_280


def snapshot(n: int) -> PlatformSnapshot:
    return PlatformSnapshot(total_users=n, active_users=n % 7, websites_generated=2 * n, total_revenue=n / 4)


def history(max_points: int = 100_000, *, now_ms: int = NOW_MS) -> tuple[SnapshotHistory, GatewayMetrics]:
    metrics = GatewayMetrics()
    return SnapshotHistory(max_points=max_points, metrics=metrics, clock=lambda: now_ms / 1000), metrics


def metric(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    from prometheus_client import generate_latest

    return metric_value(generate_latest(metrics.registry).decode(), name, **labels)


def a_day_every_5_seconds(held: SnapshotHistory) -> None:
    for n in range(DAY_OF_5_SECOND_SNAPSHOTS):
        held.add(NOW_MS - (DAY_OF_5_SECOND_SNAPSHOTS - 1 - n) * 5000, snapshot(n))


def users(points: list[dict[str, Any]]) -> list[int]:
    return [point["totalUsers"] for point in points]


def test_a_window_of_500_snapshots_or_fewer_is_answered_whole() -> None:
    held, _ = history()
    a_day_every_5_seconds(held)
    held.mark_loaded()
    answer = held.answer(30)
    assert answer["minutes"] == 30 and answer["complete"] is True and answer["bucketSeconds"] == 0
    assert answer["timestamp"] == "2026-11-30T12:00:00.000Z" and answer["from"] == "2026-11-30T11:30:00.000Z"
    # 30 minutes of 5-second snapshots, both ends included.
    assert users(answer["points"]) == list(range(DAY_OF_5_SECOND_SNAPSHOTS - 361, DAY_OF_5_SECOND_SNAPSHOTS))
    newest = answer["points"][-1]
    assert newest == {"timestamp": "2026-11-30T12:00:00.000Z", **snapshot(DAY_OF_5_SECOND_SNAPSHOTS - 1).to_wire()}
    assert isinstance(newest["totalUsers"], int) and isinstance(newest["totalRevenue"], float)


@pytest.mark.parametrize(("minutes", "bucket_seconds"), [(360, 43.2), (1440, 172.8)])
def test_longer_windows_are_the_last_snapshot_of_each_of_500_buckets(minutes: int, bucket_seconds: float) -> None:
    held, _ = history()
    a_day_every_5_seconds(held)
    answer = held.answer(minutes)
    points = answer["points"]
    assert answer["bucketSeconds"] == pytest.approx(bucket_seconds)
    assert MAX_ANSWER_POINTS - 1 <= len(points) <= MAX_ANSWER_POINTS
    times = [epoch_ms(point["timestamp"]) for point in points]
    assert times == sorted(set(times))
    start = NOW_MS - minutes * 60_000
    width = bucket_seconds * 1000
    buckets = [min(int((moment - start) // width), MAX_ANSWER_POINTS - 1) for moment in times]
    assert buckets == sorted(set(buckets))  # one point per bucket at most
    for moment, bucket in zip(times, buckets, strict=True):
        # ... and it is the bucket's last snapshot: the next one (5 s later) is in a later bucket.
        assert moment + 5000 > NOW_MS or (moment + 5000 - start) // width > bucket
    assert points[-1]["totalUsers"] == DAY_OF_5_SECOND_SNAPSHOTS - 1  # the newest equals the live figures


@given(
    moments=st.lists(st.integers(min_value=-3_000_000, max_value=0), max_size=60),
    minutes=st.integers(min_value=1, max_value=50),
    max_points=st.integers(min_value=1, max_value=12),
)
def test_downsampling_keeps_exactly_the_last_snapshot_of_every_non_empty_bucket(
    moments: list[int], minutes: int, max_points: int
) -> None:
    held, _ = history()
    for n, offset in enumerate(moments):
        held.add(NOW_MS + offset, snapshot(n))
    window = held.window(minutes, now_ms=NOW_MS, max_points=max_points)
    got = [epoch_ms(point.timestamp) for point in window.points]
    inside = sorted(NOW_MS + offset for offset in moments if offset >= -minutes * 60_000)
    assert len(got) <= max_points
    if len(inside) <= max_points:
        assert got == inside
        return
    width = minutes * 60_000 / max_points
    start = NOW_MS - minutes * 60_000
    last_by_bucket: dict[int, int] = {}
    for moment in inside:
        last_by_bucket[min(int((moment - start) // width), max_points - 1)] = moment
    assert got == [last_by_bucket[bucket] for bucket in sorted(last_by_bucket)]


def test_the_oldest_snapshots_go_first_beyond_max_points_and_are_counted() -> None:
    held, metrics = history(max_points=100)
    for n in range(250):
        held.add(NOW_MS - (249 - n) * 1000, snapshot(n))
    assert len(held) == 100
    assert users(held.answer(MAX_MINUTES)["points"]) == list(range(150, 250))
    assert metric(metrics, "realtime_history_points") == 100
    assert metric(metrics, "realtime_history_dropped_total", reason="limit") == 150


def test_snapshots_older_than_the_longest_window_are_dropped_without_counting() -> None:
    held, metrics = history()
    held.add(NOW_MS - (MAX_MINUTES * 60_000 + 1), snapshot(1))
    held.add(NOW_MS - MAX_MINUTES * 60_000, snapshot(2))
    held.add(NOW_MS, snapshot(3))
    assert users(held.answer(MAX_MINUTES)["points"]) == [2, 3]
    assert metric(metrics, "realtime_history_dropped_total") == 0


def test_a_snapshot_stamped_earlier_than_the_newest_takes_its_place_in_time() -> None:
    held, _ = history()
    for offset, n in ((-30_000, 1), (-10_000, 3), (-20_000, 2), (-10_000, 4)):
        held.add(NOW_MS + offset, snapshot(n))
    assert users(held.answer(5)["points"]) == [1, 2, 3, 4]


def test_the_window_ends_at_the_newest_snapshot_when_the_collector_clock_is_ahead() -> None:
    held, _ = history()
    held.add(NOW_MS + 3000, snapshot(9))
    answer = held.answer(1)
    assert users(answer["points"]) == [9]
    assert answer["timestamp"] == iso_ms(NOW_MS + 3000)


def test_records_from_the_stream_are_decoded_and_invalid_ones_counted() -> None:
    held, metrics = history()
    held.add_record(1, encode_snapshot_record(iso_ms(NOW_MS - 1000), snapshot(5)))
    held.add_record(2, b"not json")
    held.add_record(3, b'{"timestamp": "yesterday", "data": {}}')
    assert users(held.answer(1)["points"]) == [5]
    assert metric(metrics, "realtime_history_dropped_total", reason="invalid") == 2


def test_an_empty_or_still_loading_history_says_so() -> None:
    held, _ = history()
    answer = held.answer(MAX_MINUTES)
    assert (answer["points"], answer["complete"]) == ([], False)
    held.mark_loaded()
    assert held.answer(MAX_MINUTES)["complete"] is True


def test_minutes_range_is_1_to_1440() -> None:
    assert [minutes_in_range(m) for m in (0, 1, 1440, 1441, -1)] == [False, True, True, False, False]
    assert MINUTES_RANGE_MESSAGE == "The field minutes must be between 1 and 1440."


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({}, "The minutes field is required."),
        ({"minutes": ""}, "The minutes field is required."),
        ({"minutes": "abc"}, "The value 'abc' is not valid for minutes."),
        ({"minutes": "1.5"}, "The value '1.5' is not valid for minutes."),
        ({"minutes": "0"}, MINUTES_RANGE_MESSAGE),
        ({"minutes": "1441"}, MINUTES_RANGE_MESSAGE),
        ({"minutes": "-30"}, MINUTES_RANGE_MESSAGE),
        ({"minutes": "9" * 40}, "The value '" + "9" * 40 + "' is not valid for minutes."),
    ],
)
def test_the_minutes_query_parameter_is_validated_naming_it(query: dict[str, str], error: str) -> None:
    with pytest.raises(ValidationFailed) as failed:
        query_integer(query, "minutes", minimum=1, maximum=MAX_MINUTES)
    assert failed.value.errors == {"minutes": [error]}


def test_a_valid_minutes_query_parameter() -> None:
    assert query_integer({"minutes": "1440"}, "minutes", minimum=1, maximum=MAX_MINUTES) == 1440
    assert query_integer({"minutes": "+30"}, "minutes", minimum=1, maximum=MAX_MINUTES) == 30
