"""The wire contract of platform events and metric samples (pure: no I/O).

Internal services publish one JSON object per event to JetStream (stream ``PLATFORM_EVENTS`` on
``platform.events.>``), with the event ``id`` also sent as the ``Nats-Msg-Id`` header so JetStream drops
duplicate publishes. Keys are camelCase; ``timestamp`` is ISO 8601 with a time zone (``Z`` preferred) and is
converted to UTC. Unknown keys are ignored, so producers may add fields.

``platform.events.user.registered`` / ``platform.events.user.active`` (a login or other activity)::

    {"id": "evt-1", "timestamp": "2025-10-17T10:30:00.000Z", "userId": "u-42"}

``platform.events.website.generated`` (``generationTime`` in seconds, required)::

    {"id": "evt-2", "timestamp": "2025-10-17T10:30:01Z", "userId": "u-42", "generationTime": 12.5}

``platform.events.image.generated`` (``generationTime`` optional)::

    {"id": "evt-3", "timestamp": "2025-10-17T10:30:02Z", "userId": "u-42"}

``platform.events.generation.failed`` (``userId`` and ``generationTime`` optional)::

    {"id": "evt-4", "timestamp": "2025-10-17T10:30:03Z"}

``platform.events.payment.succeeded`` (``amount`` in currency units, ``currency`` ISO 4217)::

    {"id": "evt-5", "timestamp": "2025-10-17T10:30:04Z", "userId": "u-42", "amount": 19.99, "currency": "USD"}

Metric samples for alerting (core NATS, not stored in the stream) go to ``platform.metrics.<name>``::

    platform.metrics.api_response_time_ms  {"value": 182.5, "timestamp": "2025-10-17T10:30:04Z"}

A payload that breaks the contract raises :class:`InvalidEvent`, whose ``kind`` (one of
:data:`INVALID_EVENT_KINDS`) is a short stable label for counters and logs.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from broker_bridge.shapes import Field, Number, Record, Shape, Text
from shared import jsoncodec

EVENTS_SUBJECT_PREFIX: Final = "platform.events."
METRICS_SUBJECT_PREFIX: Final = "platform.metrics."
STREAM_SUBJECTS: Final = ("platform.events.>",)

# Ids and user ids are keys held in memory and saved state; a bound keeps junk from bloating them.
MAX_ID_LENGTH: Final = 128
MAX_USER_ID_LENGTH: Final = 128
# A generation taking longer than a day is a producer bug, not a data point; the bound also keeps
# the aggregate's integer sums within 64 bits.
MAX_GENERATION_TIME_SECONDS: Final = 86_400.0
# A single payment above this is a producer bug; the bound keeps revenue sums (in cents) within 64 bits.
MAX_PAYMENT_AMOUNT: Final = 1_000_000_000.0
# Metric names are one NATS subject token.
MAX_METRIC_NAME_LENGTH: Final = 128
METRIC_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]+")
_CURRENCY_PATTERN: Final = re.compile(r"[A-Za-z]{3}")

INVALID_EVENT_KINDS: Final = (
    "not_json",
    "not_object",
    "unknown_subject",
    "bad_metric_name",
    "missing_id",
    "bad_id",
    "bad_timestamp",
    "missing_user",
    "bad_user",
    "bad_generation_time",
    "bad_amount",
    "bad_currency",
    "bad_value",
)


class InvalidEvent(ValueError):
    """An event or metric sample that breaks the contract.

    ``kind`` is one of :data:`INVALID_EVENT_KINDS`: ``missing_*`` when a required key is absent, null or
    empty, ``bad_*`` when it has the wrong type or an out-of-range value (``bad_timestamp``,
    ``bad_generation_time``, ``bad_amount``, ``bad_currency`` and ``bad_value`` also cover an absent key).
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class EventKind(enum.Enum):
    """The event types; each value is the subject suffix after :data:`EVENTS_SUBJECT_PREFIX`."""

    USER_REGISTERED = "user.registered"
    USER_ACTIVE = "user.active"
    WEBSITE_GENERATED = "website.generated"
    IMAGE_GENERATED = "image.generated"
    GENERATION_FAILED = "generation.failed"
    PAYMENT_SUCCEEDED = "payment.succeeded"


