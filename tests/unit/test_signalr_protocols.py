"""Properties every hub protocol has, JSON and MessagePack alike: any message survives a round trip, any
chunking of a stream of records decodes to the same messages, and no input makes a reader fail other
than with a protocol error."""

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, HubProtocol
from gateway.signalr import messages as msg
from gateway.signalr.framing import encode_varint
from tests.support.signalr_codec import (
    JSON_VALUES,
    MSGPACK_VALUES,
    chunked,
    decode_in_pieces,
    feed_ignoring_protocol_errors,
    hub_messages,
)


def json_records(bodies: list[bytes]) -> bytes:
    return b"".join(body + b"\x1e" for body in bodies)


def msgpack_records(bodies: list[bytes]) -> bytes:
    return b"".join(encode_varint(len(body)) + body for body in bodies)


PROTOCOLS = pytest.mark.parametrize(
    ("protocol", "values", "records"),
    [
        pytest.param(JSON_PROTOCOL, JSON_VALUES, json_records, id="json"),
        pytest.param(MESSAGEPACK_PROTOCOL, MSGPACK_VALUES, msgpack_records, id="messagepack"),
    ],
)
Records = Callable[[list[bytes]], bytes]


def decode_all(protocol: HubProtocol, data: bytes) -> list[msg.HubMessage]:
    return protocol.new_reader(max_message_bytes=None).feed(data)


@PROTOCOLS
@settings(max_examples=300)
@given(data=st.data())
def test_roundtrip(
    protocol: HubProtocol, values: st.SearchStrategy[Any], records: Records, data: st.DataObject
) -> None:
    message = data.draw(hub_messages(values))
    assert decode_all(protocol, protocol.encode(message)) == [message]


@PROTOCOLS
@given(data=st.data(), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_arbitrary_chunking(
    protocol: HubProtocol, values: st.SearchStrategy[Any], records: Records, data: st.DataObject, cuts: list[int]
) -> None:
    messages = data.draw(st.lists(hub_messages(values), max_size=6))
    stream = b"".join(protocol.encode(message) for message in messages)
    assert decode_in_pieces(protocol, chunked(stream, [c % (len(stream) + 1) for c in cuts])) == messages


@PROTOCOLS
@settings(max_examples=300)
@given(bodies=st.lists(st.binary(max_size=30), max_size=4), limit=st.sampled_from([None, 8, 64]))
def test_fuzz_records(
    protocol: HubProtocol, values: st.SearchStrategy[Any], records: Records, bodies: list[bytes], limit: int | None
) -> None:
    feed_ignoring_protocol_errors(protocol, records(bodies), limit)
