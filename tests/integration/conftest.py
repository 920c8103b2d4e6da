"""Fixtures of the collector tests: a NATS client and collector processes on the test's own ``fresh_nats``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import nats
import pytest
from nats.aio.client import Client

from scripts.processes import NatsServer
from tests.support.collector import CollectorProcess


@pytest.fixture
async def nc(fresh_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(fresh_nats.url)
    yield client
    await client.close()


@pytest.fixture
def collector_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for every collector of a test: the module's ``COLLECTOR_ENV``; keywords to ``collectors`` win."""
    return dict(getattr(request.module, "COLLECTOR_ENV", {}))


@pytest.fixture
def collectors(fresh_nats: NatsServer, collector_env: dict[str, str]) -> Iterator[Callable[..., CollectorProcess]]:
    """Make (not start) collectors on ``fresh_nats``; all are killed at the end of the test."""
    started: list[CollectorProcess] = []

    def make(**env: str) -> CollectorProcess:
        collector = CollectorProcess(fresh_nats.url, env={**collector_env, **env}, label=f"collector{len(started) + 1}")
        started.append(collector)
        return collector

    yield make
    for collector in started:
        collector.kill()
