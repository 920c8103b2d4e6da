"""Shared alert state in NATS KV (records and transitions: :mod:`shared.alert_state`).

Buckets, opened (created if missing) by the gateway and the collector with the same limits:

* ``REALTIME_ALERTS`` - key ``<alert id>``: an :class:`~shared.alert_state.AlertRecord`, written when the
  alert is raised (collector rules, REST) and changed with compare-and-set when it is acknowledged or
  its rule resolves. Entries expire ``retention_seconds`` after their last write; beyond ``max_alerts``
  the server drops the oldest written record (a dashboard then no longer lists that alert).
* ``REALTIME_ALERT_SILENCES`` - key base64url(target) (a rule name may hold any character): a
  :class:`~shared.alert_state.Silence`; expires ``retention_seconds`` after it was written, so a silence
  may last as long as that at most. The gateway refuses a new silence beyond ``max_silences`` live ones.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from typing import Final

from nats.aio.client import Client

from broker_bridge.keyvalue import KeyValueStore, NatsKeyValueStore
from shared import jsoncodec
from shared.alert_state import Actor, AlertRecord, Silence

log = logging.getLogger(__name__)

ALERTS_BUCKET: Final = "REALTIME_ALERTS"
SILENCES_BUCKET: Final = "REALTIME_ALERT_SILENCES"
# Compare-and-set attempts on one record before giving up (each loses only to another writer's change).
MAX_UPDATE_ATTEMPTS: Final = 5


class AlertUpdateConflict(Exception):
    """A record kept changing under us for :data:`MAX_UPDATE_ATTEMPTS` attempts."""


def silence_key(target: str) -> str:
    """base64url of the target: a rule name may hold characters a KV key may not (``=`` and ``-`` it may)."""
    return base64.urlsafe_b64encode(target.encode()).decode()


class AlertStore:
    """Alert records and silences over two KV stores (NATS, or in memory for component tests)."""

    def __init__(self, alerts: KeyValueStore, silences: KeyValueStore) -> None:
        self._alerts = alerts
        self._silences = silences

    @classmethod
    async def open(cls, client: Client, *, retention_seconds: float, max_alerts: int, replicas: int) -> AlertStore:
        alerts = await NatsKeyValueStore.open(
            client, bucket=ALERTS_BUCKET, ttl_seconds=retention_seconds, replicas=replicas, max_keys=max_alerts
        )
        silences = await NatsKeyValueStore.open(
            client, bucket=SILENCES_BUCKET, ttl_seconds=retention_seconds, replicas=replicas
        )
        return cls(alerts, silences)

    # -- alerts -----------------------------------------------------------------------------------

    async def record(self, alert: AlertRecord) -> None:
        await self._alerts.put(alert.id, jsoncodec.dumps(alert.to_wire()))

    async def alert(self, alert_id: str) -> AlertRecord | None:
        found = await self._alerts.entry(alert_id)
        return _decode_alert(found[0]) if found else None

    async def acknowledge(self, alert_id: str, *, by: Actor, now: float) -> tuple[AlertRecord, bool] | None:
        """The record after acknowledging it and whether this call changed it (False: it already was);
        None when no such alert is kept."""
        for _ in range(MAX_UPDATE_ATTEMPTS):
            found = await self._alerts.entry(alert_id)
            record = _decode_alert(found[0]) if found else None
            if found is None or record is None:
                return None
            changed = record.acknowledge(by, now)
            if changed is None:
                return record, False
            if await self._alerts.compare_and_set(alert_id, jsoncodec.dumps(changed.to_wire()), found[1]) is not None:
                return changed, True
        raise AlertUpdateConflict(alert_id)

    async def resolve(self, alert_id: str, *, now: float) -> AlertRecord | None:
        """Mark a rule's firing alert resolved; None when it is no longer kept."""
        for _ in range(MAX_UPDATE_ATTEMPTS):
            found = await self._alerts.entry(alert_id)
            record = _decode_alert(found[0]) if found else None
            if found is None or record is None:
                return None
            resolved = record.resolve(now)
            if resolved is record:
                return record
            if await self._alerts.compare_and_set(alert_id, jsoncodec.dumps(resolved.to_wire()), found[1]) is not None:
                return resolved
        raise AlertUpdateConflict(alert_id)

    async def alerts(self) -> list[AlertRecord]:
        """Every kept alert, newest first."""
        records = [_decode_alert(value) for value in (await self._alerts.items()).values()]
        return sorted((r for r in records if r is not None), key=lambda r: (r.timestamp, r.id), reverse=True)

    # -- silences ---------------------------------------------------------------------------------

    async def put_silence(self, silence: Silence) -> None:
        await self._silences.put(silence_key(silence.target), jsoncodec.dumps(silence.to_wire()))

    async def silence_of(self, target: str) -> Silence | None:
        value = await self._silences.get(silence_key(target))
        return _decode_silence(value) if value is not None else None

    async def silences(self) -> list[Silence]:
        decoded = [_decode_silence(value) for value in (await self._silences.items()).values()]
        return [s for s in decoded if s is not None]


def _decode_alert(value: bytes) -> AlertRecord | None:
    """A record, or None (logged) for a value another writer got wrong: it is skipped, never fatal."""
    with contextlib.suppress(ValueError):
        return AlertRecord.from_wire(jsoncodec.loads(value))
    log.warning("ignoring an invalid alert record in %s", ALERTS_BUCKET)
    return None


def _decode_silence(value: bytes) -> Silence | None:
    with contextlib.suppress(ValueError):
        return Silence.from_wire(jsoncodec.loads(value))
    log.warning("ignoring an invalid silence record in %s", SILENCES_BUCKET)
    return None
