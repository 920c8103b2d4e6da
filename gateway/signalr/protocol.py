"""The hub protocol interface.

A :class:`HubProtocol` is stateless: it encodes messages to complete frames and creates one
:class:`MessageReader` per connection, which holds that connection's partial input. The
implementations are :mod:`gateway.signalr.json_protocol` and :mod:`gateway.signalr.msgpack_protocol`;
:mod:`gateway.signalr.selection` picks one at the handshake.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol, TypeAlias

from gateway.signalr.messages import HubMessage
from gateway.signalr.reader import RecordReader

__all__ = ["ALL_TRANSFER_FORMATS", "MIN_VERSION", "HubProtocol", "MessageReader", "TransferFormat"]

TransferFormat: TypeAlias = Literal["Text", "Binary"]

# Every transfer format: what a WebSocket or long-polling transport carries (SSE carries only "Text").
ALL_TRANSFER_FORMATS: Final[tuple[TransferFormat, ...]] = ("Text", "Binary")
# signalrcore sends the negotiate version as handshake version, i.e. 0 against a v0 negotiate answer.
MIN_VERSION: Final = 0


class MessageReader(Protocol):
    """Per-connection decoder that accepts arbitrary chunks of input."""

    def append(self, data: bytes) -> None:
        """Add input; nothing is decoded until :meth:`next_message` asks."""
        ...

    def next_message(self) -> HubMessage | None:
        """Decode the next complete message (unknown types are skipped), or None until more input arrives.

        Raises like :meth:`feed`.
        """
        ...

    def feed(self, data: bytes) -> list[HubMessage]:
        """Return every message completed by ``data``; unknown message types are left out.

        Raises ProtocolError for malformed input and MessageTooLargeError (a ProtocolError) for a message
        over the limit; after either the reader is unusable and the connection should be closed.
        """
        ...


class HubProtocol(Protocol):
    """A stateless hub protocol ("json" or "messagepack")."""

    @property
    def name(self) -> str:
        """Lower-case protocol name as used in the handshake."""
        ...

    @property
    def transfer_format(self) -> TransferFormat:
        """ "Text" or "Binary": which WebSocket frame type and transports the protocol needs."""
        ...

    @property
    def max_version(self) -> int:
        """Highest handshake version accepted."""
        ...

    def encode(self, message: HubMessage) -> bytes:
        """Encode ``message`` as one complete frame, ready to write to the transport."""
        ...

    def new_reader(self, *, max_message_bytes: int | None, max_depth: int | None = None) -> MessageReader:
        """Create a reader for one connection. ``max_message_bytes`` includes framing; ``max_depth``
        bounds how deeply a message's values nest (None = unlimited)."""
        ...

    def record_reader(self, *, max_message_bytes: int | None) -> RecordReader:
        """The framing half of :meth:`new_reader`: splits one connection's input into records."""
        ...

    def decode(self, record: bytes, /, *, max_depth: int | None) -> HubMessage | None:
        """The decoding half of :meth:`new_reader`: one record's message, None for an unknown type.
        Raises ProtocolError for a malformed record."""
        ...
