"""Token buckets: a rate with a burst, per connection or per key, with time passed in (no clock here).

A bucket holds up to ``burst`` tokens and refills at ``per_second``; each admitted request takes one.
Its state is one number, the time at which it is full again (the generic cell rate algorithm): a
request is admitted while that time is at most ``burst - 1`` refill intervals ahead, and moves it one
interval on. A bucket that was never used, or is full, is any time not after now (``0.0``).
:class:`KeyedBuckets` keeps one bucket per key (client IP, user id) in a bounded LRU map: at
``max_keys`` the least recently used key is forgotten, which can only make that key's next request
start with a full bucket, never refuse anyone wrongly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` sustained, up to ``burst`` at once; ``per_second`` 0 turns the limit off."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and self.per_second >= 0):
            raise ValueError("per_second must be a finite number >= 0")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError("burst must be a finite number >= 1")

    @property
    def unlimited(self) -> bool:
        return self.per_second == 0

    def take(self, full_at: float, now: float) -> float | None:
        """Admit a request at ``now`` to a bucket full again at ``full_at``: the bucket's next
        ``full_at``, or None when refused (nothing taken). Unlimited: ``full_at`` as it is."""
        if self.per_second == 0:
            return full_at
        interval = 1 / self.per_second
        if full_at - now > (self.burst - 1) * interval:
            return None
        return max(full_at, now) + interval

    def retry_after(self, full_at: float, now: float) -> float:
        """Seconds until a bucket full again at ``full_at`` admits a request (0 when it does now)."""
        if self.per_second == 0:
            return 0.0
        return max(0.0, full_at - now - (self.burst - 1) / self.per_second)


class TokenBucket:
    """One bucket of ``rate``, full at first."""

    __slots__ = ("_full_at", "_rate")

    def __init__(self, rate: Rate) -> None:
        self._rate = rate
        self._full_at = 0.0

    def take(self, now: float) -> bool:
        """Admit one request (True) or refuse it (False, nothing taken)."""
        full_at = self._rate.take(self._full_at, now)
        if full_at is None:
            return False
        self._full_at = full_at
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until one token is available (0 when one is)."""
        return self._rate.retry_after(self._full_at, now)


class KeyedBuckets:
    """One :class:`TokenBucket` per key, at most ``max_keys`` of them (least recently used forgotten)."""

    def __init__(self, rate: Rate, *, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._rate = rate
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float | None:
        """None when ``key`` may go ahead; else the seconds after which it may retry."""
        if self._rate.unlimited:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return None
        return bucket.retry_after(now)
