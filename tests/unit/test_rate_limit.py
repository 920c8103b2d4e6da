"""Token buckets with time passed in: burst, refill, retry-after, bounded per-key memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rate_limit import KeyedBuckets, Rate, TokenBucket


def test_a_bucket_admits_its_burst_then_the_rate() -> None:
    bucket = TokenBucket(Rate(per_second=2, burst=3))
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after(0.0) == pytest.approx(0.5)
    assert not bucket.take(0.4)
    assert bucket.take(0.5)
    assert not bucket.take(0.5)


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket(Rate(per_second=10, burst=2))
    assert bucket.take(0.0) and bucket.take(0.0)
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]


def test_rate_zero_means_no_limit() -> None:
    bucket = TokenBucket(Rate(per_second=0, burst=1))
    assert all(bucket.take(0.0) for _ in range(1000))
    assert KeyedBuckets(Rate(0, 1), max_keys=1).take("a", 0.0) is None


def test_a_clock_going_backwards_does_not_mint_tokens() -> None:
    bucket = TokenBucket(Rate(per_second=1, burst=1))
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


class _ReferenceBucket:
    """The textbook token bucket: a token count refilled by elapsed time, capped at the burst."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.updated = 0.0

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.rate.burst, self.tokens + elapsed * self.rate.per_second)
        self.updated = max(self.updated, now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@given(
    per_second=st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]),
    burst=st.integers(min_value=1, max_value=6),
    steps=st.lists(st.integers(min_value=0, max_value=16), max_size=60),
)
def test_the_one_number_bucket_admits_exactly_what_a_token_count_does(
    per_second: float, burst: int, steps: list[int]
) -> None:
    # Times and rates are binary fractions, so both models compute exactly and must agree everywhere.
    rate = Rate(per_second=per_second, burst=burst)
    bucket, reference = TokenBucket(rate), _ReferenceBucket(rate)
    now = 1.0
    for step in steps:
        now += step / 8
        assert bucket.take(now) == reference.take(now), now
