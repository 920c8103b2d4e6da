"""The stats collector as a real process against a real JetStream nats-server, a gateway and the official JS client.

Malformed events are dead-lettered without blocking the stream, seeded baselines add to the counted
events, threshold alerts fire once, clear once and stay quiet while the metric flaps, and simulated
traffic reaches a dashboard (AnalyticsUpdate) with the same numbers as KV and the REST snapshot.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from scripts.processes import ROOT, NatsServer, wait_until_async
from tests.support.collector import (
    DEADLETTER_STREAM,
    EVENTS_STREAM,
    CollectorProcess,
    Outgoing,
    PublishedEvents,
    Sampler,
    expected_figures,
    iso,
    read_stream,
    stored_snapshot,
    stream_last_seq,
)
from tests.support.expect import SNAPSHOT_FIGURES
from tests.support.fanout import ClientPool, http, metric_value
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RULES_FILE = Path(__file__).with_name("collector_alert_rules.toml")
COLLECTOR_ENV = {
    "REALTIME_PERSIST_INTERVAL_SECONDS": "0.5",
    "REALTIME_PUBLISH_INTERVAL_SECONDS": "0.5",
    "REALTIME_LEASE_TTL_SECONDS": "2",
}


def event(kind: str, n: int, **fields: Any) -> Outgoing:
    body = {"id": f"{kind}-{n}", "timestamp": iso(datetime.now(UTC)), **fields}
    return Outgoing("platform.events." + kind, body, body["id"])


async def snapshot_matching(nc: Client, wanted: dict[str, Any], *, seconds: float = 10) -> dict[str, Any]:
    """Wait until the snapshot in KV has every ``wanted`` value; return it."""

    async def probe() -> dict[str, Any] | None:
        snapshot = await stored_snapshot(nc)
        return snapshot if snapshot and all(snapshot.get(k) == v for k, v in wanted.items()) else None

    async def describe() -> str:
        return f"stored: {await stored_snapshot(nc)}, wanted: {wanted}"

    found: dict[str, Any] = await wait_until_async(probe, timeout=seconds, what="the snapshot", describe=describe)
    return found


# -- malformed events --------------------------------------------------------------------------


async def test_malformed_events_are_counted_dead_lettered_and_do_not_block_later_events(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    collector = collectors()
    await collector.astart()
    js = nc.jetstream()
    now = iso(datetime.now(UTC))
    bad: list[tuple[str, str, bytes]] = [  # (kind, subject, payload)
        ("not_json", "platform.events.user.registered", b"{this is not json"),
        ("missing_id", "platform.events.website.generated", json.dumps({"timestamp": now, "userId": "u1"}).encode()),
        (
            "bad_timestamp",
            "platform.events.user.active",
            json.dumps({"id": "bad-ts", "timestamp": "yesterday", "userId": "u1"}).encode(),
        ),
        (
            "bad_amount",
            "platform.events.payment.succeeded",
            json.dumps({"id": "no-amount", "timestamp": now, "userId": "u1", "currency": "USD"}).encode(),
        ),
        ("not_json", "platform.events.image.generated", b"\xff\xfe not utf-8"),
        (
            "other_currency",
            "platform.events.payment.succeeded",
            json.dumps({"id": "eur", "timestamp": now, "userId": "u1", "amount": 5, "currency": "EUR"}).encode(),
        ),
    ]
    log = PublishedEvents()
    registered = event("user.registered", 1, userId="u1")
    await log.publish(js, registered)
    for n, (_, subject, payload) in enumerate(bad):
        await js.publish(subject, payload, headers={"Nats-Msg-Id": f"bad-{n}"})
    # A producer retry with a new Nats-Msg-Id: stored again, counted once.
    await log.publish(js, Outgoing(registered.subject, registered.body, "retry-of-" + registered.msg_id))
    for good in (
        event("user.registered", 2, userId="u2"),
        event("payment.succeeded", 1, userId="u2", amount=19.99, currency="USD"),
        event("website.generated", 1, userId="u2", generationTime=2.5),
    ):
        await log.publish(js, good)

    last = await stream_last_seq(nc)
    assert last == 1 + len(bad) + 4
    await collector.wait_metric("collector_last_sequence", lambda v: v == last, seconds=10)

    # Counted by kind in /metrics.
    metrics = await collector.metrics_text()
    for kind in ("not_json", "missing_id", "bad_timestamp", "bad_amount", "other_currency"):
        wanted = sum(1 for k, _, _ in bad if k == kind)
        assert metric_value(metrics, "collector_events_total", type="invalid", outcome=kind) == wanted, kind
    assert metric_value(metrics, "collector_events_total", type="user.registered", outcome="counted") == 2
    assert metric_value(metrics, "collector_events_total", type="user.registered", outcome="duplicate") == 1
    assert metric_value(metrics, "collector_events_total", type="payment.succeeded", outcome="counted") == 1

    # Kept on platform.deadletter.<kind> with the reason and the original subject and payload.
    letters = await read_stream(nc, DEADLETTER_STREAM)
    assert [(m.subject, m.headers and m.headers.get("Realtime-Reason")) for m in letters] == [
        (f"platform.deadletter.{kind}", kind) for kind, _, _ in bad
    ]
    for message, (_, subject, payload) in zip(letters, bad, strict=True):
        assert message.headers is not None and message.headers["Realtime-Subject"] == subject
        assert message.data == payload

    # Logged once per kind (two not_json events, one line).
    warnings = re.findall(r"malformed event on \S+: (\w+)", collector.log())
    assert sorted(warnings) == sorted({kind for kind, _, _ in bad}), collector.log()[-2000:]

    # The good events before and after them all counted.
    expected = expected_figures([(s, b) for _, s, b in log.stored], now=datetime.now(UTC))
    assert expected.figures["totalUsers"] == 2 and expected.figures["totalRevenue"] == 19.99
    await snapshot_matching(nc, {**expected.figures, "averageGenerationTime": 2.5})


# -- seeding baselines -------------------------------------------------------------------------


async def run_seed(url: str, *args: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stats_collector",
        "seed",
        *args,
        "--nats-url",
        url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    printed: dict[str, Any] = json.loads(out)
    return printed


async def test_seed_sets_baselines_idempotently_under_the_counted_events(
    fresh_nats: NatsServer, nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    seed_args = ("--total-users", "5432", "--websites-generated", "1203")
    first = await run_seed(fresh_nats.url, *seed_args)  # before any collector ran: creates the bucket
    assert {k: v for k, v in first.items() if k != "seededAt"} == {"total_users": 5432, "websites_generated": 1203}

    collector = collectors()
    await collector.astart()
    js = nc.jetstream()
    log = PublishedEvents()
    for n in range(25):
        await log.publish(js, event("user.registered", n, userId=f"seeded-{n}"))
    for n in range(10):
        await log.publish(js, event("website.generated", n, userId="seeded-0", generationTime=3.0))
    again = await run_seed(fresh_nats.url, *seed_args)  # the same seed again changes no figure
    assert {**again, "seededAt": None} == {**first, "seededAt": None}

    wanted = {"totalUsers": 5432 + 25, "websitesGenerated": 1203 + 10, "newUsersToday": 25, "imagesGenerated": 0}
    await snapshot_matching(nc, wanted)
    await collector.wait_metric("collector_last_sequence", lambda v: v == 35)

    # Still the same after more publishes, and after a SIGKILL and restart (baseline not applied twice).
    await asyncio.sleep(1.2)
    assert {k: (await stored_snapshot(nc) or {}).get(k) for k in wanted} == wanted
    collector.kill()
    restarted = collectors()
    await restarted.astart()
    await log.publish(js, event("user.registered", 99, userId="after-restart"))
    await snapshot_matching(nc, {**wanted, "totalUsers": 5432 + 26, "newUsersToday": 26})

    # Seeding another value replaces the baseline while the collector runs.
    assert (await run_seed(fresh_nats.url, "--total-users", "6000"))["total_users"] == 6000
    await snapshot_matching(nc, {"totalUsers": 6000 + 26, "websitesGenerated": 1203 + 10})


# -- activeUsers <= totalUsers ------------------------------------------------------------------


async def test_activity_of_unknown_users_never_makes_more_active_users_than_users(
    fresh_nats: NatsServer, nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    # No baseline; five users active, two of them registered, one registration arriving after its activity.
    collector = collectors()
    await collector.astart()
    js = nc.jetstream()
    log = PublishedEvents()
    await log.publish(js, event("user.registered", 1, userId="known-1"))
    for n in range(5):
        await log.publish(js, event("user.active", n, userId=f"known-{n}" if n < 2 else f"unknown-{n}"))
    await log.publish(js, event("user.registered", 2, userId="known-0"))  # after its activity
    stored = await snapshot_matching(nc, {"totalUsers": 2, "activeUsers": 2})
    assert stored["activeUsers"] <= stored["totalUsers"]
    await collector.wait_metric("collector_active_users_beyond_total", lambda v: v == 3)
    await collector.wait_metric("collector_lag_seconds", lambda v: v == 0)  # caught up

    # A baseline accounts for the users from before the stream: all five count then.
    await run_seed(fresh_nats.url, "--total-users", "100")
    await snapshot_matching(nc, {"totalUsers": 102, "activeUsers": 5})
    await collector.wait_metric("collector_active_users_beyond_total", lambda v: v == 0)


# -- threshold alerts --------------------------------------------------------------------------


async def test_alert_fires_once_clears_once_and_a_flapping_metric_does_not_storm(
    nc: Client, collectors: Callable[..., CollectorProcess], fresh_gateway: GatewayProcess
) -> None:
    loop = asyncio.get_running_loop()
    async with ClientPool() as pool:
        client = await pool.connect(fresh_gateway.hub_url, admin_token(), label="alerts")
        await client.invoke("SubscribeToAlerts")
        await client.sync_with_broker()
        collector = collectors(REALTIME_ALERT_RULES_FILE=str(RULES_FILE))
        await collector.astart()
        assert "collector running (1 alert rules)" in collector.log()
        client.mark()
        sampler = Sampler(nc)
        try:
            # Above the threshold: one SystemAlert of the configured type and severity.
            sampler.level = 2500
            fired = await client.wait_event("SystemAlert", seconds=8)
            fired_at = loop.time()
            assert fired["type"] == "error" and fired["severity"] == "critical", fired
            for part in ("api_response_time_ms", "p95", "2500", "2000"):
                assert part in fired["message"], fired
            assert fired["data"] == {
                "rule": "test_api_latency_p95",
                "state": "firing",
                "metric": "api_response_time_ms",
                "aggregation": "p95",
                "windowSeconds": 2,
                "comparator": ">",
                "threshold": 2000,
                "value": 2500,
            }

            # Back below: one SystemAlert of type success.
            sampler.level = 100
            since = client.mark()
            resolved = await client.wait_event("SystemAlert", seconds=8)
            assert resolved["type"] == "success" and resolved["severity"] == "low", resolved
            assert resolved["data"]["state"] == "resolved" and resolved["data"]["value"] < 2000, resolved
            assert "api_response_time_ms" in resolved["message"] and "2000" in resolved["message"], resolved

            # Flapping inside the 8 s cooldown: short spikes that hold, then clear, again and again.
            spikes = 0
            while loop.time() - fired_at < 8 - 1.5:
                sampler.level = 3000
                await asyncio.sleep(0.3)
                sampler.level = 100
                spikes += 1
                await asyncio.sleep(min(2.2, max(0.0, 8 - 1.5 - (loop.time() - fired_at))))
            assert spikes >= 1
            assert client.events("SystemAlert", since=since) == [resolved], "no alert while flapping in cooldown"

            # Still high once the cooldown is over: it fires again, exactly once.
            sampler.level = 3000
            refired = await client.wait_event("SystemAlert", lambda a: a["type"] == "error", seconds=6, since=since)
            gap = _seconds(refired["timestamp"]) - _seconds(fired["timestamp"])
            assert gap >= 8 - 0.1, f"fired again {gap:.2f}s after the first firing (cooldown 8 s)"
            await asyncio.sleep(1.2)
        finally:
            await sampler.close()
        assert [a["type"] for a in client.events("SystemAlert", since=0)] == ["error", "success", "error"]
        metrics = await collector.metrics_text()
        assert metric_value(metrics, "collector_alerts_total", state="firing") == 2
        assert metric_value(metrics, "collector_alerts_total", state="resolved") == 1


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


# -- end to end: simulator -> collector -> gateway -> official JS client -----------------------


async def test_simulated_traffic_reaches_the_dashboard_with_the_numbers_of_the_events(
    fresh_nats: NatsServer, nc: Client, collectors: Callable[..., CollectorProcess], fresh_gateway: GatewayProcess
) -> None:
    async with ClientPool() as pool:
        client = await pool.connect(fresh_gateway.hub_url, admin_token(), label="dashboard")
        await client.invoke("SubscribeToAnalytics")
        await client.sync_with_broker()
        collector = collectors(REALTIME_PUBLISH_INTERVAL_SECONDS="1")
        await collector.astart()
        client.mark()

        simulator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stats_collector.simulate",
            "--nats-url",
            fresh_nats.url,
            "--rate",
            "50",
            "--duration",
            "3",
            "--seed",
            "7",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(simulator.communicate(), 20)
        assert simulator.returncode == 0, err.decode()
        found = re.search(r"published (\d+) events", err.decode())
        assert found is not None, err.decode()
        published = int(found.group(1))
        assert published > 50

        # Traffic stopped: the collector applies the whole stream, and its snapshot is what the events say.
        last = await stream_last_seq(nc)
        assert last == published
        await collector.wait_metric("collector_last_sequence", lambda v: v == last, seconds=10)
        events = [(m.subject, json.loads(m.data)) for m in await read_stream(nc, EVENTS_STREAM)]
        expected = expected_figures(events, now=datetime.now(UTC))
        assert expected.figures["totalUsers"] > 0 and expected.figures["totalRevenue"] > 0

        async def settled() -> dict[str, Any] | None:
            snapshot = await stored_snapshot(nc)
            return snapshot if not expected.mismatches(snapshot) else None

        async def describe() -> str:
            return f"mismatches (expected, stored): {expected.mismatches(await stored_snapshot(nc))}"

        stored = await wait_until_async(settled, timeout=10, what="the stored snapshot", describe=describe)
        # The simulator registers every user it makes active: the numbers agree without a baseline.
        assert 0 < stored["activeUsers"] <= stored["totalUsers"]
        assert stored["activeUsers"] == len({body["userId"] for _, body in events if body.get("userId")})

        # The dashboard got an AnalyticsUpdate with exactly these numbers, and a matching UserCountUpdate.
        update = await client.wait_event(
            "AnalyticsUpdate", lambda d: all(d.get(k) == stored[k] for k in SNAPSHOT_FIGURES), seconds=5
        )
        assert update["revenue"] == update["totalRevenue"] == expected.figures["totalRevenue"]
        for key in ("totalUsers", "activeUsers", "websitesGenerated", "imagesGenerated"):
            assert update[key] == expected.figures[key], key
        count_fields = ("totalUsers", "activeUsers", "newUsersToday")
        counts = await client.wait_event("UserCountUpdate", lambda d: all(d[k] == stored[k] for k in count_fields))
        assert set(counts) == {*count_fields, "timestamp"}, counts

        # Updates flowed while traffic ran (publish interval 1 s), never going backwards.
        updates = client.events("AnalyticsUpdate")
        assert len(updates) >= 2, updates
        totals = [u["totalUsers"] for u in updates]
        assert totals == sorted(totals), totals

        # The REST snapshot and the hub's GetPlatformStats answer the same numbers as the last update.
        answer = await http("GET", fresh_gateway.base_url, "platform-snapshot", token=admin_token())
        assert answer.status == 200, answer
        assert answer.json["data"] == stored
        last_update = client.events("AnalyticsUpdate")[-1]
        assert {k: last_update[k] for k in SNAPSHOT_FIGURES} == answer.json["data"]
        stats = await client.invoke("GetPlatformStats")
        assert {k: stats[k] for k in SNAPSHOT_FIGURES if k in stats} == {
            k: stored[k] for k in SNAPSHOT_FIGURES if k in stats
        }
