"""The snapshot record the collector stores in KV and the gateway serves: figures, and whether they are complete."""

from __future__ import annotations

import orjson
import pytest

from shared.models import PlatformSnapshot, SnapshotGap, SnapshotRecord, decode_snapshot_record, encode_snapshot_record

GAP = SnapshotGap(first_sequence=11, last_sequence=40, missing=30, detected_at="2026-01-01T00:00:00.000Z")


def test_complete_and_incomplete_records_round_trip() -> None:
    snapshot = PlatformSnapshot(total_users=5, total_revenue=1.5)
    complete = encode_snapshot_record("2026-01-01T00:00:00Z", snapshot)
    assert orjson.loads(complete)["complete"] is True and "gap" not in orjson.loads(complete)
    assert decode_snapshot_record(complete) == SnapshotRecord("2026-01-01T00:00:00Z", snapshot)
    incomplete = encode_snapshot_record("2026-01-01T00:00:00Z", snapshot, gap=GAP)
    assert orjson.loads(incomplete)["gap"] == {
        "firstSequence": 11,
        "lastSequence": 40,
        "missing": 30,
        "detectedAt": "2026-01-01T00:00:00.000Z",
    }
    record = decode_snapshot_record(incomplete)
    assert record.gap == GAP
    assert record.completeness() == {"complete": False, "gap": GAP.to_wire()}


def test_an_older_record_without_complete_reads_as_complete() -> None:
    record = decode_snapshot_record(b'{"timestamp": "t", "data": {"totalUsers": 3}}')
    assert record.gap is None and record.completeness() == {}
    assert record.data.total_users == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b'{"timestamp": "t", "data": {}, "complete": "no"}', "complete"),
        (b'{"timestamp": "t", "data": {}, "complete": false}', "gap must be an object"),
        (b'{"timestamp": "t", "data": {}, "complete": false, "gap": {"firstSequence": 1}}', "lastSequence"),
    ],
)
def test_malformed_completeness_is_refused(value: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_snapshot_record(value)
