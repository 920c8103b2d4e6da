"""Shared alert state (pure: no I/O, time passed in): the alerts raised, who acknowledged them, what is silenced.

Two kinds of record, kept in NATS KV by :mod:`broker_bridge.alert_store` and shown to dashboards
through :mod:`broker_bridge.catalog`:

* :class:`AlertRecord` - one alert raised for the ``alerts`` group (by the collector's rules or the
  REST API), under its id. An alert the collector held back because its rule or type was silenced is
  recorded too, with ``suppressed`` set.
* :class:`Silence` - a rule name or an alert type whose collector alerts are held back until ``until``.

Transitions::

    active --acknowledge(by, at)--> acknowledged      (who and when; acknowledging again changes nothing)
    a rule's firing alert --its rule resolves--> resolvedAt set (acknowledging it is still possible)
    silence(target, minutes, by, now): silenced in [now, now + minutes); minutes 0 lifts a silence

The status a dashboard shows (:func:`alert_status`): ``acknowledged`` once acknowledged, else
``silenced`` when it was held back or a live silence covers its rule or type, else ``active``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

from shared.timeutil import iso_utc

AlertStatus = Literal["active", "acknowledged", "silenced"]

# Alert ids: what new_alert_id makes, and what the hub and REST API accept (also a safe KV key).
ALERT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A silence target is a rule name (at most 128 characters, as stats_collector.alerts allows) or an alert type.
MAX_TARGET_LENGTH: Final = 128


class AlertStateError(ValueError):
    """A request the state cannot take (bad id, target or duration); the message may be shown to the caller."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: the user id and name of the access token."""

    user_id: str | None
    user_name: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"userId": self.user_id, "userName": self.user_name}

    @classmethod
    def from_wire(cls, value: Any) -> Actor:
        if not isinstance(value, dict):
            raise ValueError("actor must be an object")
        user_id, user_name = value.get("userId"), value.get("userName")
        if not (isinstance(user_id, str | None) and isinstance(user_name, str | None)):
            raise ValueError("actor fields must be strings")
        return cls(user_id, user_name)


def new_alert_id(now: float) -> str:
    """A unique id that sorts by time: milliseconds since the epoch (hex) and 48 random bits."""
    return f"{int(now * 1000):011x}-{secrets.token_hex(6)}"