# Which optional fields each kind carries (fields that do not apply to a kind are ignored on parse).
_USER_OPTIONAL: Final = frozenset({EventKind.GENERATION_FAILED})
_GENERATION_TIME_REQUIRED: Final = frozenset({EventKind.WEBSITE_GENERATED})
_GENERATION_TIME_OPTIONAL: Final = frozenset({EventKind.IMAGE_GENERATED, EventKind.GENERATION_FAILED})
_KINDS_BY_SUBJECT: Final = {EVENTS_SUBJECT_PREFIX + kind.value: kind for kind in EventKind}


def payload_shape(kind: EventKind) -> Record:
    """The JSON payload of ``kind`` as :func:`parse_event` accepts it (for the published AsyncAPI document;
    unknown keys are allowed and ignored)."""
    user_required = kind not in _USER_OPTIONAL
    declared: dict[str, Field | Shape] = {
        "id": Text("unique per event; also the Nats-Msg-Id header", min_length=1, max_length=MAX_ID_LENGTH),
        "timestamp": Text("ISO 8601 with a time zone (Z preferred)"),
        "userId": Field(Text(min_length=1, max_length=MAX_USER_ID_LENGTH), required=user_required),
    }
    if kind in _GENERATION_TIME_REQUIRED or kind in _GENERATION_TIME_OPTIONAL:
        seconds = Number("seconds", minimum=0, maximum=MAX_GENERATION_TIME_SECONDS)
        declared["generationTime"] = Field(seconds, required=kind in _GENERATION_TIME_REQUIRED)
    if kind is EventKind.PAYMENT_SUCCEEDED:
        declared["amount"] = Number("in currency units", minimum=0, maximum=MAX_PAYMENT_AMOUNT)
        declared["currency"] = Text(
            "ISO 4217 (the collector counts its configured one)", pattern=f"^{_CURRENCY_PATTERN.pattern}$"
        )
    return Record(declared, open=True)


def metric_payload_shape() -> Record:
    """The JSON payload of a sample on ``platform.metrics.<name>`` as :func:`parse_metric` accepts it."""
    return Record({"value": Number(), "timestamp": Text("ISO 8601 with a time zone (Z preferred)")}, open=True)


def event_subject(kind: EventKind) -> str:
    return EVENTS_SUBJECT_PREFIX + kind.value


