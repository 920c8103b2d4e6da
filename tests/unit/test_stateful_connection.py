"""ServerConnection with stateful reconnect (protocol digest §6), sans I/O: literal bytes, explicit times."""

from __future__ import annotations

import pytest

from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, HubMessage, Invocation
from gateway.signalr import connection as sans_io
from gateway.signalr.messages import Ack, Close, Sequence
from gateway.signalr.protocol import HubProtocol
from tests.support.frames import HANDSHAKE_OK, JSON_HANDSHAKE, JSON_V2_HANDSHAKE, PING_FRAME

GREETING = b'{"type":1,"target":"ConnectionEstablished","arguments":[{"connectionId":"c"}]}\x1e'
BROADCAST = b'{"type":1,"target":"SystemAlert","arguments":[1]}\x1e'
HELLO = Invocation("Hello", ())
HELLO_FRAME = b'{"type":1,"target":"Hello","arguments":[]}\x1e'


def invoke(invocation_id: str) -> bytes:
    return JSON_PROTOCOL.encode(Invocation("Echo", (invocation_id,), invocation_id))


def ack(sequence_id: int) -> bytes:
    return b'{"type":8,"sequenceId":%d}\x1e' % sequence_id


def sequence(sequence_id: int) -> bytes:
    return b'{"type":9,"sequenceId":%d}\x1e' % sequence_id


def connection_after(handshake: bytes, *, stateful_allowed: bool) -> sans_io.ServerConnection:
    connection = sans_io.ServerConnection(
        limits=sans_io.ConnectionLimits(),
        now=0.0,
        transfer_formats=("Text", "Binary"),
        stateful_allowed=stateful_allowed,
    )
    assert connection.receive_data(handshake, 0.0)
    return connection


def stateful() -> sans_io.ServerConnection:
    connection = connection_after(JSON_V2_HANDSHAKE, stateful_allowed=True)
    assert connection.stateful
    return connection


def received(connection: sans_io.ServerConnection, data: bytes) -> list[tuple[HubMessage, int]]:
    """Feed ``data``; every message it completed, with :attr:`sans_io.ServerConnection.last_inbound` after it."""
    connection.receive_data(data, 1.0)
    messages = []
    while (message := connection.next_message()) is not None:
        messages.append((message, connection.last_inbound))
    return messages


def resumed(
    *, protocol: HubProtocol = JSON_PROTOCOL, next_message_id: int, latest_processed: int
) -> sans_io.ServerConnection:
    return sans_io.ServerConnection.resumed(
        protocol=protocol,
        limits=sans_io.ConnectionLimits(),
        now=0.0,
        next_message_id=next_message_id,
        latest_processed=latest_processed,
    )


# -- opting in -------------------------------------------------------------------------------------


def test_version_1_is_not_stateful_even_when_allowed() -> None:
    connection = connection_after(JSON_HANDSHAKE, stateful_allowed=True)
    assert not connection.stateful
    assert connection.received is None
    connection.send(HELLO)
    assert connection.data_to_send(0.0) == HANDSHAKE_OK + HELLO_FRAME


def test_version_1_hands_ack_and_sequence_to_the_host_without_numbering() -> None:
    connection = connection_after(JSON_HANDSHAKE, stateful_allowed=True)
    assert received(connection, ack(3) + sequence(9) + invoke("1")) == [
        (Ack(3), 0),
        (Sequence(9), 0),
        (Invocation("Echo", ("1",), "1"), 0),
    ]
    assert connection.acked == 0


def test_version_2_is_stateful_when_allowed() -> None:
    connection = stateful()
    assert connection.received is not None
    assert (connection.received.latest_processed, connection.acked, connection.last_inbound) == (0, 0, 0)


def test_version_2_is_not_stateful_when_not_allowed() -> None:
    connection = connection_after(JSON_V2_HANDSHAKE, stateful_allowed=False)
    assert not connection.stateful
    connection.send(HELLO)
    assert connection.data_to_send(0.0) == HANDSHAKE_OK + HELLO_FRAME


