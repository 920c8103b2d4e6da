from __future__ import annotations

import pytest

from shared.interning import SharedValues


def test_equal_values_share_the_first_instance_and_the_table_stops_at_its_limit() -> None:
    shared: SharedValues[tuple[str, ...]] = SharedValues(limit=2)
    first = shared(("alerts", "admins"))
    again = shared(tuple(["alerts", "admins"]))
    assert again is first
    shared(("analytics",))
    assert len(shared) == 2
    beyond = ("user-activity",)
    assert shared(beyond) is beyond
    assert shared(tuple(["user-activity"])) is not beyond  # not kept: equal, never shared
    assert len(shared) == 2


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        SharedValues(limit=-1)
