"""Shared fixtures: nats-servers at three scopes and gateway processes per module.

``nats_server`` is one server for the whole session, for tests that only need some NATS.
``module_nats`` and ``fresh_nats`` are private servers (the same fixture at module and at test
scope): streams, KV buckets and consumers start empty whatever other tests did, and a test may
kill and restart its server.

``gateway_factory`` starts gateways against ``gateway_nats`` (the session's server; a module that
owns its server overrides ``gateway_nats`` to return ``module_nats``); every one of them is stopped
at the end of the module. ``gateway`` is the module's plain gateway, ``fresh_gateway`` one for a
single test on its ``fresh_nats``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from scripts.processes import NatsServer
from tests.support.processes import GatewayProcess, gateways_on


def _running_nats(request: pytest.FixtureRequest) -> Iterator[NatsServer]:
    """A started nats-server; indirect parametrisation passes :class:`NatsServer` options, e.g.
    ``@pytest.mark.parametrize("fresh_nats", [{"jetstream": False}], indirect=True)``."""
    with NatsServer(**getattr(request, "param", {})) as server:
        yield server


nats_server = pytest.fixture(scope="session", name="nats_server")(_running_nats)
module_nats = pytest.fixture(scope="module", name="module_nats")(_running_nats)
fresh_nats = pytest.fixture(name="fresh_nats")(_running_nats)


@pytest.fixture(scope="module")
def gateway_nats(nats_server: NatsServer) -> NatsServer:
    return nats_server


@pytest.fixture(scope="module")
def gateway_factory(gateway_nats: NatsServer) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways (``REALTIME_*`` overrides as keywords); each is stopped when the module ends."""
    with gateways_on(gateway_nats.url) as start:
        yield start


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    return gateway_factory()


@pytest.fixture
def fresh_gateway(fresh_nats: NatsServer) -> Iterator[GatewayProcess]:
    """A gateway on this test's own ``fresh_nats``."""
    with gateways_on(fresh_nats.url) as start:
        yield start()
