"""Hypothesis strategies shared by the SignalR codec tests (no tests here)."""

from datetime import UTC
from typing import Any

from hypothesis import strategies as st

from gateway.signalr.messages import (
    Ack,
    CancelInvocation,
    Close,
    Completion,
    HubMessage,
    Invocation,
    Ping,
    Sequence,
    StreamInvocation,
    StreamItem,
)

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

_scalars_common = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, UINT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _scalars_common,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

MSGPACK_VALUES: st.SearchStrategy[Any] = st.recursive(
    _scalars_common | st.binary(max_size=20) | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

IDS = st.text(min_size=1, max_size=12)
HEADERS = st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=3)


def hub_messages(values: st.SearchStrategy[Any]) -> st.SearchStrategy[HubMessage]:
    """Any valid hub message whose application values come from ``values``."""
    arguments = st.lists(values, max_size=4).map(tuple)
    stream_ids = st.lists(IDS, max_size=3).map(tuple)
    sequence_ids = st.integers(0, 2**63 - 1)
    return st.one_of(
        st.builds(Invocation, IDS, arguments, st.none() | IDS, stream_ids, HEADERS),
        st.builds(StreamInvocation, IDS, IDS, arguments, stream_ids, HEADERS),
        st.builds(StreamItem, IDS, values, HEADERS),
        st.builds(lambda i, h: Completion(i, headers=h), IDS, HEADERS),
        st.builds(lambda i, v, h: Completion(i, result=v, has_result=True, headers=h), IDS, values, HEADERS),
        st.builds(lambda i, e, h: Completion(i, error=e, headers=h), IDS, st.text(min_size=1), HEADERS),
        st.builds(CancelInvocation, IDS, HEADERS),
        st.just(Ping()),
        st.builds(Close, st.none() | st.text(max_size=20), st.booleans()),
        st.builds(Ack, sequence_ids),
        st.builds(Sequence, sequence_ids),
    )


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``stream`` at the given offsets (in any order, duplicates allowed)."""
    points = sorted(cuts)
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
