"""The collector's alerting: the rules in use, their reload, silences, and the alerts it raises.

Rules come from a TOML file (:mod:`stats_collector.alerts`). :meth:`Alerting.reload` reads the file
again (on SIGHUP, or when a gateway asks on ``realtime.collector.rules.reload``); a file with an error
keeps the rules in use, and the error names its line. The engine goes on from where it was for every
rule whose definition did not change.

Each transition the active replica reports is raised as a SystemAlert with a new id and recorded in the
shared alert state (:mod:`broker_bridge.alert_store`), unless a live silence covers the rule's name or
its alert type: then it is recorded with ``suppressed`` set, counted in
``collector_alerts_suppressed_total`` and announced as ``AlertStateChanged`` ``suppressed``, but not
sent. A rule still firing when its silence ends is raised then (checked every evaluation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from broker_bridge import catalog
from broker_bridge.alert_store import AlertStore
from broker_bridge.interface import BrokerUnavailable, Subscription
from broker_bridge.publisher import RealtimePublisher
from broker_bridge.subjects import COLLECTOR_RULES_LIST, COLLECTOR_RULES_RELOAD
from shared import jsoncodec
from shared.alert_state import AlertRecord, Silence, alert_view, covering_silence, new_alert_id
from shared.timeutil import iso_utc
from stats_collector.alerts import AlertEngine, AlertRule, AlertTransition, RuleError, load_rules
from stats_collector.metrics import CollectorMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload answers a gateway: an HTTP status and the body (the rules, or the file's problem)."""

    status: int
    body: dict[str, Any]


