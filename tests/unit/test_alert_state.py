"""Shared alert state, pure: acknowledgement and resolution transitions, the silence window (time passed in),
the status a dashboard shows, and the stored records' round trip."""

from __future__ import annotations

import re

import pytest

from shared.alert_state import (
    Actor,
    AlertRecord,
    AlertStateError,
    Silence,
    alert_status,
    alert_view,
    check_alert_id,
    covering_silence,
    live_silences,
    new_alert_id,
    silence,
)

ADA = Actor("u-1", "Ada")
BOB = Actor("u-2", "Bob")
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def record(**changes: object) -> AlertRecord:
    base: dict[str, object] = {
        "id": "a1",
        "type": "warning",
        "severity": "medium",
        "message": "cpu is 91",
        "timestamp": "2027-01-15T08:00:00.000Z",
        "rule": "cpu_usage_high",
    }
    return AlertRecord(**{**base, **changes})  # type: ignore[arg-type]


def test_acknowledging_records_who_and_when_once() -> None:
    active = record()
    acknowledged = active.acknowledge(ADA, T0 + 1.5)
    assert acknowledged is not None
    assert (acknowledged.acknowledged_by, acknowledged.acknowledged_at) == (ADA, "2027-01-15T08:00:01.500Z")
    assert alert_status(active, [], T0) == "active"
    assert alert_status(acknowledged, [], T0) == "acknowledged"
    # A second acknowledgement changes nothing: the first one stands.
    assert acknowledged.acknowledge(BOB, T0 + 9) is None


def test_resolving_keeps_the_first_time_and_an_acknowledgement_still_counts() -> None:
    resolved = record().resolve(T0 + 60)
    assert resolved.resolved_at == "2027-01-15T08:01:00.000Z"
    assert resolved.resolve(T0 + 120) is resolved
    assert alert_status(resolved, [], T0) == "active"
    acknowledged = resolved.acknowledge(ADA, T0 + 61)
    assert acknowledged is not None and alert_status(acknowledged, [], T0) == "acknowledged"


def test_a_silence_covers_its_rule_or_type_from_now_until_its_end() -> None:
    made = silence("cpu_usage_high", 10, by=ADA, now=T0, max_minutes=1440)
    assert made.until == T0 + 600
    for now, covered in ((T0, True), (T0 + 599.999, True), (T0 + 600, False), (T0 + 601, False)):
        found = covering_silence([made], rule="cpu_usage_high", alert_type="warning", now=now)
        assert (found is made) is covered, now
    by_type = silence("warning", 5, by=BOB, now=T0, max_minutes=1440)
    assert covering_silence([by_type], rule="other_rule", alert_type="warning", now=T0 + 1) is by_type
    assert covering_silence([by_type], rule="other_rule", alert_type="error", now=T0 + 1) is None
    # Both cover: the one that lasts longest is reported.
    assert covering_silence([made, by_type], rule="cpu_usage_high", alert_type="warning", now=T0) is made


def test_zero_minutes_lifts_a_silence_at_once_and_bad_requests_are_refused() -> None:
    lifted = silence("cpu_usage_high", 0, by=ADA, now=T0, max_minutes=1440)
    assert live_silences([lifted], T0) == []
    for target, minutes in (("", 5), (" ", 5), ("x" * 129, 5), ("cpu", -1), ("cpu", 1441), ("cpu", True)):
        with pytest.raises(AlertStateError):
            silence(target, minutes, by=ADA, now=T0, max_minutes=1440)


def test_status_is_silenced_while_held_back_or_covered_and_acknowledged_wins() -> None:
    cover = silence("warning", 1, by=ADA, now=T0, max_minutes=60)
    assert alert_status(record(), [cover], T0 + 30) == "silenced"
    assert alert_status(record(), [cover], T0 + 60) == "active"
    assert alert_status(record(suppressed=True), [], T0) == "silenced"
    acknowledged = record(suppressed=True).acknowledge(BOB, T0)
    assert acknowledged is not None and alert_status(acknowledged, [cover], T0) == "acknowledged"
    assert alert_view(record(), [cover], T0)["status"] == "silenced"


def test_records_round_trip_and_invalid_ones_are_refused() -> None:
    full = record(data={"value": 91}, suppressed=True).acknowledge(ADA, T0)
    assert full is not None
    assert AlertRecord.from_wire(full.to_wire()) == full
    made = silence("cpu", 2, by=ADA, now=T0, max_minutes=60)
    assert Silence.from_wire(made.to_wire()) == made
    wire = full.to_wire()
    for broken in ({**wire, "id": None}, {**wire, "data": [1]}, {**wire, "acknowledgedBy": "Ada"}, [wire]):
        with pytest.raises(ValueError):
            AlertRecord.from_wire(broken)


def test_alert_ids_sort_by_time_and_are_checked() -> None:
    first, second = new_alert_id(T0), new_alert_id(T0 + 0.002)
    assert first < second and first != new_alert_id(T0)
    assert check_alert_id(first) == first
    for bad in ("", "a.b", "a" * 65, "../x", "a b"):
        with pytest.raises(AlertStateError):
            check_alert_id(bad)


def test_silence_keys_are_valid_kv_keys_whatever_the_target() -> None:
    from broker_bridge.alert_store import silence_key

    for target in ("cpu_usage_high", "warning", "rule with spaces", "ü/~*>.", "x" * 128):
        assert re.fullmatch(r"[-/_=.a-zA-Z0-9]+", silence_key(target)), target
    assert silence_key("a") != silence_key("b")
