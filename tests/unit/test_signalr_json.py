"""The "json" hub protocol (digest sections 4 and 9): golden vectors, validation, properties."""

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signalr import JSON_PROTOCOL, PING
from gateway.signalr import messages as msg
from gateway.signalr.errors import MessageTooLargeError, ProtocolError
from gateway.signalr.json_protocol import decode_json_message
from tests.support.signalr_codec import (
    JSON_VALUES,
    bytewise,
    decode_in_pieces,
    feed_ignoring_protocol_errors,
    hub_messages,
)


def decode_all(data: bytes) -> list[msg.HubMessage]:
    return JSON_PROTOCOL.new_reader(max_message_bytes=None).feed(data)


# Exact JS v10 output (digest section 4) and the message each one means.
JS_VECTORS: list[tuple[bytes, msg.HubMessage]] = [
    (
        b'{"type":1,"invocationId":"0","target":"Send","arguments":[42,"a"]}\x1e',
        msg.Invocation("Send", (42, "a"), "0"),
    ),
    (b'{"type":1,"target":"Send","arguments":[42]}\x1e', msg.Invocation("Send", (42,))),
    (
        b'{"type":1,"invocationId":"1","target":"Up","arguments":[],"streamIds":["0"]}\x1e',
        msg.Invocation("Up", (), "1", stream_ids=("0",)),
    ),
    (
        b'{"type":4,"invocationId":"2","target":"Count","arguments":[3]}\x1e',
        msg.StreamInvocation("2", "Count", (3,)),
    ),
    (b'{"type":5,"invocationId":"2"}\x1e', msg.CancelInvocation("2")),
    (b'{"type":2,"invocationId":"0","item":7}\x1e', msg.StreamItem("0", 7)),
    (b'{"type":3,"invocationId":"0"}\x1e', msg.Completion.void("0")),
    (b'{"type":3,"invocationId":"0","result":5}\x1e', msg.Completion.with_result("0", 5)),
    (b'{"type":3,"invocationId":"0","error":"boom"}\x1e', msg.Completion.with_error("0", "boom")),
    (b'{"type":6}\x1e', msg.Ping()),
    (b'{"type":7}\x1e', msg.Close()),
    (b'{"type":8,"sequenceId":3}\x1e', msg.Ack(3)),
    (b'{"type":9,"sequenceId":4}\x1e', msg.Sequence(4)),
]


@pytest.mark.parametrize(("raw", "message"), JS_VECTORS)
def test_decode_js_vectors(raw: bytes, message: msg.HubMessage) -> None:
    assert decode_all(raw) == [message]


@pytest.mark.parametrize(("raw", "message"), JS_VECTORS)
def test_encode_matches_js_vectors(raw: bytes, message: msg.HubMessage) -> None:
    assert JSON_PROTOCOL.encode(message) == raw


def test_message_type_tags() -> None:
    assert [m.type for _, m in JS_VECTORS] == [1, 1, 1, 4, 5, 2, 3, 3, 3, 6, 7, 8, 9]
    assert PING.type is msg.MessageType.PING


# --- server output the clients depend on (section 4 trace, section 7.2 close table) -------------------------


@pytest.mark.parametrize(
    ("message", "raw"),
    [
        (msg.Completion.with_result("0", 42), b'{"type":3,"invocationId":"0","result":42}\x1e'),
        (msg.Completion.with_result("0", None), b'{"type":3,"invocationId":"0","result":null}\x1e'),
        (msg.StreamItem("1", None), b'{"type":2,"invocationId":"1","item":null}\x1e'),
        (PING, b'{"type":6}\x1e'),
        (msg.Close(allow_reconnect=True), b'{"type":7,"allowReconnect":true}\x1e'),
        (
            msg.Close("Connection closed with an error.", allow_reconnect=True),
            b'{"type":7,"error":"Connection closed with an error.","allowReconnect":true}\x1e',
        ),
        (
            msg.Invocation("ReceiveMessage", ("a", {"b": [1]})),
            b'{"type":1,"target":"ReceiveMessage","arguments":["a",{"b":[1]}]}\x1e',
        ),
        (msg.Invocation("T", (), headers={}), b'{"type":1,"target":"T","arguments":[]}\x1e'),
        (
            msg.Invocation("T", (), "9", headers={"k": "v"}),
            b'{"type":1,"invocationId":"9","target":"T","arguments":[],"headers":{"k":"v"}}\x1e',
        ),
    ],
)
def test_encode_server_messages(message: msg.HubMessage, raw: bytes) -> None:
    assert JSON_PROTOCOL.encode(message) == raw