@dataclass(frozen=True, slots=True)
class PlatformEvent:
    """One parsed event; ``timestamp`` is timezone-aware UTC."""

    id: str
    kind: EventKind
    timestamp: datetime
    user_id: str | None = None
    generation_time: float | None = None
    amount: float | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One metric sample; ``timestamp`` is timezone-aware UTC."""

    name: str
    value: float
    timestamp: datetime


def parse_event(subject: str, payload: bytes | bytearray | memoryview) -> PlatformEvent:
    """Parse one event from its subject and JSON payload; raise :class:`InvalidEvent`."""
    kind = _KINDS_BY_SUBJECT.get(subject)
    if kind is None:
        raise InvalidEvent("unknown_subject", f"no event type for subject {subject[:200]!r}")
    data = _load_object(payload)
    event_id = _event_id(data.get("id"))
    timestamp = _timestamp(data.get("timestamp"))
    user_id = _user_id(data.get("userId"), required=kind not in _USER_OPTIONAL)
    generation_time = None
    if kind in _GENERATION_TIME_REQUIRED or kind in _GENERATION_TIME_OPTIONAL:
        generation_time = _generation_time(data.get("generationTime"), required=kind in _GENERATION_TIME_REQUIRED)
    amount = currency = None
    if kind is EventKind.PAYMENT_SUCCEEDED:
        amount = _amount(data.get("amount"))
        currency = _currency(data.get("currency"))
    return PlatformEvent(event_id, kind, timestamp, user_id, generation_time, amount, currency)


def encode_event(event: PlatformEvent) -> tuple[str, bytes]:
    """The subject and JSON payload of ``event``: the inverse of :func:`parse_event`.

    Fields that do not apply to the event's kind are left out (the parser would ignore them).
    """
    body: dict[str, Any] = {"id": event.id, "timestamp": format_timestamp(event.timestamp)}
    if event.user_id is not None:
        body["userId"] = event.user_id
    kind = event.kind
    if event.generation_time is not None and (kind in _GENERATION_TIME_REQUIRED or kind in _GENERATION_TIME_OPTIONAL):
        body["generationTime"] = event.generation_time
    if kind is EventKind.PAYMENT_SUCCEEDED:
        body["amount"] = event.amount
        body["currency"] = event.currency
    return event_subject(kind), jsoncodec.dumps(body)


def parse_metric(subject: str, payload: bytes | bytearray | memoryview) -> MetricSample:
    """Parse a sample from ``platform.metrics.<name>`` and ``{"value": ..., "timestamp": ...}``."""
    if not subject.startswith(METRICS_SUBJECT_PREFIX):
        raise InvalidEvent("unknown_subject", f"not a metrics subject: {subject[:200]!r}")
    name = subject[len(METRICS_SUBJECT_PREFIX) :]
    if not is_metric_name(name):
        raise InvalidEvent("bad_metric_name", f"metric name must match {METRIC_NAME_PATTERN.pattern}")
    data = _load_object(payload)
    value = _number(data.get("value"))
    if value is None:
        raise InvalidEvent("bad_value", "value must be a finite number")
    return MetricSample(name, value, _timestamp(data.get("timestamp")))


def encode_metric(sample: MetricSample) -> tuple[str, bytes]:
    """The subject and JSON payload of ``sample``: the inverse of :func:`parse_metric`."""
    if not is_metric_name(sample.name):
        raise ValueError(f"invalid metric name {sample.name!r}")
    body = {"value": sample.value, "timestamp": format_timestamp(sample.timestamp)}
    return METRICS_SUBJECT_PREFIX + sample.name, jsoncodec.dumps(body)


def is_metric_name(name: str) -> bool:
    return len(name) <= MAX_METRIC_NAME_LENGTH and METRIC_NAME_PATTERN.fullmatch(name) is not None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: milliseconds, or microseconds when they are not whole milliseconds."""
    if moment.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    moment = moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _load_object(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    try:
        data = jsoncodec.loads(payload)
    except jsoncodec.JSONDecodeError:
        raise InvalidEvent("not_json", "payload is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise InvalidEvent("not_object", "payload must be a JSON object")
    return data


def _event_id(value: Any) -> str:
    if value is None or value == "":
        raise InvalidEvent("missing_id", "id is required")
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent("bad_id", f"id must be a string of at most {MAX_ID_LENGTH} characters")
    return value


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidEvent("bad_timestamp", "timestamp must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("bad_timestamp", "timestamp is not ISO 8601") from None
    if moment.utcoffset() is None:
        raise InvalidEvent("bad_timestamp", "timestamp needs a time zone (for example Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent("bad_timestamp", "timestamp is out of range") from None


def _user_id(value: Any, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidEvent("missing_user", "userId is required for this event type")
        return None
    if not isinstance(value, str) or len(value) > MAX_USER_ID_LENGTH:
        raise InvalidEvent("bad_user", f"userId must be a string of at most {MAX_USER_ID_LENGTH} characters")
    return value


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is not a finite JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _generation_time(value: Any, *, required: bool) -> float | None:
    if value is None and not required:
        return None
    seconds = _number(value)
    if seconds is None or not 0 <= seconds <= MAX_GENERATION_TIME_SECONDS:
        raise InvalidEvent(
            "bad_generation_time", f"generationTime must be seconds in 0..{MAX_GENERATION_TIME_SECONDS:g}"
        )
    return seconds


def _amount(value: Any) -> float:
    amount = _number(value)
    if amount is None or not 0 <= amount <= MAX_PAYMENT_AMOUNT:
        raise InvalidEvent("bad_amount", f"amount must be a number in 0..{MAX_PAYMENT_AMOUNT:g}")
    return amount


def _currency(value: Any) -> str:
    if not isinstance(value, str) or _CURRENCY_PATTERN.fullmatch(value) is None:
        raise InvalidEvent("bad_currency", "currency must be a three-letter ISO 4217 code")
    return value.upper()
