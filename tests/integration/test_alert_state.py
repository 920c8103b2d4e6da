"""Shared alert state with real processes: a nats-server, a gateway, a stats collector and the official JS client.

An acknowledgement (hub or REST) reaches every other dashboard as ``AlertStateChanged``, and a dashboard
connected later reads the state; the collector holds a silenced rule's alert back (recorded, counted)
and raises it once the silence ends; the rules are listed and reloaded over REST and on SIGHUP, and a
bad file keeps the rules in use and is answered 400 naming its line.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from scripts.processes import wait_until_async
from tests.support.collector import CollectorProcess, Sampler
from tests.support.fanout import ClientPool, FanoutClient, HttpAnswer, HubInvocationError, http
from tests.support.processes import GatewayProcess
from tests.support.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

EVENTS = ["AlertStateChanged"]
COLLECTOR_ENV = {"REALTIME_PERSIST_INTERVAL_SECONDS": "0.5", "REALTIME_LEASE_TTL_SECONDS": "2"}
RULE = """
[[rule]]
name = "{name}"
metric = "api_response_time_ms"
aggregation = "last"
window = 5
comparator = ">"
threshold = 2000
severity = "critical"
type = "error"
cooldown = 0
"""
# The line of `window` in RULE (it starts with an empty line, then [[rule]], name, metric, aggregation).
WINDOW_LINE = 6


def token(name: str, sub: str) -> str:
    return make_token(roles=["Admin"], sub=sub, name=name)


ADA = token("Ada", "u-ada")
BOB = token("Bob", "u-bob")


async def dashboard(pool: ClientPool, gateway: GatewayProcess, user: str, label: str) -> FanoutClient:
    client = await pool.connect(gateway.hub_url, user, label=label, events=EVENTS)
    await client.invoke("SubscribeToAlerts")
    await client.sync_with_broker()
    return client


async def post_alert(gateway: GatewayProcess, message: str) -> str:
    answer = await http("POST", gateway.base_url, "alert/warning", token=ADA, json_body={"message": message})
    assert answer.status == 200, answer
    return str(answer.json["id"])


async def test_acknowledgements_reach_every_dashboard_and_a_later_one_reads_the_state(
    fresh_gateway: GatewayProcess,
) -> None:
    async with ClientPool() as pool:
        ada = await dashboard(pool, fresh_gateway, ADA, "ada")
        bob = await dashboard(pool, fresh_gateway, BOB, "bob")
        first = await post_alert(fresh_gateway, "disk 91%")
        second = await post_alert(fresh_gateway, "disk 95%")
        alerts = await bob.wait_event("SystemAlert", lambda a: a["id"] == second)
        assert alerts["type"] == "warning"

        # By the hub: Bob's dashboard sees Ada's acknowledgement.
        view = await ada.invoke("AcknowledgeAlert", first)
        assert (view["id"], view["status"]) == (first, "acknowledged")
        assert view["acknowledgedBy"] == {"userId": "u-ada", "userName": "Ada"}
        changed = await bob.wait_event("AlertStateChanged", lambda c: c["change"] == "acknowledged")
        assert changed["alert"] == view and changed["by"] == {"userId": "u-ada", "userName": "Ada"}

        # By REST: both dashboards see Bob's.
        marks = {ada: ada.mark(), bob: bob.mark()}
        answer = await http("POST", fresh_gateway.base_url, f"alerts/{second}/acknowledge", token=BOB)
        assert answer.status == 200 and answer.json["acknowledgedBy"]["userName"] == "Bob", answer
        for client, since in marks.items():
            seen = await client.wait_event(
                "AlertStateChanged", lambda c: c["alert"] and c["alert"]["id"] == second, since=since
            )
            assert seen["by"]["userName"] == "Bob"

        silenced = await ada.invoke("SilenceAlert", "cpu_usage_high", 30)
        assert (silenced["target"], silenced["silencedBy"]["userName"]) == ("cpu_usage_high", "Ada")
        await bob.wait_event("AlertStateChanged", lambda c: c["change"] == "silenced")
        with pytest.raises(HubInvocationError, match="No alert"):
            await ada.invoke("AcknowledgeAlert", "no-such-alert")

        # A dashboard opened now reads all of it.
        later = await pool.connect(fresh_gateway.hub_url, BOB, label="later", events=EVENTS)
        state = await later.invoke("GetAlertStates")
        by_id = {alert["id"]: alert for alert in state["alerts"]}
        assert by_id[first]["acknowledgedBy"]["userName"] == "Ada"
        assert by_id[second]["acknowledgedBy"]["userName"] == "Bob"
        assert {by_id[first]["status"], by_id[second]["status"]} == {"acknowledged"}
        assert [(s["target"], s["silencedBy"]["userId"]) for s in state["silences"]] == [("cpu_usage_high", "u-ada")]
        rest_state = await http("GET", fresh_gateway.base_url, "alerts/state", token=BOB)
        assert [a["id"] for a in rest_state.json["alerts"]] == [a["id"] for a in state["alerts"]]


async def started_collector(
    collectors: Callable[..., CollectorProcess], gateway: GatewayProcess, rules_file: Path
) -> CollectorProcess:
    collector = collectors(REALTIME_ALERT_RULES_FILE=str(rules_file))
    await collector.astart()
    await collector.wait_metric("collector_active", lambda v: v == 1, seconds=15)
    await wait_until_async(lambda: rules_answered(gateway), timeout=10, what="the collector to answer for its rules")
    return collector


async def rules_answered(gateway: GatewayProcess) -> bool:
    return (await http("GET", gateway.base_url, "alert-rules", token=ADA)).status == 200


async def test_a_silenced_rule_is_held_back_while_silenced_and_raised_once_the_silence_ends(
    nc: Client, collectors: Callable[..., CollectorProcess], fresh_gateway: GatewayProcess, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULE.format(name="latency"))
    collector = await started_collector(collectors, fresh_gateway, rules_file)
    async with ClientPool() as pool:
        watcher = await dashboard(pool, fresh_gateway, BOB, "watcher")
        silenced = await http(
            "POST", fresh_gateway.base_url, "alert-silences", token=ADA, json_body={"target": "latency", "minutes": 30}
        )
        assert silenced.status == 200, silenced
        sampler = Sampler(nc, level=2500, interval=0.05)
        try:
            held = await watcher.wait_event("AlertStateChanged", lambda c: c["change"] == "suppressed", seconds=15)
            assert (held["alert"]["rule"], held["alert"]["status"], held["alert"]["suppressed"]) == (
                "latency",
                "silenced",
                True,
            )
            assert watcher.events("SystemAlert", since=0) == [], "nothing raised while silenced"
            await collector.wait_metric("collector_alerts_suppressed_total", lambda v: v == 1, rule="latency")
            state = await http("GET", fresh_gateway.base_url, "alerts/state", token=BOB)
            assert [a["id"] for a in state.json["alerts"] if a["suppressed"]] == [held["alert"]["id"]]

            # The silence ends (lifted here; the component tests let one run out): raised at once.
            since = watcher.mark()
            lifted = await http(
                "POST",
                fresh_gateway.base_url,
                "alert-silences",
                token=ADA,
                json_body={"target": "latency", "minutes": 0},
            )
            assert lifted.status == 200, lifted
            fired = await watcher.wait_event("SystemAlert", seconds=10, since=since)
            assert (fired["type"], fired["data"]["rule"], fired["data"]["state"]) == ("error", "latency", "firing")
            assert fired["timestamp"] >= lifted.json["until"]
        finally:
            await sampler.close()
        assert [a["data"]["state"] for a in watcher.events("SystemAlert", since=0)] == ["firing"]


def problem_line(answer: HttpAnswer) -> Any:
    assert answer.status == 400 and answer.content_type == "application/problem+json", answer
    return answer.json["line"]


async def test_rules_reload_over_rest_and_a_bad_file_keeps_the_old_rules(
    collectors: Callable[..., CollectorProcess], fresh_gateway: GatewayProcess, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULE.format(name="first"))
    await started_collector(collectors, fresh_gateway, rules_file)
    listed = await http("GET", fresh_gateway.base_url, "alert-rules", token=BOB)
    assert [rule["name"] for rule in listed.json["rules"]] == ["first"]
    assert listed.json["file"] == str(rules_file)

    rules_file.write_text(RULE.format(name="first") + RULE.format(name="second"))
    reloaded = await http("POST", fresh_gateway.base_url, "alert-rules/reload", token=ADA)
    assert reloaded.status == 200, reloaded
    assert [rule["name"] for rule in reloaded.json["rules"]] == ["first", "second"]

    rules_file.write_text(RULE.format(name="third").replace("window = 5", "window = -5"))
    refused = await http("POST", fresh_gateway.base_url, "alert-rules/reload", token=ADA)
    assert problem_line(refused) == WINDOW_LINE
    assert refused.json["detail"].startswith(f"line {WINDOW_LINE}, rule 'third', key 'window'"), refused
    kept = await http("GET", fresh_gateway.base_url, "alert-rules", token=BOB)
    assert [rule["name"] for rule in kept.json["rules"]] == ["first", "second"]


async def test_sighup_reloads_the_rules_and_logs_a_bad_file_naming_its_line(
    collectors: Callable[..., CollectorProcess], fresh_gateway: GatewayProcess, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULE.format(name="first"))
    collector = await started_collector(collectors, fresh_gateway, rules_file)
    assert collector.child is not None

    rules_file.write_text(RULE.format(name="renamed"))
    collector.child.send_signal(signal.SIGHUP)
    await collector.wait_metric("collector_alert_rule_reloads_total", lambda v: v == 1, outcome="ok")
    listed = await http("GET", fresh_gateway.base_url, "alert-rules", token=BOB)
    assert [rule["name"] for rule in listed.json["rules"]] == ["renamed"]

    rules_file.write_text(RULE.format(name="broken").replace("window = 5", "window = 5 5"))
    collector.child.send_signal(signal.SIGHUP)
    await collector.wait_metric("collector_alert_rule_reloads_total", lambda v: v == 1, outcome="invalid")
    assert f"alert rules not reloaded from {rules_file}: line {WINDOW_LINE}" in collector.log()
    assert collector.is_running()
    listed = await http("GET", fresh_gateway.base_url, "alert-rules", token=BOB)
    assert [rule["name"] for rule in listed.json["rules"]] == ["renamed"]
