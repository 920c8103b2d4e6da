"""Where the hub and the REST API read the platform figures: the collector's snapshot in NATS KV.

Before KV is attached, or while it is unreachable, the reader answers with the last snapshot seen (or
zeros stamped now when none was seen yet).
"""

from __future__ import annotations

import logging
from typing import Protocol

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import SNAPSHOT_KEY, KeyValueStore
from shared.models import PlatformSnapshot, SnapshotRecord, decode_snapshot_record
from shared.timeutil import iso_utc

log = logging.getLogger(__name__)


# The figures, their time and whether they are complete (``completeness()`` goes beside ``data`` in answers).
TimedSnapshot = SnapshotRecord


class SnapshotReader(Protocol):
    async def latest(self) -> TimedSnapshot:
        """The newest snapshot, or zeros stamped now when no collector has written one."""
        ...


class KvSnapshotReader:
    """Reads the collector's snapshot from KV; zeros until one exists, last known when KV is away."""

    def __init__(self) -> None:
        self._store: KeyValueStore | None = None
        self._last: TimedSnapshot | None = None
        self._warned_invalid = False

    def attach(self, store: KeyValueStore) -> None:
        self._store = store

    async def latest(self) -> TimedSnapshot:
        if self._store is not None:
            try:
                value = await self._store.get(SNAPSHOT_KEY)
            except BrokerUnavailable:
                value = None
            if value is not None:
                try:
                    self._last = decode_snapshot_record(value)
                except ValueError as error:
                    if not self._warned_invalid:
                        self._warned_invalid = True
                        log.warning("ignoring invalid snapshot record in KV: %s", error)
        return self._last or TimedSnapshot(iso_utc(), PlatformSnapshot())
