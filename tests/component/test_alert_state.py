"""Shared alert state over the in-memory broker and KV: the collector's silence window and rule reload (time
passed in), and the gateway's REST routes (acknowledge, silence, state, roles, limits)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest

from broker_bridge import catalog
from broker_bridge.alert_store import AlertStore
from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.keyvalue import MemoryKeyValueStore
from broker_bridge.publisher import RealtimePublisher
from gateway.app import build_app
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from shared.alert_state import Actor, silence
from stats_collector.alerting import Alerting
from stats_collector.alerts import load_rules
from stats_collector.metrics import CollectorMetrics
from tests.support.alerts import memory_shared_alerts
from tests.support.fanout import metric_value

RULES = """
[[rule]]
name = "latency"
metric = "api_response_time_ms"
aggregation = "last"
window = 30
comparator = ">"
threshold = 2000
severity = "critical"
type = "error"
cooldown = 0
"""
T0 = 1_800_000_000.0
SECRET = "component-test-secret-0123456789abcdef"
ADA = Actor("u-ada", "Ada")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Sent:
    """Every hub event published to the ``alerts`` group: (client method, argument)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, subject: str, payload: bytes) -> None:
        envelope = orjson.loads(payload)
        self.events.append((envelope["target"], envelope["arguments"][0]))

    def of(self, target: str) -> list[dict[str, Any]]:
        return [argument for name, argument in self.events if name == target]


@pytest.fixture
async def collector_side(tmp_path: Path) -> tuple[Alerting, AlertStore, Sent, Clock, CollectorMetrics, Path]:
    broker, sent, clock = InMemoryBroker(), Sent(), Clock()
    await broker.subscribe("realtime.group.alerts", sent)
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES)
    metrics = CollectorMetrics()
    alerting = Alerting(
        rules_path=rules_file,
        rules=load_rules(RULES),
        publisher=RealtimePublisher(broker),
        metrics=metrics,
        clock=clock,
    )
    store = AlertStore(MemoryKeyValueStore(clock=clock), MemoryKeyValueStore(clock=clock))
    alerting.attach(store)
    return alerting, store, sent, clock, metrics, rules_file


async def test_a_silenced_rule_is_recorded_not_raised_and_raised_once_the_silence_ends(
    collector_side: tuple[Alerting, AlertStore, Sent, Clock, CollectorMetrics, Path],
) -> None:
    alerting, store, sent, clock, metrics, _ = collector_side
    await store.put_silence(silence("latency", 1, by=ADA, now=T0, max_minutes=60))
    alerting.observe("api_response_time_ms", 2500, T0)
    await alerting.evaluate(active=True)
    assert sent.of("SystemAlert") == []
    [suppressed] = sent.of("AlertStateChanged")
    assert suppressed["change"] == "suppressed" and suppressed["by"] is None
    assert (suppressed["alert"]["status"], suppressed["alert"]["suppressed"]) == ("silenced", True)
    [kept] = await store.alerts()
    assert (kept.rule, kept.suppressed, kept.type) == ("latency", True, "error")
    assert metric_value(_text(metrics), "collector_alerts_suppressed_total", rule="latency") == 1

    # Still firing inside the window: nothing more. At the window's end: raised, once.
    for now in (T0 + 30, T0 + 59.9):
        clock.now = now
        alerting.observe("api_response_time_ms", 2600, now)
        await alerting.evaluate(active=True)
    assert sent.of("SystemAlert") == []
    clock.now = T0 + 60
    alerting.observe("api_response_time_ms", 2700, clock.now)
    await alerting.evaluate(active=True)
    await alerting.evaluate(active=True)
    [fired] = sent.of("SystemAlert")
    assert (fired["type"], fired["severity"], fired["data"]["state"]) == ("error", "critical", "firing")
    assert fired["id"] != kept.id

    # Its resolution names the alert it resolves, which the state marks resolved.
    clock.now = T0 + 61
    alerting.observe("api_response_time_ms", 100, clock.now)
    await alerting.evaluate(active=True)
    resolved = sent.of("SystemAlert")[-1]
    assert (resolved["type"], resolved["data"]["resolves"]) == ("success", fired["id"])
    stored = await store.alert(fired["id"])
    assert stored is not None and stored.resolved_at is not None


