"""Shared alert state as the hub and the REST API use it: raise, acknowledge, silence, read; the rules.

State lives in NATS KV (:mod:`broker_bridge.alert_store`), so every replica answers the same and a
dashboard opened later reads what happened before. Each change is announced to the ``alerts`` group as
``AlertStateChanged`` (:func:`broker_bridge.catalog.alert_state_changed`), so every open dashboard
updates at once. Acknowledging and silencing take the Admin role (a deployment may let other roles
onto the hub with ``REALTIME_REQUIRED_ROLES``: they may read the state and the rules, not change them).

The alert rules belong to the stats collector: listing and reloading them are NATS requests to it
(``realtime.collector.rules.list`` / ``.reload``), answered with its status and body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from broker_bridge import catalog
from broker_bridge.alert_store import AlertStore, AlertUpdateConflict
from broker_bridge.interface import Broker, BrokerUnavailable, NoResponder
from broker_bridge.publisher import RealtimePublisher
from broker_bridge.subjects import COLLECTOR_RULES_LIST, COLLECTOR_RULES_RELOAD
from gateway.auth import ADMIN_ROLE, Principal
from gateway.metrics import GatewayMetrics
from shared import jsoncodec
from shared.alert_state import (
    Actor,
    AlertStateError,
    alert_view,
    check_alert_id,
    live_silences,
    silence,
)
from shared.timeutil import iso_utc

log = logging.getLogger(__name__)

UNREADABLE_ANSWER: Final = "The stats collector's answer could not be read."


class AlertRefused(Exception):
    """A request the caller must change: ``status`` (400, 403, 404, 409) and a message it may see."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class CollectorAnswer:
    """The collector's answer to a rules request: an HTTP status and its body."""

    status: int
    body: dict[str, Any]