# -- output held until the client's first message (the JS client numbers from then on) ----------------


def test_trackable_output_waits_for_the_clients_first_message_and_the_reply_goes_first() -> None:
    connection = stateful()
    connection.send(HELLO)
    assert connection.pending_bytes == len(HANDSHAKE_OK) + len(HELLO_FRAME)
    assert connection.data_to_send(0.0) == HANDSHAKE_OK
    assert connection.data_to_send(0.0) == b""
    assert received(connection, PING_FRAME) == []  # a Ping only counts as the client's first message
    assert connection.data_to_send(1.0) == HELLO_FRAME


def test_any_client_message_releases_the_held_output() -> None:
    connection = stateful()
    connection.send(HELLO)
    assert connection.data_to_send(0.0) == HANDSHAKE_OK
    assert received(connection, invoke("1")) == [(Invocation("Echo", ("1",), "1"), 1)]
    assert connection.data_to_send(1.0) == HELLO_FRAME


def test_a_message_in_the_handshakes_read_releases_the_output_at_once() -> None:
    connection = sans_io.ServerConnection(
        limits=sans_io.ConnectionLimits(), now=0.0, transfer_formats=("Text",), stateful_allowed=True
    )
    assert connection.receive_data(JSON_V2_HANDSHAKE + PING_FRAME, 0.0)
    connection.send(HELLO)
    assert connection.data_to_send(0.0) == HANDSHAKE_OK + HELLO_FRAME


def test_broadcasts_are_queued_while_holding_and_follow_in_order() -> None:
    connection = stateful()
    assert connection.send_shared(GREETING, 0.0, transport_buffered=0) is sans_io.SharedSend.QUEUED
    assert connection.data_to_send(0.0) == HANDSHAKE_OK
    assert connection.send_shared(BROADCAST, 0.0, transport_buffered=0) is sans_io.SharedSend.QUEUED
    assert connection.data_to_send(0.0) == b""
    received(connection, PING_FRAME)
    assert connection.data_to_send(1.0) == GREETING + BROADCAST
    assert connection.send_shared(BROADCAST, 1.0, transport_buffered=0) is sans_io.SharedSend.WRITE_NOW


def test_a_plain_connection_writes_broadcasts_at_once() -> None:
    connection = connection_after(JSON_HANDSHAKE, stateful_allowed=True)
    assert connection.data_to_send(0.0) == HANDSHAKE_OK
    assert connection.send_shared(BROADCAST, 0.0, transport_buffered=0) is sans_io.SharedSend.WRITE_NOW


# -- numbering and Acks -------------------------------------------------------------------------------


def test_client_messages_are_numbered_from_one_and_acks_are_consumed() -> None:
    connection = stateful()
    assert received(connection, invoke("a") + PING_FRAME + ack(2) + invoke("b")) == [
        (Invocation("Echo", ("a",), "a"), 1),
        (Invocation("Echo", ("b",), "b"), 2),
    ]
    assert connection.acked == 2


def test_an_older_ack_never_lowers_acked() -> None:
    connection = stateful()
    received(connection, ack(5) + ack(3))
    assert connection.acked == 5


def test_acknowledge_queues_an_ack_on_a_stateful_open_connection() -> None:
    connection = stateful()
    received(connection, PING_FRAME)
    connection.data_to_send(0.0)
    connection.acknowledge(4)
    assert connection.data_to_send(1.0) == ack(4)


def test_acknowledge_does_nothing_on_a_plain_connection() -> None:
    connection = connection_after(JSON_V2_HANDSHAKE, stateful_allowed=False)
    connection.data_to_send(0.0)
    connection.acknowledge(4)
    assert connection.pending_bytes == 0


