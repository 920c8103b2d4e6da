"""One hub connection as a sans-I/O state machine.

States: ``AWAITING_HANDSHAKE`` -> ``OPEN`` -> ``CLOSING`` -> ``CLOSED``. The transport feeds received
bytes with :meth:`ServerConnection.receive_data` and takes the messages they complete one at a time with
:meth:`ServerConnection.next_message` (so it can handle each before decoding the next), takes bytes to
write with :meth:`ServerConnection.data_to_send`, calls :meth:`ServerConnection.tick` about once a
second and stops when :attr:`ServerConnection.should_close` is true and nothing is left to send. Time
and the transport's unsent byte count are passed in, so every timer and limit is testable without a
clock or a socket.

Close reasons (what the client sees, and whether the JS client may reconnect):

=====================================  ===========================================  ===========
situation                              Close ``error``                               reconnect
=====================================  ===========================================  ===========
protocol error, message or frame too   ``Connection closed with an error.``          yes
large, nesting too deep
client silent too long                 ``Connection closed with an error.``          yes
slow consumer (outbound over limit),   nothing: the socket is aborted at once        yes (drop)
no write progress within the timeout
token expired                          none                                          yes
server shutdown                        none                                          yes
client sent Close                      none (nothing is sent back)                   no
handshake failure                      handshake error reply, then close             n/a
=====================================  ===========================================  ===========
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from gateway.signalr.errors import HandshakeError, MessageTooLargeError, ProtocolError
from gateway.signalr.handshake import HANDSHAKE_OK, HandshakeReader, encode_handshake_error
from gateway.signalr.messages import Close, HubMessage, Ping
from gateway.signalr.protocol import HubProtocol, MessageReader, TransferFormat
from gateway.signalr.selection import resolve_protocol

# ASP.NET's text for any server-side error close; details stay in the server log.
CLOSED_WITH_ERROR: Final = "Connection closed with an error."
HANDSHAKE_CANCELED: Final = "Handshake was canceled."


class ConnectionState(enum.Enum):
    AWAITING_HANDSHAKE = "awaiting_handshake"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class CloseReason(enum.Enum):
    """Why a connection ended; used for logs and the ``connections_closed_total`` metric."""

    CLIENT_CLOSED = "client_closed"
    HANDSHAKE_FAILED = "handshake_failed"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    PROTOCOL_ERROR = "protocol_error"
    MESSAGE_TOO_LARGE = "message_too_large"
    CLIENT_TIMEOUT = "client_timeout"
    SLOW_CONSUMER = "slow_consumer"
    WRITE_TIMEOUT = "write_timeout"
    FRAME_TOO_LARGE = "frame_too_large"
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a close reason, not a secret
    SERVER_SHUTDOWN = "server_shutdown"
    TRANSPORT_CLOSED = "transport_closed"


class SharedSend(enum.Enum):
    """How a broadcast goes out (:meth:`ServerConnection.send_shared`)."""

    WRITE_NOW = "write_now"
    QUEUED = "queued"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """Per-connection limits and timers, all in bytes or seconds."""

    max_message_bytes: int | None = 32768
    max_depth: int | None = 32
    max_outbound_bytes: int = 1_048_576
    keep_alive_interval_seconds: float = 15.0
    client_timeout_seconds: float = 30.0
    handshake_timeout_seconds: float = 15.0
    write_timeout_seconds: float = 10.0


# Reasons that end a connection by aborting its socket: writing more to it is pointless.
ABORT_REASONS: Final = frozenset({CloseReason.SLOW_CONSUMER, CloseReason.WRITE_TIMEOUT})


class ServerConnection:
    """The server side of one SignalR connection, independent of any transport or event loop."""

    def __init__(self, *, limits: ConnectionLimits, now: float, transfer_formats: Collection[TransferFormat]) -> None:
        self.limits = limits
        self.state = ConnectionState.AWAITING_HANDSHAKE
        self.protocol: HubProtocol | None = None
        self.close_reason: CloseReason | None = None
        self.close_detail: str | None = None
        self._transfer_formats = transfer_formats
        self._handshake = HandshakeReader(max_bytes=limits.max_message_bytes or 1 << 20)
        self._reader: MessageReader | None = None
        self._outbound = bytearray()
        self._opened_at = now
        self._last_sent = now
        self._last_received = now
        # The transport's unsent bytes at the last tick, and when it last had none or sent some.
        self._stalled_bytes = 0
        self._write_progress_at = now

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> bool:
        """Feed bytes from the client; True when they completed the handshake.

        Messages after the handshake are decoded by :meth:`next_message`, one at a time.
        """
        if self.should_close:
            return False
        self._last_received = now
        if self._reader is None:
            data = self._receive_handshake(data, now)
            if self._reader is None:
                return False
            if data:
                self._reader.append(data)
            return True
        self._reader.append(data)
        return False

    def next_message(self) -> HubMessage | None:
        """The next hub message the client sent, or None until more input arrives (or once closing).

        Pings only count as liveness; a Close from the client moves to CLOSING; a malformed or
        oversized message closes the connection with an error (the rest of the input is dropped).
        """
        reader = self._reader
        while reader is not None and self.state is ConnectionState.OPEN:
            try:
                message = reader.next_message()
            except MessageTooLargeError as error:
                detail = f"message of {error.size or 'more than'} bytes > {error.limit}"
                self._fail(CloseReason.MESSAGE_TOO_LARGE, detail)
                return None
            except ProtocolError as error:
                self._fail(CloseReason.PROTOCOL_ERROR, error.reason)
                return None
            if message is None or not isinstance(message, Ping):
                if isinstance(message, Close):
                    self.close_reason = CloseReason.CLIENT_CLOSED
                    self.state = ConnectionState.CLOSING
                    return None
                return message
        return None

    def frame_too_large(self, limit: int) -> None:
        """The transport refused a frame over its ``limit``: close with an error the client may
        reconnect after."""
        self._fail(CloseReason.FRAME_TOO_LARGE, f"a frame is larger than {limit} bytes")

    def _receive_handshake(self, data: bytes, now: float) -> bytes:
        try:
            request = self._handshake.feed(data)
            if request is None:
                return b""
            protocol = resolve_protocol(request, transfer_formats=self._transfer_formats)
        except HandshakeError as error:
            self._outbound += encode_handshake_error(error.client_message)
            self.close_reason = CloseReason.HANDSHAKE_FAILED
            self.close_detail = error.client_message
            self.state = ConnectionState.CLOSING
            return b""
        self.protocol = protocol
        self._reader = protocol.new_reader(
            max_message_bytes=self.limits.max_message_bytes, max_depth=self.limits.max_depth
        )
        self.state = ConnectionState.OPEN
        self._outbound += HANDSHAKE_OK
        self._last_sent = now
        return self._handshake.remainder

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: HubMessage, *, transport_buffered: int = 0) -> None:
        """Encode ``message`` with this connection's protocol and queue it; over ``max_outbound_bytes``
        (counting what the transport holds unsent) the connection is cut as a slow consumer."""
        if self.protocol is None or self.state is not ConnectionState.OPEN:
            return
        frame = self.protocol.encode(message)
        if len(self._outbound) + transport_buffered + len(frame) > self.limits.max_outbound_bytes:
            self._cut(CloseReason.SLOW_CONSUMER)
            return
        self._outbound += frame

    def send_shared(self, payload: bytes, now: float, *, transport_buffered: int) -> SharedSend:
        """Take a broadcast already encoded for this connection's protocol; say how it goes out.

        ``transport_buffered`` is what the transport holds unsent. Nothing queued here: the transport
        writes ``payload`` to the socket now (:attr:`SharedSend.WRITE_NOW`); something queued: it is
        queued behind, keeping the order (:attr:`SharedSend.QUEUED`). Over ``max_outbound_bytes``
        counting both, the connection is cut as a slow consumer (:attr:`SharedSend.DROPPED`, as when
        it is not open).
        """
        if self.state is not ConnectionState.OPEN:
            return SharedSend.DROPPED
        queued = len(self._outbound)
        if queued + transport_buffered + len(payload) > self.limits.max_outbound_bytes:
            self._cut(CloseReason.SLOW_CONSUMER)
            return SharedSend.DROPPED
        if queued:
            self._outbound += payload
            return SharedSend.QUEUED
        self._last_sent = now
        return SharedSend.WRITE_NOW

    def data_to_send(self, now: float) -> bytes:
        """Take every queued byte (whole messages only)."""
        if not self._outbound:
            return b""
        data = bytes(self._outbound)
        self._outbound.clear()
        self._last_sent = now
        return data

    def _cut(self, reason: CloseReason) -> None:
        # No Close message: the client is not reading, so it would only queue behind the backlog.
        self.close_reason = reason
        self.state = ConnectionState.CLOSING
        self._outbound.clear()

    @property
    def must_abort(self) -> bool:
        """Cut for not reading (:data:`ABORT_REASONS`): the transport aborts the socket at once."""
        return self.state is ConnectionState.CLOSING and self.close_reason in ABORT_REASONS

    @property
    def binary_frames(self) -> bool:
        """Whether queued bytes go out in binary frames (only after a Binary protocol handshake)."""
        return self.protocol is not None and self.protocol.transfer_format == "Binary"

    @property
    def pending_bytes(self) -> int:
        return len(self._outbound)

    # -- closing and timers ------------------------------------------------------------------

    def close(self, reason: CloseReason, *, error: str | None = None, allow_reconnect: bool = True) -> None:
        """Queue a Close message (when open) and move to CLOSING."""
        if self.state is ConnectionState.OPEN and self.protocol is not None:
            self._outbound += self.protocol.encode(Close(error=error, allow_reconnect=allow_reconnect))
        if self.state in (ConnectionState.AWAITING_HANDSHAKE, ConnectionState.OPEN):
            self.close_reason = reason
            self.state = ConnectionState.CLOSING

    def _fail(self, reason: CloseReason, detail: str) -> None:
        self.close_detail = detail
        self.close(reason, error=CLOSED_WITH_ERROR, allow_reconnect=True)

    def tick(self, now: float, *, transport_buffered: int = 0) -> None:
        """Run the timers: handshake timeout, write progress, client timeout, keep-alive Ping.

        ``transport_buffered`` is what the transport holds unsent: when it has not shrunk for
        ``write_timeout_seconds`` the client is not reading and the connection is cut.
        """
        if transport_buffered == 0 or transport_buffered < self._stalled_bytes:
            self._write_progress_at = now
        self._stalled_bytes = transport_buffered
        if self.state is ConnectionState.AWAITING_HANDSHAKE:
            if now - self._opened_at >= self.limits.handshake_timeout_seconds:
                self._outbound += encode_handshake_error(HANDSHAKE_CANCELED)
                self.close_reason = CloseReason.HANDSHAKE_TIMEOUT
                self.state = ConnectionState.CLOSING
            return
        if self.state is not ConnectionState.OPEN:
            return
        if now - self._write_progress_at >= self.limits.write_timeout_seconds:
            self._cut(CloseReason.WRITE_TIMEOUT)
            return
        # Unlike ASP.NET (which arms this after the first client Ping) every client is timed out,
        # so a socket that completed the handshake and went silent cannot hold resources forever.
        if now - self._last_received >= self.limits.client_timeout_seconds:
            self._fail(CloseReason.CLIENT_TIMEOUT, "client sent nothing within the client timeout")
            return
        if not self._outbound and now - self._last_sent >= self.limits.keep_alive_interval_seconds:
            self.send(Ping())

    @property
    def should_close(self) -> bool:
        return self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED)

    def mark_closed(self, reason: CloseReason = CloseReason.TRANSPORT_CLOSED) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self.state = ConnectionState.CLOSED
        self._outbound.clear()
