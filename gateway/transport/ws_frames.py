"""Server-to-client WebSocket frame headers (RFC 6455 section 5.2), for writing pre-encoded frames.

Server frames are unmasked, so a frame depends only on the opcode and the payload: one broadcast to
thousands of sockets is framed once and the same bytes are written to each.
"""

from __future__ import annotations

import struct
from typing import Final

OPCODE_TEXT: Final = 0x1
OPCODE_BINARY: Final = 0x2
_FIN: Final = 0x80


def frame_header(opcode: int, length: int) -> bytes:
    first = _FIN | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def websocket_frame(opcode: int, payload: bytes) -> bytes:
    """A complete unmasked, unfragmented frame: header and payload in one buffer (one write per socket)."""
    return frame_header(opcode, len(payload)) + payload


def text_frame(payload: bytes) -> bytes:
    """A complete text frame (JSON hub protocol); a framing function for shared broadcasts."""
    return websocket_frame(OPCODE_TEXT, payload)


def binary_frame(payload: bytes) -> bytes:
    """A complete binary frame (MessagePack hub protocol); a framing function for shared broadcasts."""
    return websocket_frame(OPCODE_BINARY, payload)
