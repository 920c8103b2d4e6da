"""Helpers for component tests of long polling and Server-Sent Events over several replicas in one process.

Replicas are gateway apps (``build_gateway``) sharing one in-memory broker, each behind pytest-aiohttp's
test client; a :class:`PollingClient` or :class:`EventStream` sends each request to the replica a test
names, so a test can put every request of a connection on its owner, on another replica, or alternate.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.feed_subjects import SubjectFeed
from broker_bridge.keyvalue import MemoryKeyValueStore
from gateway.app import Gateway, build_gateway
from gateway.hub.admin_hub import AdminHub
from gateway.hub.cluster_presence import ClusterPresence
from gateway.hub.fanout import FanoutRouter
from gateway.hub.history import SnapshotHistory
from gateway.hub.host import HubHost
from gateway.hub.memberships import Memberships
from gateway.hub.presence import ReplicaPresence
from gateway.hub.registry import ConnectionRegistry
from gateway.hub.snapshots import KvSnapshotReader
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL
from tests.support.alerts import memory_shared_alerts
from tests.support.fanout import metric_value
from tests.support.frames import RS

SECRET = "component-test-secret-0123456789abcdef"
USER_ID = "9b2f8c1e-3d4a-4e5f-8a6b-7c8d9e0f1a2b"
HUB = "/hubs/admin"

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def access_token(*, sub: str = USER_ID) -> str:
    claims = {"sub": sub, "exp": int(time.time()) + 3600, "name": "Alice", "role": ["Admin"]}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bearer(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or access_token()}"}


def records(body: bytes) -> list[dict[str, Any]]:
    """The JSON hub messages of a poll body or an event (each whole, 0x1E-terminated)."""
    assert body.endswith(RS), body
    return [orjson.loads(record) for record in body.split(RS)[:-1]]


def invocation(invocation_id: str, target: str, *arguments: Any) -> bytes:
    message = {"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(arguments)}
    return orjson.dumps(message) + RS


def cluster_presence(name: str, metrics: GatewayMetrics) -> ClusterPresence:
    """Cluster presence of one replica without KV (its own users only) that notifies nobody."""
    return ClusterPresence(
        replica_id=name,
        publisher=None,
        metrics=metrics,
        ttl_seconds=4.0,
        debounce_seconds=5.0,
        max_users=100,
        max_notifications=20,
    )


def hub_host(broker: InMemoryBroker, metrics: GatewayMetrics, registry: ConnectionRegistry) -> HubHost:
    """A replica's hub (AdminHub, fan-out on plain subjects) without HTTP, for tests of what transports call."""
    router = FanoutRouter(
        feed=SubjectFeed(broker),
        protocols={JSON_PROTOCOL.name: JSON_PROTOCOL, MESSAGEPACK_PROTOCOL.name: MESSAGEPACK_PROTOCOL},
        metrics=metrics,
    )
    presence = ReplicaPresence(replica_id="owner", registry=registry, interval_seconds=2.0)
    hub = AdminHub(
        memberships=Memberships(router=router, resumables=None),
        snapshots=KvSnapshotReader(),
        presence=presence,
        cluster_presence=cluster_presence("owner", metrics),
        alerts=memory_shared_alerts(broker, metrics),
        history=SnapshotHistory(max_points=100, metrics=metrics),
    )
    return HubHost(hub=hub, registry=registry, metrics=metrics, max_parallel_invocations=1)


@dataclass
class Replica:
    gateway: Gateway
    client: TestClient[Any, Any]
    name: str

    async def metric(self, name: str, **labels: str) -> float:
        text = await (await self.client.get("/metrics")).text()
        return metric_value(text, name, **labels)


