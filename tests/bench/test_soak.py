"""S8 soak, short: 300 dashboards, churn, broadcasts through REST and NATS, REST traffic and misbehaving
clients against ``python -m gateway`` with a real nats-server and the collector, for 45 s of load.

Only what does not depend on the machine's speed is asserted: healthy clients are never cut and get every
broadcast sent while they were subscribed, once and in order; every misbehaving client is cut and counted
under its documented reason; the gateway logs no traceback; its RSS does not grow by a leak's worth.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import soak

pytestmark = [pytest.mark.integration, pytest.mark.bench_smoke, pytest.mark.timeout(150)]

# After the warm-up the clients, rates and payloads stay the same, so the heap is at its steady size;
# what moves RSS is the slow readers' output (each holds over 1 MiB when it is cut, freed right after),
# which makes single samples swing by several MiB (medians of the first and last samples are compared).
# Measured: -1.3 to +0.7 MiB. The bound leaves room for that noise; a connection left in a reference
# cycle at each cut (the leak this soak found: about 10 KiB each, freed by the hourly full collection)
# is asserted exactly by tests/component/test_websocket_freed.py; here it showed as +2.8 MiB.
RSS_GROWTH_BOUND_MIB = 4.0

SHORT = {
    "connections": 300,
    "minutes": 0.75,
    "warmup_minutes": 0.25,
    "misbehaving_fraction": 0.1,  # 30 of them, each cut about every 3 s
    "misbehave_after_seconds": [1.5, 2.5],  # long enough to be frozen by the GC policy while alive
    "misbehave_pause_seconds": [0.2, 0.5],
    "sample_seconds": 1.0,
    "settle_seconds": 10.0,
}


def test_short_soak(tmp_path: Path) -> None:
    result = asyncio.run(soak.s8(tmp_path, SHORT, lambda _line: None))

    assert result["healthy_dropped"] == 0, result["dropped_examples"]
    assert result["connect_failures"] == {}
    assert result["healthy_at_end"] == SHORT["connections"]
    assert result["publish_failures"] == {"r": 0, "n": 0}, result["publish_errors"]
    assert min(result["broadcasts"].values()) > 100
    assert (result["lost"], result["duplicates"], result["lives_short"]) == (0, 0, 0)
    assert all(status.endswith(" 200") for status in result["rest_calls"]), result["rest_calls"]

    reasons = result["closed_by_reason"]
    for kind, figures in result["misbehaving"].items():
        assert figures["cut"] >= 1 and figures["not_cut"] == 0, (kind, figures)
        counted = sum(reasons.get(reason, 0) for reason in soak.EXPECTED_REASONS[kind])
        assert counted >= figures["cut"], (kind, figures, reasons)

    assert result["gateway_log"]["tracebacks"] == 0, result["gateway_log"]["examples"]
    assert result["rss"]["growth_mib"] < RSS_GROWTH_BOUND_MIB, result["rss"]
