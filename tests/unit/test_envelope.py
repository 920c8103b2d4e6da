"""The fan-out envelope: {"target": ..., "arguments": [...]} and every way a payload can be invalid."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_bridge.envelope import (
    MAX_TARGET_LENGTH,
    Envelope,
    InvalidEnvelope,
    InvalidEnvelopeKind,
    decode_event,
    encode_event,
)

JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def test_encode_event_bytes() -> None:
    assert encode_event("SystemAlert", {"level": "high"}, 3) == (
        b'{"target":"SystemAlert","arguments":[{"level":"high"},3]}'
    )


def test_encode_event_writes_utc_datetimes_with_z() -> None:
    payload = encode_event("Tick", datetime(2025, 10, 17, 10, 30, tzinfo=UTC))
    assert orjson.loads(payload)["arguments"] == ["2025-10-17T10:30:00Z"]


def test_round_trip() -> None:
    assert decode_event(encode_event("UserActivity", {"id": 1}, None, "x")) == Envelope(
        "UserActivity", ({"id": 1}, None, "x")
    )


@given(st.text(min_size=1, max_size=MAX_TARGET_LENGTH), st.lists(JSON_VALUES, max_size=5))
def test_round_trip_property(target: str, arguments: list[Any]) -> None:
    assert decode_event(encode_event(target, *arguments)) == Envelope(target, tuple(arguments))


def test_missing_arguments_means_none() -> None:
    assert decode_event(b'{"target":"Ping"}') == Envelope("Ping", ())


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"", InvalidEnvelopeKind.NOT_JSON),
        (b"{", InvalidEnvelopeKind.NOT_JSON),
        (b"\xff\xfe", InvalidEnvelopeKind.NOT_JSON),
        (b"[]", InvalidEnvelopeKind.NOT_AN_OBJECT),
        (b'"SystemAlert"', InvalidEnvelopeKind.NOT_AN_OBJECT),
        (b"null", InvalidEnvelopeKind.NOT_AN_OBJECT),
        (b'{"arguments":[]}', InvalidEnvelopeKind.BAD_TARGET),
        (b'{"target":"","arguments":[]}', InvalidEnvelopeKind.BAD_TARGET),
        (b'{"target":7,"arguments":[]}', InvalidEnvelopeKind.BAD_TARGET),
        (b'{"target":"' + b"x" * (MAX_TARGET_LENGTH + 1) + b'"}', InvalidEnvelopeKind.BAD_TARGET),
        (b'{"target":"A","arguments":{}}', InvalidEnvelopeKind.BAD_ARGUMENTS),
        (b'{"target":"A","arguments":"x"}', InvalidEnvelopeKind.BAD_ARGUMENTS),
        (b'{"target":"A","arguments":null}', InvalidEnvelopeKind.BAD_ARGUMENTS),
    ],
)
def test_invalid_payloads(payload: bytes, kind: InvalidEnvelopeKind) -> None:
    with pytest.raises(InvalidEnvelope) as caught:
        decode_event(payload)
    assert caught.value.kind is kind
    assert str(caught.value) == kind.value


def test_target_length_limit() -> None:
    longest = "x" * MAX_TARGET_LENGTH
    assert decode_event(encode_event(longest)).target == longest
    for target in ("", "x" * (MAX_TARGET_LENGTH + 1)):
        with pytest.raises(InvalidEnvelope) as caught:
            encode_event(target)
        assert caught.value.kind is InvalidEnvelopeKind.BAD_TARGET


def test_size_and_depth_limits() -> None:
    payload = encode_event("A", "x" * 100)
    assert decode_event(payload, max_bytes=len(payload)).target == "A"
    with pytest.raises(InvalidEnvelope) as too_large:
        decode_event(payload, max_bytes=len(payload) - 1)
    assert too_large.value.kind is InvalidEnvelopeKind.TOO_LARGE
    deep = b'{"target":"A","arguments":[' + b"[" * 10 + b"]" * 10 + b"]}"
    assert decode_event(deep, max_depth=12).target == "A"  # envelope 1, arguments 2, ten arrays 12
    with pytest.raises(InvalidEnvelope) as too_deep:
        decode_event(deep, max_depth=11)
    assert too_deep.value.kind is InvalidEnvelopeKind.TOO_DEEP
