"""Connection claims: once across replicas through the shared bucket, once per replica while it is away."""

from __future__ import annotations

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import MemoryKeyValueStore
from gateway.metrics import GatewayMetrics
from gateway.transport.claims import ConnectionClaims


class UnavailableStore(MemoryKeyValueStore):
    async def create(self, key: str, value: bytes) -> bool:
        raise BrokerUnavailable(key)


def claims(replica: str, metrics: GatewayMetrics, store: MemoryKeyValueStore | None = None) -> ConnectionClaims:
    return ConnectionClaims(replica_id=replica, ttl_seconds=35.0, metrics=metrics, store=store)


def local_claims(metrics: GatewayMetrics) -> float:
    return metrics.registry.get_sample_value("realtime_local_connection_claims_total") or 0.0


async def test_a_shared_bucket_allows_one_claim_across_replicas() -> None:
    shared = MemoryKeyValueStore()
    metrics = GatewayMetrics()
    a, b = claims("a", metrics, shared), claims("b", metrics, shared)
    assert await a.claim("conn-1")
    assert not await b.claim("conn-1")
    assert not await a.claim("conn-1")
    assert await b.claim("conn-2")
    assert await shared.get("conn-1") == b"a"
    assert local_claims(metrics) == 0


async def test_without_the_bucket_a_replica_claims_locally_and_counts_it() -> None:
    metrics = GatewayMetrics()
    replica = claims("a", metrics, UnavailableStore())
    assert await replica.claim("conn-1")
    assert not await replica.claim("conn-1"), "still once on this replica"
    unattached = claims("b", metrics)
    assert await unattached.claim("conn-1")
    assert local_claims(metrics) == 2


async def test_local_claims_expire_with_the_token() -> None:
    now = {"t": 0.0}
    replica = ConnectionClaims(replica_id="a", ttl_seconds=35.0, metrics=GatewayMetrics(), clock=lambda: now["t"])
    assert await replica.claim("conn-1")
    now["t"] = 36.0
    assert await replica.claim("conn-1"), "forgotten once the token it guarded has expired"
