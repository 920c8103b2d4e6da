"""Where the hub reads platform figures and connection totals (interfaces + simple implementations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.registry import ConnectionRegistry
from shared.models import PlatformSnapshot
from shared.timeutil import iso_utc


@dataclass(frozen=True, slots=True)
class TimedSnapshot:
    timestamp: str
    data: PlatformSnapshot


class SnapshotReader(Protocol):
    async def latest(self) -> TimedSnapshot:
        """The newest snapshot, or zeros stamped now when no collector has written one."""
        ...


class EmptySnapshotReader:
    """Zeros with the current time: what every reader answers before a collector has written."""

    async def latest(self) -> TimedSnapshot:
        return TimedSnapshot(iso_utc(), PlatformSnapshot())


@dataclass(frozen=True, slots=True)
class ConnectionTotals:
    on_replica: int
    total: int
    replicas: int


class ConnectionCounter(Protocol):
    async def totals(self) -> ConnectionTotals: ...


class LocalConnectionCounter:
    """Counts this replica only (one-replica deployments and component tests)."""

    def __init__(self, registry: ConnectionRegistry) -> None:
        self._registry = registry

    async def totals(self) -> ConnectionTotals:
        count = len(self._registry)
        return ConnectionTotals(on_replica=count, total=count, replicas=1)
