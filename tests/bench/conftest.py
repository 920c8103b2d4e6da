"""The benchmark harness's smoke test: registers its marker."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench_smoke: runs the benchmark harness end to end with tiny numbers")
