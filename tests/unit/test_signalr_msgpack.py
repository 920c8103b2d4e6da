"""The "messagepack" hub protocol (digest section 5): golden vectors, validation, properties."""

from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signalr import MESSAGEPACK_PROTOCOL, PING
from gateway.signalr import messages as msg
from gateway.signalr.errors import MessageTooLargeError, ProtocolError
from gateway.signalr.framing import encode_varint
from tests.support.signalr_codec import MSGPACK_VALUES, bytewise, decode_in_pieces, feed_ignoring_protocol_errors


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def decode_all(data: bytes) -> list[msg.HubMessage]:
    return MESSAGEPACK_PROTOCOL.new_reader(max_message_bytes=None).feed(data)


def frame(value: Any) -> bytes:
    body = msgpack.packb(value, datetime=True)
    return encode_varint(len(body)) + body


# JS v10 output (digest section 5.3), framed.
JS_VECTORS: list[tuple[bytes, msg.HubMessage]] = [
    (h("0e 95 01 80 a1 30 a4 53 65 6e 64 92 2a a1 61"), msg.Invocation("Send", (42, "a"), "0")),
    (h("0b 95 01 80 c0 a4 53 65 6e 64 91 2a"), msg.Invocation("Send", (42,))),
    (h("0c 96 01 80 a1 31 a2 55 70 90 91 a1 30"), msg.Invocation("Up", (), "1", stream_ids=("0",))),
    (h("06 94 03 80 a1 30 02"), msg.Completion.void("0")),
    (h("07 95 03 80 a1 30 03 05"), msg.Completion.with_result("0", 5)),
    (h("0b 95 03 80 a1 30 01 a4 62 6f 6f 6d"), msg.Completion.with_error("0", "boom")),
    (h("03 92 07 c0"), msg.Close()),
    (h("02 91 06"), msg.Ping()),
    (h("03 92 08 03"), msg.Ack(3)),
    (h("03 92 09 04"), msg.Sequence(4)),
    (h("07 93 07 a3 78 79 7a c3"), msg.Close("xyz", allow_reconnect=True)),
]


@pytest.mark.parametrize(("raw", "message"), JS_VECTORS)
def test_decode_js_vectors(raw: bytes, message: msg.HubMessage) -> None:
    assert decode_all(raw) == [message]


@pytest.mark.parametrize(
    ("message", "raw"),
    [
        # Invocations are always written with 6 elements (signalrcore reads raw[5]).
        (msg.Invocation("Send", (42, "a"), "0"), h("0f 96 01 80 a1 30 a4 53 65 6e 64 92 2a a1 61 90")),
        (msg.Invocation("Send", (42,)), h("0c 96 01 80 c0 a4 53 65 6e 64 91 2a 90")),
        (msg.Invocation("Up", (), "1", stream_ids=("0",)), h("0c 96 01 80 a1 31 a2 55 70 90 91 a1 30")),
        (msg.Completion.void("0"), h("06 94 03 80 a1 30 02")),
        (msg.Completion.with_result("0", 5), h("07 95 03 80 a1 30 03 05")),
        (msg.Completion.with_result("0", None), h("07 95 03 80 a1 30 03 c0")),
        (msg.Completion.with_error("0", "boom"), h("0b 95 03 80 a1 30 01 a4 62 6f 6f 6d")),
        (PING, h("02 91 06")),
        (msg.Close(), h("04 93 07 c0 c2")),
        (msg.Close("xyz", allow_reconnect=True), h("07 93 07 a3 78 79 7a c3")),
        (msg.Ack(3), h("03 92 08 03")),
        (msg.Sequence(4), h("03 92 09 04")),
        (msg.StreamItem("0", 7), h("06 94 02 80 a1 30 07")),
        (msg.CancelInvocation("2"), h("05 93 05 80 a1 32")),
        (msg.StreamInvocation("2", "C", (3,)), h("0a 96 04 80 a1 32 a1 43 91 03 90")),
        (msg.Invocation("T", (), headers={"a": "b"}), h("0c 96 01 81 a1 61 a1 62 c0 a1 54 90 90")),
    ],
)
def test_encode(message: msg.HubMessage, raw: bytes) -> None:
    assert MESSAGEPACK_PROTOCOL.encode(message) == raw
    assert decode_all(raw) == [message]


def test_timestamps() -> None:
    # new Date(0) from the JS client is ext -1 "d6 ff 00 00 00 00".
    raw = h("0d 95 01 80 c0 a1 54 91 d6 ff 00 00 00 00")
    assert decode_all(raw) == [msg.Invocation("T", (datetime(1970, 1, 1, tzinfo=UTC),))]
    naive = MESSAGEPACK_PROTOCOL.encode(msg.Invocation("T", (datetime(1970, 1, 1),)))
    aware = MESSAGEPACK_PROTOCOL.encode(msg.Invocation("T", (datetime(1970, 1, 1, tzinfo=UTC),)))
    assert naive == aware
    assert h("d6 ff 00 00 00 00") in naive


