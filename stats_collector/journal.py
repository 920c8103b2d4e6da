"""Journal records: remembered ids and active users as bounded KV values (pure: no I/O).

A journal entry is ``(sequence, micros, key)``: the stream sequence that caused it, a time in µs since the
epoch (an id's arrival, a user's newest activity) and the id or user. A record is a JSON array of entries,
``[[1041, 1764512345123456, "evt-5"], ...]``, at most ``max_bytes`` long: :func:`encode_records` splits a
delta into as many records as it takes, so no single write grows with the number of ids or users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import orjson

Entry = tuple[int, int, str]

# Bytes an entry takes besides its key: two integers of up to 20 digits, brackets, quotes and commas.
ENTRY_OVERHEAD_BYTES: Final = 48


def encode_records(entries: Sequence[Entry], *, max_bytes: int) -> list[bytes]:
    """``entries`` as JSON records of at most ``max_bytes`` each (in order; none when there are no entries).

    ValueError when a single entry cannot fit (keys are at most 128 characters, so only a tiny limit fails).
    """
    records: list[bytes] = []
    start = 0
    size = 2
    for index, (_, _, key) in enumerate(entries):
        cost = len(key) + ENTRY_OVERHEAD_BYTES
        if index > start and size + cost > max_bytes:
            records.extend(_encode_fitting(entries[start:index], max_bytes))
            start, size = index, 2
        size += cost
    if start < len(entries):
        records.extend(_encode_fitting(entries[start:], max_bytes))
    return records


def _encode_fitting(entries: Sequence[Entry], max_bytes: int) -> list[bytes]:
    """One record, or more when escaping made the estimate too small (split in halves until each fits)."""
    record = orjson.dumps(list(entries))
    if len(record) <= max_bytes:
        return [record]
    if len(entries) == 1:
        raise ValueError(f"one journal entry takes {len(record)} bytes, more than the {max_bytes}-byte limit")
    middle = len(entries) // 2
    return _encode_fitting(entries[:middle], max_bytes) + _encode_fitting(entries[middle:], max_bytes)


def decode_record(value: bytes) -> list[Entry]:
    """The entries of one record; ValueError on anything that is not a list of [int, int, str]."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ValueError("journal record is not JSON") from None
    if not isinstance(data, list):
        raise ValueError("journal record must be a list")
    entries: list[Entry] = []
    for item in data:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and type(item[0]) is int
            and type(item[1]) is int
            and isinstance(item[2], str)
        ):
            raise ValueError("journal entries must be [sequence, micros, key]")
        entries.append((item[0], item[1], item[2]))
    return entries