def test_acknowledge_does_nothing_once_closing() -> None:
    connection = stateful()
    received(connection, PING_FRAME)
    connection.close(sans_io.CloseReason.SERVER_SHUTDOWN)
    closing = connection.data_to_send(1.0)
    connection.acknowledge(4)
    assert connection.data_to_send(1.0) == b""
    assert ack(4) not in closing


def test_a_client_sequence_past_what_was_received_closes_with_an_error() -> None:
    connection = stateful()
    assert received(connection, invoke("a") + sequence(3)) == [(Invocation("Echo", ("a",), "a"), 1)]
    assert connection.state is sans_io.ConnectionState.CLOSING
    assert connection.close_reason is sans_io.CloseReason.PROTOCOL_ERROR
    assert connection.close_detail == "Sequence ID greater than amount of messages we've received."
    assert JSON_PROTOCOL.encode(
        Close(error=sans_io.CLOSED_WITH_ERROR, allow_reconnect=True)
    ) in connection.data_to_send(1.0)


# -- a resumed connection ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [JSON_PROTOCOL, MESSAGEPACK_PROTOCOL], ids=lambda p: p.name)
def test_a_resumed_connection_sends_sequence_first(protocol: HubProtocol) -> None:
    connection = resumed(protocol=protocol, next_message_id=7, latest_processed=0)
    assert connection.state is sans_io.ConnectionState.OPEN
    assert connection.stateful
    assert connection.protocol is protocol
    frame = protocol.encode(Invocation("SystemAlert", (1,)))
    assert connection.send_shared(frame, 0.0, transport_buffered=0) is sans_io.SharedSend.QUEUED
    assert connection.data_to_send(0.0) == protocol.encode(Sequence(7)) + frame  # no handshake reply, no hold


def test_a_resumed_connection_drops_client_messages_it_processed_before() -> None:
    connection = resumed(next_message_id=1, latest_processed=2)
    # The client resends 1 and 2 (unacknowledged when its socket dropped), then sends 3.
    data = sequence(1) + invoke("one") + invoke("two") + invoke("three")
    assert received(connection, data) == [(Invocation("Echo", ("three",), "three"), 3)]
    assert connection.received is not None and connection.received.latest_processed == 3


def test_a_resumed_connection_numbers_on_without_a_client_sequence() -> None:
    connection = resumed(next_message_id=1, latest_processed=2)
    assert received(connection, invoke("three")) == [(Invocation("Echo", ("three",), "three"), 3)]


# -- drop: an end the client resumes after -------------------------------------------------------------


def test_drop_ends_without_a_close_message_and_discards_queued_output() -> None:
    connection = stateful()
    assert connection.data_to_send(0.0) == HANDSHAKE_OK
    received(connection, PING_FRAME)
    connection.send(HELLO)
    connection.drop(sans_io.CloseReason.SLOW_CONSUMER)
    assert connection.state is sans_io.ConnectionState.CLOSING
    assert connection.should_close and connection.must_abort
    assert connection.close_reason is sans_io.CloseReason.SLOW_CONSUMER
    assert connection.data_to_send(1.0) == b""
    connection.send(HELLO)
    assert connection.pending_bytes == 0


def test_drop_while_awaiting_the_handshake() -> None:
    connection = sans_io.ServerConnection(limits=sans_io.ConnectionLimits(), now=0.0, transfer_formats=("Text",))
    connection.drop(sans_io.CloseReason.SERVER_SHUTDOWN)
    assert connection.must_abort
    assert connection.data_to_send(0.0) == b""


def test_drop_after_a_close_changes_nothing() -> None:
    connection = stateful()
    received(connection, PING_FRAME)
    connection.close(sans_io.CloseReason.SERVER_SHUTDOWN)
    connection.drop(sans_io.CloseReason.SLOW_CONSUMER)
    assert connection.close_reason is sans_io.CloseReason.SERVER_SHUTDOWN
    assert not connection.must_abort  # the Close goes out first
    assert connection.data_to_send(1.0).endswith(JSON_PROTOCOL.encode(Close(allow_reconnect=True)))
