"""The handshake: the client's first record, ``{"protocol":...,"version":...}`` + 0x1E, and the reply.

The handshake is JSON text for every hub protocol (MessagePack included). Bytes that follow it in the same
chunk are hub messages and are kept in :attr:`HandshakeReader.remainder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

from gateway.signalr.errors import HandshakeError
from gateway.signalr.framing import RECORD_SEPARATOR

__all__ = [
    "HANDSHAKE_CANCELED",
    "HANDSHAKE_OK",
    "HANDSHAKE_UNEXPECTED_ERROR",
    "HandshakeReader",
    "HandshakeRequest",
    "encode_handshake_error",
]

# Exactly "{}" + 0x1E: the JS client rejects a success reply that carries a "type" property.
HANDSHAKE_OK: Final[bytes] = b"{}" + RECORD_SEPARATOR
# ASP.NET's reply when the handshake times out or outgrows the size limit without a separator.
HANDSHAKE_CANCELED: Final = "Handshake was canceled."
# ASP.NET's reply for an unparsable request; details stay in server logs.
HANDSHAKE_UNEXPECTED_ERROR: Final = "An unexpected error occurred during connection handshake."


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """What the client asked for: a hub protocol name (as sent) and a protocol version."""

    protocol: str
    version: int


def encode_handshake_error(message: str) -> bytes:
    """Encode the failure reply ``{"error": message}`` + 0x1E."""
    return orjson.dumps({"error": message}) + RECORD_SEPARATOR


def _parse_request(record: bytes) -> HandshakeRequest:
    try:
        value = orjson.loads(record)
    except orjson.JSONDecodeError:
        raise HandshakeError(HANDSHAKE_UNEXPECTED_ERROR, detail="handshake is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise HandshakeError(HANDSHAKE_UNEXPECTED_ERROR, detail="handshake is not a JSON object")
    protocol = value.get("protocol")
    if not isinstance(protocol, str):
        raise HandshakeError(HANDSHAKE_UNEXPECTED_ERROR, detail="'protocol' is missing or not a string")
    version = value.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise HandshakeError(HANDSHAKE_UNEXPECTED_ERROR, detail="'version' is missing or not an integer")
    return HandshakeRequest(protocol=protocol, version=version)


class HandshakeReader:
    """Buffers input until the handshake record is complete, then parses it.

    ``max_bytes`` bounds the handshake record including its separator, like ASP.NET applies
    ``MaximumReceiveMessageSize`` to it.
    """

    __slots__ = ("_buffer", "_done", "_max_bytes", "_scanned", "remainder")

    def __init__(self, *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._scanned = 0
        self._done = False
        self.remainder = b""
        """Bytes received after the handshake record; valid once :meth:`feed` returned a request."""

    def feed(self, data: bytes) -> HandshakeRequest | None:
        """Add ``data``; return the request once complete, or None while more bytes are needed."""
        if self._done:
            raise RuntimeError("the handshake has already been read; feed later bytes to the hub protocol")
        buffer = self._buffer
        buffer += data
        end = buffer.find(RECORD_SEPARATOR, self._scanned)
        if end < 0:
            self._scanned = len(buffer)
            if len(buffer) >= self._max_bytes:
                raise HandshakeError(HANDSHAKE_CANCELED, detail=f"no separator within {self._max_bytes} bytes")
            return None
        if end + 1 > self._max_bytes:
            raise HandshakeError(HANDSHAKE_CANCELED, detail=f"handshake longer than {self._max_bytes} bytes")
        self._done = True
        record = bytes(buffer[:end])
        self.remainder = bytes(buffer[end + 1 :])
        buffer.clear()
        return _parse_request(record)
