"""Hypothesis strategies and helpers shared by the SignalR codec tests."""

import contextlib
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from hypothesis import strategies as st

from gateway.signalr import HubProtocol, SignalRError
from gateway.signalr import messages as msg

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


def hub_messages(values: st.SearchStrategy[Any]) -> st.SearchStrategy[msg.HubMessage]:
    """Any valid hub message whose application values come from ``values``."""
    arguments = st.lists(values, max_size=4).map(tuple)
    stream_ids = st.lists(IDS, max_size=3).map(tuple)
    sequence_ids = st.integers(0, 2**63 - 1)
    return st.one_of(
        st.builds(msg.Invocation, IDS, arguments, st.none() | IDS, stream_ids, HEADERS),
        st.builds(msg.StreamInvocation, IDS, IDS, arguments, stream_ids, HEADERS),
        st.builds(msg.StreamItem, IDS, values, HEADERS),
        st.builds(lambda i, h: msg.Completion(i, headers=h), IDS, HEADERS),
        st.builds(lambda i, v, h: msg.Completion(i, result=v, has_result=True, headers=h), IDS, values, HEADERS),
        st.builds(lambda i, e, h: msg.Completion(i, error=e, headers=h), IDS, st.text(min_size=1), HEADERS),
        st.builds(msg.CancelInvocation, IDS, HEADERS),
        st.just(msg.Ping()),
        st.builds(msg.Close, st.none() | st.text(max_size=20), st.booleans()),
        st.builds(msg.Ack, sequence_ids),
        st.builds(msg.Sequence, sequence_ids),
    )


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``stream`` at the given offsets (in any order, duplicates allowed)."""
    points = sorted(cuts)
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def decode_in_pieces(protocol: HubProtocol, pieces: Iterable[bytes]) -> list[msg.HubMessage]:
    """What one reader of ``protocol`` decodes from ``pieces``, fed in turn."""
    reader = protocol.new_reader(max_message_bytes=None)
    return [message for piece in pieces for message in reader.feed(piece)]


def bytewise(stream: bytes) -> list[bytes]:
    """``stream`` one byte at a time."""
    return [bytes([byte]) for byte in stream]


def feed_ignoring_protocol_errors(protocol: HubProtocol, data: bytes, limit: int | None = None) -> None:
    """Feed ``data`` to a new reader of ``protocol``: a protocol error is fine, any other exception is a bug."""
    with contextlib.suppress(SignalRError):
        protocol.new_reader(max_message_bytes=limit).feed(data)
