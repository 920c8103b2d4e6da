"""Server-to-client WebSocket frame headers (RFC 6455 section 5.2), for writing pre-encoded frames.

Server frames are unmasked, so the header depends only on the opcode and the payload length: one
broadcast of N bytes to thousands of sockets needs one header, built once and reused.
"""

from __future__ import annotations

import struct
from typing import Final

OPCODE_TEXT: Final = 0x1
OPCODE_BINARY: Final = 0x2
_FIN: Final = 0x80
# Distinct payload lengths seen between clears; broadcasts repeat a few lengths, so this is plenty.
_MAX_CACHED_HEADERS: Final = 4096


def frame_header(opcode: int, length: int) -> bytes:
    first = _FIN | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


class FrameHeaders:
    """A bounded cache of headers by (opcode, length)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], bytes] = {}

    def get(self, opcode: int, length: int) -> bytes:
        key = (opcode, length)
        header = self._cache.get(key)
        if header is None:
            if len(self._cache) >= _MAX_CACHED_HEADERS:
                self._cache.clear()
            header = self._cache[key] = frame_header(opcode, length)
        return header