def check_alert_id(alert_id: str) -> str:
    if not ALERT_ID.fullmatch(alert_id):
        raise AlertStateError("An alert id is 1 to 64 letters, digits, '-' or '_'.")
    return alert_id


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    """One alert as raised, and what happened to it since."""

    id: str
    type: str
    severity: str
    message: str
    timestamp: str
    rule: str | None = None
    data: dict[str, Any] | None = None
    suppressed: bool = False
    acknowledged_by: Actor | None = None
    acknowledged_at: str | None = None
    resolved_at: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_by is not None

    def acknowledge(self, by: Actor, at: float) -> AlertRecord | None:
        """The record acknowledged by ``by`` at ``at``; None when it already was (the first one stands)."""
        if self.acknowledged:
            return None
        return replace(self, acknowledged_by=by, acknowledged_at=_iso(at))

    def resolve(self, at: float) -> AlertRecord:
        return self if self.resolved_at is not None else replace(self, resolved_at=_iso(at))

    def to_wire(self) -> dict[str, Any]:
        """The stored record (also the ``alert`` of answers and events, with ``status`` added)."""
        return {
            "id": self.id,
            "type": self.type,
            "severity": self.severity,
            "message": self.message,
            "timestamp": self.timestamp,
            "rule": self.rule,
            "data": self.data,
            "suppressed": self.suppressed,
            "acknowledgedBy": self.acknowledged_by.to_wire() if self.acknowledged_by else None,
            "acknowledgedAt": self.acknowledged_at,
            "resolvedAt": self.resolved_at,
        }

    @classmethod
    def from_wire(cls, value: Any) -> AlertRecord:
        """Raises ValueError for anything but a record :meth:`to_wire` wrote."""
        if not isinstance(value, dict):
            raise ValueError("alert record must be an object")
        texts: dict[str, str] = {}
        for key in ("id", "type", "severity", "message", "timestamp"):
            text = value.get(key)
            if not isinstance(text, str):
                raise ValueError(f"alert record lacks {key}")
            texts[key] = text
        optional = {key: value.get(key) for key in ("rule", "acknowledgedAt", "resolvedAt")}
        if not all(isinstance(text, str | None) for text in optional.values()):
            raise ValueError("rule, acknowledgedAt and resolvedAt must be strings")
        data, by = value.get("data"), value.get("acknowledgedBy")
        if not isinstance(data, dict | None) or not isinstance(value.get("suppressed", False), bool):
            raise ValueError("data must be an object, suppressed a boolean")
        return cls(
            id=texts["id"],
            type=texts["type"],
            severity=texts["severity"],
            message=texts["message"],
            timestamp=texts["timestamp"],
            rule=optional["rule"],
            data=data,
            suppressed=value.get("suppressed", False),
            acknowledged_by=Actor.from_wire(by) if by is not None else None,
            acknowledged_at=optional["acknowledgedAt"],
            resolved_at=optional["resolvedAt"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Silence:
    """Collector alerts of rule ``target`` (or of alert type ``target``) are held back until ``until``."""

    target: str
    until: float
    silenced_by: Actor
    silenced_at: float

    def covers_at(self, now: float) -> bool:
        return now < self.until

    def to_wire(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "until": _iso(self.until),
            "silencedBy": self.silenced_by.to_wire(),
            "silencedAt": _iso(self.silenced_at),
        }

    @classmethod
    def from_wire(cls, value: Any) -> Silence:
        if not isinstance(value, dict) or not isinstance(value.get("target"), str):
            raise ValueError("silence record must be an object with a target")
        return cls(
            target=value["target"],
            until=_seconds(value.get("until")),
            silenced_by=Actor.from_wire(value.get("silencedBy")),
            silenced_at=_seconds(value.get("silencedAt")),
        )


def silence(target: str, minutes: float, *, by: Actor, now: float, max_minutes: float) -> Silence:
    """A silence of ``target`` for ``minutes`` from ``now`` (0: lifted at once); validates both."""
    if not target.strip() or len(target) > MAX_TARGET_LENGTH:
        raise AlertStateError(f"The rule or type must be 1 to {MAX_TARGET_LENGTH} characters.")
    if isinstance(minutes, bool) or not (0 <= minutes <= max_minutes):
        raise AlertStateError(f"Minutes must be between 0 (lift the silence) and {max_minutes:g}.")
    return Silence(target=target, until=now + minutes * 60, silenced_by=by, silenced_at=now)


def covering_silence(silences: Iterable[Silence], *, rule: str | None, alert_type: str, now: float) -> Silence | None:
    """The live silence (the longest) of ``rule`` or of ``alert_type`` at ``now``, if any."""
    live = [s for s in silences if s.covers_at(now) and s.target in (rule, alert_type)]
    return max(live, key=lambda s: s.until, default=None)


def alert_status(record: AlertRecord, silences: Iterable[Silence], now: float) -> AlertStatus:
    if record.acknowledged:
        return "acknowledged"
    if record.suppressed or covering_silence(silences, rule=record.rule, alert_type=record.type, now=now):
        return "silenced"
    return "active"


def alert_view(record: AlertRecord, silences: Iterable[Silence], now: float) -> dict[str, Any]:
    """What dashboards get for an alert: the record plus its ``status``."""
    return {**record.to_wire(), "status": alert_status(record, silences, now)}


def live_silences(silences: Mapping[str, Silence] | Iterable[Silence], now: float) -> list[Silence]:
    values = silences.values() if isinstance(silences, Mapping) else silences
    return sorted((s for s in values if s.covers_at(now)), key=lambda s: s.target)


def _iso(seconds: float) -> str:
    return iso_utc(datetime.fromtimestamp(seconds, UTC))


def _seconds(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError("times must be ISO 8601 strings")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
