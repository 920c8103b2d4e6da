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
from gateway.signalr.protocol import HubProtocol, MessageReader, TransferFormat, resolve_protocol

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
            self.send_encoded(self.protocol.encode(message))

    def send_encoded(self, frame: bytes) -> bool:
        """Queue bytes already encoded for this connection's protocol (the fan-out path).

        Returns False, and marks the connection as a slow consumer, when the queue would grow
        past ``max_outbound_bytes``; the caller then stops writing to it.
        """
        if self.state is not ConnectionState.OPEN:
            return False
        if len(self._outbound) + len(frame) > self.limits.max_outbound_bytes:
            self.close_reason = CloseReason.SLOW_CONSUMER
            self.state = ConnectionState.CLOSING
            self._outbound.clear()
            return False
        self._outbound += frame
        return True

    def data_to_send(self, now: float) -> bytes:
        """Take every queued byte (whole messages only)."""
        if not self._outbound:
            return b""
        data = bytes(self._outbound)
        self._outbound.clear()
        self._last_sent = now
        return data

    def can_write_directly(self) -> bool:
        """True when nothing is queued, so bytes handed straight to the transport stay in order."""
        return self.state is ConnectionState.OPEN and not self._outbound

    def note_sent(self, now: float) -> None:
        """Record output written around the queue (the fan-out fast path), for the keep-alive timer."""
        self._last_sent = now

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
