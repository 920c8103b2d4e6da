"""The payload catalog: groups and client methods of every event, the severity rule, the shapes."""

from __future__ import annotations

import pytest

from broker_bridge import catalog
from shared.models import PlatformSnapshot
from tests.support.catalog_events import ADA, T, one_event_of_each_kind


@pytest.mark.parametrize(
    ("alert_type", "explicit", "data", "expected"),
    [
        ("info", None, None, "low"),
        ("success", None, None, "low"),
        ("warning", None, None, "medium"),
        ("error", None, None, "high"),
        ("info", "critical", {"severity": "low"}, "critical"),  # explicit wins
        ("info", None, {"severity": "high"}, "high"),  # the document's example: data.severity
        ("warning", None, {"severity": "extreme"}, "medium"),  # unknown: by type
        ("error", None, {"severity": 3}, "high"),
    ],
)
def test_alert_severity(
    alert_type: catalog.AlertType, explicit: catalog.Severity | None, data: object, expected: str
) -> None:
    assert catalog.alert_severity(alert_type, explicit=explicit, data=data) == expected  # type: ignore[arg-type]


def test_performance_alert_is_a_high_warning_with_its_figures() -> None:
    event = catalog.performance_alert(
        alert_id="a1", metric="ApiResponseTime", value=2500, threshold="2000ms", timestamp=T
    )
    assert (event.group, event.target) == ("alerts", "SystemAlert")
    assert event.payload == {
        "id": "a1",
        "type": "warning",
        "message": "Performance alert: ApiResponseTime is 2500 (threshold 2000ms)",
        "severity": "high",
        "timestamp": T,
        "data": {"metric": "ApiResponseTime", "value": 2500, "threshold": "2000ms"},
    }
    assert (
        catalog.performance_alert(alert_id="a2", metric="m", value=1, threshold=2, timestamp=T, severity="low").payload[
            "severity"
        ]
        == "low"
    )


def test_analytics_events_carry_the_document_fields() -> None:
    snapshot = PlatformSnapshot(total_users=5432, active_users=234, new_users_today=12, total_revenue=98765.43)
    update = catalog.analytics_update(snapshot, timestamp=T)
    assert (update.group, update.target) == ("analytics", "AnalyticsUpdate")
    assert {key: update.payload[key] for key in ("totalUsers", "activeUsers", "revenue", "timestamp")} == {
        "totalUsers": 5432,
        "activeUsers": 234,
        "revenue": 98765.43,
        "timestamp": T,
    }
    counts = catalog.user_count_update(snapshot, timestamp=T)
    assert (counts.group, counts.target) == ("analytics", "UserCountUpdate")
    assert counts.payload == {"totalUsers": 5432, "activeUsers": 234, "newUsersToday": 12, "timestamp": T}


def test_every_group_event_targets_a_known_group_and_client_method() -> None:
    for event in one_event_of_each_kind():
        assert event.group in catalog.GROUPS
        assert event.target in catalog.CLIENT_METHODS
        assert event.payload["timestamp"] == T
    revoked = catalog.role_assignment(user_id="u", role_name="Moderator", action="revoked", timestamp=T)
    assert revoked.payload["message"] == "Role 'Moderator' revoked from user u"


def test_an_alert_becomes_its_record_and_state_changes_name_what_changed() -> None:
    alert = catalog.system_alert(alert_id="a1", alert_type="warning", message="m", timestamp=T, data={"k": 1})
    record = catalog.alert_record(alert, rule="cpu")
    assert record.to_wire() == {
        "id": "a1",
        "type": "warning",
        "severity": "medium",
        "message": "m",
        "timestamp": T,
        "rule": "cpu",
        "data": {"k": 1},
        "suppressed": False,
        "acknowledgedBy": None,
        "acknowledgedAt": None,
        "resolvedAt": None,
    }
    view = {**record.to_wire(), "acknowledgedBy": ADA, "acknowledgedAt": T, "status": "acknowledged"}
    changed = catalog.alert_state_changed(change="acknowledged", by=ADA, timestamp=T, alert=view)
    assert (changed.group, changed.target) == ("alerts", "AlertStateChanged")
    assert changed.payload == {"change": "acknowledged", "alert": view, "silence": None, "by": ADA, "timestamp": T}
    # The payload is checked against its declaration: a partial alert view is a programming error.
    with pytest.raises(catalog.PayloadShapeError, match=r"\$\.alert\.status is required"):
        catalog.alert_state_changed(change="acknowledged", by=ADA, timestamp=T, alert=record.to_wire())


def test_every_hub_event_is_built_through_a_declared_shape() -> None:
    # The published contracts are generated from catalog.EVENT_SHAPES: a HubEvent built any other way
    # would reach dashboards without being documented (declare an EventShape and use SHAPE.event()).
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(catalog))
    builders = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "HubEvent"
    ]
    assert len(builders) == 1, f"HubEvent(...) built outside EventShape.event at lines {builders}"
    declared = {shape.target for shape in catalog.EVENT_SHAPES}
    assert declared == catalog.CLIENT_METHODS, "every client method has a declared payload"
    names = [shape.name for shape in catalog.EVENT_SHAPES]
    assert len(names) == len(set(names))
