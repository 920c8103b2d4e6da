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
from gateway.signalr.messages import Ack, Close, HubMessage, Ping, Sequence
from gateway.signalr.protocol import HubProtocol, TransferFormat
from gateway.signalr.reader import RecordReader
from gateway.signalr.selection import resolve_protocol
from gateway.signalr.sequencing import ReceivedSequence, is_trackable

# Stateful reconnect needs hub protocol version 2 or later (the JS client sends 2 when it negotiated it).
STATEFUL_MIN_VERSION: Final = 2
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


# The broadcast path and the per-second timers compare against these once per connection: a module
# constant is one global lookup, an enum member through its class costs about 0.1 µs on 3.11 (measured).
_OPEN: Final = ConnectionState.OPEN
_AWAITING_HANDSHAKE: Final = ConnectionState.AWAITING_HANDSHAKE
_ENDED: Final = frozenset({ConnectionState.CLOSING, ConnectionState.CLOSED})
_WRITE_NOW: Final = SharedSend.WRITE_NOW
_QUEUED: Final = SharedSend.QUEUED
_DROPPED: Final = SharedSend.DROPPED

# Reasons that end a connection by aborting its socket: writing more to it is pointless.
ABORT_REASONS: Final = frozenset({CloseReason.SLOW_CONSUMER, CloseReason.WRITE_TIMEOUT})


@dataclass(frozen=True, slots=True)
class _AwaitingHandshake:
    """What a connection needs only until it has read the handshake: dropped once it is open."""

    reader: HandshakeReader
    transfer_formats: Collection[TransferFormat]
    stateful_allowed: bool
    opened_at: float


