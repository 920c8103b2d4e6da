"""One hub connection as a sans-I/O state machine.

States: ``AWAITING_HANDSHAKE`` -> ``OPEN`` -> ``CLOSING`` -> ``CLOSED``. The transport feeds received
bytes with :meth:`ServerConnection.receive_data`, takes bytes to write with
:meth:`ServerConnection.data_to_send`, calls :meth:`ServerConnection.tick` about once a second and
stops when :attr:`ServerConnection.should_close` is true and nothing is left to send. Time is passed
in (``now``, monotonic seconds), so every timer is testable without a clock.

Close reasons (what the client sees in the Close message, and whether JS may reconnect):

================================  ===========================================  ===========
situation                         Close ``error``                               reconnect
================================  ===========================================  ===========
protocol error / too large        ``Connection closed with an error.``          yes
client silent too long            ``Connection closed with an error.``          yes
slow consumer (queue overflow)    (no Close: the queue is full; socket closed)  yes (drop)
token expired                     none                                         yes
server shutdown                   none                                         yes
client sent Close                 none (nothing is sent back)                  no
handshake failure                 handshake error reply, then close            n/a
================================  ===========================================  ===========
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
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
    max_outbound_bytes: int = 1_048_576
    keep_alive_interval_seconds: float = 15.0
    client_timeout_seconds: float = 30.0
    handshake_timeout_seconds: float = 15.0


@dataclass(slots=True)
class ReceiveResult:
    """What one :meth:`ServerConnection.receive_data` call produced."""

    handshake_completed: bool = False
    messages: list[HubMessage] = field(default_factory=list)


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

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> ReceiveResult:
        """Feed bytes from the client; return the handshake outcome and complete hub messages."""
        result = ReceiveResult()
        if self.should_close:
            return result
        self._last_received = now
        if self._reader is None:
            data = self._receive_handshake(data, now, result)
        if self._reader is None or not data:
            return result
        try:
            messages = self._reader.feed(data)
        except MessageTooLargeError as error:
            self._fail(CloseReason.MESSAGE_TOO_LARGE, f"message of {error.size or 'more than'} bytes > {error.limit}")
            return result
        except ProtocolError as error:
            self._fail(CloseReason.PROTOCOL_ERROR, error.reason)
            return result
        for message in messages:
            if isinstance(message, Ping):
                continue
            if isinstance(message, Close):
                self.close_reason = CloseReason.CLIENT_CLOSED
                self.state = ConnectionState.CLOSING
                break
            else:
                result.messages.append(message)
        return result

    def _receive_handshake(self, data: bytes, now: float, result: ReceiveResult) -> bytes:
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
        self._reader = protocol.new_reader(max_message_bytes=self.limits.max_message_bytes)
        self.state = ConnectionState.OPEN
        self._outbound += HANDSHAKE_OK
        self._last_sent = now
        result.handshake_completed = True
        return self._handshake.remainder

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: HubMessage) -> None:
        """Encode ``message`` with this connection's protocol and queue it."""
        if self.protocol is not None and self.state is ConnectionState.OPEN:
            self._queue(self.protocol.encode(message))

    def _queue(self, frame: bytes) -> bool:
        if len(self._outbound) + len(frame) > self.limits.max_outbound_bytes:
            self._cut_slow_consumer()
            return False
        self._outbound += frame
        return True

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
            self._cut_slow_consumer()
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

    def _cut_slow_consumer(self) -> None:
        # No Close message: the client is not reading, so it would only queue behind the backlog.
        self.close_reason = CloseReason.SLOW_CONSUMER
        self.state = ConnectionState.CLOSING
        self._outbound.clear()

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

    def tick(self, now: float) -> None:
        """Run the timers: handshake timeout, keep-alive Ping, client timeout."""
        if self.state is ConnectionState.AWAITING_HANDSHAKE:
            if now - self._opened_at >= self.limits.handshake_timeout_seconds:
                self._outbound += encode_handshake_error(HANDSHAKE_CANCELED)
                self.close_reason = CloseReason.HANDSHAKE_TIMEOUT
                self.state = ConnectionState.CLOSING
            return
        if self.state is not ConnectionState.OPEN:
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
