"""The records of one resumable connection on ``realtime.conn.<key>`` (broker_bridge.connection_stream)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_bridge import connection_stream as records
from tests.support.signalr_codec import JSON_VALUES

INBOUND = st.integers(0, 2**64 - 1)
MARKERS = [
    records.RecordKind.START,
    records.RecordKind.JOIN,
    records.RecordKind.LEAVE,
    records.RecordKind.TAKEOVER,
    records.RecordKind.END,
]
# Any field names but ``kind`` (records.marker_record's own parameter).
FIELDS = st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda name: name != "kind"), JSON_VALUES, max_size=4)


@given(frame=st.binary(max_size=200), inbound=INBOUND)
def test_a_message_record_round_trips(frame: bytes, inbound: int) -> None:
    assert records.decode_record(records.message_record(frame, inbound=inbound)) == records.StreamRecord(
        records.RecordKind.MESSAGE, inbound=inbound, frame=frame
    )


@given(inbound=INBOUND)
def test_a_processed_record_round_trips(inbound: int) -> None:
    assert records.decode_record(records.processed_record(inbound)) == records.StreamRecord(
        records.RecordKind.PROCESSED, inbound=inbound
    )


@given(kind=st.sampled_from(MARKERS), fields=FIELDS)
def test_a_marker_round_trips(kind: records.RecordKind, fields: dict[str, Any]) -> None:
    assert records.decode_record(records.marker_record(kind, **fields)) == records.StreamRecord(kind, fields=fields)


def test_the_format_is_a_kind_byte_then_the_body() -> None:
    assert records.message_record(b"{}\x1e", inbound=2) == b"m" + bytes(7) + b"\x02{}\x1e"
    assert records.processed_record(258) == b"p" + bytes(6) + b"\x01\x02"
    assert records.marker_record(records.RecordKind.JOIN, group="alerts") == b'j{"group":"alerts"}'
    assert records.marker_record(records.RecordKind.END) == b"e{}"


def test_a_message_without_a_frame_is_still_a_message() -> None:
    assert records.decode_record(b"m" + bytes(8)) == records.StreamRecord(records.RecordKind.MESSAGE)


@pytest.mark.parametrize("kind", [records.RecordKind.MESSAGE, records.RecordKind.PROCESSED])
def test_messages_are_not_markers(kind: records.RecordKind) -> None:
    with pytest.raises(ValueError, match="not a marker"):
        records.marker_record(kind, group="alerts")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "unknown record kind"),
        (b"x{}", "unknown record kind"),
        (b"M" + bytes(8), "unknown record kind"),
        (b"m" + bytes(7), "record too short"),
        (b"p", "record too short"),
        (b"j", "marker is not JSON"),
        (b"j{", "marker is not JSON"),
        (b"s\xff{}", "marker is not JSON"),
        (b"t[1]", "marker is not an object"),
        (b'e"end"', "marker is not an object"),
        (b"lnull", "marker is not an object"),
    ],
)
def test_malformed_records_are_refused(payload: bytes, why: str) -> None:
    with pytest.raises(records.InvalidRecord, match=why):
        records.decode_record(payload)


@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_invalid_record(payload: bytes) -> None:
    try:
        record = records.decode_record(payload)
    except records.InvalidRecord:
        return
    assert isinstance(record, records.StreamRecord)


@given(
    kind=st.sampled_from([kind.value for kind in records.RecordKind]),
    body=st.binary(max_size=64) | st.text().map(str.encode),
)
def test_any_body_after_a_known_kind_decodes_or_raises_invalid_record(kind: bytes, body: bytes) -> None:
    try:
        record = records.decode_record(kind + body)
    except records.InvalidRecord:
        return
    assert record.kind is records.RecordKind(kind)
    if record.kind in (records.RecordKind.MESSAGE, records.RecordKind.PROCESSED):
        assert record.inbound == int.from_bytes(body[:8], "big")
        assert record.frame == body[8:]
    else:
        assert isinstance(record.fields, dict)