class ServerConnection:
    """The server side of one SignalR connection, independent of any transport or event loop."""

    __slots__ = (
        "_dropped",
        "_handshake",
        "_holding",
        "_last_received",
        "_last_sent",
        "_outbound",
        "_records",
        "_reply",
        "_stalled_bytes",
        "_write_progress_at",
        "acked",
        "close_detail",
        "close_reason",
        "last_inbound",
        "limits",
        "protocol",
        "received",
        "state",
    )

    def __init__(
        self,
        *,
        limits: ConnectionLimits,
        now: float,
        transfer_formats: Collection[TransferFormat],
        stateful_allowed: bool = False,
    ) -> None:
        self.limits = limits
        self.state = ConnectionState.AWAITING_HANDSHAKE
        self.protocol: HubProtocol | None = None
        self.close_reason: CloseReason | None = None
        self.close_detail: str | None = None
        self._handshake: _AwaitingHandshake | None = _AwaitingHandshake(
            HandshakeReader(max_bytes=limits.max_message_bytes or 1 << 20), transfer_formats, stateful_allowed, now
        )
        # The records of the client's input, each decoded with the protocol when its turn comes (one
        # object per connection, not a decoding reader around a record reader).
        self._records: RecordReader | None = None
        # Output waiting for the transport: a bytearray while something is queued, else the empty b"".
        self._outbound: bytes | bytearray = b""
        # The handshake reply of a stateful connection, sent ahead of anything queued; and whether
        # trackable output is held until the client's first message after the handshake (the JS
        # client starts numbering only then, so a message sent with the reply would not be counted).
        self._reply = b""
        self._holding = False
        self._dropped = False
        self.received: ReceivedSequence | None = None
        """Stateful reconnect only: the numbering of what the client sends."""
        self.last_inbound = 0
        """The number of the message :meth:`next_message` returned last (stateful reconnect; else 0)."""
        self.acked = 0
        """The highest Ack the client sent: it has processed every message up to this number."""
        self._last_sent = now
        self._last_received = now
        # The transport's unsent bytes at the last tick, and when it last had none or sent some.
        self._stalled_bytes = 0
        self._write_progress_at = now

    @classmethod
    def resumed(
        cls,
        *,
        protocol: HubProtocol,
        limits: ConnectionLimits,
        now: float,
        next_message_id: int,
        latest_processed: int,
    ) -> ServerConnection:
        """A stateful connection taken up again on a new transport (no handshake): the first thing sent
        is ``Sequence{next_message_id}``, the number of the first message that follows; client messages
        up to ``latest_processed`` were processed before and are dropped when sent again."""
        connection = cls(limits=limits, now=now, transfer_formats=(protocol.transfer_format,), stateful_allowed=True)
        connection._handshake = None
        connection._open(protocol, now)
        connection.received = ReceivedSequence(latest_processed=latest_processed)
        connection._queue(protocol.encode(Sequence(next_message_id)))
        return connection

    @property
    def stateful(self) -> bool:
        """Whether this connection numbers its messages for stateful reconnect."""
        return self.received is not None

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> bool:
        """Feed bytes from the client; True when they completed the handshake.

        Messages after the handshake are decoded by :meth:`next_message`, one at a time.
        """
        if self.should_close:
            return False
        self._last_received = now
        if self._records is None:
            data = self._receive_handshake(data, now)
            if self._records is None:
                return False
            if data:
                self._holding = False
                self._records.append(data)
            return True
        self._holding = False
        self._records.append(data)
        return False

    def next_message(self) -> HubMessage | None:
        """The next hub message the client sent, or None until more input arrives (or once closing).

        Pings only count as liveness; a Close from the client moves to CLOSING; a malformed or
        oversized message closes the connection with an error (the rest of the input is dropped).
        """
        records = self._records
        protocol = self.protocol
        while records is not None and protocol is not None and self.state is ConnectionState.OPEN:
            try:
                record = records.next_record()
                if record is None:
                    return None
                message = protocol.decode(record, max_depth=self.limits.max_depth)
                if message is None:
                    continue  # a message type this server does not know: skipped, as ASP.NET does
                if self.received is not None and not self._sequenced(message, self.received):
                    continue
            except MessageTooLargeError as error:
                detail = f"message of {error.size or 'more than'} bytes > {error.limit}"
                self._fail(CloseReason.MESSAGE_TOO_LARGE, detail)
                return None
            except ProtocolError as error:
                self._fail(CloseReason.PROTOCOL_ERROR, error.reason)
                return None
            if isinstance(message, Ping):
                continue
            if isinstance(message, Close):
                self.close_reason = CloseReason.CLIENT_CLOSED
                self.state = ConnectionState.CLOSING
                return None
            return message
        return None

    def _sequenced(self, message: HubMessage, received: ReceivedSequence) -> bool:
        """Stateful reconnect's bookkeeping of one received message; False when it is consumed here
        (Ack, Sequence, a repeat of a message processed before a reconnect)."""
        if isinstance(message, Ack):
            self.acked = max(self.acked, message.sequence_id)
            return False
        if isinstance(message, Sequence):
            received.restart_at(message.sequence_id)
            return False
        if is_trackable(message):
            number = received.number()
            if number is None:
                return False
            self.last_inbound = number
        return True

    def frame_too_large(self, limit: int) -> None:
        """The transport refused a frame over its ``limit``: close with an error the client may
        reconnect after."""
        self._fail(CloseReason.FRAME_TOO_LARGE, f"a frame is larger than {limit} bytes")

    def _receive_handshake(self, data: bytes, now: float) -> bytes:
        handshake = self._handshake
        assert handshake is not None, "a connection without a reader is awaiting its handshake"
        try:
            request = handshake.reader.feed(data)
            if request is None:
                return b""
            protocol = resolve_protocol(request, transfer_formats=handshake.transfer_formats)
        except HandshakeError as error:
            self._queue(encode_handshake_error(error.client_message))
            self.close_reason = CloseReason.HANDSHAKE_FAILED
            self.close_detail = error.client_message
            self.state = ConnectionState.CLOSING
            return b""
        self._open(protocol, now)
        if handshake.stateful_allowed and request.version >= STATEFUL_MIN_VERSION:
            self.received = ReceivedSequence()
            self._reply = HANDSHAKE_OK
            self._holding = True
        else:
            self._queue(HANDSHAKE_OK)
        self._handshake = None
        return handshake.reader.remainder

    def _open(self, protocol: HubProtocol, now: float) -> None:
        self.protocol = protocol
        self._records = protocol.record_reader(max_message_bytes=self.limits.max_message_bytes)
        self.state = ConnectionState.OPEN
        self._last_sent = now

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
        self._queue(frame)

    def _queue(self, data: bytes) -> None:
        if self._outbound:
            self._outbound += data  # a bytearray once something is queued: appended in place
        else:
            self._outbound = bytearray(data)

    def send_shared(self, payload: bytes, now: float, *, transport_buffered: int) -> SharedSend:
        """Take a broadcast already encoded for this connection's protocol; say how it goes out.

        ``transport_buffered`` is what the transport holds unsent. Nothing queued here: the transport
        writes ``payload`` to the socket now (:attr:`SharedSend.WRITE_NOW`); something queued: it is
        queued behind, keeping the order (:attr:`SharedSend.QUEUED`). Over ``max_outbound_bytes``
        counting both, the connection is cut as a slow consumer (:attr:`SharedSend.DROPPED`, as when
        it is not open).
        """
        if self.state is not _OPEN:
            return _DROPPED
        queued = len(self._outbound) + len(self._reply)
        if queued + transport_buffered + len(payload) > self.limits.max_outbound_bytes:
            self._cut(CloseReason.SLOW_CONSUMER)
            return _DROPPED
        if queued or self._holding:
            self._queue(payload)
            return _QUEUED
        self._last_sent = now
        return _WRITE_NOW

    def data_to_send(self, now: float) -> bytes:
        """Take every queued byte that may go out now (whole messages only)."""
        data, self._reply = self._reply, b""
        if self._outbound and not self._holding:
            data += self._outbound
            self._outbound = b""
        if data:
            self._last_sent = now
        return data

    def acknowledge(self, upto: int) -> None:
        """Stateful reconnect: tell the client that its messages up to number ``upto`` are processed
        (it then stops keeping them for a resend)."""
        if self.stateful and self.state is ConnectionState.OPEN:
            self.send(Ack(upto))

    def _cut(self, reason: CloseReason) -> None:
        # No Close message: the client is not reading, so it would only queue behind the backlog.
        self.close_reason = reason
        self.state = ConnectionState.CLOSING
        self._outbound = b""

    def drop(self, reason: CloseReason) -> None:
        """End without a Close message: the transport aborts the socket, and a client with stateful
        reconnect resumes as after any dropped connection."""
        if self.state in (ConnectionState.AWAITING_HANDSHAKE, ConnectionState.OPEN):
            self._cut(reason)
            self._dropped = True

    @property
    def must_abort(self) -> bool:
        """Cut for not reading (:data:`ABORT_REASONS`), or dropped: the transport aborts the socket at once."""
        return self.state is ConnectionState.CLOSING and (self._dropped or self.close_reason in ABORT_REASONS)

    @property
    def binary_frames(self) -> bool:
        """Whether queued bytes go out in binary frames (only after a Binary protocol handshake)."""
        return self.protocol is not None and self.protocol.transfer_format == "Binary"

    @property
    def pending_bytes(self) -> int:
        return len(self._outbound) + len(self._reply)

    # -- closing and timers ------------------------------------------------------------------

    def close(self, reason: CloseReason, *, error: str | None = None, allow_reconnect: bool = True) -> None:
        """Queue a Close message (when open) and move to CLOSING."""
        if self.state is ConnectionState.OPEN and self.protocol is not None:
            self._queue(self.protocol.encode(Close(error=error, allow_reconnect=allow_reconnect)))
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
        if self.state is _AWAITING_HANDSHAKE:
            assert self._handshake is not None, "a connection awaiting its handshake has its reader"
            if now - self._handshake.opened_at >= self.limits.handshake_timeout_seconds:
                self._queue(encode_handshake_error(HANDSHAKE_CANCELED))
                self.close_reason = CloseReason.HANDSHAKE_TIMEOUT
                self.state = ConnectionState.CLOSING
            return
        if self.state is not _OPEN:
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
        return self.state in _ENDED

    def mark_closed(self, reason: CloseReason = CloseReason.TRANSPORT_CLOSED) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self.state = ConnectionState.CLOSED
        self._outbound = b""