class Alerting:
    """Owns the alert engine and the rules file; raises, records and holds back alerts."""

    def __init__(
        self,
        *,
        rules_path: Path,
        rules: list[AlertRule],
        publisher: RealtimePublisher,
        metrics: CollectorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = rules_path
        self._engine = AlertEngine(rules)
        self._loaded_at = iso_utc()
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._store: AlertStore | None = None
        # Rule name -> id of its last firing alert that went out (a resolution marks it resolved).
        self._firing: dict[str, str] = {}
        # Rules firing while silenced, raised once their silence ends.
        self._held: set[str] = set()
        metrics.alert_rules.set(len(rules))

    def attach(self, store: AlertStore) -> None:
        self._store = store

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        return self._engine.rules

    def observe(self, metric: str, value: float, at: float) -> None:
        self._engine.observe(metric, value, at)

    # -- rules --------------------------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        rules = [rule.to_wire() for rule in self._engine.rules]
        return catalog.alert_rules(rules=rules, file=str(self._path), loaded_at=self._loaded_at)

    def reload(self) -> ReloadResult:
        """Read the rules file again; on any problem keep the rules in use and say which line is wrong."""
        try:
            rules = load_rules(self._path.read_text())
        except RuleError as error:
            return self._refused(str(error), error.line)
        except (OSError, UnicodeDecodeError) as error:
            return self._refused(f"cannot read the file: {error}", None)
        self._engine = self._engine.reloaded(rules)
        self._loaded_at = iso_utc()
        self._held &= {rule.name for rule in rules}
        self._metrics.alert_rules.set(len(rules))
        self._metrics.rule_reloads.labels(outcome="ok").inc()
        log.info("alert rules reloaded from %s: %d rules", self._path, len(rules))
        return ReloadResult(200, self.listing())

    def _refused(self, problem: str, line: int | None) -> ReloadResult:
        self._metrics.rule_reloads.labels(outcome="invalid").inc()
        log.error(
            "alert rules not reloaded from %s: %s; keeping the %d rules in use", self._path, problem, len(self.rules)
        )
        return ReloadResult(400, catalog.alert_rules_refused(problem=problem, line=line, file=str(self._path)))

    async def serve(self, client: Client) -> list[Subscription]:
        """Answer the gateways' requests to list and reload the rules (every replica answers)."""

        def answering(make: Callable[[], ReloadResult]) -> Callable[[Msg], Awaitable[None]]:
            async def answer(message: Msg) -> None:
                result = make()
                await message.respond(jsoncodec.dumps({"status": result.status, "body": result.body}))

            return answer

        return [
            await client.subscribe(COLLECTOR_RULES_LIST, cb=answering(lambda: ReloadResult(200, self.listing()))),
            await client.subscribe(COLLECTOR_RULES_RELOAD, cb=answering(self.reload)),
        ]

    # -- raising ------------------------------------------------------------------------------

    async def evaluate(self, *, active: bool) -> None:
        """Advance every rule to now (every replica, so a standby takes over with the rules' state); the
        active replica raises the transitions and what a silence that ended held back."""
        now = self._clock()
        transitions = self._engine.evaluate(now)
        if not active:
            return
        for transition in transitions:
            await self._raise(transition)
        for name in sorted(self._held):
            rule = next((rule for rule in self.rules if rule.name == name), None)
            if rule is None or not self._engine.is_firing(name):
                self._held.discard(name)
            elif await self._silence_for(rule, now) is None:
                self._held.discard(name)
                await self._raise(AlertTransition(rule, "firing", self._engine.value(rule, now), now))

    async def send(self, alert: catalog.HubEvent) -> None:
        """Record and send an alert of no rule (a stream gap): no silence holds it back."""
        await self._record(catalog.alert_record(alert), resolves=None, now=self._clock())
        await self._publisher.publish(alert)

    async def _silence_for(self, rule: AlertRule, now: float) -> Silence | None:
        """The live silence of the rule or its type; none when KV cannot say (better a noisy alert than a lost one)."""
        if self._store is None:
            return None
        try:
            silences = [await self._store.silence_of(target) for target in (rule.name, rule.alert_type)]
        except BrokerUnavailable:
            log.warning("could not read the silences of rule %s; raising its alert", rule.name)
            return None
        return covering_silence(
            (s for s in silences if s is not None), rule=rule.name, alert_type=rule.alert_type, now=now
        )

    async def _raise(self, transition: AlertTransition) -> None:
        rule = transition.rule
        firing = transition.state == "firing"
        silence = await self._silence_for(rule, transition.at)
        data: dict[str, Any] = {
            "rule": rule.name,
            "state": transition.state,
            "metric": rule.metric,
            "aggregation": rule.aggregation,
            "windowSeconds": rule.window_seconds,
            "comparator": rule.comparator,
            "threshold": rule.threshold,
            "value": transition.value,
        }
        fired = None if firing else self._firing.pop(rule.name, None)
        if fired is not None:
            data["resolves"] = fired
        alert = catalog.system_alert(
            alert_id=new_alert_id(transition.at),
            alert_type=rule.alert_type if firing else "success",
            message=transition.message,
            timestamp=iso_utc(),
            severity=rule.severity if firing else "low",
            data=data,
        )
        record = catalog.alert_record(alert, rule=rule.name, suppressed=silence is not None)
        await self._record(record, resolves=fired, now=transition.at)
        if silence is not None:
            if firing:
                self._held.add(rule.name)
            else:
                self._held.discard(rule.name)
            self._metrics.alerts_suppressed.labels(rule=rule.name).inc()
            view = alert_view(record, [silence], transition.at)
            await self._publisher.publish(
                catalog.alert_state_changed(change="suppressed", by=None, timestamp=iso_utc(), alert=view)
            )
            return
        if firing:
            self._firing[rule.name] = record.id
        await self._publisher.publish(alert)
        self._metrics.alerts.labels(rule=rule.name, state=transition.state).inc()

    async def _record(self, record: AlertRecord, *, resolves: str | None, now: float) -> None:
        """Keep the alert in the shared state; a failure is logged and counted, and the alert still goes out."""
        if self._store is None:
            return
        try:
            await self._store.record(record)
            if resolves is not None:
                await self._store.resolve(resolves, now=now)
        except BrokerUnavailable:
            self._metrics.alert_record_failures.inc()
            log.warning("could not record alert %s in the shared alert state", record.id)
