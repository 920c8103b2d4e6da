"""The collector at production volume and under production faults (real JetStream nats-server, real processes).

* 100,000 distinct users and 100,000 ids inside the dedup window (a state of several MB) are saved while
  they arrive, survive a SIGKILL, and the figures end exact, re-sent ids counting once;
* duplicates are decided by arrival: a two-day-old event re-sent a second later counts once;
* an event stamped in 2099 is dead-lettered and moves no window;
* a range purged from the stream before it was read raises one SystemAlert and marks the snapshot
  (KV, REST and GetPlatformStats) incomplete until a new baseline is seeded;
* of two replicas one is active; SIGKILL it and the standby takes over within 10 s with exact figures;
* ``/healthz`` answers 200 while NATS is down.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from scripts.processes import NatsServer, wait_until_async
from tests.support.collector import (
    CollectorProcess,
    Outgoing,
    expected_figures,
    iso,
    kv_json,
    read_stream,
    saved_state,
    stored_snapshot,
    stored_snapshot_record,
    stream_last_seq,
)
from tests.support.fanout import ClientPool, http
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

COLLECTOR_ENV = {
    "REALTIME_PERSIST_INTERVAL_SECONDS": "0.5",
    "REALTIME_PUBLISH_INTERVAL_SECONDS": "0.5",
    "REALTIME_LEASE_TTL_SECONDS": "2",
}
ALERTS_SUBJECT = "realtime.group.alerts"


class Stream:
    """Publishes events and keeps what JetStream stored, for figures computed independently."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.stored: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, events: Sequence[Outgoing], *, concurrency: int = 500) -> None:
        for start in range(0, len(events), concurrency):
            chunk = events[start : start + concurrency]
            acks = await asyncio.gather(
                *(
                    self.js.publish(
                        e.subject, json.dumps(e.body).encode(), headers={"Nats-Msg-Id": e.msg_id}, timeout=30
                    )
                    for e in chunk
                )
            )
            stored = sorted((int(ack.seq), e) for ack, e in zip(acks, chunk, strict=True) if not ack.duplicate)
            self.stored.extend((e.subject, e.body) for _, e in stored)

    def expected(self, **base: int) -> dict[str, Any]:
        return expected_figures(self.stored, now=datetime.now(UTC), **base).figures


def one_user_each(count: int, prefix: str, *, at: datetime | None = None) -> list[Outgoing]:
    """``count`` events, each of its own user: registrations, activity, generations and payments."""
    kinds = ("user.registered", "user.active", "website.generated", "image.generated", "payment.succeeded")
    events = []
    for n in range(count):
        kind = kinds[n % len(kinds)]
        body: dict[str, Any] = {
            "id": f"{prefix}-{n}",
            "timestamp": iso(at or datetime.now(UTC)),
            "userId": f"{prefix}-u{n}",
        }
        if kind == "website.generated":
            body["generationTime"] = round(1 + (n % 97) / 10, 2)
        elif kind == "payment.succeeded":
            body.update(amount=(0.1, 19.99, 0.07)[n % 3], currency="USD")
        events.append(Outgoing("platform.events." + kind, body, body["id"]))
    return events


def resent(events: Sequence[Outgoing], *, tag: str = "again") -> list[Outgoing]:
    """The same events under another Nats-Msg-Id: JetStream stores them, the collector must not count them."""
    return [Outgoing(e.subject, e.body, f"{e.msg_id}-{tag}") for e in events]


async def figures_equal(nc: Client, expected: dict[str, Any], *, seconds: float = 30) -> None:
    async def matches() -> bool:
        snapshot = await stored_snapshot(nc) or {}
        return all(snapshot.get(key) == value for key, value in expected.items())

    async def describe() -> str:
        snapshot = await stored_snapshot(nc) or {}
        return str({key: (value, snapshot.get(key)) for key, value in expected.items() if snapshot.get(key) != value})

    await wait_until_async(matches, timeout=seconds, what="the stored figures", interval=0.1, describe=describe)


