"""Tests on the local multi-replica topology (deploy/local/cluster.py) run only when selected.

They need nginx and take about a minute: ``make test-cluster`` (``pytest -m cluster tests/cluster``)
runs them, a plain ``pytest`` run reports them as skipped.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "cluster" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="cluster test: run with `make test-cluster` (pytest -m cluster)")
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(skip)
