"""Shared state in NATS KV: the latest platform snapshot and the live connection count per replica.

Buckets (created on first use with the same settings by whoever comes first):

* ``REALTIME_SNAPSHOT`` - key ``platform``: ``{"timestamp": ..., "data": {...}}`` written by the
  stats collector, read by every gateway.
* ``REALTIME_REPLICAS`` - key ``<replica id>``: ``{"connections": n, "timestamp": ...}``, re-written
  every few seconds by each gateway; entries expire after ``ttl`` so a dead replica drops out.
* ``REALTIME_CLAIMS`` - key ``<connection id>``: the replica that started the connection's transport,
  created once (a second claim fails on every replica); entries expire with the connection token.
* ``REALTIME_PRESENCE`` - key ``replica.<replica id>``: the users connected to that replica
  (:mod:`gateway.hub.presence_view`), re-written on change and every third of the TTL, so a killed
  replica's users expire with it; key ``announced``: who the presence notifications last said is
  online, changed only with compare-and-set (:mod:`gateway.hub.cluster_presence`).
* ``REALTIME_CONNECTIONS`` - key ``<connection id>``: a resumable connection's owner, epoch and
  checkpoint (:mod:`gateway.hub.resumable`), changed only with compare-and-set on the revision.

:class:`MemoryKeyValueStore` is the same interface in one process, for component tests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Final, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, KeyValueConfig, StreamConfig
from nats.js.kv import KeyValue as NatsKeyValue

from broker_bridge.interface import BrokerUnavailable

SNAPSHOT_BUCKET: Final = "REALTIME_SNAPSHOT"
SNAPSHOT_KEY: Final = "platform"
REPLICAS_BUCKET: Final = "REALTIME_REPLICAS"
CLAIMS_BUCKET: Final = "REALTIME_CLAIMS"
CONNECTIONS_BUCKET: Final = "REALTIME_CONNECTIONS"
PRESENCE_BUCKET: Final = "REALTIME_PRESENCE"
_NOT_KEY_SAFE = re.compile(r"[^-_a-zA-Z0-9]")


def replica_key(replica_id: str) -> str:
    """A KV-safe key for a replica id (pod names pass unchanged; other characters become ``_``)."""
    return _NOT_KEY_SAFE.sub("_", replica_id)


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def create(self, key: str, value: bytes) -> bool:
        """Store ``value`` only if ``key`` has none: True if it was stored, False if the key exists."""
        ...

    async def entry(self, key: str) -> tuple[bytes, int] | None:
        """The value of ``key`` and its revision, or None."""
        ...

    async def compare_and_set(self, key: str, value: bytes, revision: int) -> int | None:
        """Store ``value`` if ``key`` is still at ``revision`` (0: has no value); the new revision, or
        None when someone else changed it first."""
        ...

    async def delete(self, key: str) -> None: ...

    async def keys(self) -> list[str]:
        """Every live key."""
        ...

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
        cls,
        client: Client,
        *,
        bucket: str,
        ttl_seconds: float | None = None,
        replicas: int = 1,
        max_keys: int | None = None,
    ) -> NatsKeyValueStore:
        """Open ``bucket``, creating it if missing; with ``max_keys``, a new key beyond that many makes the
        server drop the oldest written one (nats-py's own buckets refuse new keys when full instead)."""
        js = client.jetstream()
        try:
            return cls(await js.key_value(bucket), client)
        except nats.js.errors.BucketNotFoundError:
            pass
        try:
            if max_keys is None:
                config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl_seconds, replicas=replicas)
                return cls(await js.create_key_value(config), client)
            await js.add_stream(_oldest_dropped_bucket(bucket, ttl_seconds, replicas, max_keys))
            return cls(await js.key_value(bucket), client)
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

    async def create(self, key: str, value: bytes) -> bool:
        self._check_connected(key)
        try:
            await self._kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(key) from error
        return True

    async def entry(self, key: str) -> tuple[bytes, int] | None:
        self._check_connected(key)
        try:
            found = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(key) from error
        if found.value is None or found.revision is None:
            return None
        return found.value, found.revision

    async def compare_and_set(self, key: str, value: bytes, revision: int) -> int | None:
        self._check_connected(key)
        try:
            if revision == 0:
                return int(await self._kv.create(key, value))
            return int(await self._kv.update(key, value, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(key) from error

    async def delete(self, key: str) -> None:
        self._check_connected(key)
        try:
            await self._kv.delete(key)
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(key) from error

    async def keys(self) -> list[str]:
        self._check_connected("keys")
        try:
            return list(await self._kv.keys())
        except nats.js.errors.NoKeysError:
            return []
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable("keys") from error

    async def items(self) -> dict[str, bytes]:
        """One watcher over the bucket brings every live value (not a request per key)."""
        self._check_connected("keys")
        found: dict[str, bytes] = {}
        try:
            watcher = await self._kv.watchall(ignore_deletes=True)
            try:
                async for entry in watcher:
                    if entry is None:  # the watcher's "caught up" marker
                        break
                    if entry.value is not None and entry.operation is None:
                        found[entry.key] = entry.value
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable("keys") from error
        return found


def _oldest_dropped_bucket(bucket: str, ttl_seconds: float | None, replicas: int, max_keys: int) -> StreamConfig:
    """nats-py's KV stream (one value per key, rollups, no deletes through the stream API), with at most
    ``max_keys`` values and the oldest discarded beyond."""
    return StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        allow_direct=True,
        allow_rollup_hdrs=True,
        deny_delete=True,
        discard=DiscardPolicy.OLD,
        max_age=ttl_seconds,
        max_msgs=max_keys,
        max_msgs_per_subject=1,
        num_replicas=replicas,
    )


class MemoryKeyValueStore:
    """A dict behind the same interface, for component tests of one process; ``ttl_seconds`` ages
    entries out on the given clock, as a bucket's ``max_age`` does."""

    def __init__(self, *, ttl_seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[bytes, float]] = {}
        self._revisions: dict[str, int] = {}
        self._last_revision = 0

    def _live(self) -> dict[str, tuple[bytes, float]]:
        if self._ttl is not None:
            horizon = self._clock() - self._ttl
            for key in [key for key, (_, at) in self._entries.items() if at <= horizon]:
                del self._entries[key]
        return self._entries

    async def get(self, key: str) -> bytes | None:
        entry = self._live().get(key)
        return entry[0] if entry is not None else None

    async def put(self, key: str, value: bytes) -> None:
        self._store(key, value)

    def _store(self, key: str, value: bytes) -> int:
        self._live()[key] = (value, self._clock())
        self._last_revision += 1
        self._revisions[key] = self._last_revision
        return self._last_revision

    async def create(self, key: str, value: bytes) -> bool:
        return await self.compare_and_set(key, value, 0) is not None

    async def entry(self, key: str) -> tuple[bytes, int] | None:
        found = self._live().get(key)
        return (found[0], self._revisions[key]) if found is not None else None

    async def compare_and_set(self, key: str, value: bytes, revision: int) -> int | None:
        found = self._live().get(key)
        current = self._revisions[key] if found is not None else 0
        if current != revision:
            return None
        return self._store(key, value)

    async def delete(self, key: str) -> None:
        self._live().pop(key, None)

    async def keys(self) -> list[str]:
        return list(self._live())

    async def items(self) -> dict[str, bytes]:
        return {key: value for key, (value, _) in self._live().items()}
