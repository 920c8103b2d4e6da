"""Threshold alerts: rule loading, each aggregation, for/cooldown/resolve semantics and the flapping bound."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stats_collector.alerts import (
    GENERATION_FAILURE_METRIC,
    MAX_SAMPLES_PER_METRIC,
    AlertEngine,
    AlertRule,
    AlertTransition,
    RuleError,
    derived_samples,
    load_rules,
)
from stats_collector.events import EventKind, PlatformEvent

RULES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "alert-rules.toml"
T = 1_760_000_000.0  # an arbitrary epoch second


def rule(**changes: Any) -> AlertRule:
    base = AlertRule(
        name="latency",
        metric="api_response_time_ms",
        aggregation="p95",
        window_seconds=300,
        comparator=">",
        threshold=2000,
        severity="high",
        alert_type="error",
        cooldown_seconds=0,
    )
    return replace(base, **changes)


def states(transitions: list[AlertTransition]) -> list[str]:
    return [t.state for t in transitions]


# -- loading ----------------------------------------------------------------------------------

VALID_TOML = """
[[rule]]
name = "latency"
metric = "api_response_time_ms"
aggregation = "p95"
window = 300
comparator = ">"
threshold = 2000
severity = "high"
type = "error"
for = 60
cooldown = 120
description = "slow"
"""


def test_load_rules() -> None:
    [loaded] = load_rules(VALID_TOML)
    assert loaded == rule(for_seconds=60.0, cooldown_seconds=120.0, description="slow")
    assert isinstance(loaded.window_seconds, float)


def test_defaults_for_optional_keys() -> None:
    text = "\n".join(line for line in VALID_TOML.splitlines() if not line.startswith(("for", "cooldown", "desc")))
    [loaded] = load_rules(text)
    assert (loaded.for_seconds, loaded.cooldown_seconds, loaded.description) == (0, 300, None)


def test_empty_file_has_no_rules() -> None:
    assert load_rules("") == []


def test_deploy_default_rules() -> None:
    rules = {r.name: r for r in load_rules(RULES_FILE.read_text(encoding="utf-8"))}
    failure = rules["generation_failure_ratio"]
    assert (failure.metric, failure.aggregation, failure.window_seconds) == (GENERATION_FAILURE_METRIC, "avg", 300)
    assert (failure.comparator, failure.threshold, failure.alert_type, failure.severity) == (
        ">",
        0.1,
        "warning",
        "high",
    )
    latency = rules["api_latency_p95"]
    assert (latency.metric, latency.aggregation, latency.threshold, latency.for_seconds) == (
        "api_response_time_ms",
        "p95",
        2000,
        60,
    )
    assert (latency.alert_type, latency.severity) == ("error", "high")
    assert (rules["cpu_usage_high"].threshold, rules["memory_usage_high"].threshold) == (85, 90)
    assert all(r.cooldown_seconds == 300 for r in rules.values())
    AlertEngine(list(rules.values()))


@pytest.mark.parametrize(
    ("edit", "rule_name", "key"),
    [
        (("threshold = 2000", 'threshold = "high"'), "latency", "threshold"),
        (("threshold = 2000", "threshold = nan"), "latency", "threshold"),
        (("window = 300", "window = 0"), "latency", "window"),
        (("for = 60", "for = -1"), "latency", "for"),
        (("cooldown = 120", "cooldown = true"), "latency", "cooldown"),
        (('aggregation = "p95"', 'aggregation = "p99"'), "latency", "aggregation"),
        (('comparator = ">"', 'comparator = "=="'), "latency", "comparator"),
        (('severity = "high"', 'severity = "urgent"'), "latency", "severity"),
        (('type = "error"', 'type = "success"'), "latency", "type"),
        (('metric = "api_response_time_ms"', 'metric = "api.response"'), "latency", "metric"),
        (('description = "slow"', "description = 5"), "latency", "description"),
        (("threshold = 2000", "treshold = 2000"), "latency", "treshold"),
        (("threshold = 2000", ""), "latency", "threshold"),
        (('name = "latency"', "name = 7"), "#1", "name"),
        (('name = "latency"', ""), "#1", "name"),
    ],
)
def test_bad_rule_names_rule_and_key(edit: tuple[str, str], rule_name: str, key: str) -> None:
    with pytest.raises(RuleError) as caught:
        load_rules(VALID_TOML.replace(*edit))
    assert (caught.value.rule, caught.value.key) == (rule_name, key)
    assert f"rule {rule_name!r}, key {key!r}: " in str(caught.value)


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(RuleError) as caught:
        load_rules(VALID_TOML + VALID_TOML)
    assert (caught.value.rule, caught.value.key) == ("latency", "name")
    with pytest.raises(RuleError, match="duplicate"):
        AlertEngine([rule(), rule()])


def test_bad_toml_and_layout() -> None:
    with pytest.raises(RuleError, match="invalid TOML"):
        load_rules("[[rule]\n")
    with pytest.raises(RuleError) as caught:
        load_rules("[rules]\nname = 'x'\n")
    assert caught.value.key == "rules"
    with pytest.raises(RuleError, match="array of tables"):
        load_rules("rule = 5\n")
    with pytest.raises(RuleError, match="must be a table"):
        load_rules("rule = [1]\n")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (VALID_TOML.replace("threshold = 2000", 'threshold = "high"'), 8),
        (VALID_TOML.replace("window = 300", "window = 0"), 6),
        (VALID_TOML.replace("threshold = 2000", "treshold = 2000"), 8),
        (VALID_TOML.replace("threshold = 2000", ""), 2),  # a missing key: its table's header
        (VALID_TOML + VALID_TOML.replace('"latency"', '"other"').replace("window = 300", "window = 0"), 19),
        (VALID_TOML + VALID_TOML, 16),  # the second "latency": its name
        (VALID_TOML.replace("cooldown = 120", "cooldown = 120 120"), 12),  # the TOML parser's line
        ("foo = 1\n" + VALID_TOML, 1),
    ],
)
def test_errors_name_the_line_of_the_file(text: str, line: int) -> None:
    with pytest.raises(RuleError) as caught:
        load_rules(text)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}")


def test_a_reloaded_engine_goes_on_for_unchanged_rules_and_starts_changed_ones_afresh() -> None:
    kept, changed = rule(name="kept"), rule(name="changed", threshold=1000)
    engine = AlertEngine([kept, changed])
    engine.observe("api_response_time_ms", 2500, T)
    assert states(engine.evaluate(T)) == ["firing", "firing"]
    reloaded = engine.reloaded([kept, replace(changed, threshold=1500), rule(name="new", metric="cpu_usage")])
    assert reloaded.is_firing("kept") and not reloaded.is_firing("changed") and not reloaded.is_firing("new")
    # The samples came along: the changed rule fires again at once, the kept one does not repeat itself.
    assert [(t.rule.name, t.state) for t in reloaded.evaluate(T + 1)] == [("changed", "firing")]


# -- aggregations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("last", 3.0), ("avg", 5.0), ("max", 10.0), ("p95", 10.0), ("rate", 20.0 / 10)],
)
def test_each_aggregation(aggregation: str, expected: float) -> None:
    r = rule(aggregation=aggregation, window_seconds=10)
    engine = AlertEngine([r])
    engine.observe(r.metric, 100.0, T - 10)  # on the window's edge: excluded
    for at, value in [(T - 9, 2.0), (T - 5, 10.0), (T - 7, 5.0), (T - 1, 3.0)]:  # "last" is by time, not arrival
        engine.observe(r.metric, value, at)
    assert engine.value(r, T) == expected


def test_p95_nearest_rank() -> None:
    r = rule(aggregation="p95")
    engine = AlertEngine([r])
    for value in range(1, 101):  # 1..100 -> the 95th value
        engine.observe(r.metric, float(value), T)
    assert engine.value(r, T) == 95.0
    engine = AlertEngine([r])
    for value in range(1, 20):  # 19 values: rank ceil(18.05) = 19
        engine.observe(r.metric, float(value), T)
    assert engine.value(r, T) == 19.0


@settings(max_examples=50)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200))
def test_p95_has_95_percent_at_or_below(values: list[float]) -> None:
    r = rule(aggregation="p95")
    engine = AlertEngine([r])
    for value in values:
        engine.observe(r.metric, value, T)
    p95 = engine.value(r, T)
    assert p95 in values
    assert sum(1 for v in values if v <= p95) >= 0.95 * len(values)
    assert sum(1 for v in values if v < p95) < 0.95 * len(values)


def test_empty_window_is_no_value_except_rate() -> None:
    engine = AlertEngine([rule(aggregation="avg"), rule(name="r", aggregation="rate")])
    assert engine.value(engine.rules[0], T) is None
    assert engine.value(engine.rules[1], T) == 0.0


def test_empty_window_never_holds_but_zero_rate_does() -> None:
    quiet = rule(name="quiet", metric="signups", aggregation="rate", comparator="<", threshold=0.01)
    low = rule(name="low", metric="signups", aggregation="avg", comparator="<", threshold=1)
    engine = AlertEngine([quiet, low])
    assert [(t.rule.name, t.state, t.value) for t in engine.evaluate(T)] == [("quiet", "firing", 0.0)]


def test_samples_of_unknown_metrics_are_ignored_and_old_samples_dropped() -> None:
    engine = AlertEngine([rule(window_seconds=10), rule(name="long", window_seconds=60)])
    engine.observe("something_else", 1.0, T)
    for second in range(120):
        engine.observe("api_response_time_ms", 1.0, T + second)
    engine.evaluate(T + 120)
    kept = engine._series["api_response_time_ms"].samples
    assert len(kept) == 59  # only the largest window (60 s) is retained
    assert "something_else" not in engine._series


def test_memory_is_capped_between_evaluations() -> None:
    engine = AlertEngine([rule()])
    for n in range(MAX_SAMPLES_PER_METRIC + 10):
        engine.observe("api_response_time_ms", float(n), T)
    assert len(engine._series["api_response_time_ms"].samples) == MAX_SAMPLES_PER_METRIC


def test_non_finite_samples_are_refused() -> None:
    engine = AlertEngine([rule()])
    with pytest.raises(ValueError, match="finite"):
        engine.observe("api_response_time_ms", math.nan, T)


# -- firing and resolving ---------------------------------------------------------------------


def test_fire_once_then_resolve_once() -> None:
    r = rule(aggregation="last")
    engine = AlertEngine([r])
    engine.observe(r.metric, 2500.0, T)
    [fired] = engine.evaluate(T)
    assert (fired.state, fired.value, fired.at) == ("firing", 2500.0, T)
    assert fired.message == "api_response_time_ms last over 300s is 2500 (threshold > 2000)"
    engine.observe(r.metric, 2600.0, T + 1)
    assert engine.evaluate(T + 1) == []  # still firing: no repeat
    engine.observe(r.metric, 1200.5, T + 2)
    [resolved] = engine.evaluate(T + 2)
    assert (resolved.state, resolved.value) == ("resolved", 1200.5)
    assert resolved.message == "api_response_time_ms last over 300s is back to 1200.5 (threshold > 2000)"
    assert engine.evaluate(T + 3) == []


def test_resolves_when_the_window_empties() -> None:
    r = rule(aggregation="max", window_seconds=60)
    engine = AlertEngine([r])
    engine.observe(r.metric, 3000.0, T)
    assert states(engine.evaluate(T)) == ["firing"]
    [resolved] = engine.evaluate(T + 60)
    assert (resolved.state, resolved.value) == ("resolved", None)
    assert resolved.message == "api_response_time_ms max over 60s has no samples (threshold > 2000)"


def test_for_duration_must_hold_continuously() -> None:
    r = rule(aggregation="last", for_seconds=60)
    engine = AlertEngine([r])
    engine.observe(r.metric, 2500.0, T)
    assert engine.evaluate(T) == []  # pending
    assert engine.evaluate(T + 59) == []
    engine.observe(r.metric, 100.0, T + 59.5)
    assert engine.evaluate(T + 60) == []  # dropped back: the clock restarts
    engine.observe(r.metric, 2500.0, T + 61)
    assert engine.evaluate(T + 61) == []
    assert engine.evaluate(T + 120) == []
    assert states(engine.evaluate(T + 121)) == ["firing"]


def test_pending_that_clears_reports_nothing() -> None:
    r = rule(aggregation="last", for_seconds=30)
    engine = AlertEngine([r])
    engine.observe(r.metric, 2500.0, T)
    assert engine.evaluate(T) == []
    engine.observe(r.metric, 10.0, T + 1)
    assert engine.evaluate(T + 1) == []


def test_cooldown_delays_the_next_firing() -> None:
    r = rule(aggregation="last", cooldown_seconds=300)
    engine = AlertEngine([r])
    timeline = [(0, 2500.0), (10, 100.0), (20, 2500.0), (299, 2500.0), (300, 2500.0), (301, 100.0)]
    seen = []
    for offset, value in timeline:
        engine.observe(r.metric, value, T + offset)
        seen.append((offset, states(engine.evaluate(T + offset))))
    assert seen == [(0, ["firing"]), (10, ["resolved"]), (20, []), (299, []), (300, ["firing"]), (301, ["resolved"])]


def test_comparators() -> None:
    engine = AlertEngine(
        [
            rule(name="gt", aggregation="last", comparator=">", threshold=5),
            rule(name="ge", aggregation="last", comparator=">=", threshold=5),
            rule(name="lt", aggregation="last", comparator="<", threshold=5),
            rule(name="le", aggregation="last", comparator="<=", threshold=5),
        ]
    )
    engine.observe("api_response_time_ms", 5.0, T)
    assert [t.rule.name for t in engine.evaluate(T)] == ["ge", "le"]


@pytest.mark.parametrize("cooldown", [60, 120, 300, 450])
def test_flapping_metric_is_not_a_storm(cooldown: float) -> None:
    r = rule(aggregation="last", cooldown_seconds=cooldown)
    engine = AlertEngine([r])
    fired = resolved = 0
    for second in range(600):
        engine.observe(r.metric, 2500.0 if second % 2 == 0 else 100.0, T + second)
        for transition in engine.evaluate(T + second):
            fired += transition.state == "firing"
            resolved += transition.state == "resolved"
    assert fired == math.ceil(600 / cooldown)
    assert resolved == fired


@settings(max_examples=60)
@given(
    st.lists(st.tuples(st.floats(0, 5), st.booleans()), min_size=1, max_size=300),
    st.floats(0, 30),
    st.one_of(st.just(0.0), st.floats(0.001, 120)),  # no denormals: 600/1e-313 is infinite
)
def test_transitions_alternate_and_respect_for_and_cooldown(
    steps: list[tuple[float, bool]], for_seconds: float, cooldown: float
) -> None:
    r = rule(aggregation="last", for_seconds=for_seconds, cooldown_seconds=cooldown)
    engine = AlertEngine([r])
    now = T
    transitions: list[AlertTransition] = []
    high_since: float | None = None
    for gap, high in steps:
        now += gap
        engine.observe(r.metric, 2500.0 if high else 100.0, now)
        for transition in engine.evaluate(now):
            if transition.state == "firing":
                assert high_since is not None or for_seconds == 0
                assert now - (high_since if high_since is not None else now) >= for_seconds
            transitions.append(transition)
        high_since = (high_since if high_since is not None else now) if high else None
    assert [t.state for t in transitions] == ["firing", "resolved"] * (len(transitions) // 2) + (
        ["firing"] if len(transitions) % 2 else []
    )
    firings = [t.at for t in transitions if t.state == "firing"]
    assert all(later - earlier >= cooldown for earlier, later in itertools.pairwise(firings))
    elapsed = now - T
    assert len(firings) <= (math.floor(elapsed / cooldown) + 1 if cooldown else len(steps))


def test_generation_failure_ratio_rule() -> None:
    [ratio] = [r for r in load_rules(RULES_FILE.read_text(encoding="utf-8")) if r.metric == GENERATION_FAILURE_METRIC]
    engine = AlertEngine([ratio])
    moment = datetime(2025, 10, 17, tzinfo=UTC)
    events = [PlatformEvent(f"w{n}", EventKind.WEBSITE_GENERATED, moment, "u", 1.0) for n in range(8)]
    events += [PlatformEvent("i", EventKind.IMAGE_GENERATED, moment, "u")]
    events += [PlatformEvent("f", EventKind.GENERATION_FAILED, moment)]
    events += [PlatformEvent("r", EventKind.USER_REGISTERED, moment, "u")]  # not a generation
    for event in events:
        for metric, value in derived_samples(event):
            engine.observe(metric, value, event.timestamp.timestamp())
    assert engine.value(ratio, moment.timestamp()) == 0.1
    assert engine.evaluate(moment.timestamp()) == []  # 0.1 is not > 0.1
    engine.observe(GENERATION_FAILURE_METRIC, 1.0, moment.timestamp())
    [fired] = engine.evaluate(moment.timestamp())
    assert fired.message == "generation_failure avg over 300s is 0.181818 (threshold > 0.1)"