async def caught_up(nc: Client, collector: CollectorProcess, *, seconds: float = 30) -> None:
    last = await stream_last_seq(nc)
    await collector.wait_metric("collector_last_sequence", lambda v: v == last, seconds=seconds, interval=0.1)


async def a_started_collector(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> tuple[CollectorProcess, Stream]:
    collector = collectors()
    await collector.astart()
    return collector, Stream(nc.jetstream())


async def an_incomplete_snapshot(nc: Client) -> dict[str, Any]:
    """The stored snapshot record, once the collector has marked it incomplete."""

    async def incomplete() -> dict[str, Any] | None:
        record = await stored_snapshot_record(nc)
        return record if record and record.get("complete") is False else None

    return await wait_until_async(incomplete, timeout=15, what="an incomplete snapshot")


# -- volume --------------------------------------------------------------------------------------------------


async def test_100k_users_and_ids_in_the_window_are_saved_survive_sigkill_and_stay_exact(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    first, stream = await a_started_collector(nc, collectors)
    events = one_user_each(100_000, "vol")
    publishing = asyncio.create_task(stream.publish(events))
    try:
        # The checkpoint covers more than 50,000 ids and users inside their windows: the one-value state of
        # several MB that NATS refuses (max_payload 1 MB) is now a small checkpoint and journal records.
        async def saved_past_half() -> bool:
            saved = await saved_state(nc)
            return saved is not None and saved["sequence"] >= 50_000

        await wait_until_async(saved_past_half, timeout=60, what="a checkpoint past 50,000 events", interval=0.1)
        first.kill()
        checkpoint = await kv_json(nc, "COLLECTOR_STATE", "checkpoint")
        assert checkpoint is not None and len(json.dumps(checkpoint[0])) < 2048
        assert checkpoint[0]["sequence"] < 100_000, "the kill should land before the end of the stream"
        await publishing
    finally:
        publishing.cancel()

    second = collectors()
    await second.astart(seconds=60)
    # Ids from before the kill, re-sent now, are duplicates: the journal brought them back.
    await stream.publish(resent(events[:40_000:20]))
    await caught_up(nc, second, seconds=60)
    expected = stream.expected()
    # 100,000 distinct users active, 20,000 registered: activeUsers stops at totalUsers, and every one of
    # the 100,000 survived the kill (the 80,000 beyond are still counted, in their own gauge).
    assert expected["activeUsers"] == 20_000 and expected["totalUsers"] == 20_000
    await figures_equal(nc, expected)
    assert await second.metric("collector_active_users_beyond_total") == 80_000
    assert await second.metric("collector_events_total", outcome="duplicate") == 2_000
    largest = await second.metric("collector_largest_kv_write_bytes")
    assert 0 < largest <= 131_072, largest


# -- duplicates and timestamps -------------------------------------------------------------------------------


async def test_a_two_day_old_event_resent_a_second_later_counts_once(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    collector, stream = await a_started_collector(nc, collectors)
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    late = one_user_each(5, "late", at=two_days_ago)
    await stream.publish([*one_user_each(5, "fresh"), *late])
    await caught_up(nc, collector)
    started = time.monotonic()
    await stream.publish(resent(late))  # a publisher retry without the original Nats-Msg-Id
    assert time.monotonic() - started < 5
    await caught_up(nc, collector)
    await figures_equal(nc, stream.expected())
    assert await collector.metric("collector_events_total", outcome="duplicate") == 5


async def test_an_event_from_2099_is_dead_lettered_and_later_duplicates_still_count_once(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    collector, stream = await a_started_collector(nc, collectors)
    before = one_user_each(10, "before")
    await stream.publish(before)
    future = Outgoing(
        "platform.events.payment.succeeded",
        {"id": "f-1", "timestamp": "2099-01-01T00:00:00Z", "userId": "tt", "amount": 1e6, "currency": "USD"},
        "f-1",
    )
    await stream.publish([future])
    await stream.publish(resent(before))
    await caught_up(nc, collector)
    counted = [(subject, body) for subject, body in stream.stored if body["id"] != "f-1"]
    expected = expected_figures(counted, now=datetime.now(UTC)).figures
    await figures_equal(nc, expected)
    assert await collector.metric("collector_events_total", outcome="duplicate") == 10
    assert await collector.metric("collector_events_total", type="invalid", outcome="future_timestamp") == 1
    letters = await read_stream(nc, "PLATFORM_DEADLETTER")
    assert [(m.headers or {}).get("Realtime-Reason") for m in letters] == ["future_timestamp"]
    assert json.loads(letters[0].data)["id"] == "f-1"


# -- gaps ----------------------------------------------------------------------------------------------------


async def test_a_purged_range_raises_one_alert_and_marks_the_figures_incomplete_until_seeded(
    fresh_nats: NatsServer, nc: Client, collectors: Callable[..., CollectorProcess], fresh_gateway: GatewayProcess
) -> None:
    alerts: list[dict[str, Any]] = []

    async def on_alert(message: Msg) -> None:
        envelope = json.loads(message.data)
        if envelope["target"] == "SystemAlert":
            alerts.append(envelope["arguments"][0])

    await nc.subscribe(ALERTS_SUBJECT, cb=on_alert)
    first, stream = await a_started_collector(nc, collectors)
    await stream.publish(one_user_each(10, "kept"))
    await caught_up(nc, first)
    assert await first.astop() == 0
    # While no collector runs, 20 events arrive and the stream loses 15 of them (a purge, limits, a restore).
    await stream.publish(one_user_each(20, "lost"))
    await stream.js.purge_stream("PLATFORM_EVENTS", seq=26)
    second = collectors()
    await second.astart()
    await caught_up(nc, second)

    record = await an_incomplete_snapshot(nc)
    gap = {"firstSequence": 11, "lastSequence": 25, "missing": 15}
    assert {key: record["gap"][key] for key in gap} == gap
    await wait_until_async(lambda: _true(bool(alerts)), timeout=10, what="the gap alert")
    assert len(alerts) == 1
    assert (alerts[0]["type"], alerts[0]["severity"]) == ("error", "high")
    assert alerts[0]["data"] == {"firstSequence": 11, "lastSequence": 25, "missing": 15}
    assert "11..25" in alerts[0]["message"]
    assert await second.metric("collector_missing_events_total") == 15
    assert "stream sequences 11..25 were gone" in second.log()

    answer = await http("GET", fresh_gateway.base_url, "platform-snapshot", token=admin_token())
    assert answer.status == 200 and answer.json["complete"] is False, answer
    assert {key: answer.json["gap"][key] for key in gap} == gap
    assert set(answer.json) == {"timestamp", "data", "complete", "gap"}
    async with ClientPool() as pool:
        client = await pool.connect(fresh_gateway.hub_url, admin_token(), label="stats")
        stats = await client.invoke("GetPlatformStats")
        assert stats["complete"] is False and stats["gap"]["missing"] == 15

    # The figures are the events that were read; a new baseline makes them complete again, with no second alert.
    read = [(s, b) for s, b in stream.stored if not b["id"].startswith("lost-") or int(b["id"].split("-")[1]) >= 15]
    await figures_equal(nc, expected_figures(read, now=datetime.now(UTC)).figures)
    process = await asyncio.create_subprocess_exec(
        *_seed_command(fresh_nats.url, "--total-users", "100"),
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(process.wait(), 20) == 0

    async def complete() -> bool:
        record = await stored_snapshot_record(nc)
        return bool(record and record.get("complete") is True and "gap" not in record)

    await wait_until_async(complete, timeout=15, what="a complete snapshot after seeding")
    answer = await http("GET", fresh_gateway.base_url, "platform-snapshot", token=admin_token())
    assert set(answer.json) == {"timestamp", "data"}
    assert len(alerts) == 1


async def test_a_replaced_stream_that_ends_before_the_checkpoint_is_a_gap_and_new_events_count(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    first, stream = await a_started_collector(nc, collectors)
    await stream.publish(one_user_each(10, "old"))
    await caught_up(nc, first)
    await figures_equal(nc, stream.expected())
    assert await first.astop() == 0
    await stream.js.delete_stream("PLATFORM_EVENTS")  # a restore from an older backup, or a re-created stream
    second = collectors()
    await second.astart()
    await stream.publish(one_user_each(3, "new"))
    await caught_up(nc, second)
    assert "ends at sequence 0, before the 10 already read" in second.log()

    record = await an_incomplete_snapshot(nc)
    assert {key: record["gap"][key] for key in ("firstSequence", "lastSequence", "missing")} == {
        "firstSequence": 1,
        "lastSequence": 10,
        "missing": 10,
    }
    await figures_equal(nc, stream.expected())  # the old events stay counted, the new ones are added


def _seed_command(url: str, *args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "stats_collector", "seed", "--nats-url", url, *args]


async def _true(value: bool) -> bool:
    return value


# -- availability --------------------------------------------------------------------------------------------


async def test_the_standby_takes_over_within_10_s_of_a_sigkill_with_exact_figures(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    env = {**COLLECTOR_ENV, "REALTIME_LEASE_TTL_SECONDS": "5"}  # the production default
    replicas = [collectors(**env), collectors(**env)]
    for replica in replicas:
        await replica.astart()

    async def the_active() -> CollectorProcess | None:
        roles = [await replica.metric("collector_active") for replica in replicas]
        return replicas[roles.index(1)] if sorted(roles) == [0, 1] else None

    active = await wait_until_async(the_active, timeout=10, what="one active replica and one standby")
    standby = next(replica for replica in replicas if replica is not active)
    stream = Stream(nc.jetstream())
    events = [*one_user_each(3000, "ha"), *resent(one_user_each(3000, "ha")[::10])]
    random.Random(7).shuffle(events)
    await stream.publish(events[:2000])
    await caught_up(nc, standby)
    await figures_equal(nc, stream.expected())
    assert await standby.metric("collector_last_publish_timestamp_seconds") == 0, "a standby publishes nothing"

    publishing = asyncio.create_task(_publish_paced(stream, events[2000:]))
    await asyncio.sleep(0.3)
    active.kill()
    killed_at = time.monotonic()
    await standby.wait_metric("collector_active", lambda v: v == 1, seconds=12, interval=0.05)
    took_over = time.monotonic() - killed_at
    assert took_over < 10, f"the standby took {took_over:.1f} s"
    await publishing
    await caught_up(nc, standby)
    await figures_equal(nc, stream.expected())
    assert await standby.metric("collector_events_total", outcome="duplicate") == 300


async def _publish_paced(stream: Stream, events: Sequence[Outgoing]) -> None:
    for start in range(0, len(events), 100):
        await stream.publish(events[start : start + 100])
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fresh_nats", [{}], indirect=True)
async def test_healthz_answers_while_nats_is_down_and_readiness_follows_nats(
    fresh_nats: NatsServer, collectors: Callable[..., CollectorProcess]
) -> None:
    fresh_nats.kill()
    collector = collectors()
    await asyncio.to_thread(collector.start, wait_ready=False)  # returns once /healthz answers 200
    for _ in range(3):
        assert await asyncio.to_thread(collector.probe, "/healthz") == 200
        assert await asyncio.to_thread(collector.probe, "/readyz") == 503
    fresh_nats.start()

    async def ready() -> bool:
        return await asyncio.to_thread(collector.probe, "/readyz") == 200

    await wait_until_async(ready, timeout=30, what="/readyz once NATS is back", interval=0.2)
    client = await nats.connect(fresh_nats.url)
    try:
        stream = Stream(client.jetstream())
        await stream.publish(one_user_each(10, "back"))
        await caught_up(client, collector)
    finally:
        await client.close()
