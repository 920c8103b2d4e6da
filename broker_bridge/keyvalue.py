"""Shared state in NATS KV: the latest platform snapshot and the live connection count per replica.

Buckets (created on first use with the same settings by whoever comes first):

* ``REALTIME_SNAPSHOT`` - key ``platform``: ``{"timestamp": ..., "data": {...}}`` written by the
  stats collector, read by every gateway.
* ``REALTIME_REPLICAS`` - key ``<replica id>``: ``{"connections": n, "timestamp": ...}``, re-written
  every few seconds by each gateway; entries expire after ``ttl`` so a dead replica drops out.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue as NatsKeyValue

from broker_bridge.interface import BrokerUnavailable

SNAPSHOT_BUCKET: Final = "REALTIME_SNAPSHOT"
SNAPSHOT_KEY: Final = "platform"
REPLICAS_BUCKET: Final = "REALTIME_REPLICAS"
_NOT_KEY_SAFE = re.compile(r"[^-_a-zA-Z0-9]")


def replica_key(replica_id: str) -> str:
    """A KV-safe key for a replica id (pod names pass unchanged; other characters become ``_``)."""
    return _NOT_KEY_SAFE.sub("_", replica_id)


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def items(self) -> dict[str, bytes]:
        """Every live key and its value."""
        ...


class NatsKeyValueStore:
    """One NATS KV bucket, created if missing.

    Every call fails fast with BrokerUnavailable while the client is disconnected, instead of
    waiting for nats-py's request timeout.
    """

    def __init__(self, kv: NatsKeyValue, client: Client) -> None:
        self._kv = kv
        self._client = client

    @classmethod
    async def open(
        cls, client: Client, *, bucket: str, ttl_seconds: float | None = None, replicas: int = 1
    ) -> NatsKeyValueStore:
        js = client.jetstream()
        try:
            return cls(await js.key_value(bucket), client)
        except nats.js.errors.BucketNotFoundError:
            pass
        config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl_seconds, replicas=replicas)
        try:
            return cls(await js.create_key_value(config), client)
        except nats.js.errors.BadRequestError:  # created concurrently by another process
            return cls(await js.key_value(bucket), client)

    def _check_connected(self, key: str) -> None:
        if not self._client.is_connected:
            raise BrokerUnavailable(key)

    async def get(self, key: str) -> bytes | None:
        self._check_connected(key)
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(key) from error
        return entry.value

    async def put(self, key: str, value: bytes) -> None:
        self._check_connected(key)
        try:
            await self._kv.put(key, value)
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(key) from error

    async def delete(self, key: str) -> None:
        self._check_connected(key)
        try:
            await self._kv.delete(key)
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(key) from error

    async def items(self) -> dict[str, bytes]:
        self._check_connected("keys")
        try:
            keys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return {}
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable("keys") from error
        found: dict[str, bytes] = {}
        for key in keys:
            value = await self.get(key)
            if value is not None:
                found[key] = value
        return found
