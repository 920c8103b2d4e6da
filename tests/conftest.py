"""Shared fixtures: a real nats-server per test session and gateway processes per module."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.processes import GatewayProcess, NatsServer


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways against the session's NATS; every one must still be alive at the end."""
    nats: NatsServer = request.getfixturevalue("nats_server")
    started: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        gateway = GatewayProcess(nats.url, env=env)
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    return gateway_factory()
