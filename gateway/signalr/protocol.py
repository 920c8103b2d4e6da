"""The hub protocol interface and handshake-time protocol selection.

A :class:`HubProtocol` is stateless: it encodes messages to complete frames and creates one
:class:`MessageReader` per connection, which holds that connection's partial input.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final, Literal, Protocol, TypeAlias

from gateway.signalr.errors import HandshakeError
from gateway.signalr.handshake import HandshakeRequest
from gateway.signalr.json_protocol import JSON_PROTOCOL
from gateway.signalr.messages import HubMessage
from gateway.signalr.msgpack_protocol import MESSAGEPACK_PROTOCOL

__all__ = [
    "ALL_PROTOCOLS",
    "ALL_TRANSFER_FORMATS",
    "MIN_VERSION",
    "HubProtocol",
    "MessageReader",
    "TransferFormat",
    "resolve_protocol",
]

TransferFormat: TypeAlias = Literal["Text", "Binary"]

# Every transfer format: what a WebSocket or long-polling transport carries (SSE carries only "Text").
ALL_TRANSFER_FORMATS: Final[tuple[TransferFormat, ...]] = ("Text", "Binary")
# signalrcore sends the negotiate version as handshake version, i.e. 0 against a v0 negotiate answer.
MIN_VERSION: Final = 0


class MessageReader(Protocol):
    """Per-connection decoder that accepts arbitrary chunks of input."""

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

    def new_reader(self, *, max_message_bytes: int | None) -> MessageReader:
        """Create a reader for one connection; the limit includes framing (None = unlimited)."""
        ...


# The protocols this package implements, in ASP.NET's default order.
ALL_PROTOCOLS: Final[tuple[HubProtocol, ...]] = (JSON_PROTOCOL, MESSAGEPACK_PROTOCOL)


def resolve_protocol(
    request: HandshakeRequest,
    *,
    transfer_formats: Collection[TransferFormat] = ALL_TRANSFER_FORMATS,
    protocols: Sequence[HubProtocol] = ALL_PROTOCOLS,
) -> HubProtocol:
    """Pick the protocol a handshake asks for, or raise HandshakeError with ASP.NET's reply text.

    ``transfer_formats`` are those the current transport supports; ``protocols`` those enabled on the
    server. Names match case-insensitively; versions ``MIN_VERSION``..``max_version`` are accepted.
    """
    wanted = request.protocol.casefold()
    for protocol in protocols:
        if protocol.name.casefold() == wanted:
            break
    else:
        raise HandshakeError(f"The protocol '{request.protocol}' is not supported.")
    if not MIN_VERSION <= request.version <= protocol.max_version:
        raise HandshakeError(
            f"The server does not support version {request.version} of the '{request.protocol}' protocol."
        )
    if protocol.transfer_format not in transfer_formats:
        raise HandshakeError(
            f"Cannot use the '{protocol.name}' protocol on the current transport. "
            f"The transport does not support '{protocol.transfer_format}' transfer format."
        )
    return protocol
