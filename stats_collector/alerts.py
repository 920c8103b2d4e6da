"""Threshold alert rules over metric samples (pure: no I/O, time passed in as float seconds).

A rule aggregates the samples of one metric over a sliding window and compares the result with a
threshold. Aggregations: ``last`` (the newest sample), ``avg``, ``max``, ``p95`` (nearest rank) and
``rate`` (sum of sample values per second of window; feed 1 per occurrence to count events). The window
holds the samples stamped after ``now - window`` (samples stamped ahead of ``now`` count too, which
tolerates producer clocks a little ahead). With no samples in the window the condition is false, except
for ``rate``, which is 0.

Each rule is a small state machine, advanced by :meth:`AlertEngine.evaluate`::

    inactive --condition holds--> pending --held for ``for`` and cooldown over--> firing
    pending  --condition stops--> inactive            (no transition reported)
    firing   --condition stops--> inactive            (one "resolved" transition)

A rule fires once per episode and never again until ``cooldown`` seconds after its last firing, so a
flapping metric produces at most one firing (and one resolution) per cooldown period.

Rules come from TOML (see ``deploy/alert-rules.toml``)::

    [[rule]]
    name = "api_latency_p95"
    metric = "api_response_time_ms"
    aggregation = "p95"      # last | avg | max | p95 | rate
    window = 300             # seconds
    comparator = ">"         # > | >= | < | <=
    threshold = 2000
    severity = "high"        # low | medium | high | critical
    type = "error"           # warning | error
    for = 60                 # seconds the condition must hold before firing (default 0)
    cooldown = 300           # seconds after a firing before the rule may fire again (default 300)
    description = "..."      # optional

Bad input raises :class:`RuleError` naming the line of the file (the key's line, else its ``[[rule]]``
header, else the TOML parser's), the rule and the TOML key: ``line 14: rule 'cpu', key 'window': must be
a number of seconds > 0``. A running collector keeps its rules when a reload finds such an error.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn, assert_never, get_args

from stats_collector.events import EventKind, PlatformEvent, is_metric_name

Aggregation = Literal["last", "avg", "max", "p95", "rate"]
Comparator = Literal[">", ">=", "<", "<="]
Severity = Literal["low", "medium", "high", "critical"]
AlertType = Literal["warning", "error"]

# The derived metric fed from generation events: 1 per failed generation, 0 per successful one, so
# its ``avg`` over a window is the failure ratio.
GENERATION_FAILURE_METRIC: Final = "generation_failure"

DEFAULT_COOLDOWN_SECONDS: Final = 300.0
# Rule names appear in logs, metrics labels and alert data; keep them short.
MAX_RULE_NAME_LENGTH: Final = 128
# Samples kept per metric between evaluations, whatever the rate: bounds memory when a metric floods
# (the oldest samples are dropped first).
MAX_SAMPLES_PER_METRIC: Final = 100_000
# p95 uses the nearest-rank method: the smallest value with at least 95 % of the samples at or below it.
_PERCENTILE: Final = 95

_TOML_KEYS: Final = {
    "name": "name",
    "metric": "metric",
    "aggregation": "aggregation",
    "window": "window_seconds",
    "comparator": "comparator",
    "threshold": "threshold",
    "severity": "severity",
    "type": "alert_type",
    "for": "for_seconds",
    "cooldown": "cooldown_seconds",
    "description": "description",
}
_NUMBER_FIELDS: Final = ("window_seconds", "threshold", "for_seconds", "cooldown_seconds")
_REQUIRED_KEYS: Final = ("name", "metric", "aggregation", "window", "comparator", "threshold", "severity", "type")
_RULE_HEADER: Final = re.compile(r"\s*\[\[\s*rule\s*\]\]")
_ANY_HEADER: Final = re.compile(r"\s*\[")
_TOML_ERROR_LINE: Final = re.compile(r"\(at line (\d+), column \d+\)")


class RuleError(ValueError):
    """An alert rule that cannot be used; ``rule`` names it (or its position) and ``key`` the TOML key."""

    def __init__(
        self, problem: str, *, rule: str | None = None, key: str | None = None, line: int | None = None
    ) -> None:
        where = []
        if line is not None:
            where.append(f"line {line}")
        if rule is not None:
            where.append(f"rule {rule!r}")
        if key is not None:
            where.append(f"key {key!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)
        self.rule = rule
        self.key = key
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One threshold rule; validated on construction (errors name the TOML key)."""

    name: str
    metric: str
    aggregation: Aggregation
    window_seconds: float
    comparator: Comparator
    threshold: float
    severity: Severity
    alert_type: AlertType
    for_seconds: float = 0
    cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS
    description: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > MAX_RULE_NAME_LENGTH:
            raise RuleError(f"must be a non-empty string of at most {MAX_RULE_NAME_LENGTH} characters", key="name")
        if not isinstance(self.metric, str) or not is_metric_name(self.metric):
            self._fail("metric", "must be a metric name (letters, digits, _ and -)")
        for key, value, choices in (
            ("aggregation", self.aggregation, get_args(Aggregation)),
            ("comparator", self.comparator, get_args(Comparator)),
            ("severity", self.severity, get_args(Severity)),
            ("type", self.alert_type, get_args(AlertType)),
        ):
            if not isinstance(value, str) or value not in choices:
                self._fail(key, f"must be one of {', '.join(choices)}")
        if not (_is_number(self.window_seconds) and self.window_seconds > 0):
            self._fail("window", "must be a number of seconds > 0")
        if not _is_number(self.threshold):
            self._fail("threshold", "must be a finite number")
        if not (_is_number(self.for_seconds) and self.for_seconds >= 0):
            self._fail("for", "must be a number of seconds >= 0")
        if not (_is_number(self.cooldown_seconds) and self.cooldown_seconds >= 0):
            self._fail("cooldown", "must be a number of seconds >= 0")
        if self.description is not None and not isinstance(self.description, str):
            self._fail("description", "must be a string")

    def _fail(self, key: str, problem: str) -> NoReturn:
        raise RuleError(problem, rule=self.name, key=key)

    def to_wire(self) -> dict[str, Any]:
        """The rule as ``GET alert-rules`` lists it (the TOML keys, camelCase, seconds as numbers)."""
        return {
            "name": self.name,
            "metric": self.metric,
            "aggregation": self.aggregation,
            "windowSeconds": self.window_seconds,
            "comparator": self.comparator,
            "threshold": self.threshold,
            "severity": self.severity,
            "type": self.alert_type,
            "forSeconds": self.for_seconds,
            "cooldownSeconds": self.cooldown_seconds,
            "description": self.description,
        }

    def holds(self, value: float) -> bool:
        match self.comparator:
            case ">":
                return value > self.threshold
            case ">=":
                return value >= self.threshold
            case "<":
                return value < self.threshold
            case "<=":
                return value <= self.threshold
            case _:
                assert_never(self.comparator)


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """A rule started firing or resolved. ``value`` is the aggregated value then (None: no samples)."""

    rule: AlertRule
    state: Literal["firing", "resolved"]
    value: float | None
    at: float

    @property
    def message(self) -> str:
        rule = self.rule
        what = f"{rule.metric} {rule.aggregation} over {_number_text(rule.window_seconds)}s"
        threshold = f"(threshold {rule.comparator} {_number_text(rule.threshold)})"
        if self.value is None:
            return f"{what} has no samples {threshold}"
        if self.state == "firing":
            return f"{what} is {_number_text(self.value)} {threshold}"
        return f"{what} is back to {_number_text(self.value)} {threshold}"


