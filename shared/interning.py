"""One instance per distinct immutable value, for values that many long-lived records hold equal.

A connection keeps its principal's role set and its hub groups for its whole life, and a deployment
has only a few distinct ones: sharing one instance of each saves a copy per connection. The table is
bounded: a value beyond ``limit`` distinct ones is used as it comes (equal, just not shared, so each
record holds its own copy), counted in :attr:`SharedValues.unshared`; an attacker who sends many distinct
values cannot grow it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

H = TypeVar("H", bound=Hashable)


class SharedValues(Generic[H]):
    """``shared(value)`` is the first instance seen equal to ``value`` (while at most ``limit`` are kept)."""

    def __init__(self, limit: int = 256) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self._values: dict[H, H] = {}
        self._limit = limit
        self.unshared = 0
        """Values handed back unshared because the table was full."""

    def __len__(self) -> int:
        return len(self._values)

    def __call__(self, value: H) -> H:
        shared = self._values.get(value)
        if shared is not None:
            return shared
        if len(self._values) < self._limit:
            self._values[value] = value
        else:
            self.unshared += 1
        return value