async def test_a_silence_of_the_type_holds_back_a_resolution_and_a_standby_raises_nothing(
    collector_side: tuple[Alerting, AlertStore, Sent, Clock, CollectorMetrics, Path],
) -> None:
    alerting, store, sent, clock, _, _ = collector_side
    alerting.observe("api_response_time_ms", 2500, T0)
    await alerting.evaluate(active=True)
    [fired] = sent.of("SystemAlert")
    await store.put_silence(silence("error", 10, by=ADA, now=T0, max_minutes=60))
    clock.now = T0 + 1
    alerting.observe("api_response_time_ms", 100, clock.now)
    await alerting.evaluate(active=True)
    assert sent.of("SystemAlert") == [fired]
    [held] = sent.of("AlertStateChanged")
    assert (held["change"], held["alert"]["type"], held["alert"]["data"]["resolves"]) == (
        "suppressed",
        "success",
        fired["id"],
    )
    clock.now = T0 + 2
    alerting.observe("api_response_time_ms", 2500, clock.now)
    await alerting.evaluate(active=False)  # a standby keeps the rules' state and sends nothing
    assert len(sent.events) == 2


async def test_reload_keeps_the_rules_when_the_file_is_bad_and_names_the_line(
    collector_side: tuple[Alerting, AlertStore, Sent, Clock, CollectorMetrics, Path],
) -> None:
    alerting, _, _, _, metrics, rules_file = collector_side
    rules_file.write_text(RULES.replace("window = 30", "window = -5"))
    refused = alerting.reload()
    assert refused.status == 400 and refused.body["line"] == 6
    assert refused.body["error"].startswith("line 6, rule 'latency', key 'window'")
    assert [rule.window_seconds for rule in alerting.rules] == [30]
    rules_file.write_text(RULES + RULES.replace('"latency"', '"second"'))
    reloaded = alerting.reload()
    assert reloaded.status == 200
    assert [rule["name"] for rule in reloaded.body["rules"]] == ["latency", "second"]
    assert alerting.listing()["rules"] == reloaded.body["rules"]
    text = _text(metrics)
    assert metric_value(text, "collector_alert_rule_reloads_total", outcome="invalid") == 1
    assert metric_value(text, "collector_alert_rules") == 2


def _text(metrics: CollectorMetrics) -> str:
    return generate_latest(metrics.registry).decode()


# -- the gateway's routes ---------------------------------------------------------------------------


def token(*, roles: list[str], sub: str = "u-1", name: str = "Alice") -> dict[str, str]:
    claims = {"sub": sub, "name": name, "exp": int(time.time()) + 3600, "role": roles}
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


ADMIN = token(roles=["Admin"])
VIEWER = token(roles=["Viewer"], sub="u-2", name="Vic")


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> tuple[TestClient[Any, Any], Sent]:
    broker, sent = InMemoryBroker(), Sent()
    await broker.subscribe("realtime.group.alerts", sent)
    settings = GatewaySettings(
        jwt_secret=SECRET, replica_id="r1", required_roles=("Admin", "Viewer"), max_alert_silences=2
    )
    return await aiohttp_client(build_app(settings, broker=broker)), sent


