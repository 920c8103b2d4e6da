"""Nesting depth of decoded values, checked iteratively (no recursion limit to hit)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from shared.nesting import nesting_exceeds, text_nesting_exceeds


def nested(depth: int) -> object:
    value: object = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_depth_of_scalars_and_containers() -> None:
    assert not nesting_exceeds(1, 0)
    assert nesting_exceeds([], 0)
    assert not nesting_exceeds([1], 1)
    assert nesting_exceeds([[1]], 1)
    assert not nesting_exceeds({"a": [1, {"b": 2}]}, 3)
    assert nesting_exceeds({"a": [1, {"b": {}}]}, 3)


def test_a_very_deep_value_is_checked_without_recursion() -> None:
    assert nesting_exceeds(nested(100_000), 32)
    assert not nesting_exceeds(nested(100_000), 100_000)


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=200))
def test_text_check_agrees_with_the_walk(depth: int, limit: int) -> None:
    value = nested(depth)
    raw = orjson.dumps(value)
    assert text_nesting_exceeds(raw, value, limit) is (depth > limit)
    assert text_nesting_exceeds(raw.decode(), value, limit) is (depth > limit)


def test_brackets_inside_strings_only_cost_a_walk() -> None:
    value = {"text": "[[[[[[[[[[[[[[["}
    assert not text_nesting_exceeds(orjson.dumps(value), value, 2)