def test_encode_datetimes_as_iso_utc() -> None:
    naive = datetime(2024, 5, 6, 7, 8, 9)
    aware = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert JSON_PROTOCOL.encode(msg.Invocation("T", (naive, aware))) == (
        b'{"type":1,"target":"T","arguments":["2024-05-06T07:08:09Z","2024-05-06T07:08:09Z"]}\x1e'
    )


def test_encode_unserialisable_argument_raises_type_error() -> None:
    with pytest.raises(TypeError):
        JSON_PROTOCOL.encode(msg.Invocation("T", (object(),)))


# --- decoding what real clients send ------------------------------------------------------------------------


def test_pysignalr_completion_with_null_error_and_result() -> None:
    assert decode_all(b'{"type":3,"invocationId":"1","result":null,"error":null,"headers":{}}\x1e') == [
        msg.Completion.with_result("1", None)
    ]


def test_completion_error_with_null_result_is_an_error() -> None:
    assert decode_all(b'{"type":3,"invocationId":"1","result":null,"error":"x"}\x1e') == [
        msg.Completion.with_error("1", "x")
    ]


def test_pysignalr_close_with_snake_case_key() -> None:
    assert decode_all(b'{"type":7,"error":null,"allow_reconnect":true}\x1e') == [msg.Close()]


def test_close_fields() -> None:
    assert decode_all(b'{"type":7,"error":"bye","allowReconnect":true}\x1e') == [msg.Close("bye", True)]
    assert decode_all(b'{"type":7,"allowReconnect":null}\x1e') == [msg.Close()]


def test_headers_and_unknown_keys() -> None:
    raw = b'{"type":1,"target":"T","arguments":[],"headers":{"a":"b"},"nonBlocking":true,"x":{"y":[]}}\x1e'
    assert decode_all(raw) == [msg.Invocation("T", (), headers={"a": "b"})]


def test_null_or_empty_invocation_id_means_non_blocking() -> None:
    assert decode_all(b'{"type":1,"invocationId":null,"target":"T","arguments":[]}\x1e') == [msg.Invocation("T", ())]
    assert decode_all(b'{"type":1,"invocationId":"","target":"T","arguments":[]}\x1e') == [msg.Invocation("T", ())]


def test_null_optional_collections() -> None:
    raw = b'{"type":4,"invocationId":"1","target":"T","arguments":[],"streamIds":null,"headers":null}\x1e'
    assert decode_all(raw) == [msg.StreamInvocation("1", "T", ())]


def test_unknown_type_is_skipped() -> None:
    raw = b'{"type":6}\x1e{"type":10,"whatever":1}\x1e{"type":0}\x1e{"type":-3}\x1e{"type":8,"sequenceId":1}\x1e'
    assert decode_all(raw) == [msg.Ping(), msg.Ack(1)]
    assert decode_json_message(b'{"type":99}') is None


def test_several_messages_in_one_feed_then_partial() -> None:
    reader = JSON_PROTOCOL.new_reader(max_message_bytes=None)
    assert reader.feed(b'{"type":6}\x1e{"type":2,"invocationId":"0","item":7}\x1e{"type"') == [
        msg.Ping(),
        msg.StreamItem("0", 7),
    ]
    assert reader.feed(b":7}\x1e") == [msg.Close()]


def test_byte_by_byte() -> None:
    stream = b"".join(raw for raw, _ in JS_VECTORS)
    assert decode_in_pieces(JSON_PROTOCOL, bytewise(stream)) == [m for _, m in JS_VECTORS]