def test_binary_and_strings() -> None:
    raw = frame([1, {}, None, "T", [b"\x00\x01", "ü"]])
    assert decode_all(raw) == [msg.Invocation("T", (b"\x00\x01", "ü"))]


def test_encode_unserialisable_argument_raises_type_error() -> None:
    with pytest.raises(TypeError):
        MESSAGEPACK_PROTOCOL.encode(msg.Invocation("T", (object(),)))


def test_empty_invocation_id_means_non_blocking() -> None:
    assert decode_all(frame([1, {}, "", "T", []])) == [msg.Invocation("T", ())]


def test_extra_trailing_elements_are_ignored() -> None:
    assert decode_all(frame([6, "future"])) == [msg.Ping()]
    assert decode_all(frame([5, {}, "1", "future"])) == [msg.CancelInvocation("1")]


def test_unknown_type_is_skipped() -> None:
    stream = frame([10, {}, "x"]) + frame([0]) + frame([-1]) + h("02 91 06")
    assert decode_all(stream) == [msg.Ping()]


def test_several_messages_byte_by_byte() -> None:
    stream = b"".join(raw for raw, _ in JS_VECTORS)
    assert decode_in_pieces(MESSAGEPACK_PROTOCOL, bytewise(stream)) == [m for _, m in JS_VECTORS]
    assert decode_all(stream) == [m for _, m in JS_VECTORS]


def test_size_limit() -> None:
    raw = JS_VECTORS[0][0]
    assert MESSAGEPACK_PROTOCOL.new_reader(max_message_bytes=len(raw)).feed(raw) == [JS_VECTORS[0][1]]
    with pytest.raises(MessageTooLargeError):
        MESSAGEPACK_PROTOCOL.new_reader(max_message_bytes=len(raw) - 1).feed(raw)
    reader = MESSAGEPACK_PROTOCOL.new_reader(max_message_bytes=32768)
    with pytest.raises(MessageTooLargeError) as info:
        reader.feed(encode_varint(40000) + b"\x96")
    assert info.value.size == 40003


def test_bad_varint() -> None:
    with pytest.raises(ProtocolError):
        decode_all(h("ff ff ff ff 08"))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        h("c1"),  # never-used byte
        h("92 06"),  # truncated array
        h("91 06 06"),  # trailing data after the value
        h("06"),  # not an array
        h("90"),  # empty array
        h("91 a1 36"),  # type is a string
        h("91 c3"),  # type is a boolean
        h("91 cb 3f f0 00 00 00 00 00 00"),  # type is a float
        h("81 01 02"),  # map with an integer key (strict_map_key)
        h("81 91 01 02"),  # map with an array key (unhashable)
        h("d7 ff ff ff ff ff ff ff ff ff"),  # invalid timestamp
    ],
)
def test_malformed_body(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_all(encode_varint(len(body)) + body)


@pytest.mark.parametrize(
    "value",
    [
        [1, {}, "1", "T"],  # too short
        [1, None, "1", "T", []],  # headers nil
        [1, [], "1", "T", []],
        [1, {"a": 1}, "1", "T", []],
        [1, {}, 1, "T", []],
        [1, {}, "1", "", []],
        [1, {}, "1", 5, []],
        [1, {}, "1", "T", {}],
        [1, {}, "1", "T", [], None],
        [1, {}, "1", "T", [], [1]],
        [1, {}, "1", "T", [], [""]],
        [4, {}, None, "T", []],
        [4, {}, "", "T", []],
        [2, {}, "1"],
        [2, {}, None, 1],
        [3, {}, "1"],
        [3, {}, "1", 4],
        [3, {}, "1", 0],
        [3, {}, "1", True],
        [3, {}, "1", 1],
        [3, {}, "1", 1, None],
        [3, {}, "1", 1, ""],
        [3, {}, "1", 3],
        [3, {}, "", 2],
        [5, {}],
        [5, {}, None],
        [7],
        [7, 1],
        [7, None, 1],
        [8],
        [8, -1],
        [8, "1"],
        [9, 1.5],
        [9, False],
    ],
)
def test_malformed_message(value: list[Any]) -> None:
    with pytest.raises(ProtocolError):
        decode_all(frame(value))


# --- properties -------------------------------------------------------------------------------------------


@given(st.binary(max_size=60))
def test_fuzz_raw_bytes(data: bytes) -> None:
    feed_ignoring_protocol_errors(MESSAGEPACK_PROTOCOL, data)


_ELEMENT = st.one_of(
    MSGPACK_VALUES,
    st.just({}),
    st.just([]),
    st.just("1"),
    st.integers(0, 4),
    st.dictionaries(st.text(), st.text()),
)


@settings(max_examples=300)
@given(st.one_of(st.integers(0, 10), MSGPACK_VALUES), st.lists(_ELEMENT, max_size=6))
def test_fuzz_structured(kind: Any, rest: list[Any]) -> None:
    feed_ignoring_protocol_errors(MESSAGEPACK_PROTOCOL, frame([kind, *rest]))