class CollectorUnreachable(Exception):
    """No usable answer: ``status`` 503 (no collector is running), 504 (none answered in time) or 502 (an
    answer that does not decode)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def actor_of(principal: Principal) -> Actor:
    return Actor(principal.user_id, principal.name)


class SharedAlerts:
    """The gateway's side of the shared alert state."""

    def __init__(
        self,
        *,
        broker: Broker,
        publisher: RealtimePublisher,
        metrics: GatewayMetrics,
        retention_seconds: float,
        max_alerts: int,
        max_silences: int,
        max_answer_bytes: int,
        collector_timeout_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = broker
        self._publisher = publisher
        self._metrics = metrics
        self._max_silence_minutes = retention_seconds / 60
        self._max_alerts = max_alerts
        self._max_silences = max_silences
        self._max_answer_bytes = max_answer_bytes
        self._collector_timeout = collector_timeout_seconds
        self._clock = clock
        self._store: AlertStore | None = None

    def attach(self, store: AlertStore) -> None:
        self._store = store

    @property
    def store(self) -> AlertStore:
        if self._store is None:
            raise BrokerUnavailable("alert state")
        return self._store

    async def raise_alert(self, alert: catalog.HubEvent) -> None:
        """Record a SystemAlert (built with an id) in the shared state, then send it. An alert whose record
        KV does not take (its bucket electing a leader, say) is still sent: dashboards must hear it even if
        it cannot be acknowledged; counted as ``realtime_alert_actions_total{action="unrecorded"}``."""
        try:
            await self.store.record(catalog.alert_record(alert))
        except BrokerUnavailable:
            self._metrics.alert_actions.labels(action="unrecorded").inc()
            log.warning("alert %s sent without its shared-state record: KV did not take it", alert.payload["id"])
        await self._publisher.publish(alert)

    async def acknowledge(self, principal: Principal, alert_id: str) -> dict[str, Any]:
        """The alert's view after acknowledging it; an alert acknowledged already keeps its first acknowledgement."""
        _require_admin(principal, "acknowledge alerts")
        try:
            check_alert_id(alert_id)
        except AlertStateError as error:
            raise AlertRefused(400, str(error)) from None
        now = self._clock()
        try:
            outcome = await self.store.acknowledge(alert_id, by=actor_of(principal), now=now)
        except AlertUpdateConflict:
            raise AlertRefused(409, "The alert is changing; try again.") from None
        if outcome is None:
            raise AlertRefused(404, f"No alert {alert_id} is kept (unknown, or expired).")
        record, changed = outcome
        view = alert_view(record, await self.store.silences(), now)
        if changed:
            self._metrics.alert_actions.labels(action="acknowledged").inc()
            event = catalog.alert_state_changed(
                change="acknowledged", by=actor_of(principal).to_wire(), timestamp=iso_utc(), alert=view
            )
            await self._publisher.publish(event)
        return view

    async def silence(self, principal: Principal, target: str, minutes: float) -> dict[str, Any]:
        """Silence a rule or alert type for ``minutes`` (0 lifts it); the silence's view."""
        _require_admin(principal, "silence alerts")
        now = self._clock()
        by = actor_of(principal)
        try:
            made = silence(target, minutes, by=by, now=now, max_minutes=self._max_silence_minutes)
        except AlertStateError as error:
            raise AlertRefused(400, str(error)) from None
        live = live_silences(await self.store.silences(), now)
        if minutes > 0 and len(live) >= self._max_silences and all(s.target != target for s in live):
            self._metrics.limit_refusals.labels(limit="alert_silences").inc()
            raise AlertRefused(409, f"At most {self._max_silences} silences may be live at once; lift one first.")
        await self.store.put_silence(made)
        change: catalog.AlertChange = "silenced" if minutes > 0 else "unsilenced"
        self._metrics.alert_actions.labels(action=change).inc()
        view = made.to_wire()
        await self._publisher.publish(
            catalog.alert_state_changed(change=change, by=by.to_wire(), timestamp=iso_utc(), silence=view)
        )
        return view

    async def states(self) -> dict[str, Any]:
        """The live silences and the kept alerts with their status, newest first, as many as fit in
        ``max_answer_bytes`` (the rest are counted in ``omitted``)."""
        now = self._clock()
        store = self.store
        records = await store.alerts()
        silences = live_silences(await store.silences(), now)
        self._metrics.alert_records.set(len(records))
        views: list[dict[str, Any]] = []
        room = self._max_answer_bytes - sum(len(jsoncodec.dumps(s.to_wire())) for s in silences)
        for record in records:
            view = alert_view(record, silences, now)
            room -= len(jsoncodec.dumps(view))
            if room < 0:
                break
            views.append(view)
        return catalog.alert_states(
            alerts=views,
            omitted=len(records) - len(views),
            silences=[s.to_wire() for s in silences],
            max_alerts=self._max_alerts,
            timestamp=iso_utc(),
        )

    # -- the collector's rules ------------------------------------------------------------------

    async def rules(self) -> CollectorAnswer:
        return await self._ask_collector(COLLECTOR_RULES_LIST)

    async def reload_rules(self, principal: Principal) -> CollectorAnswer:
        _require_admin(principal, "reload the alert rules")
        answer = await self._ask_collector(COLLECTOR_RULES_RELOAD)
        self._metrics.alert_actions.labels(action="rules_reloaded" if answer.status == 200 else "rules_refused").inc()
        return answer

    async def _ask_collector(self, subject: str) -> CollectorAnswer:
        try:
            reply = await self._broker.request(subject, b"", timeout_seconds=self._collector_timeout)
        except NoResponder:
            raise CollectorUnreachable(503, "No stats collector is running.") from None
        except TimeoutError:
            raise CollectorUnreachable(504, "The stats collector did not answer in time.") from None
        try:
            decoded = jsoncodec.loads(reply)
            status, body = decoded["status"], decoded["body"]
        except (ValueError, KeyError, TypeError):
            raise CollectorUnreachable(502, UNREADABLE_ANSWER) from None
        if not isinstance(status, int) or not isinstance(body, dict):
            raise CollectorUnreachable(502, UNREADABLE_ANSWER)
        return CollectorAnswer(status, body)


def _require_admin(principal: Principal, what: str) -> None:
    if ADMIN_ROLE not in principal.roles:
        raise AlertRefused(403, f"Only the {ADMIN_ROLE} role may {what}.")
