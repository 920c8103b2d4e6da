"""The fan-out fast path: frames go straight to the socket only when nothing is queued, in order."""

from __future__ import annotations

import time

from gateway.auth import Principal
from gateway.hub.fanout import EncodedBroadcast
from gateway.hub.session import HubSession
from gateway.signalr import JSON_PROTOCOL, Invocation
from gateway.signalr.connection import ConnectionLimits, ServerConnection
from gateway.transport.connection_token import NegotiatedConnection


class RecordingSocket:
    """Stands in for the transport: records what the fast path wrote, can refuse like a full buffer."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.accepting = True

    def write(self, frame: EncodedBroadcast) -> bool:
        if not self.accepting:
            return False
        self.written.append(frame.payload)
        return True


def open_session(socket: RecordingSocket) -> HubSession:
    connection = ServerConnection(limits=ConnectionLimits(), now=0.0, transfer_formats=("Text",))
    connection.receive_data(b'{"protocol":"json","version":1}\x1e', 0.0)
    session = HubSession(
        connection=connection,
        negotiated=NegotiatedConnection("id", "id", 0),
        principal=Principal(user_id="u", name=None, roles=frozenset({"Admin"}), expires_at=time.time() + 60),
        transport="websockets",
        token_leeway_seconds=0,
    )
    session.write_now = socket.write
    return session


def frame(text: str) -> EncodedBroadcast:
    return EncodedBroadcast.encode(JSON_PROTOCOL, Invocation(target="T", arguments=(text,)))


def payload(text: str) -> bytes:
    return frame(text).payload


def test_queued_output_forces_the_queue_so_order_is_kept() -> None:
    socket = RecordingSocket()
    session = open_session(socket)
    # The handshake reply is still queued: the fan-out frame must queue behind it, not jump ahead.
    assert session.deliver(frame("a"), time.monotonic()) is False
    queued = session.connection.data_to_send(1.0)
    assert queued.startswith(b"{}\x1e") and queued.endswith(payload("a"))
    assert socket.written == []
    # Now nothing is queued: the next frames go straight to the socket, in order.
    assert session.deliver(frame("b"), time.monotonic()) is True
    assert session.deliver(frame("c"), time.monotonic()) is True
    assert socket.written == [payload("b"), payload("c")]


def test_a_refusing_socket_falls_back_to_the_queue() -> None:
    socket = RecordingSocket()
    session = open_session(socket)
    session.connection.data_to_send(1.0)
    socket.accepting = False
    assert session.deliver(frame("x"), time.monotonic()) is False
    socket.accepting = True
    # Once something is queued, later frames queue too until the writer has drained it.
    assert session.deliver(frame("y"), time.monotonic()) is False
    assert session.connection.data_to_send(2.0) == payload("x") + payload("y")
    assert socket.written == []
