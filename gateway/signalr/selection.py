"""Handshake-time protocol selection over the protocols this package implements."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

from gateway.signalr.errors import HandshakeError
from gateway.signalr.handshake import HandshakeRequest
from gateway.signalr.json_protocol import JSON_PROTOCOL
from gateway.signalr.msgpack_protocol import MESSAGEPACK_PROTOCOL
from gateway.signalr.protocol import ALL_TRANSFER_FORMATS, MIN_VERSION, HubProtocol, TransferFormat

__all__ = ["ALL_PROTOCOLS", "resolve_protocol"]

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
