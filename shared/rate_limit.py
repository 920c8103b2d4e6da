"""Token buckets: a rate with a burst, per connection or per key, with time passed in (no clock here).

A bucket holds up to ``burst`` tokens and refills at ``per_second``; each admitted request takes one.
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


class TokenBucket:
    __slots__ = ("_rate", "_tokens", "_updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self._rate = rate
        self._tokens = rate.burst
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._rate.burst, self._tokens + elapsed * self._rate.per_second)
        self._updated = now

    def take(self, now: float) -> bool:
        """Admit one request (True) or refuse it (False, nothing taken)."""
        if self._rate.unlimited:
            return True
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until one token is available (0 when one is)."""
        if self._rate.unlimited:
            return 0.0
        self._refill(now)
        return max(0.0, (1 - self._tokens) / self._rate.per_second)


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
            bucket = self._buckets[key] = TokenBucket(self._rate, now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return None
        return bucket.retry_after(now)