def serving(gateway: Gateway) -> Callable[[web.Application], AsyncIterator[None]]:
    """Serve forwarded requests for the app's lifetime (``create_gateway`` does it once NATS is up)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        await gateway.forwarding.serve()
        yield
        await gateway.forwarding.withdraw()

    return context


async def start_replicas(
    aiohttp_client: ClientFactory,
    broker: InMemoryBroker,
    count: int,
    *,
    prefix: str = "replica",
    claims: MemoryKeyValueStore | None = None,
    **settings: Any,
) -> list[Replica]:
    """``count`` replicas named ``<prefix>-a``, ``<prefix>-b``... (names must differ across calls),
    sharing one claims bucket (``claims``, or a new one), as replicas share the KV bucket in NATS."""
    claims = claims or MemoryKeyValueStore(ttl_seconds=60)
    replicas = []
    for index in range(count):
        name = f"{prefix}-{'abcdefgh'[index]}"
        options = {"jwt_secret": SECRET, "replica_id": name, "shutdown_grace_seconds": 0.5, **settings}
        gateway = build_gateway(GatewaySettings(**options), broker=broker)
        gateway.claims.attach(claims)
        gateway.app.cleanup_ctx.append(serving(gateway))
        replicas.append(Replica(gateway, await aiohttp_client(gateway.app), name))
    return replicas


async def negotiate(replica: Replica, token: str | None = None) -> str:
    """Negotiate (version 1) on ``replica``, its owner from now on; the connection token."""
    response = await replica.client.post(f"{HUB}/negotiate?negotiateVersion=1", headers=bearer(token))
    assert response.status == 200
    body = await response.json()
    connection_token: str = body["connectionToken"]
    return connection_token


class PollingClient:
    """A long-polling client; each request goes to the next of ``route`` (replicas, cycled)."""

    def __init__(self, route: Sequence[Replica], connection_token: str, token: str | None = None) -> None:
        self._route: Iterator[Replica] = itertools.cycle(route)
        self.url = f"{HUB}?id={connection_token}"
        self.headers = bearer(token)

    def next_replica(self) -> Replica:
        return next(self._route)

    async def get(self) -> ClientResponse:
        response = await self.next_replica().client.get(f"{self.url}&_={time.time_ns()}", headers=self.headers)
        await response.read()
        return response

    async def poll(self) -> bytes:
        """One poll that must bring data."""
        response = await self.get()
        assert response.status == 200, (response.status, await response.text())
        body = await response.read()
        assert body, "an empty poll"
        return body

    async def post(self, body: bytes) -> ClientResponse:
        response = await self.next_replica().client.post(self.url, data=body, headers=self.headers)
        await response.read()
        return response

    async def delete(self) -> ClientResponse:
        response = await self.next_replica().client.delete(self.url, headers=self.headers)
        await response.read()
        return response

    async def messages_until(self, predicate: Callable[[dict[str, Any]], bool], *, seconds: float = 5) -> list[Any]:
        """Poll until a message matching ``predicate`` arrives; every message received up to it."""
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(seconds):
            while not any(predicate(message) for message in received):
                received += records(await self.poll())
        return received


class EventStream:
    """An open Server-Sent Events response, read one event at a time."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    @classmethod
    async def open(cls, replica: Replica, connection_token: str, token: str | None = None) -> EventStream:
        response = await replica.client.get(
            f"{HUB}?id={connection_token}", headers={**bearer(token), "Accept": "text/event-stream"}
        )
        return cls(response)

    async def opening(self) -> bytes:
        return await self.response.content.readexactly(3)

    async def event(self, *, seconds: float = 5) -> bytes:
        """The payload of the next event (its ``data:`` lines joined), or b"" when the stream ended."""
        async with asyncio.timeout(seconds):
            raw = await self.response.content.readuntil(b"\r\n\r\n")
        if not raw:
            return b""
        assert raw.endswith(b"\r\n\r\n"), raw
        lines = raw[:-4].split(b"\r\n")
        assert all(line.startswith(b"data: ") for line in lines), raw
        return b"\n".join(line.removeprefix(b"data: ") for line in lines)

    async def messages_until(self, predicate: Callable[[dict[str, Any]], bool], *, seconds: float = 5) -> list[Any]:
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(seconds):
            while not any(predicate(message) for message in received):
                payload = await self.event()
                assert payload, f"the stream ended; received {received}"
                received += records(payload)
        return received

    async def ended(self, *, seconds: float = 5) -> bool:
        """Read to the end; True when the stream ended cleanly within ``seconds``."""
        async with asyncio.timeout(seconds):
            rest = await self.response.content.read()
        return self.response.content.at_eof() and b"data:" not in rest
