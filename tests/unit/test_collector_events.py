"""The platform event contract: golden payloads, every InvalidEvent kind, and encode/parse round trips."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stats_collector.events import (
    EVENTS_SUBJECT_PREFIX,
    INVALID_EVENT_KINDS,
    MAX_ID_LENGTH,
    METRICS_SUBJECT_PREFIX,
    STREAM_SUBJECTS,
    EventKind,
    InvalidEvent,
    MetricSample,
    PlatformEvent,
    encode_event,
    encode_metric,
    event_subject,
    format_timestamp,
    parse_event,
    parse_metric,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 10, 17, 10, 30, tzinfo=UTC)


def payload(**fields: object) -> bytes:
    return orjson.dumps(fields)


def subject(kind: str) -> str:
    return EVENTS_SUBJECT_PREFIX + kind


# -- subjects ---------------------------------------------------------------------------------


def test_subjects() -> None:
    assert STREAM_SUBJECTS == ("platform.events.>",)
    assert METRICS_SUBJECT_PREFIX == "platform.metrics."
    assert [event_subject(kind) for kind in EventKind] == [
        "platform.events.user.registered",
        "platform.events.user.active",
        "platform.events.website.generated",
        "platform.events.image.generated",
        "platform.events.generation.failed",
        "platform.events.payment.succeeded",
    ]


# -- golden payloads --------------------------------------------------------------------------


def test_parse_user_registered() -> None:
    event = parse_event(
        "platform.events.user.registered", b'{"id":"evt-1","timestamp":"2025-10-17T10:30:00.000Z","userId":"u-42"}'
    )
    assert event == PlatformEvent("evt-1", EventKind.USER_REGISTERED, T0, user_id="u-42")
    assert event.timestamp.tzinfo is UTC


def test_parse_website_generated() -> None:
    event = parse_event(
        "platform.events.website.generated",
        b'{"id":"evt-2","timestamp":"2025-10-17T10:30:01Z","userId":"u-42","generationTime":12.5}',
    )
    assert event.kind is EventKind.WEBSITE_GENERATED
    assert event.generation_time == 12.5
    assert event.timestamp == T0 + timedelta(seconds=1)


def test_parse_payment_with_integer_amount_and_lowercase_currency() -> None:
    event = parse_event(
        "platform.events.payment.succeeded",
        b'{"id":"evt-5","timestamp":"2025-10-17T10:30:04Z","userId":"u-42","amount":20,"currency":"usd"}',
    )
    assert event.amount == 20.0
    assert isinstance(event.amount, float)
    assert event.currency == "USD"


def test_generation_failed_needs_no_user() -> None:
    event = parse_event(subject("generation.failed"), b'{"id":"evt-4","timestamp":"2025-10-17T10:30:03Z"}')
    assert event == PlatformEvent("evt-4", EventKind.GENERATION_FAILED, T0 + timedelta(seconds=3))


def test_offset_timestamp_is_converted_to_utc() -> None:
    event = parse_event(subject("user.active"), payload(id="a", timestamp="2025-10-17T12:30:00+02:00", userId="u"))
    assert event.timestamp == T0
    assert event.timestamp.utcoffset() == timedelta(0)


def test_unknown_fields_and_fields_of_other_kinds_are_ignored() -> None:
    event = parse_event(
        subject("user.active"),
        payload(id="a", timestamp="2025-10-17T10:30:00Z", userId="u", amount="junk", generationTime=-1, extra=[1]),
    )
    assert event == PlatformEvent("a", EventKind.USER_ACTIVE, T0, user_id="u")


def test_encode_event_bytes() -> None:
    event = PlatformEvent("p1", EventKind.PAYMENT_SUCCEEDED, T0, user_id="u", amount=19.99, currency="EUR")
    assert encode_event(event) == (
        "platform.events.payment.succeeded",
        b'{"id":"p1","timestamp":"2025-10-17T10:30:00.000Z","userId":"u","amount":19.99,"currency":"EUR"}',
    )


def test_format_timestamp_keeps_microseconds_when_needed() -> None:
    assert format_timestamp(T0 + timedelta(milliseconds=5)) == "2025-10-17T10:30:00.005Z"
    assert format_timestamp(T0 + timedelta(microseconds=5)) == "2025-10-17T10:30:00.000005Z"
    berlin_summer = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2025, 10, 17, 12, 30, tzinfo=berlin_summer)) == "2025-10-17T10:30:00.000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2025, 10, 17))


# -- every InvalidEvent kind ------------------------------------------------------------------

GOOD = {"id": "e", "timestamp": "2025-10-17T10:30:00Z", "userId": "u"}

INVALID_EVENTS = [
    ("not_json", "user.active", b"{not json"),
    ("not_json", "user.active", b"\xff\xfe"),
    ("not_json", "user.active", b'{"id": NaN}'),
    ("not_object", "user.active", b"[1, 2]"),
    ("not_object", "user.active", b'"text"'),
    ("unknown_subject", "user.deleted", payload(**GOOD)),
    ("unknown_subject", "user", payload(**GOOD)),
    ("missing_id", "user.active", payload(timestamp=GOOD["timestamp"], userId="u")),
    ("missing_id", "user.active", payload(**{**GOOD, "id": ""})),
    ("missing_id", "user.active", payload(**{**GOOD, "id": None})),
    ("bad_id", "user.active", payload(**{**GOOD, "id": 5})),
    ("bad_id", "user.active", payload(**{**GOOD, "id": "x" * (MAX_ID_LENGTH + 1)})),
    ("bad_timestamp", "user.active", payload(id="e", userId="u")),
    ("bad_timestamp", "user.active", payload(**{**GOOD, "timestamp": 1760697000})),
    ("bad_timestamp", "user.active", payload(**{**GOOD, "timestamp": "yesterday"})),
    ("bad_timestamp", "user.active", payload(**{**GOOD, "timestamp": "2025-10-17T10:30:00"})),  # no zone
    ("bad_timestamp", "user.active", payload(**{**GOOD, "timestamp": "2025-13-01T00:00:00Z"})),
    ("bad_timestamp", "user.active", payload(**{**GOOD, "timestamp": "0001-01-01T00:00:00+01:00"})),  # overflow
    ("missing_user", "user.registered", payload(id="e", timestamp=GOOD["timestamp"])),
    ("missing_user", "website.generated", payload(id="e", timestamp=GOOD["timestamp"], generationTime=1)),
    ("missing_user", "payment.succeeded", payload(**{**GOOD, "userId": "", "amount": 1, "currency": "USD"})),
    ("bad_user", "user.active", payload(**{**GOOD, "userId": 42})),
    ("bad_user", "generation.failed", payload(**{**GOOD, "userId": ["u"]})),
    ("bad_generation_time", "website.generated", payload(**GOOD)),
    ("bad_generation_time", "website.generated", payload(**GOOD, generationTime=-0.5)),
    ("bad_generation_time", "website.generated", payload(**GOOD, generationTime="3")),
    ("bad_generation_time", "website.generated", payload(**GOOD, generationTime=True)),
    # orjson refuses numbers that overflow a double, so infinity never reaches the field checks
    (
        "not_json",
        "website.generated",
        b'{"id":"e","timestamp":"2025-10-17T10:30:00Z","userId":"u","generationTime":1e999}',
    ),
    ("bad_generation_time", "image.generated", payload(**GOOD, generationTime=86_401)),
    ("bad_amount", "payment.succeeded", payload(**GOOD, currency="USD")),
    ("bad_amount", "payment.succeeded", payload(**GOOD, amount=-1, currency="USD")),
    ("bad_amount", "payment.succeeded", payload(**GOOD, amount="9.99", currency="USD")),
    ("bad_amount", "payment.succeeded", payload(**GOOD, amount=2e9, currency="USD")),
    ("bad_currency", "payment.succeeded", payload(**GOOD, amount=1)),
    ("bad_currency", "payment.succeeded", payload(**GOOD, amount=1, currency="US")),
    ("bad_currency", "payment.succeeded", payload(**GOOD, amount=1, currency="US$")),
    ("bad_currency", "payment.succeeded", payload(**GOOD, amount=1, currency=840)),
]


@pytest.mark.parametrize(("kind", "suffix", "body"), INVALID_EVENTS)
def test_invalid_event(kind: str, suffix: str, body: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(subject(suffix), body)
    assert caught.value.kind == kind
    assert str(caught.value).startswith(kind + ": ")


GOOD_METRIC = {"value": 1, "timestamp": GOOD["timestamp"]}

INVALID_METRICS = [
    ("unknown_subject", "platform.events.cpu_usage", payload(**GOOD_METRIC)),
    ("bad_metric_name", "platform.metrics.", payload(**GOOD_METRIC)),
    ("bad_metric_name", "platform.metrics.cpu.usage", payload(**GOOD_METRIC)),
    ("bad_metric_name", "platform.metrics.cpu*", payload(**GOOD_METRIC)),
    ("not_json", "platform.metrics.cpu_usage", b"value=1"),
    ("not_object", "platform.metrics.cpu_usage", b"1"),
    ("bad_value", "platform.metrics.cpu_usage", payload(timestamp=GOOD["timestamp"])),
    ("bad_value", "platform.metrics.cpu_usage", payload(**{**GOOD_METRIC, "value": "1"})),
    ("bad_value", "platform.metrics.cpu_usage", payload(**{**GOOD_METRIC, "value": False})),
    # orjson refuses numbers that overflow a double, so infinity never reaches the value check
    ("not_json", "platform.metrics.cpu_usage", b'{"value":-1e999,"timestamp":"2025-10-17T10:30:00Z"}'),
    ("bad_value", "platform.metrics.cpu_usage", payload(**{**GOOD_METRIC, "value": None})),
    ("bad_timestamp", "platform.metrics.cpu_usage", payload(value=1)),
    ("bad_timestamp", "platform.metrics.cpu_usage", payload(**{**GOOD_METRIC, "timestamp": "2025-10-17 10:30"})),
]


@pytest.mark.parametrize(("kind", "metric_subject", "body"), INVALID_METRICS)
def test_invalid_metric(kind: str, metric_subject: str, body: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_metric(metric_subject, body)
    assert caught.value.kind == kind


def test_every_documented_kind_is_exercised() -> None:
    exercised = {kind for kind, _, _ in INVALID_EVENTS} | {kind for kind, _, _ in INVALID_METRICS}
    assert exercised == set(INVALID_EVENT_KINDS)


def test_parse_metric() -> None:
    sample = parse_metric("platform.metrics.api_response_time_ms", b'{"value":182,"timestamp":"2025-10-17T10:30:00Z"}')
    assert sample == MetricSample("api_response_time_ms", 182.0, T0)
    assert isinstance(sample.value, float)


def test_encode_metric_bytes_and_bad_name() -> None:
    assert encode_metric(MetricSample("cpu_usage", 42.5, T0)) == (
        "platform.metrics.cpu_usage",
        b'{"value":42.5,"timestamp":"2025-10-17T10:30:00.000Z"}',
    )
    with pytest.raises(ValueError, match="invalid metric name"):
        encode_metric(MetricSample("cpu.usage", 1.0, T0))


# -- round trips ------------------------------------------------------------------------------

timestamps = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9998, 12, 31),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)
ids = st.text(min_size=1, max_size=MAX_ID_LENGTH)
user_ids = st.text(min_size=1, max_size=20)
seconds = st.floats(min_value=0, max_value=86_400, allow_nan=False)
amounts = st.floats(min_value=0, max_value=1e9, allow_nan=False)
currencies = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)


@st.composite
def events(draw: st.DrawFn) -> PlatformEvent:
    kind = draw(st.sampled_from(EventKind))
    event_id, timestamp = draw(ids), draw(timestamps)
    user_id = draw(st.none() | user_ids) if kind is EventKind.GENERATION_FAILED else draw(user_ids)
    generation_time = amount = currency = None
    if kind is EventKind.WEBSITE_GENERATED:
        generation_time = draw(seconds)
    elif kind in (EventKind.IMAGE_GENERATED, EventKind.GENERATION_FAILED):
        generation_time = draw(st.none() | seconds)
    elif kind is EventKind.PAYMENT_SUCCEEDED:
        amount, currency = draw(amounts), draw(currencies)
    return PlatformEvent(event_id, kind, timestamp, user_id, generation_time, amount, currency)


@given(events())
def test_event_round_trip(event: PlatformEvent) -> None:
    parsed = parse_event(*encode_event(event))
    assert parsed == event
    assert parsed.timestamp.tzinfo is UTC


@given(
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True), st.floats(allow_nan=False, allow_infinity=False), timestamps
)
def test_metric_round_trip(name: str, value: float, timestamp: datetime) -> None:
    sample = MetricSample(name, value, timestamp)
    assert parse_metric(*encode_metric(sample)) == sample


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_invalid_event(body: bytes) -> None:
    for kind in EventKind:
        try:
            parse_event(event_subject(kind), body)
        except InvalidEvent as error:
            assert error.kind in INVALID_EVENT_KINDS


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON_VALUES = st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=10) | st.lists(INT64, max_size=3)


@given(
    st.sampled_from(EventKind),
    st.dictionaries(st.sampled_from([*GOOD, "generationTime", "amount", "currency"]), JSON_VALUES),
)
def test_arbitrary_objects_parse_or_raise_invalid_event(kind: EventKind, body: dict[str, object]) -> None:
    try:
        event = parse_event(event_subject(kind), orjson.dumps(body))
    except InvalidEvent as error:
        assert error.kind in INVALID_EVENT_KINDS
    else:
        assert event.kind is kind
        assert parse_event(*encode_event(event)) == event


# -- purity -----------------------------------------------------------------------------------


def test_pure_modules_import_no_io_module() -> None:
    forbidden = ("asyncio", "aiohttp", "nats", "socket", "threading", "selectors")
    code = (
        f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
        "import stats_collector.events, stats_collector.aggregate, stats_collector.alerts\n"
        f"print(','.join(m for m in {forbidden!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == ""


# -- the published contract of each event (AsyncAPI) agrees with the parser ------------------------------


@pytest.mark.parametrize("kind", list(EventKind))
def test_the_published_payload_shape_of_each_event_is_what_the_parser_takes(kind: EventKind) -> None:
    import jsonschema

    from stats_collector.events import event_subject, payload_shape

    shape = payload_shape(kind)
    examples = {
        "id": "evt-1",
        "timestamp": "2025-10-17T10:30:00Z",
        "userId": "u-42",
        "generationTime": 12.5,
        "amount": 19.99,
        "currency": "USD",
    }
    full = {name: examples[name] for name in shape.names}
    assert jsonschema.Draft7Validator(shape.schema()).is_valid(full)
    parse_event(event_subject(kind), orjson.dumps(full))  # accepted
    for name, required in shape.fields_required().items():
        without = {key: value for key, value in full.items() if key != name}
        if required:
            with pytest.raises(InvalidEvent):
                parse_event(event_subject(kind), orjson.dumps(without))
        else:
            parse_event(event_subject(kind), orjson.dumps(without))
    # What the schema refuses, the parser refuses too.
    for name, bad in (("generationTime", -1), ("amount", -5), ("currency", "dollars"), ("userId", "x" * 129)):
        if name in full:
            assert not jsonschema.Draft7Validator(shape.schema()).is_valid({**full, name: bad})
            with pytest.raises(InvalidEvent):
                parse_event(event_subject(kind), orjson.dumps({**full, name: bad}))


def test_the_published_metric_sample_shape_is_what_the_parser_takes() -> None:
    from stats_collector.events import metric_payload_shape

    shape = metric_payload_shape()
    assert shape.fields_required() == {"value": True, "timestamp": True}
    parse_metric("platform.metrics.cpu_usage", orjson.dumps({"value": 1.5, "timestamp": "2025-10-17T10:30:00Z"}))
    for missing in ("value", "timestamp"):
        body = {"value": 1.5, "timestamp": "2025-10-17T10:30:00Z"}
        del body[missing]
        with pytest.raises(InvalidEvent):
            parse_metric("platform.metrics.cpu_usage", orjson.dumps(body))
