"""Analytics history on open: the collector keeps every snapshot it publishes in PLATFORM_SNAPSHOTS, and any
gateway replica answers ``GetAnalyticsHistory(minutes)`` and ``GET analytics/history?minutes=N`` from it.

Real processes: nats-server, ``python -m stats_collector``, ``python -m gateway``; the hub is called with the
official @microsoft/signalr client under Node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from broker_bridge.snapshot_stream import SNAPSHOTS_STREAM, snapshots_stream_config
from broker_bridge.subjects import SNAPSHOTS_SUBJECT
from gateway.hub.history import MAX_ANSWER_POINTS, epoch_ms
from scripts.processes import NatsServer, wait_until_async
from shared.models import PlatformSnapshot, encode_snapshot_record
from shared.timeutil import iso_utc
from tests.support.collector import CollectorProcess, stored_snapshot_record
from tests.support.fanout import ClientPool, HttpAnswer, HubInvocationError, http
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token, make_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

log = logging.getLogger(__name__)

WAIT_SECONDS = 30
SNAPSHOTS_WANTED = 8
# The collector publishes every 0.2 s whether or not the figures changed (heartbeat = interval).
QUICK_COLLECTOR = {"REALTIME_PUBLISH_INTERVAL_SECONDS": "0.2", "REALTIME_HEARTBEAT_SECONDS": "0.2"}
DAY_OF_5_SECOND_SNAPSHOTS = 17_280
ANSWER_BUDGET_MS = 200
PROBLEM_JSON = "application/problem+json"
RANGE_TEXT = "The field minutes must be between 1 and 1440."


@pytest.fixture(scope="module")
def collector(module_nats: NatsServer) -> Iterator[CollectorProcess]:
    process = CollectorProcess(module_nats.url, env=QUICK_COLLECTOR)
    process.start(seconds=WAIT_SECONDS)
    yield process
    process.kill()


@pytest.fixture(scope="module")
def gateway_nats(module_nats: NatsServer) -> NatsServer:
    return module_nats


@pytest.fixture
async def admin(module_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(module_nats.url)
    yield client
    await client.close()


async def stored_count(client: Client) -> int:
    return int((await client.jetstream().stream_info(SNAPSHOTS_STREAM)).state.messages)


async def rest_history(gateway: GatewayProcess, minutes: Any, *, token: str | None = None) -> HttpAnswer:
    query = "" if minutes is None else f"?minutes={minutes}"
    return await http("GET", gateway.base_url, f"analytics/history{query}", token=token or admin_token())


def times_of(answer: dict[str, Any]) -> list[int]:
    return [epoch_ms(point["timestamp"]) for point in answer["points"]]


async def test_the_history_of_published_snapshots_via_hub_and_rest_on_any_replica(
    collector: CollectorProcess, gateway_factory: Any, admin: Client
) -> None:
    first = gateway_factory()
    # The collector creates the stream and appends each snapshot it publishes.
    await wait_until_async(
        lambda: _has_at_least(admin, SNAPSHOTS_WANTED), timeout=WAIT_SECONDS, what="snapshots in the stream"
    )
    events = admin.jetstream()
    for n in range(3):
        body = {"id": str(uuid.uuid4()), "userId": f"history-{n}", "timestamp": iso_utc()}
        await events.publish("platform.events.user.registered", json.dumps(body).encode())

    async def counted_three() -> bool:
        record = await stored_snapshot_record(admin)
        return record is not None and record["data"]["totalUsers"] == 3

    await wait_until_async(counted_three, timeout=WAIT_SECONDS, what="the collector to count 3 registrations")
    # Stop it (SIGTERM: it publishes once more and exits), so every replica holds the very same history.
    assert await collector.astop() == 0
    stored = await stored_count(admin)
    latest = await stored_snapshot_record(admin)
    assert latest is not None

    async with ClientPool() as pool:
        dashboard = await pool.connect(first.hub_url, admin_token())

        async def hub_has_all() -> dict[str, Any] | None:
            answer: dict[str, Any] = await dashboard.invoke("GetAnalyticsHistory", 30)
            return answer if len(answer["points"]) == stored else None

        by_hub = await wait_until_async(hub_has_all, timeout=WAIT_SECONDS, what="every stored snapshot via the hub")
        assert by_hub is not None
        assert by_hub["minutes"] == 30 and by_hub["complete"] is True and by_hub["bucketSeconds"] == 0
        assert times_of(by_hub) == sorted(times_of(by_hub))
        assert by_hub["points"][-1] == {"timestamp": latest["timestamp"], **latest["data"]}
        assert [point["totalUsers"] for point in by_hub["points"]][-1] == 3
        assert epoch_ms(by_hub["from"]) == epoch_ms(by_hub["timestamp"]) - 30 * 60_000

        by_rest = await rest_history(first, 30)
        assert by_rest.status == 200 and by_rest.content_type == "application/json", by_rest
        assert by_rest.json["points"] == by_hub["points"]

        # A replica started after every snapshot was published answers with them too, by hub and by REST.
        late = gateway_factory()
        late_dashboard = await pool.connect(late.hub_url, admin_token())
        from_late = await late_dashboard.invoke("GetAnalyticsHistory", 30)
        assert from_late["complete"] is True and from_late["points"] == by_hub["points"]
        assert (await rest_history(late, 30)).json["points"] == by_hub["points"]

        # A one-minute window holds no more than the last minute.
        last_minute = await dashboard.invoke("GetAnalyticsHistory", 1)
        assert all(moment >= epoch_ms(last_minute["from"]) for moment in times_of(last_minute))


async def _has_at_least(client: Client, count: int) -> bool:
    try:
        return await stored_count(client) >= count
    except nats.js.errors.NotFoundError:
        return False


async def test_bad_minutes_are_refused_by_the_hub_and_by_rest(gateway: GatewayProcess) -> None:
    async with ClientPool() as pool:
        dashboard = await pool.connect(gateway.hub_url, admin_token())
        prefix = "An unexpected error occurred invoking 'GetAnalyticsHistory' on the server. HubException: "
        for minutes in (0, 1441, -30):
            with pytest.raises(HubInvocationError) as refused:
                await dashboard.invoke("GetAnalyticsHistory", minutes)
            assert refused.value.message == prefix + RANGE_TEXT
        for arguments in ((1.5,), ("30",), (None,), ()):
            with pytest.raises(HubInvocationError) as wrong:
                await dashboard.invoke("GetAnalyticsHistory", *arguments)
            assert wrong.value.message == "Failed to invoke 'GetAnalyticsHistory' due to an error on the server."
        assert (await dashboard.invoke("GetAnalyticsHistory", 1440))["minutes"] == 1440

    for minutes, text in (
        (None, "The minutes field is required."),
        ("abc", "The value 'abc' is not valid for minutes."),
        ("2.5", "The value '2.5' is not valid for minutes."),
        ("0", RANGE_TEXT),
        ("1441", RANGE_TEXT),
    ):
        answer = await rest_history(gateway, minutes)
        assert answer.status == 400 and answer.content_type == PROBLEM_JSON, answer
        assert answer.json["errors"] == {"minutes": [text]}
        assert answer.json["title"] == "One or more validation errors occurred."
    # The roles of the other analytics routes: a token without Admin is refused, none at all is 401.
    assert (await rest_history(gateway, 30, token=make_token(roles=["User"]))).status == 403
    assert (await http("GET", gateway.base_url, "analytics/history?minutes=30")).status == 401


async def test_a_day_of_5_second_snapshots_is_answered_within_200_ms(fresh_nats: NatsServer) -> None:
    """17,280 stored snapshots (seeded straight into the stream), loaded by a replica as it starts, and
    answered downsampled to 500 points. The time is measured from the official client (hub) and an HTTP
    client (REST) on this machine; the best of several answers must be within the budget, and every
    figure is logged."""
    client = await nats.connect(fresh_nats.url)
    try:
        js = client.jetstream()
        await js.add_stream(snapshots_stream_config(max_age_seconds=86400, max_bytes=64 * 1024**2, replicas=1))
        newest = datetime.now(UTC)
        for n in range(DAY_OF_5_SECOND_SNAPSHOTS):
            moment = newest - timedelta(seconds=5 * (DAY_OF_5_SECOND_SNAPSHOTS - 1 - n))
            figures = PlatformSnapshot(total_users=n, active_users=n % 50, websites_generated=n * 2, revenue_today=n)
            await client.publish(SNAPSHOTS_SUBJECT, encode_snapshot_record(iso_utc(moment), figures))
        await client.flush()

        async def all_stored() -> bool:
            return int((await js.stream_info(SNAPSHOTS_STREAM)).state.messages) == DAY_OF_5_SECOND_SNAPSHOTS

        await wait_until_async(all_stored, timeout=WAIT_SECONDS, what="17,280 snapshots stored")
    finally:
        await client.close()

    gateway = GatewayProcess(fresh_nats.url)
    started = time.monotonic()
    await asyncio.to_thread(gateway.start, seconds=60)  # ready = the stored history is loaded
    load_seconds = time.monotonic() - started
    try:
        async with ClientPool() as pool:
            dashboard = await pool.connect(gateway.hub_url, admin_token())
            hub_ms: list[float] = []
            rest_ms: list[float] = []
            for _ in range(7):
                answer = await dashboard.invoke_answer("GetAnalyticsHistory", 1440, seconds=10)
                hub_ms.append(answer["at"] - answer["sentAt"])
                before = time.perf_counter()
                rest = await rest_history(gateway, 1440)
                rest_ms.append((time.perf_counter() - before) * 1000)
            day = answer["result"]
            # Buckets move with the clock, so two answers a moment apart may pick other snapshots.
            assert rest.status == 200 and rest.json["points"][-1] == day["points"][-1]
    finally:
        gateway.stop()
    assert day["complete"] is True
    assert MAX_ANSWER_POINTS - 1 <= len(day["points"]) <= MAX_ANSWER_POINTS
    assert day["points"][-1]["totalUsers"] == DAY_OF_5_SECOND_SNAPSHOTS - 1
    summary = (
        f"17,280 snapshots: replica start to ready {load_seconds:.2f} s; GetAnalyticsHistory(1440) "
        f"best {min(hub_ms):.1f} ms, median {statistics.median(hub_ms):.1f} ms; REST best {min(rest_ms):.1f} ms, "
        f"median {statistics.median(rest_ms):.1f} ms"
    )
    log.warning("%s", summary)
    print(summary)
    assert min(hub_ms) < ANSWER_BUDGET_MS and min(rest_ms) < ANSWER_BUDGET_MS, summary


async def test_the_history_follows_new_snapshots_after_nats_restarts(fresh_nats: NatsServer) -> None:
    """The replica's consumer is made again after NATS comes back (same store): the snapshots stored
    before and after are all in the history, each once."""
    collector = CollectorProcess(fresh_nats.url, env=QUICK_COLLECTOR)
    await collector.astart(seconds=WAIT_SECONDS)
    gateway = GatewayProcess(fresh_nats.url)
    try:
        await asyncio.to_thread(gateway.start, seconds=WAIT_SECONDS)

        async def history_after(moment_ms: int) -> dict[str, Any] | None:
            answer = await rest_history(gateway, 30)
            if answer.status != 200:
                return None
            return answer.json if any(moment > moment_ms for moment in times_of(answer.json)) else None

        await wait_until_async(lambda: history_after(0), timeout=WAIT_SECONDS, what="a first snapshot in the history")
        fresh_nats.kill()
        fresh_nats.start()
        restarted_ms = epoch_ms(iso_utc())
        await wait_until_async(
            lambda: history_after(restarted_ms), timeout=WAIT_SECONDS, what="snapshots stored after the restart"
        )
        assert await collector.astop() == 0
        client = await nats.connect(fresh_nats.url)
        try:
            stored = await stored_count(client)
        finally:
            await client.close()

        async def every_one_once() -> dict[str, Any] | None:
            answer = (await rest_history(gateway, 30)).json
            return answer if len(answer["points"]) == stored else None

        whole = await wait_until_async(every_one_once, timeout=WAIT_SECONDS, what=f"all {stored} stored snapshots")
        assert times_of(whole) == sorted(set(times_of(whole)))
        assert "Traceback" not in gateway.log(), gateway.log()[-3000:]
    finally:
        gateway.stop()
        collector.kill()