async def test_rest_alerts_get_ids_and_acknowledging_records_who_once(
    api: tuple[TestClient[Any, Any], Sent],
) -> None:
    client, sent = api
    answer = await client.post("/api/admin/realtime/alert/warning", json={"message": "disk 91%"}, headers=ADMIN)
    assert answer.status == 200
    alert_id = (await answer.json())["id"]
    [alert] = sent.of("SystemAlert")
    assert alert["id"] == alert_id

    state = await (await client.get("/api/admin/realtime/alerts/state", headers=VIEWER)).json()
    assert [(a["id"], a["status"]) for a in state["alerts"]] == [(alert_id, "active")]

    path = f"/api/admin/realtime/alerts/{alert_id}/acknowledge"
    assert (await client.post(path, headers=VIEWER)).status == 403
    acknowledged = await client.post(path, headers=ADMIN)
    view = await acknowledged.json()
    assert (acknowledged.status, view["status"]) == (200, "acknowledged")
    assert view["acknowledgedBy"] == {"userId": "u-1", "userName": "Alice"}
    [changed] = sent.of("AlertStateChanged")
    assert (changed["change"], changed["alert"], changed["by"]) == ("acknowledged", view, view["acknowledgedBy"])
    again = await (await client.post(path, headers=token(roles=["Admin"], sub="u-3", name="Bob"))).json()
    assert again["acknowledgedBy"]["userName"] == "Alice" and len(sent.of("AlertStateChanged")) == 1

    missing = await client.post("/api/admin/realtime/alerts/nope/acknowledge", headers=ADMIN)
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    assert (await client.post("/api/admin/realtime/alerts/a.b/acknowledge", headers=ADMIN)).status == 400


async def test_silences_are_validated_limited_listed_and_lifted(api: tuple[TestClient[Any, Any], Sent]) -> None:
    client, sent = api
    path = "/api/admin/realtime/alert-silences"
    bad = await client.post(path, json={"target": "cpu"}, headers=ADMIN)
    assert bad.status == 400 and "minutes" in (await bad.json())["errors"]
    assert (await client.post(path, json={"target": "cpu", "minutes": 5}, headers=VIEWER)).status == 403
    assert (await client.post(path, json={"target": "cpu", "minutes": 99999}, headers=ADMIN)).status == 400
    made = await (await client.post(path, json={"target": "cpu", "minutes": 5}, headers=ADMIN)).json()
    assert (made["target"], made["silencedBy"]["userId"]) == ("cpu", "u-1")
    assert (await client.post(path, json={"target": "warning", "minutes": 5}, headers=ADMIN)).status == 200
    over = await client.post(path, json={"target": "third", "minutes": 5}, headers=ADMIN)
    assert over.status == 409
    assert (await client.post(path, json={"target": "cpu", "minutes": 10}, headers=ADMIN)).status == 200
    state = await (await client.get("/api/admin/realtime/alerts/state", headers=ADMIN)).json()
    assert [s["target"] for s in state["silences"]] == ["cpu", "warning"]
    assert (await client.post(path, json={"target": "cpu", "minutes": 0}, headers=ADMIN)).status == 200
    state = await (await client.get("/api/admin/realtime/alerts/state", headers=ADMIN)).json()
    assert [s["target"] for s in state["silences"]] == ["warning"]
    assert [c["change"] for c in sent.of("AlertStateChanged")] == ["silenced", "silenced", "silenced", "unsilenced"]


async def test_rules_without_a_collector_answer_503(api: tuple[TestClient[Any, Any], Sent]) -> None:
    client, _ = api
    assert (await client.get("/api/admin/realtime/alert-rules", headers=ADMIN)).status == 503
    assert (await client.post("/api/admin/realtime/alert-rules/reload", headers=VIEWER)).status == 403


async def test_the_state_answer_keeps_the_newest_alerts_that_fit_and_counts_the_rest() -> None:
    alerts = memory_shared_alerts(InMemoryBroker(), GatewayMetrics(), max_answer_bytes=1500)
    for n in range(6):
        stamp = f"2027-01-15T08:00:0{n}.000Z"
        await alerts.raise_alert(
            catalog.system_alert(alert_id=f"a{n}", alert_type="info", message="m" * 200, timestamp=stamp)
        )
    state = await alerts.states()
    ids = [alert["id"] for alert in state["alerts"]]
    assert 0 < len(ids) < 6 and ids == [f"a{n}" for n in range(5, 5 - len(ids), -1)]
    assert state["omitted"] == 6 - len(ids)
    assert len(orjson.dumps(state["alerts"])) <= 1500
