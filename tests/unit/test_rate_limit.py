"""Token buckets with time passed in: burst, refill, retry-after, bounded per-key memory."""

from __future__ import annotations

import pytest

from shared.rate_limit import KeyedBuckets, Rate, TokenBucket


def test_a_bucket_admits_its_burst_then_the_rate() -> None:
    bucket = TokenBucket(Rate(per_second=2, burst=3), now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after(0.0) == pytest.approx(0.5)
    assert not bucket.take(0.4)
    assert bucket.take(0.5)
    assert not bucket.take(0.5)


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket(Rate(per_second=10, burst=2), now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]


def test_rate_zero_means_no_limit() -> None:
    bucket = TokenBucket(Rate(per_second=0, burst=1), now=0.0)
    assert all(bucket.take(0.0) for _ in range(1000))
    assert KeyedBuckets(Rate(0, 1), max_keys=1).take("a", 0.0) is None


def test_a_clock_going_backwards_does_not_mint_tokens() -> None:
    bucket = TokenBucket(Rate(per_second=1, burst=1), now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)


@pytest.mark.parametrize(("per_second", "burst"), [(-1, 1), (float("nan"), 1), (1, 0), (1, float("inf"))])
def test_invalid_rates_are_refused(per_second: float, burst: float) -> None:
    with pytest.raises(ValueError):
        Rate(per_second, burst)


def test_keys_are_limited_independently() -> None:
    buckets = KeyedBuckets(Rate(per_second=1, burst=1), max_keys=10)
    assert buckets.take("a", 0.0) is None
    assert buckets.take("b", 0.0) is None
    wait = buckets.take("a", 0.0)
    assert wait == pytest.approx(1.0)


def test_tracked_keys_are_bounded_least_recently_used_first() -> None:
    buckets = KeyedBuckets(Rate(per_second=0.001, burst=1), max_keys=2)
    assert buckets.take("a", 0.0) is None
    assert buckets.take("b", 0.0) is None
    assert buckets.take("a", 0.0) is not None  # a is now the most recently used
    assert buckets.take("c", 0.0) is None  # forgets b
    assert len(buckets) == 2
    assert buckets.take("a", 0.0) is not None, "a is still tracked and still empty"
    assert buckets.take("b", 0.0) is None, "b was forgotten: it starts with a full bucket"
