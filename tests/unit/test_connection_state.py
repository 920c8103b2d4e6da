"""ServerConnection: the sans-I/O state machine, driven with literal bytes and explicit times."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, Close, HubMessage, Invocation, Ping
from gateway.signalr.connection import (
    CLOSED_WITH_ERROR,
    CloseReason,
    ConnectionLimits,
    ConnectionState,
    ServerConnection,
    SharedSend,
)
from gateway.signalr.protocol import TransferFormat
from tests.support.frames import HANDSHAKE_OK, JSON_HANDSHAKE, MSGPACK_HANDSHAKE, PING_FRAME

ERROR_CLOSE = b'{"type":7,"error":"Connection closed with an error.","allowReconnect":true}\x1e'
INVOKE_1 = b'{"type":1,"invocationId":"1","target":"Echo","arguments":["a"]}\x1e'
INVOKE_2 = b'{"type":1,"target":"Fire","arguments":[2]}\x1e'


def new_connection(
    *, transfer_formats: Collection[TransferFormat] = ("Text", "Binary"), **limits: Any
) -> ServerConnection:
    return ServerConnection(limits=ConnectionLimits(**limits), now=0.0, transfer_formats=transfer_formats)


def receive(connection: ServerConnection, data: bytes, now: float) -> tuple[bool, list[HubMessage]]:
    """Feed ``data``; whether it completed the handshake, and every message it completed."""
    completed = connection.receive_data(data, now)
    messages = []
    while (message := connection.next_message()) is not None:
        messages.append(message)
    return completed, messages


def open_connection(**limits: Any) -> ServerConnection:
    connection = new_connection(**limits)
    assert connection.receive_data(JSON_HANDSHAKE, 0.0)
    assert connection.data_to_send(0.0) == HANDSHAKE_OK
    return connection


# -- handshake ----------------------------------------------------------------------------------


def test_json_handshake_opens_the_connection() -> None:
    connection = new_connection()
    assert connection.state is ConnectionState.AWAITING_HANDSHAKE
    assert not connection.binary_frames
    assert receive(connection, JSON_HANDSHAKE, 1.0) == (True, [])
    assert connection.state is ConnectionState.OPEN
    assert connection.protocol is JSON_PROTOCOL
    assert not connection.binary_frames
    assert connection.data_to_send(1.0) == HANDSHAKE_OK
    assert connection.data_to_send(1.0) == b""


def test_messagepack_handshake_uses_binary_frames() -> None:
    connection = new_connection()
    assert connection.receive_data(MSGPACK_HANDSHAKE, 0.0)
    assert connection.protocol is MESSAGEPACK_PROTOCOL
    assert connection.binary_frames
    assert connection.data_to_send(0.0) == HANDSHAKE_OK  # the handshake reply is JSON for every protocol
    connection.send(Ping())
    assert connection.data_to_send(0.0) == b"\x02\x91\x06"


def test_handshake_split_into_single_bytes() -> None:
    connection = new_connection()
    for index in range(len(JSON_HANDSHAKE) - 1):
        assert not connection.receive_data(JSON_HANDSHAKE[index : index + 1], 0.0)
        assert connection.state is ConnectionState.AWAITING_HANDSHAKE
    assert connection.receive_data(JSON_HANDSHAKE[-1:], 0.0)


def test_unsupported_protocol_gets_an_error_reply_and_closes() -> None:
    connection = new_connection()
    assert not connection.receive_data(b'{"protocol":"xml","version":1}\x1e', 0.0)
    assert connection.state is ConnectionState.CLOSING
    assert connection.should_close
    assert connection.close_reason is CloseReason.HANDSHAKE_FAILED
    assert connection.close_detail == "The protocol 'xml' is not supported."
    assert connection.data_to_send(0.0) == b'{"error":"The protocol \'xml\' is not supported."}\x1e'


def test_binary_protocol_on_a_text_only_transport_is_refused() -> None:
    connection = new_connection(transfer_formats=("Text",))
    connection.receive_data(MSGPACK_HANDSHAKE, 0.0)
    assert connection.close_reason is CloseReason.HANDSHAKE_FAILED
    assert orjson.loads(connection.data_to_send(0.0)[:-1]) == {
        "error": "Cannot use the 'messagepack' protocol on the current transport. "
        "The transport does not support 'Binary' transfer format."
    }


def test_unparsable_handshake_gets_the_generic_reply() -> None:
    connection = new_connection()
    connection.receive_data(b"not json\x1e", 0.0)
    assert connection.close_reason is CloseReason.HANDSHAKE_FAILED
    assert connection.data_to_send(0.0) == b'{"error":"An unexpected error occurred during connection handshake."}\x1e'


def test_handshake_timeout() -> None:
    connection = new_connection(handshake_timeout_seconds=15.0)
    connection.receive_data(b'{"protocol":', 5.0)
    connection.tick(14.9)
    assert connection.state is ConnectionState.AWAITING_HANDSHAKE
    assert connection.data_to_send(14.9) == b""
    connection.tick(15.0)
    assert connection.state is ConnectionState.CLOSING
    assert connection.close_reason is CloseReason.HANDSHAKE_TIMEOUT
    assert connection.data_to_send(15.0) == b'{"error":"Handshake was canceled."}\x1e'


def test_handshake_and_messages_in_one_chunk() -> None:
    connection = new_connection()
    completed, messages = receive(connection, JSON_HANDSHAKE + INVOKE_1 + PING_FRAME + INVOKE_2, 0.0)
    assert completed
    assert messages == [Invocation("Echo", ("a",), "1"), Invocation("Fire", (2,))]
    assert connection.data_to_send(0.0) == HANDSHAKE_OK


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_any_chunking_yields_the_same_messages(cuts: list[int]) -> None:
    data = JSON_HANDSHAKE + INVOKE_1 + PING_FRAME + INVOKE_2
    connection = new_connection()
    messages = []
    completed = 0
    start = 0
    for size in [*cuts, len(data)]:
        done, received = receive(connection, data[start : start + size], 0.0)
        completed += done
        messages.extend(received)
        start += size
        if start >= len(data):
            break
    assert completed == 1
    assert messages == [Invocation("Echo", ("a",), "1"), Invocation("Fire", (2,))]


# -- timers -------------------------------------------------------------------------------------


def test_keep_alive_ping_after_silence() -> None:
    connection = open_connection(keep_alive_interval_seconds=15.0, client_timeout_seconds=30.0)
    connection.receive_data(PING_FRAME, 10.0)
    connection.tick(14.9)
    assert connection.data_to_send(14.9) == b""
    connection.tick(15.0)
    assert connection.data_to_send(15.0) == PING_FRAME
    connection.tick(29.0)
    assert connection.data_to_send(29.0) == b""


def test_sending_postpones_the_keep_alive() -> None:
    connection = open_connection(keep_alive_interval_seconds=15.0, client_timeout_seconds=100.0)
    connection.send(Invocation("Hello", ()))
    assert connection.data_to_send(10.0) == b'{"type":1,"target":"Hello","arguments":[]}\x1e'
    connection.tick(24.9)
    assert connection.data_to_send(24.9) == b""
    connection.tick(25.0)
    assert connection.data_to_send(25.0) == PING_FRAME


def test_no_keep_alive_while_output_is_pending() -> None:
    connection = open_connection(keep_alive_interval_seconds=15.0, client_timeout_seconds=100.0)
    connection.send(Invocation("Hello", ()))
    connection.tick(20.0)
    assert connection.data_to_send(20.0) == b'{"type":1,"target":"Hello","arguments":[]}\x1e'


def test_client_timeout_closes_with_an_error_and_allows_reconnect() -> None:
    connection = open_connection(keep_alive_interval_seconds=15.0, client_timeout_seconds=30.0)
    connection.receive_data(PING_FRAME, 20.0)
    connection.tick(49.9)
    assert connection.state is ConnectionState.OPEN
    connection.data_to_send(49.9)
    connection.tick(50.0)
    assert connection.state is ConnectionState.CLOSING
    assert connection.close_reason is CloseReason.CLIENT_TIMEOUT
    assert connection.data_to_send(50.0) == ERROR_CLOSE
    assert orjson.loads(ERROR_CLOSE[:-1])["error"] == CLOSED_WITH_ERROR


def test_timers_stop_once_closing() -> None:
    connection = open_connection()
    connection.close(CloseReason.SERVER_SHUTDOWN)
    connection.data_to_send(0.0)
    connection.tick(1_000.0)
    assert connection.data_to_send(1_000.0) == b""
    assert connection.close_reason is CloseReason.SERVER_SHUTDOWN


# -- errors from the client ---------------------------------------------------------------------


def test_message_too_large() -> None:
    connection = open_connection(max_message_bytes=64)
    big = b'{"type":1,"target":"Echo","arguments":["' + b"x" * 100 + b'"]}\x1e'
    assert receive(connection, big, 1.0) == (False, [])
    assert connection.state is ConnectionState.CLOSING
    assert connection.close_reason is CloseReason.MESSAGE_TOO_LARGE
    assert connection.data_to_send(1.0) == ERROR_CLOSE


def test_message_at_the_limit_is_accepted() -> None:
    connection = open_connection(max_message_bytes=len(INVOKE_1))
    assert receive(connection, INVOKE_1, 1.0) == (False, [Invocation("Echo", ("a",), "1")])
    assert connection.state is ConnectionState.OPEN


def test_protocol_error_closes_with_an_error() -> None:
    connection = open_connection()
    assert receive(connection, b'{"type":1,"arguments":[]}\x1e', 1.0) == (False, [])
    assert connection.close_reason is CloseReason.PROTOCOL_ERROR
    assert connection.close_detail == "'target' is missing or not a non-empty string"
    assert connection.data_to_send(1.0) == ERROR_CLOSE
    assert receive(connection, INVOKE_1, 2.0) == (False, [])


def test_client_close_sends_nothing_back() -> None:
    connection = open_connection()
    assert receive(connection, INVOKE_1 + b'{"type":7}\x1e' + INVOKE_2, 1.0) == (
        False,
        [Invocation("Echo", ("a",), "1")],
    )
    assert connection.state is ConnectionState.CLOSING
    assert connection.close_reason is CloseReason.CLIENT_CLOSED
    assert connection.data_to_send(1.0) == b""
    connection.send(Invocation("Late", ()))
    assert connection.data_to_send(1.0) == b""


# -- sending ------------------------------------------------------------------------------------


def test_shared_send_goes_straight_out_when_nothing_is_queued() -> None:
    connection = open_connection()
    assert connection.send_shared(b"frame-1", 5.0, transport_buffered=0) is SharedSend.WRITE_NOW
    assert connection.send_shared(b"frame-2", 5.0, transport_buffered=100) is SharedSend.WRITE_NOW
    assert connection.pending_bytes == 0
    # Writing counts as output for the keep-alive timer: no Ping is due 15 s after the handshake.
    connection.tick(15.0)
    assert connection.data_to_send(15.0) == b""


def test_shared_send_queues_behind_earlier_output_to_keep_the_order() -> None:
    connection = open_connection()
    connection.send(Invocation("First", ()))
    assert connection.send_shared(b"shared", 1.0, transport_buffered=0) is SharedSend.QUEUED
    assert connection.data_to_send(1.0) == b'{"type":1,"target":"First","arguments":[]}\x1e' + b"shared"
    assert connection.send_shared(b"next", 1.0, transport_buffered=0) is SharedSend.WRITE_NOW


def test_shared_send_over_the_limit_cuts_a_slow_consumer() -> None:
    connection = open_connection(max_outbound_bytes=100)
    # What the transport still holds counts: 60 buffered + 40 new is exactly the limit.
    assert connection.send_shared(b"x" * 40, 1.0, transport_buffered=60) is SharedSend.WRITE_NOW
    assert connection.send_shared(b"y", 1.0, transport_buffered=100) is SharedSend.DROPPED
    assert connection.state is ConnectionState.CLOSING
    assert connection.close_reason is CloseReason.SLOW_CONSUMER
    assert connection.data_to_send(1.0) == b""
    assert connection.send_shared(b"z", 1.0, transport_buffered=0) is SharedSend.DROPPED


def test_queued_output_counts_towards_the_outbound_limit() -> None:
    connection = open_connection(max_outbound_bytes=100)
    connection.send(Invocation("T", ("x" * 30,)))
    queued = connection.pending_bytes
    assert connection.send_shared(b"y" * (100 - queued), 1.0, transport_buffered=0) is SharedSend.QUEUED
    assert connection.send_shared(b"z", 1.0, transport_buffered=0) is SharedSend.DROPPED
    assert connection.close_reason is CloseReason.SLOW_CONSUMER
    assert connection.pending_bytes == 0


def test_shared_send_before_the_handshake_is_dropped() -> None:
    connection = new_connection()
    assert connection.send_shared(b"frame", 0.0, transport_buffered=0) is SharedSend.DROPPED
    assert connection.state is ConnectionState.AWAITING_HANDSHAKE
    assert connection.close_reason is None


def test_close_queues_a_close_allowing_reconnect() -> None:
    connection = open_connection()
    connection.close(CloseReason.SERVER_SHUTDOWN)
    assert connection.state is ConnectionState.CLOSING
    assert connection.close_reason is CloseReason.SERVER_SHUTDOWN
    assert connection.data_to_send(1.0) == b'{"type":7,"allowReconnect":true}\x1e'
    connection.close(CloseReason.TOKEN_EXPIRED)
    assert connection.close_reason is CloseReason.SERVER_SHUTDOWN
    assert connection.data_to_send(1.0) == b""


def test_close_with_an_error_text() -> None:
    connection = open_connection()
    connection.close(CloseReason.PROTOCOL_ERROR, error="bye", allow_reconnect=False)
    assert JSON_PROTOCOL.new_reader(max_message_bytes=None).feed(connection.data_to_send(1.0)) == [
        Close(error="bye", allow_reconnect=False)
    ]


def test_close_before_the_handshake_sends_nothing() -> None:
    connection = new_connection()
    connection.close(CloseReason.SERVER_SHUTDOWN)
    assert connection.state is ConnectionState.CLOSING
    assert connection.data_to_send(1.0) == b""


def test_mark_closed_keeps_the_first_reason_and_drops_output() -> None:
    connection = open_connection()
    connection.send(Invocation("Unsent", ()))
    connection.mark_closed()
    assert connection.state is ConnectionState.CLOSED
    assert connection.close_reason is CloseReason.TRANSPORT_CLOSED
    assert connection.data_to_send(1.0) == b""

    closing = open_connection()
    closing.close(CloseReason.TOKEN_EXPIRED)
    closing.mark_closed()
    assert closing.close_reason is CloseReason.TOKEN_EXPIRED


# -- bounded input and output -------------------------------------------------------------------


def test_messages_are_decoded_one_at_a_time() -> None:
    connection = open_connection()
    connection.receive_data(INVOKE_1 + b"garbage\x1e", 1.0)
    # The first message is decoded; the malformed one after it is not read until it is asked for.
    assert connection.next_message() == Invocation("Echo", ("a",), "1")
    assert connection.state is ConnectionState.OPEN
    assert connection.next_message() is None
    assert connection.close_reason is CloseReason.PROTOCOL_ERROR


def test_nesting_deeper_than_the_limit_is_a_protocol_error() -> None:
    connection = open_connection(max_depth=8)
    deep = b'{"type":1,"target":"Echo","arguments":[' + b"[" * 7 + b"1" + b"]" * 7 + b"]}\x1e"
    assert receive(connection, deep, 1.0) == (False, [])
    assert connection.close_reason is CloseReason.PROTOCOL_ERROR
    assert connection.close_detail == "message nests deeper than 8 levels"
    assert connection.data_to_send(1.0) == ERROR_CLOSE


def test_nesting_at_the_limit_is_accepted() -> None:
    connection = open_connection(max_depth=8)
    # message object (1) > arguments (2) > six more arrays (8)
    at_limit = b'{"type":1,"target":"Echo","arguments":[' + b"[" * 6 + b"1" + b"]" * 6 + b"]}\x1e"
    _, messages = receive(connection, at_limit, 1.0)
    assert len(messages) == 1


def test_messagepack_nesting_is_limited_too() -> None:
    connection = new_connection(max_depth=4)
    connection.receive_data(MSGPACK_HANDSHAKE, 0.0)
    deep = MESSAGEPACK_PROTOCOL.encode(Invocation("Echo", ([[[1]]],), "1"))
    assert receive(connection, deep, 1.0) == (False, [])
    assert connection.close_reason is CloseReason.PROTOCOL_ERROR


def test_a_frame_over_the_transport_limit_closes_with_an_error() -> None:
    connection = open_connection()
    connection.frame_too_large(65536)
    assert connection.close_reason is CloseReason.FRAME_TOO_LARGE
    assert connection.close_detail == "a frame is larger than 65536 bytes"
    assert connection.data_to_send(1.0) == ERROR_CLOSE
    assert not connection.must_abort


def test_direct_sends_count_the_transport_buffer_towards_the_limit() -> None:
    connection = open_connection(max_outbound_bytes=100)
    connection.send(Invocation("T", ()), transport_buffered=90)
    assert connection.close_reason is CloseReason.SLOW_CONSUMER
    assert connection.must_abort
    assert connection.pending_bytes == 0


def test_no_write_progress_within_the_timeout_cuts_the_connection() -> None:
    connection = open_connection(write_timeout_seconds=10.0, client_timeout_seconds=1000.0)
    connection.tick(1.0, transport_buffered=500)
    connection.tick(5.0, transport_buffered=400)  # shrinking: the client reads
    connection.tick(14.9, transport_buffered=450)
    assert connection.state is ConnectionState.OPEN
    connection.tick(15.0, transport_buffered=450)
    assert connection.close_reason is CloseReason.WRITE_TIMEOUT
    assert connection.must_abort
    assert connection.data_to_send(15.0) == b""


def test_an_empty_transport_buffer_is_progress() -> None:
    connection = open_connection(write_timeout_seconds=10.0, client_timeout_seconds=1000.0)
    for second in range(0, 60, 5):
        connection.tick(float(second), transport_buffered=0 if second % 10 else 300)
    assert connection.state is ConnectionState.OPEN
