"""This replica's connection count in NATS KV, and the totals over every live replica.

Each replica re-writes its entry every ``interval_seconds``; entries expire in KV (the bucket's TTL)
and are also ignored once older than ``STALE_FACTOR`` intervals, so a dead replica drops out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import KeyValueStore, replica_key
from gateway.hub.registry import ConnectionRegistry
from shared import jsoncodec
from shared.timeutil import iso_utc

log = logging.getLogger(__name__)

# A replica entry older than this many intervals is ignored even if KV still holds it (clock-skew guard).
STALE_FACTOR: Final = 3


@dataclass(frozen=True, slots=True)
class ConnectionTotals:
    on_replica: int
    total: int
    replicas: int


class ReplicaPresence:
    """Publishes this replica's connection count to KV and sums every live replica's count.

    :meth:`run` refreshes every ``interval_seconds``; :meth:`totals` answers from the last refresh
    plus this replica's live count, so it never waits on NATS.
    """

    def __init__(self, *, replica_id: str, registry: ConnectionRegistry, interval_seconds: float) -> None:
        self._key = replica_key(replica_id)
        self._registry = registry
        self._interval = interval_seconds
        self._store: KeyValueStore | None = None
        self._others_total = 0
        self._others = 0

    def attach(self, store: KeyValueStore) -> None:
        self._store = store

    async def totals(self) -> ConnectionTotals:
        local = len(self._registry)
        return ConnectionTotals(on_replica=local, total=local + self._others_total, replicas=1 + self._others)

    async def refresh(self) -> None:
        if self._store is None:
            return
        now = time.time()
        record = {"connections": len(self._registry), "updatedAt": now, "timestamp": iso_utc()}
        await self._store.put(self._key, jsoncodec.dumps(record))
        total = replicas = 0
        for key, value in (await self._store.items()).items():
            if key == self._key:
                continue
            try:
                entry = jsoncodec.loads(value)
                if now - float(entry["updatedAt"]) > self._interval * STALE_FACTOR:
                    continue
                total += int(entry["connections"])
                replicas += 1
            except (ValueError, KeyError, TypeError):
                continue
        self._others_total, self._others = total, replicas

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except BrokerUnavailable:
                log.debug("replica presence refresh skipped: NATS unavailable")
            await asyncio.sleep(self._interval)

    async def withdraw(self) -> None:
        if self._store is not None:
            with contextlib.suppress(BrokerUnavailable):
                await self._store.delete(self._key)
