"""The WebSocket fast path: a shared frame goes straight to the socket only when nothing is queued before
it, in order, framed once for every recipient; queued output is written as it is queued, without a task;
over the outbound limit the connection is cut."""

from __future__ import annotations

import asyncio

from gateway.hub.outbound import SharedMessage
from gateway.signalr import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, Invocation
from gateway.signalr.connection import CloseReason, ConnectionLimits, ServerConnection
from gateway.transport.websocket import WebSocketLink
from gateway.transport.ws_frames import binary_frame, text_frame


class FakeSocketTransport(asyncio.Transport):
    """An asyncio transport that records writes and reports a chosen write-buffer size."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.buffered = 0
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True


def open_link(protocol: str = "json", **limits: int) -> tuple[WebSocketLink, ServerConnection, FakeSocketTransport]:
    """A link on a socket whose connection has shaken hands; the handshake reply is still queued (nothing
    told the link yet, as the host does after each received message)."""
    connection = ServerConnection(limits=ConnectionLimits(**limits), now=0.0, transfer_formats=("Text", "Binary"))
    link = WebSocketLink(connection)
    transport = FakeSocketTransport()
    link.attach(transport)
    connection.receive_data(b'{"protocol":"%s","version":1}\x1e' % protocol.encode(), 0.0)
    return link, connection, transport


def shared(text: str) -> SharedMessage:
    return SharedMessage(JSON_PROTOCOL.encode(Invocation(target="T", arguments=(text,))))


def test_queued_output_forces_the_queue_so_order_is_kept() -> None:
    link, connection, transport = open_link()
    # The handshake reply is still queued: the broadcast must queue behind it, not jump ahead.
    first = shared("a")
    assert link.write_shared(first, 1.0) is False
    # ... and telling the link wrote both at once, in order, in one frame (no writer task).
    assert transport.written == [text_frame(b"{}\x1e" + first.payload)]
    assert connection.pending_bytes == 0
    # Now nothing is queued: the next frames go straight to the socket, framed, in order.
    second, third = shared("b"), shared("c")
    assert link.write_shared(second, 1.0) is True
    connection.send(Invocation(target="Reply", arguments=()), transport_buffered=link.buffered())
    link.output_queued()
    assert link.write_shared(third, 1.0) is True
    reply = JSON_PROTOCOL.encode(Invocation(target="Reply", arguments=()))
    assert transport.written[1:] == [text_frame(second.payload), text_frame(reply), text_frame(third.payload)]


def test_output_before_the_upgrade_is_written_once_the_socket_is_attached() -> None:
    connection = ServerConnection(limits=ConnectionLimits(), now=0.0, transfer_formats=("Text", "Binary"))
    connection.receive_data(b'{"protocol":"messagepack","version":1}\x1e', 0.0)
    link = WebSocketLink(connection)
    link.output_queued()  # no socket yet: it stays queued
    assert connection.pending_bytes
    transport = FakeSocketTransport()
    link.attach(transport)
    assert transport.written == [binary_frame(b"{}\x1e")]
    assert link.closing is None, "an open connection has no task"


def test_every_recipient_writes_the_same_framed_bytes() -> None:
    message = shared("all")
    sockets = []
    for _ in range(3):
        link, connection, transport = open_link()
        connection.data_to_send(0.0)
        assert link.write_shared(message, 1.0)
        sockets.append(transport)
    assert sockets[0].written[0] is not message.payload
    assert all(socket.written[0] == sockets[0].written[0] for socket in sockets)
    assert message.framed(text_frame) is message.framed(text_frame)


def test_messagepack_connections_get_binary_frames() -> None:
    link, connection, transport = open_link("messagepack")
    connection.data_to_send(0.0)
    message = SharedMessage(MESSAGEPACK_PROTOCOL.encode(Invocation(target="T", arguments=(1,))))
    assert link.write_shared(message, 1.0)
    assert transport.written == [binary_frame(message.payload)]


def test_a_closing_socket_takes_nothing() -> None:
    link, connection, transport = open_link()
    connection.data_to_send(0.0)
    transport.closing = True
    assert link.write_shared(shared("x"), 1.0) is False
    assert transport.written == [] and connection.pending_bytes == 0


def test_a_full_socket_buffer_cuts_the_connection_as_a_slow_consumer() -> None:
    link, connection, transport = open_link(max_outbound_bytes=1000)
    connection.data_to_send(0.0)
    transport.buffered = 990
    assert link.write_shared(shared("over the limit"), 1.0) is False
    assert connection.close_reason is CloseReason.SLOW_CONSUMER
    assert transport.written == []
    assert transport.aborted, "cut at once: the socket is aborted, not left to drain"


def test_a_direct_reply_over_the_limit_aborts_the_socket() -> None:
    link, connection, transport = open_link(max_outbound_bytes=1000)
    connection.data_to_send(0.0)
    transport.buffered = 995
    connection.send(Invocation(target="Reply", arguments=()), transport_buffered=link.buffered())
    link.output_queued()
    assert connection.close_reason is CloseReason.SLOW_CONSUMER
    assert transport.aborted
