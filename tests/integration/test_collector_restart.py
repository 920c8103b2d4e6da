"""The stats collector stays exact across SIGKILL and SIGTERM (real nats-server with JetStream, real processes).

Thousands of events stamped now (so daily and active-window figures are known) are published while the
collector consumes them; it is killed and restarted, and the snapshot it finally stores must equal the
figures computed here directly from what was published: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from scripts.processes import NatsServer, wait_until_async
from tests.support.collector import (
    CHECKPOINT_KEY,
    STATE_BUCKET,
    CollectorProcess,
    Outgoing,
    PublishedEvents,
    expected_figures,
    kv_json,
    make_events,
    saved_state,
    stored_snapshot,
    stream_last_seq,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
# For tests whose collector starts before JetStream exists: the test's own nats-server starts without it.
WITHOUT_JETSTREAM = pytest.mark.parametrize("fresh_nats", [{"jetstream": False}], indirect=True, ids=["no-jetstream"])

# Small fetches, frequent saves and publishes: a kill always lands between saves with work in flight.
COLLECTOR_ENV = {
    "REALTIME_PERSIST_INTERVAL_SECONDS": "0.3",
    "REALTIME_PUBLISH_INTERVAL_SECONDS": "0.5",
    "REALTIME_FETCH_BATCH": "20",
    "REALTIME_LEASE_TTL_SECONDS": "2",
}


async def publish_paced(js: JetStreamContext, events: list[Outgoing], log: PublishedEvents) -> None:
    """About 4 s for 4000 events, so the collector is always consuming a live stream."""
    for start in range(0, len(events), 100):
        for event in events[start : start + 100]:
            await log.publish(js, event)
        await asyncio.sleep(0.08)


async def wait_consumed_and_published(
    nc: Client, collector: CollectorProcess, log: PublishedEvents, *, seconds: float = 15
) -> dict[str, object]:
    """Wait until the collector applied the whole stream and stored the matching snapshot; return it."""
    last = await stream_last_seq(nc)
    assert last == log.last_seq == len(log.stored)
    await collector.wait_metric("collector_last_sequence", lambda v: v == last, seconds=seconds)
    expected = expected_figures([(s, b) for _, s, b in log.stored], now=datetime.now(UTC))

    async def matches() -> bool:
        return not expected.mismatches(await stored_snapshot(nc))

    async def describe() -> str:
        return f"mismatches (expected, stored): {expected.mismatches(await stored_snapshot(nc))}"

    await wait_until_async(
        matches, timeout=10, what="the stored snapshot to equal the published events", describe=describe
    )
    snapshot = await stored_snapshot(nc)
    assert snapshot is not None
    return snapshot


async def test_sigkill_mid_stream_and_right_after_a_save_loses_and_double_counts_nothing(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    js = nc.jetstream()
    events = make_events(4000, random.Random(4000))
    log = PublishedEvents()

    first = collectors()
    await first.astart()
    publishing = asyncio.create_task(publish_paced(js, events, log))
    try:
        # 1. SIGKILL in the middle of the stream, with events still arriving.
        await first.wait_metric("collector_last_sequence", lambda v: v >= 400, seconds=15)
        first.kill()
        assert not publishing.done(), "the kill should land while events are still being published"
        saved = await saved_state(nc)
        saved_seq = saved["sequence"] if saved else 0

        # 2. Restart: it resumes right after the saved sequence.
        second = collectors()
        await second.astart()
        assert f"resuming after stream sequence {saved_seq}" in second.log() or saved_seq == 0, second.log()

        # 3. SIGKILL right after a save (a new revision of COLLECTOR_STATE/aggregate).
        found = await kv_json(nc, STATE_BUCKET, CHECKPOINT_KEY)
        before = found[1] if found else 0

        async def new_save() -> bool:
            found = await kv_json(nc, STATE_BUCKET, CHECKPOINT_KEY)
            return found is not None and found[1] > before

        await wait_until_async(new_save, timeout=10, what="the restarted collector to save", interval=0.005)
        second.kill()
        saved_after = await saved_state(nc)
        assert saved_after is not None
        saved_seq = saved_after["sequence"]

        # 4. Restart again and let everything arrive.
        third = collectors()
        await third.astart()
        assert f"resuming after stream sequence {saved_seq}" in third.log(), third.log()
        await asyncio.wait_for(publishing, 30)
    finally:
        publishing.cancel()

    assert saved_seq < log.last_seq, "the second kill should leave events to apply after the restart"
    # JetStream dropped the same-Nats-Msg-Id copies; the retried copies (new Nats-Msg-Id) reached the stream.
    assert log.dropped_by_jetstream == 200
    ids = Counter(body["id"] for _, _, body in log.stored)
    assert len(log.stored) == 4000 + 120 and sum(1 for n in ids.values() if n == 2) == 120

    snapshot = await wait_consumed_and_published(nc, third, log)
    assert snapshot["totalUsers"] > 0 and snapshot["totalRevenue"] > 0 and snapshot["activeUsers"] > 0
    await wait_until_async(
        lambda: _saved_seq_is(nc, log.last_seq), timeout=5, what="the final sequence to be saved", interval=0.05
    )


async def _saved_seq_is(nc: Client, seq: int) -> bool:
    saved = await saved_state(nc)
    return saved is not None and saved["sequence"] == seq


async def test_sigterm_saves_and_publishes_exactly_what_was_applied_and_exits_0(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    js = nc.jetstream()
    events = make_events(3000, random.Random(3000), prefix="term")
    log = PublishedEvents()
    # No periodic save or publish before the stop: what KV holds afterwards was written by the SIGTERM path.
    collector = collectors(REALTIME_PERSIST_INTERVAL_SECONDS="600", REALTIME_PUBLISH_INTERVAL_SECONDS="600")
    await collector.astart()
    for event in events[:1500]:
        await log.publish(js, event)
    await collector.wait_metric("collector_last_sequence", lambda v: v == log.last_seq, seconds=15)
    assert await saved_state(nc) is None and await stored_snapshot(nc) is None

    code = await collector.astop()
    assert code == 0, collector.log()[-3000:]
    found = re.findall(r"collector stopped at stream sequence (\d+)", collector.log())
    assert found == [str(log.last_seq)], collector.log()[-3000:]
    stopped = log.last_seq

    # The saved sequence is the last one it applied; the saved counts and the last snapshot are exactly
    # the events up to it.
    saved = await saved_state(nc)
    assert saved is not None and saved["sequence"] == stopped
    expected = expected_figures(log.up_to(stopped), now=datetime.now(UTC))
    assert expected.mismatches(await stored_snapshot(nc)) == {}
    counts = saved["counts"]
    assert counts["registeredUsers"] == expected.figures["totalUsers"]
    assert counts["revenueCents"] == round(expected.figures["totalRevenue"] * 100)

    # Events published while it is down are picked up by the next collector, from right after `stopped`.
    for event in events[1500:]:
        await log.publish(js, event)
    successor = collectors()
    await successor.astart()
    assert f"resuming after stream sequence {stopped}" in successor.log(), successor.log()
    await wait_consumed_and_published(nc, successor, log)


async def _publish_backlog(js: JetStreamContext, count: int) -> None:
    body = {"timestamp": "2026-01-01T00:00:00.000Z", "userId": "backlog-user"}
    for start in range(0, count, 1000):
        await asyncio.gather(
            *(
                js.publish(
                    "platform.events.user.active",
                    json.dumps({**body, "id": f"backlog-{n}"}).encode(),
                    headers={"Nats-Msg-Id": f"backlog-{n}"},
                    timeout=10,
                )
                for n in range(start, start + 1000)
            )
        )


async def test_sigterm_while_reading_a_backlog_exits_0_promptly(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    first = collectors()
    await first.astart()  # creates the stream
    first.kill()
    await _publish_backlog(nc.jetstream(), 10_000)
    reached = 0.0
    for attempt in range(1, 4):
        collector = collectors(REALTIME_FETCH_BATCH="256")
        await collector.astart()
        reached = await collector.wait_metric(
            "collector_last_sequence", lambda v, floor=reached: v > floor, interval=0.005
        )
        assert collector.child is not None
        collector.child.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(collector.child.wait, timeout=3)
        if code is None:
            state = "still reading: the cancellation was lost" if await _serving(collector) else "draining NATS"
            raise AssertionError(f"attempt {attempt}: still running 3 s after SIGTERM ({state})")
        assert code == 0, collector.log()[-2000:]
        assert "DrainTimeoutError" not in collector.log()


async def _serving(collector: CollectorProcess) -> bool:
    try:
        await collector.metrics_text()
    except (OSError, TimeoutError, aiohttp.ClientError, AssertionError):
        return False
    return True


async def test_a_resumed_collector_reports_its_saved_sequence_in_metrics(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    js = nc.jetstream()
    log = PublishedEvents()
    first = collectors()
    await first.astart()
    for event in make_events(5, random.Random(5), prefix="gauge"):
        await log.publish(js, event)
    await first.wait_metric("collector_last_sequence", lambda v: v == log.last_seq)
    await wait_until_async(lambda: _saved_seq_is(nc, log.last_seq), timeout=5, what="the save")
    first.kill()
    second = collectors()
    await second.astart()
    await second.wait_metric("collector_last_sequence", lambda v: v == log.last_seq, seconds=2)


async def test_a_replayed_malformed_event_is_dead_lettered_once(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    js = nc.jetstream()
    # No save before the kill, so the restarted collector replays the stream from the start.
    first = collectors(REALTIME_PERSIST_INTERVAL_SECONDS="600")
    await first.astart()
    await js.publish("platform.events.user.registered", b"not json", headers={"Nats-Msg-Id": "bad-1"})
    await first.wait_metric("collector_events_total", lambda v: v == 1, type="invalid", outcome="not_json")
    assert await stream_last_seq(nc, "PLATFORM_DEADLETTER") == 1
    first.kill()
    second = collectors()
    await second.astart()
    await second.wait_metric("collector_last_sequence", lambda v: v == 1)
    assert await stream_last_seq(nc, "PLATFORM_DEADLETTER") == 1


@pytest.fixture
async def waiting_collector(collectors: Callable[..., CollectorProcess]) -> CollectorProcess:
    """A collector started while its nats-server has no JetStream (tests mark themselves ``WITHOUT_JETSTREAM``):
    up, not ready, and retrying."""
    collector = collectors()
    await asyncio.to_thread(collector.start, wait_ready=False)
    await wait_until_async(lambda: _logged(collector, "JetStream not ready"), timeout=10, what="the retry warning")
    return collector


@WITHOUT_JETSTREAM
async def test_the_collector_waits_for_jetstream_then_starts_and_counts(
    fresh_nats: NatsServer, waiting_collector: CollectorProcess
) -> None:
    """No JetStream at start: the collector stays up, not ready, and retries; once JetStream is there it runs."""
    collector = waiting_collector
    assert collector.probe("/readyz") == 503
    fresh_nats.kill()
    fresh_nats.start(jetstream=True)
    await wait_until_async(lambda: _status_is(collector, "/readyz", 200), timeout=20, what="/readyz after JetStream")
    client = await nats.connect(fresh_nats.url)
    try:
        published = PublishedEvents()
        for event in make_events(20, random.Random(20), prefix="late"):
            await published.publish(client.jetstream(), event)
        await collector.wait_metric("collector_last_sequence", lambda v: v == published.last_seq)
    finally:
        await client.close()
    assert await collector.astop() == 0
    assert "Traceback" not in collector.log()


@WITHOUT_JETSTREAM
async def test_sigterm_while_waiting_for_jetstream_exits_0_promptly(waiting_collector: CollectorProcess) -> None:
    assert await waiting_collector.astop(seconds=3) == 0
    assert "Traceback" not in waiting_collector.log()


async def _logged(collector: CollectorProcess, text: str) -> bool:
    return text in collector.log()


async def _status_is(collector: CollectorProcess, path: str, status: int) -> bool:
    return await asyncio.to_thread(collector.probe, path) == status


async def test_an_upgrade_from_the_single_value_state_keeps_the_figures_and_drops_the_old_value(
    nc: Client, collectors: Callable[..., CollectorProcess]
) -> None:
    js = nc.jetstream()
    first = collectors()
    await first.astart()  # creates the stream and buckets
    assert await first.astop() == 0
    await (await js.key_value(STATE_BUCKET)).delete(CHECKPOINT_KEY)
    counts = {
        "registeredUsers": 7,
        "websitesGenerated": 0,
        "imagesGenerated": 0,
        "failedGenerations": 0,
        "revenueCents": 1234,
        "generationMicros": 0,
        "timedGenerations": 0,
    }
    baseline = {key: 0 for key in ("totalUsers", "websitesGenerated", "imagesGenerated", "failedGenerations")}
    state = {
        "version": 1,
        "currency": "USD",
        "baseline": {**baseline, "totalRevenueCents": 0},
        "counts": counts,
        "days": {},
        "activeUsers": {},
        "seenIds": {"old-1": 0},
        "newestEventMicros": None,
        "lastNowMicros": int(datetime.now(UTC).timestamp() * 1_000_000),
    }
    await (await js.key_value(STATE_BUCKET)).put("aggregate", json.dumps({"seq": 0, "state": state}).encode())
    upgraded = collectors()
    await upgraded.astart()
    assert "converted the single-value state at stream sequence 0" in upgraded.log()
    log = PublishedEvents()
    await log.publish(
        js,
        Outgoing(
            "platform.events.user.registered", {"id": "old-1", "timestamp": "2026-01-01T00:00:00Z", "userId": "x"}, "m1"
        ),
    )
    await log.publish(
        js,
        Outgoing(
            "platform.events.user.registered", {"id": "new-1", "timestamp": "2026-01-01T00:00:00Z", "userId": "y"}, "m2"
        ),
    )
    await upgraded.wait_metric("collector_last_sequence", lambda v: v == 2)

    async def figures() -> bool:
        snapshot = await stored_snapshot(nc) or {}
        return snapshot.get("totalUsers") == 8 and snapshot.get("totalRevenue") == 12.34

    await wait_until_async(figures, timeout=10, what="the converted figures plus one new registration")
    await wait_until_async(lambda: _saved_seq_is(nc, 2), timeout=5, what="the first checkpoint")
    assert await kv_json(nc, STATE_BUCKET, "aggregate") is None
