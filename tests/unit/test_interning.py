from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from gateway.metrics import GatewayMetrics
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
    assert len(shared) == 2 and shared.unshared == 2


def test_the_gateway_exports_each_table_and_what_it_left_unshared() -> None:
    metrics = GatewayMetrics()
    roles: SharedValues[frozenset[str]] = SharedValues(limit=1)
    metrics.watch_shared_values({"role_sets": roles})
    roles(frozenset({"Admin"}))
    roles(frozenset({"Viewer"}))
    exported = generate_latest(metrics.registry).decode()
    assert 'realtime_shared_values{table="role_sets"} 1.0' in exported
    assert 'realtime_shared_values_unshared_total{table="role_sets"} 1.0' in exported


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        SharedValues(limit=-1)
