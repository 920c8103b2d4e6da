"""Payload shapes: the check (problems) and the JSON Schema agree, on the catalog's own shapes."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge import catalog, shapes
from tests.support.catalog_events import T, one_event_of_each_kind

SAMPLE = shapes.Record(
    {
        "name": shapes.Text(max_length=5),
        "kind": shapes.Text(choices=("a", "b")),
        "count": shapes.Integer(minimum=0),
        "ratio": shapes.Number(minimum=0, maximum=1),
        "when": shapes.Timestamp(),
        "tag": shapes.Const("fixed"),
        "maybe": shapes.Nullable(shapes.Text()),
        "either": shapes.Either((shapes.Number(), shapes.Text(min_length=1))),
        "list": shapes.ListOf(shapes.Integer()),
        "free": shapes.optional(shapes.AnyJson(object_only=True)),
    }
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-2, 2)
    | st.sampled_from(["", "a", "b", "fixed", T, "toolong"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["x", "count"]), children, max_size=2)
    ),
    max_leaves=6,
)


def agrees(shape: Any, value: Any) -> None:
    by_check = not list(shape.problems(value, "$"))
    by_schema = jsonschema.Draft202012Validator(shape.schema()).is_valid(value)
    assert by_check == by_schema, (value, list(shape.problems(value, "$")))


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {
            "name": json_values,
            "kind": json_values,
            "count": json_values,
            "ratio": json_values,
            "when": json_values,
            "tag": json_values,
            "maybe": json_values,
            "either": json_values,
            "list": json_values,
        },
        optional={"free": json_values, "extra": json_values},
    )
)
def test_the_check_and_the_schema_agree(value: dict[str, Any]) -> None:
    agrees(SAMPLE, value)


def test_a_valid_value_passes_both() -> None:
    value = {
        "name": "abc",
        "kind": "a",
        "count": 0,
        "ratio": 0.5,
        "when": T,
        "tag": "fixed",
        "maybe": None,
        "either": "x",
        "list": [1, 2],
    }
    assert shapes.checked("sample", SAMPLE, value) is value
    agrees(SAMPLE, value)


def test_a_broken_payload_names_every_problem() -> None:
    with pytest.raises(shapes.PayloadShapeError) as raised:
        shapes.checked("sample", SAMPLE, {"name": "abcdef", "kind": "c", "count": -1, "ratio": 2, "when": "yesterday"})
    assert raised.value.problems[:5] == [
        "$.name must be at most 5 characters",
        "$.kind must be one of a, b",
        "$.count must be >= 0",
        "$.ratio must be <= 1",
        "$.when must be an ISO 8601 UTC timestamp ending in Z",
    ]


def test_every_catalog_builder_output_fits_the_schema_it_publishes() -> None:
    events = one_event_of_each_kind()
    assert events
    for event in events:
        variants = [s for s in catalog.EVENT_SHAPES if (s.group, s.target) == (event.group, event.target)]
        assert variants, event
        # Strictly: every field the builder writes is declared (at run time an undeclared one is let through).
        assert any(jsonschema.Draft202012Validator(s.payload.schema()).is_valid(event.payload) for s in variants), (
            event.target,
            [list(s.payload.problems(event.payload, "$")) for s in variants],
        )


def test_every_catalog_answer_fits_the_result_it_publishes() -> None:
    from shared.alert_state import Actor, alert_view, silence
    from shared.models import PlatformSnapshot, SnapshotRecord
    from stats_collector.alerts import AlertRule

    record = catalog.alert_record(
        catalog.system_alert(alert_id="a1", alert_type="warning", message="m", timestamp=T), rule="cpu"
    ).acknowledge(Actor("u1", None), at=1.5)
    assert record is not None
    made = silence("cpu", 5, by=Actor(None, None), now=2.0, max_minutes=60)
    point = SnapshotRecord(T, PlatformSnapshot(total_users=3, active_users=2))
    results = catalog.HUB_METHOD_RESULTS
    answers = [
        (results["AcknowledgeAlert"], alert_view(record, [made], 3.0)),
        (results["SilenceAlert"], made.to_wire()),
        (
            results["GetAlertStates"],
            catalog.alert_states(
                alerts=[alert_view(record, [], 3.0)], omitted=0, silences=[made.to_wire()], max_alerts=9, timestamp=T
            ),
        ),
        (
            results["GetAnalyticsHistory"],
            catalog.analytics_history([point], minutes=30, start=T, bucket_seconds=0.0, complete=True, timestamp=T),
        ),
    ]
    for declared, answer in answers:
        assert jsonschema.Draft202012Validator(declared.result.schema()).is_valid(answer), (
            declared.summary,
            list(declared.result.problems(answer, "$")),
        )
    rule = AlertRule("cpu", "cpu_usage", "avg", 60, ">", 90.5, "high", "warning").to_wire()
    listing = catalog.alert_rules(rules=[rule], file="rules.toml", loaded_at=T)
    assert not list(catalog.ALERT_RULES.problems(listing, "$"))
    refused = catalog.alert_rules_refused(problem="line 3: bad", line=3, file="rules.toml")
    assert not list(catalog.ALERT_RULES_REFUSED.problems(refused, "$"))


def test_an_undeclared_field_fails_only_a_strict_check() -> None:
    shape = shapes.Record({"a": shapes.Integer()})
    assert shapes.checked("x", shape, {"a": 1, "b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(shapes.PayloadShapeError, match=r"\$\.b is not a declared field"):
        shapes.checked("x", shape, {"a": 1, "b": 2}, strict=True)
    with pytest.raises(shapes.PayloadShapeError, match=r"\$\.a must be an integer"):
        shapes.checked("x", shape, {"a": "1"})


def test_a_builder_refuses_a_payload_its_shape_does_not_allow() -> None:
    with pytest.raises(shapes.PayloadShapeError, match="timestamp"):
        catalog.revenue_update(daily_revenue=1.0, total_revenue_30d=2.0, timestamp="10:30")
