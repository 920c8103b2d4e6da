"""Payload models shared by the gateway, the broker bridge and the collector (camelCase on the wire)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from shared import jsoncodec


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformSnapshot:
    """The seed's platform snapshot ``data`` object (plus the average website generation time, seconds)."""

    total_users: int = 0
    active_users: int = 0
    new_users_today: int = 0
    websites_generated: int = 0
    images_generated: int = 0
    failed_generations: int = 0
    total_revenue: float = 0.0
    revenue_today: float = 0.0
    average_generation_time: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {_camel(name): value for name, value in asdict(self).items()}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> PlatformSnapshot:
        """Build from camelCase keys, ignoring unknown ones; raises ValueError on wrong types."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = data.get(_camel(field.name))
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{_camel(field.name)} must be a number")
            values[field.name] = float(value) if field.type == "float" else int(value)
        return cls(**values)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotGap:
    """Stream sequences the collector never read (discarded before it got to them): the figures lack them."""

    first_sequence: int
    last_sequence: int
    missing: int
    detected_at: str

    def to_wire(self) -> dict[str, Any]:
        return {_camel(name): value for name, value in asdict(self).items()}

    @classmethod
    def from_wire(cls, data: Any) -> SnapshotGap:
        if not isinstance(data, dict):
            raise ValueError("gap must be an object")
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = data.get(_camel(field.name))
            wanted = str if field.type == "str" else int
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise ValueError(f"gap.{_camel(field.name)} must be {'a string' if wanted is str else 'an integer'}")
            values[field.name] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The stored snapshot: figures, when they were taken, and the gap that makes them incomplete (if any)."""

    timestamp: str
    data: PlatformSnapshot
    gap: SnapshotGap | None = None

    def completeness(self) -> dict[str, Any]:
        """What answers put beside ``data``: nothing when complete (the API document's shape), else
        ``{"complete": false, "gap": {...}}``."""
        if self.gap is None:
            return {}
        return {"complete": False, "gap": self.gap.to_wire()}


def encode_snapshot_record(timestamp: str, snapshot: PlatformSnapshot, *, gap: SnapshotGap | None = None) -> bytes:
    """The KV value of the latest snapshot: ``{"timestamp": ..., "data": {...}, "complete": ..., "gap": ...}``."""
    record = SnapshotRecord(timestamp, snapshot, gap)
    return jsoncodec.dumps(
        {"timestamp": timestamp, "data": snapshot.to_wire(), "complete": gap is None, **record.completeness()}
    )


def decode_snapshot_record(value: bytes) -> SnapshotRecord:
    """Inverse of :func:`encode_snapshot_record` (a record without ``complete`` is complete); ValueError on
    anything else."""
    try:
        record = jsoncodec.loads(value)
    except jsoncodec.JSONDecodeError:
        raise ValueError("snapshot record is not JSON") from None
    if not isinstance(record, dict) or not isinstance(record.get("timestamp"), str):
        raise ValueError("snapshot record needs a timestamp")
    data = record.get("data")
    if not isinstance(data, dict):
        raise ValueError("snapshot record needs a data object")
    complete = record.get("complete", True)
    if not isinstance(complete, bool):
        raise ValueError("complete must be true or false")
    gap = None if complete else SnapshotGap.from_wire(record.get("gap"))
    return SnapshotRecord(record["timestamp"], PlatformSnapshot.from_wire(data), gap)