def load_rules(text: str) -> list[AlertRule]:
    """Parse ``[[rule]]`` tables; raise :class:`RuleError` (with the line) on bad TOML, unknown keys, bad
    values or duplicate names."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = _TOML_ERROR_LINE.search(str(error))
        raise RuleError(f"invalid TOML: {error}", line=int(found.group(1)) if found else None) from None
    for key in document:
        if key != "rule":
            line = _line_of(text, None, key)
            raise RuleError("unknown top-level key (rules are [[rule]] tables)", key=key, line=line)
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError("must be an array of tables: [[rule]]", key="rule", line=_line_of(text, None, "rule"))
    rules: list[AlertRule] = []
    names: set[str] = set()
    for position, table in enumerate(tables, start=1):
        try:
            rule = _rule_of(table, position, names)
        except RuleError as error:
            line = _line_of(text, position, error.key)
            raise RuleError(error.problem, rule=error.rule, key=error.key, line=line) from None
        names.add(rule.name)
        rules.append(rule)
    return rules


def _rule_of(table: Any, position: int, names: set[str]) -> AlertRule:
    label = f"#{position}"
    if not isinstance(table, dict):
        raise RuleError("must be a table", rule=label)
    if isinstance(table.get("name"), str) and table["name"]:
        label = table["name"]
    for key in table:
        if key not in _TOML_KEYS:
            raise RuleError(f"unknown key (known: {', '.join(_TOML_KEYS)})", rule=label, key=key)
    for key in _REQUIRED_KEYS:
        if key not in table:
            raise RuleError("is required", rule=label, key=key)
    if label in names:
        raise RuleError("duplicate rule name", rule=label, key="name")
    fields = {_TOML_KEYS[key]: value for key, value in table.items()}
    for name in _NUMBER_FIELDS:
        if _is_number(fields.get(name)):
            fields[name] = float(fields[name])
    try:
        return AlertRule(**fields)
    except RuleError as error:
        raise RuleError(error.problem, rule=label, key=error.key) from None


def _line_of(text: str, position: int | None, key: str | None) -> int | None:
    """The line of ``key`` in the ``position``-th ``[[rule]]`` table (None: before any table), else of
    that table's header; None when neither is found (the TOML was written some other way)."""
    header: int | None = None
    seen = 0
    inside = position is None
    key_line = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=") if key is not None else None
    for number, line in enumerate(text.splitlines(), start=1):
        if _RULE_HEADER.match(line):
            seen += 1
            if inside:
                break
            inside = seen == position
            header = number if inside else header
        elif _ANY_HEADER.match(line) and inside:
            break
        elif inside and key_line is not None and key_line.match(line):
            return number
    return header


