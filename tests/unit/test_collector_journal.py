"""Journal records (bounded JSON values of ids and users) and the reply-subject reader of the stream consumer."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stats_collector.consumer import position
from stats_collector.journal import ENTRY_OVERHEAD_BYTES, decode_record, encode_records

KEYS = st.text(min_size=1, max_size=128)
ENTRIES = st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 2**62), KEYS), max_size=200)


@given(ENTRIES, st.integers(400, 4000))
def test_records_hold_every_entry_in_order_and_none_is_over_the_limit(
    entries: list[tuple[int, int, str]], max_bytes: int
) -> None:
    records = encode_records(entries, max_bytes=max_bytes)
    assert all(len(record) <= max_bytes for record in records)
    assert [entry for record in records for entry in decode_record(record)] == entries
    assert (records == []) == (entries == [])


def test_a_large_delta_is_split_into_records_of_bounded_size() -> None:
    entries = [(n, 1_764_000_000_000_000 + n, f"{n:036d}") for n in range(20_000)]
    records = encode_records(entries, max_bytes=131_072)
    assert max(len(record) for record in records) <= 131_072
    # the size estimate is an upper bound close to the truth for plain keys: records are filled well
    assert min(len(record) for record in records[:-1]) > 131_072 * 0.7
    assert len(f"{0:036d}") + ENTRY_OVERHEAD_BYTES > len(orjson.dumps([entries[-1]])) - 2


def test_an_entry_that_cannot_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        encode_records([(1, 2, "x" * 100)], max_bytes=50)


@pytest.mark.parametrize(
    "value", [b"not json", b"{}", b"[[1, 2]]", b'[["1", 2, "a"]]', b"[[1, 2, 3]]", b'[[true, 2, "a"]]']
)
def test_malformed_records_are_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="journal"):
        decode_record(value)


def test_position_reads_both_reply_subject_forms() -> None:
    v1 = "$JS.ACK.PLATFORM_EVENTS.c1.1.41.40.1764512345123456789.7"
    assert position(v1) == (41, 1764512345123456, 7)
    v2 = "$JS.ACK._.ACCHASH.PLATFORM_EVENTS.c1.1.41.40.1764512345123456789.7.r4nd0m"
    assert position(v2) == (41, 1764512345123456, 7)
