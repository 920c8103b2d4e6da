"""One transport per negotiated connection, across every replica.

A connection token is valid for the connect window on any replica; without more, a client could open
several sockets with it one after another. The first transport to start a connection creates the
connection's key in a shared KV bucket (an atomic create); any later attempt, on any replica, finds it
and is refused with 409. Entries expire with the token, so the bucket stays small.

While the bucket cannot answer (NATS down, or not open yet), a replica still lets clients connect, as
it does for everything else during an outage, and remembers its claims locally: a token is then used
once per replica rather than once overall. That gap is small: a connection token is bound to the user
of the access token that negotiated it, and that user may negotiate a new one anyway. Each such claim
is counted (``realtime_local_connection_claims_total``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import KeyValueStore, MemoryKeyValueStore
from gateway.metrics import GatewayMetrics


class ConnectionClaims:
    """Claims connection ids in a shared :class:`KeyValueStore` attached once it is open."""

    def __init__(
        self,
        *,
        replica_id: str,
        ttl_seconds: float,
        metrics: GatewayMetrics,
        store: KeyValueStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._owner = replica_id.encode()
        self._shared = store
        self._local = MemoryKeyValueStore(ttl_seconds=ttl_seconds, clock=clock)
        self._metrics = metrics

    def attach(self, store: KeyValueStore) -> None:
        self._shared = store

    async def claim(self, connection_id: str) -> bool:
        """True for the first claim of ``connection_id``, False for any later one (on any replica while
        the shared bucket answers; on this replica otherwise)."""
        if not await self._local.create(connection_id, self._owner):
            return False
        if self._shared is None:
            self._metrics.local_connection_claims.inc()
            return True
        try:
            return await self._shared.create(connection_id, self._owner)
        except BrokerUnavailable:
            self._metrics.local_connection_claims.inc()
            return True