def derived_samples(event: PlatformEvent) -> tuple[tuple[str, float], ...]:
    """The built-in metric samples an event implies: ``generation_failure`` 1 (failed) or 0 (generated)."""
    if event.kind is EventKind.GENERATION_FAILED:
        return ((GENERATION_FAILURE_METRIC, 1.0),)
    if event.kind is EventKind.WEBSITE_GENERATED or event.kind is EventKind.IMAGE_GENERATED:
        return ((GENERATION_FAILURE_METRIC, 0.0),)
    return ()


@dataclass(slots=True)
class _RuleState:
    pending_since: float | None = None
    firing: bool = False
    last_fired_at: float | None = None


@dataclass(slots=True)
class _Series:
    retention_seconds: float
    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES_PER_METRIC))


class AlertEngine:
    """Keeps recent samples of the metrics the rules use and turns rule conditions into transitions."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise RuleError("duplicate rule name", rule=duplicates[0], key="name")
        self._rules = tuple(rules)
        self._states = {rule.name: _RuleState() for rule in self._rules}
        self._series: dict[str, _Series] = {}
        for rule in self._rules:
            series = self._series.get(rule.metric)
            if series is None:
                self._series[rule.metric] = _Series(rule.window_seconds)
            else:
                series.retention_seconds = max(series.retention_seconds, rule.window_seconds)

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        return self._rules

    def reloaded(self, rules: Sequence[AlertRule]) -> AlertEngine:
        """An engine for ``rules`` that goes on from this one: the samples of metrics still used, and the
        state (pending, firing, last firing) of every rule whose definition did not change."""
        engine = AlertEngine(rules)
        for metric, series in engine._series.items():
            old = self._series.get(metric)
            if old is not None:
                series.samples.extend(old.samples)
        previous = {rule.name: rule for rule in self._rules}
        for rule in engine._rules:
            if previous.get(rule.name) == rule:
                engine._states[rule.name] = self._states[rule.name]
        return engine

    def is_firing(self, rule_name: str) -> bool:
        state = self._states.get(rule_name)
        return state is not None and state.firing

    def observe(self, metric: str, value: float, at: float) -> None:
        """Record a sample; samples of metrics no rule uses are ignored."""
        series = self._series.get(metric)
        if series is None:
            return
        if not (math.isfinite(value) and math.isfinite(at)):
            raise ValueError("sample value and time must be finite")
        series.samples.append((at, value))

    def evaluate(self, now: float) -> list[AlertTransition]:
        """Advance every rule to ``now`` and return the transitions that happened, in rule order."""
        for series in self._series.values():
            horizon = now - series.retention_seconds
            samples = series.samples
            while samples and samples[0][0] <= horizon:
                samples.popleft()
        transitions: list[AlertTransition] = []
        for rule in self._rules:
            transition = self._advance(rule, self._states[rule.name], now)
            if transition is not None:
                transitions.append(transition)
        return transitions

    def value(self, rule: AlertRule, now: float) -> float | None:
        """The rule's aggregated value at ``now`` (None: no samples in the window, except ``rate``)."""
        horizon = now - rule.window_seconds
        window = [(at, value) for at, value in self._series[rule.metric].samples if at > horizon]
        if rule.aggregation == "rate":
            return math.fsum(value for _, value in window) / rule.window_seconds
        if not window:
            return None
        values = [value for _, value in window]
        match rule.aggregation:
            case "last":
                # Newest timestamp; among equal timestamps, the sample observed last.
                return max(reversed(window), key=lambda sample: sample[0])[1]
            case "avg":
                return math.fsum(values) / len(values)
            case "max":
                return max(values)
            case "p95":
                values.sort()
                rank = (_PERCENTILE * len(values) + 99) // 100  # ceil(0.95 n) in integers
                return values[rank - 1]
            case _:
                assert_never(rule.aggregation)

    def _advance(self, rule: AlertRule, state: _RuleState, now: float) -> AlertTransition | None:
        value = self.value(rule, now)
        holds = value is not None and rule.holds(value)
        if not holds:
            state.pending_since = None
            if state.firing:
                state.firing = False
                return AlertTransition(rule, "resolved", value, now)
            return None
        assert value is not None
        if state.firing:
            return None
        if state.pending_since is None:
            state.pending_since = now
        held_long_enough = now - state.pending_since >= rule.for_seconds
        cooled_down = state.last_fired_at is None or now - state.last_fired_at >= rule.cooldown_seconds
        if held_long_enough and cooled_down:
            state.firing = True
            state.last_fired_at = now
            return AlertTransition(rule, "firing", value, now)
        return None


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _number_text(value: float) -> str:
    """2500.0 -> "2500", 0.1 -> "0.1", 0.123456789 -> "0.123457"."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"
