"""Loading the snapshot history from JetStream delivers every stored snapshot, even when a pull request
comes back empty or times out while snapshots are still pending (broker_bridge/snapshot_stream.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from broker_bridge.snapshot_stream import (
    MAX_EMPTY_LOAD_FETCHES,
    SnapshotStreamReader,
    append_snapshot,
    snapshots_stream_config,
)

RECORDS = [f"snapshot {n}".encode() for n in range(5)]
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Fetch = Callable[..., Awaitable[list[Any]]]


async def stored(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(snapshots_stream_config(max_age_seconds=3600, max_bytes=1024**2, replicas=1))
    for record in RECORDS:
        await append_snapshot(js, record)


def failing_first(fetch: Fetch, failures: list[str]) -> Fetch:
    """``fetch`` whose first calls time out or come back empty, as ``failures`` says, in that order."""

    async def fetch_with_failures(self: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if failures:
            if failures.pop(0) == "timeout":
                raise nats.errors.TimeoutError
            return []
        return await fetch(self, *args, **kwargs)

    return fetch_with_failures


@pytest.mark.parametrize("failures", [["timeout"], ["empty"], ["empty", "timeout"]])
async def test_a_slow_or_empty_pull_does_not_cut_the_load_short(
    nc: Client, monkeypatch: pytest.MonkeyPatch, failures: list[str]
) -> None:
    await stored(nc)
    fetch = JetStreamContext.PullSubscription.fetch
    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", failing_first(fetch, list(failures)))
    delivered: list[tuple[int, bytes]] = []
    reader = SnapshotStreamReader(lambda: nc, deliver=lambda *record: delivered.append(record), on_loaded=lambda: None)
    await reader.load(since=EPOCH)
    assert delivered == list(enumerate(RECORDS, start=1))


async def test_a_load_that_gets_nothing_while_snapshots_are_pending_fails_to_be_retried(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stored(nc)
    fetch = JetStreamContext.PullSubscription.fetch
    failures = ["timeout"] * MAX_EMPTY_LOAD_FETCHES
    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", failing_first(fetch, failures))
    delivered: list[tuple[int, bytes]] = []
    reader = SnapshotStreamReader(lambda: nc, deliver=lambda *record: delivered.append(record), on_loaded=lambda: None)
    with pytest.raises(TimeoutError):
        await reader.load(since=EPOCH)
    assert delivered == []
    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", fetch)
    await reader.load(since=EPOCH)  # the retry loads everything, each snapshot once
    assert delivered == list(enumerate(RECORDS, start=1))