def test_size_limit_complete_and_partial() -> None:
    raw = b'{"type":1,"target":"Send","arguments":[42]}\x1e'
    assert JSON_PROTOCOL.new_reader(max_message_bytes=len(raw)).feed(raw) == [msg.Invocation("Send", (42,))]
    with pytest.raises(MessageTooLargeError):
        JSON_PROTOCOL.new_reader(max_message_bytes=len(raw) - 1).feed(raw)
    reader = JSON_PROTOCOL.new_reader(max_message_bytes=32768)
    with pytest.raises(MessageTooLargeError) as info:
        reader.feed(b'{"type":1,"target":"Send","arguments":["' + b"x" * 40000)
    assert info.value.limit == 32768


# --- malformed input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"not json",
        b'{"type":6',
        b'{"type":6}{"type":6}',
        b'\xff{"type":6}',
        b'{"type":1,"target":"\xc3\x28","arguments":[]}',
        b"[6]",
        b"6",
        b"null",
        b"{}",
        b'{"type":"6"}',
        b'{"type":6.0}',
        b'{"type":true}',
        b'{"type":null}',
        # Invocation
        b'{"type":1,"arguments":[]}',
        b'{"type":1,"target":"","arguments":[]}',
        b'{"type":1,"target":5,"arguments":[]}',
        b'{"type":1,"target":"T"}',
        b'{"type":1,"target":"T","arguments":{}}',
        b'{"type":1,"target":"T","arguments":null}',
        b'{"type":1,"target":"T","arguments":[],"invocationId":1}',
        b'{"type":1,"target":"T","arguments":[],"streamIds":"0"}',
        b'{"type":1,"target":"T","arguments":[],"streamIds":[0]}',
        b'{"type":1,"target":"T","arguments":[],"headers":[]}',
        b'{"type":1,"target":"T","arguments":[],"headers":{"a":1}}',
        # StreamInvocation
        b'{"type":4,"target":"T","arguments":[]}',
        b'{"type":4,"invocationId":null,"target":"T","arguments":[]}',
        b'{"type":4,"invocationId":"","target":"T","arguments":[]}',
        b'{"type":4,"invocationId":"1","arguments":[]}',
        # StreamItem
        b'{"type":2,"invocationId":"1"}',
        b'{"type":2,"item":1}',
        b'{"type":2,"invocationId":3,"item":1}',
        # Completion
        b'{"type":3}',
        b'{"type":3,"invocationId":""}',
        b'{"type":3,"invocationId":"1","error":"x","result":1}',
        b'{"type":3,"invocationId":"1","error":"x","result":false}',
        b'{"type":3,"invocationId":"1","error":""}',
        b'{"type":3,"invocationId":"1","error":5}',
        # CancelInvocation
        b'{"type":5}',
        b'{"type":5,"invocationId":[]}',
        # Close
        b'{"type":7,"error":1}',
        b'{"type":7,"allowReconnect":"true"}',
        b'{"type":7,"allowReconnect":1}',
        # Ack / Sequence
        b'{"type":8}',
        b'{"type":8,"sequenceId":"1"}',
        b'{"type":8,"sequenceId":1.5}',
        b'{"type":9,"sequenceId":-1}',
        b'{"type":9,"sequenceId":true}',
    ],
)
def test_malformed_raises_protocol_error(record: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_all(record + b"\x1e")
    assert info.value.reason


def test_protocol_error_reason_never_contains_payload() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_all(b'{"type":1,"target":"T","arguments":"secret-token-123"}\x1e')
    assert "secret" not in str(info.value)


# --- properties -------------------------------------------------------------------------------------------


@given(hub_messages(JSON_VALUES))
def test_every_message_is_one_record(message: msg.HubMessage) -> None:
    encoded = JSON_PROTOCOL.encode(message)
    assert encoded.endswith(b"\x1e")
    assert encoded.count(b"\x1e") == 1


_FIELDS = (
    "invocationId",
    "target",
    "arguments",
    "streamIds",
    "headers",
    "item",
    "result",
    "error",
    "allowReconnect",
    "sequenceId",
)


@settings(max_examples=300)
@given(
    st.one_of(st.integers(0, 10), JSON_VALUES),
    st.dictionaries(st.sampled_from(_FIELDS), st.one_of(JSON_VALUES, st.just([]), st.just({}), st.just("1"))),
)
def test_fuzz_structured(kind: Any, fields: dict[str, Any]) -> None:
    feed_ignoring_protocol_errors(JSON_PROTOCOL, orjson.dumps({"type": kind, **fields}) + b"\x1e")
