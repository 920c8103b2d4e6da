"""A dashboard that subscribes to ``analytics`` gets the latest figures at once (from the collector's
snapshot in NATS KV), not at the collector's next tick: within 100 ms of its SubscribeToAnalytics, as
the official client measures it."""

from __future__ import annotations

import nats
import pytest

from broker_bridge.keyvalue import SNAPSHOT_BUCKET, SNAPSHOT_KEY
from scripts.processes import NatsServer
from shared.models import PlatformSnapshot, encode_snapshot_record
from tests.support.fanout import ClientPool
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token

pytestmark = pytest.mark.integration

LATEST_WITHIN_MS = 100
SNAPSHOT = PlatformSnapshot(total_users=1234, active_users=56, websites_generated=789)
EVENTS = ("AnalyticsUpdate", "UserCountUpdate")
TIMESTAMP = "2026-11-30T12:00:00.000Z"


async def test_an_analytics_subscriber_gets_the_latest_snapshot_within_100_ms(
    fresh_nats: NatsServer, fresh_gateway: GatewayProcess
) -> None:
    # A NATS server of its own: the snapshot written here must not reach other tests' gateways.
    client = await nats.connect(fresh_nats.url)
    try:
        bucket = await client.jetstream().key_value(SNAPSHOT_BUCKET)
        await bucket.put(SNAPSHOT_KEY, encode_snapshot_record(TIMESTAMP, SNAPSHOT))
    finally:
        await client.close()
    async with ClientPool() as pool:
        dashboard = await pool.connect(fresh_gateway.hub_url, admin_token())
        await dashboard.invoke("GetPlatformStats")  # warms the client's invoke path, not the server's answer
        start = dashboard.mark()
        answer = await dashboard.invoke_answer("SubscribeToAnalytics")
        analytics = await dashboard.wait_event("AnalyticsUpdate")
        counts = await dashboard.wait_event("UserCountUpdate")
        assert analytics["totalUsers"] == 1234 and analytics["websitesGenerated"] == 789
        assert counts["totalUsers"] == 1234 and counts["activeUsers"] == 56
        arrived = max(line["at"] for line in dashboard.lines[start:] if line.get("event") in EVENTS)
        elapsed_ms = arrived - answer["sentAt"]
        assert elapsed_ms <= LATEST_WITHIN_MS, f"latest figures {elapsed_ms:.0f} ms after subscribing"
