"""The few pieces of RFC 6455 the load client and the pre-built-frame peer need, sans I/O.

* :func:`client_frame` builds one masked client frame (RFC 6455 5.3: every client frame is masked);
* :func:`server_frame` builds one unmasked server frame (what the "pre-built frame" peer writes);
* :class:`FrameReader` splits received bytes into ``(opcode, payload)`` frames, buffering partial
  input and joining fragmented messages;
* :func:`upgrade_request` / :func:`parse_upgrade_response` do the HTTP/1.1 opening handshake;
* :class:`WebSocketClient` reads a client connection's bytes: the upgrade answer, then frames, answering
  Pings and Closes itself and handing messages to its subclass.

No compression extension is ever offered, so RSV bits are always zero.
"""

from __future__ import annotations

import base64
import os
import struct
from typing import Final

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
# A server frame larger than this is a harness bug (benchmark payloads are at most a few KiB).
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
_HEADER_END: Final = b"\r\n\r\n"


class WebSocketError(Exception):
    """The server broke the protocol (bad upgrade answer, masked or oversized frame)."""


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``key`` using one big-integer operation."""
    length = len(payload)
    if not length:
        return b""
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")


def _header(opcode: int, length: int, mask_bit: int) -> bytes:
    first = 0x80 | opcode
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


def client_frame(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    return _header(opcode, len(payload), 0x80) + key + _mask(payload, key)


def server_frame(opcode: int, payload: bytes) -> bytes:
    return _header(opcode, len(payload), 0) + payload


def upgrade_request(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_upgrade_response(buffer: bytes) -> tuple[int, int] | None:
    """``(status, header_length)`` once the whole response head is in ``buffer``, else None."""
    end = buffer.find(_HEADER_END)
    if end < 0:
        return None
    status_line = buffer[: buffer.find(b"\r\n")]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise WebSocketError(f"bad status line {status_line[:80]!r}")
    return int(parts[1]), end + len(_HEADER_END)


# The first byte of an unfragmented (FIN) text or binary frame.
_WHOLE_DATA_FRAME: Final = frozenset({0x80 | OP_TEXT, 0x80 | OP_BINARY})


class FrameReader:
    """Buffers server bytes and yields whole frames; fragmented messages are joined."""

    __slots__ = ("_buffer", "_fragment_opcode", "_fragments")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fragments: bytearray | None = None
        self._fragment_opcode = 0

    def whole_message(self, data: bytes) -> bytes | None:
        """The payload when ``data`` is exactly one complete, unfragmented text or binary frame and
        nothing is buffered (a broadcast as it usually arrives); else None, and :meth:`feed` takes it.

        The load client's fast path: no buffer copy, list or tuple per delivery.
        """
        if self._buffer or self._fragments is not None or len(data) < 2:
            return None
        first, length = data[0], data[1]
        if first not in _WHOLE_DATA_FRAME:
            return None
        if length < 126:
            start = 2
        elif length == 126 and len(data) >= 4:
            length, start = (data[2] << 8) | data[3], 4
        else:
            return None
        return data[start:] if len(data) == start + length else None

    def idle(self) -> bool:
        """Nothing buffered: the next read starts with a new frame."""
        return not self._buffer and self._fragments is None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, bytes]] = []
        offset = 0
        available = len(buffer)
        while available - offset >= 2:
            first = buffer[offset]
            second = buffer[offset + 1]
            if second & 0x80:
                raise WebSocketError("server frames must not be masked")
            length = second & 0x7F
            start = offset + 2
            if length == 126:
                if available - start < 2:
                    break
                length = (buffer[start] << 8) | buffer[start + 1]
                start += 2
            elif length == 127:
                if available - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if length > MAX_FRAME_BYTES:
                raise WebSocketError(f"frame of {length} bytes")
            end = start + length
            if end > available:
                break
            payload = bytes(buffer[start:end])
            offset = end
            opcode = first & 0x0F
            fin = first & 0x80
            if opcode == OP_CONT:
                if self._fragments is None:
                    raise WebSocketError("continuation without a first fragment")
                self._fragments += payload
                if fin:
                    frames.append((self._fragment_opcode, bytes(self._fragments)))
                    self._fragments = None
            elif not fin and opcode < 0x8:
                self._fragments = bytearray(payload)
                self._fragment_opcode = opcode
            else:
                frames.append((opcode, payload))
        if offset:
            del buffer[:offset]
        return frames


class WebSocketClient:
    """The client side of one connection after its upgrade request was written, sans I/O.

    A subclass sets ``reader`` (a :class:`FrameReader`), ``upgraded`` (False) and ``upgrade_buffer``
    (``b""``), feeds every read to :meth:`data_received` and implements the hooks: :meth:`write_frame`
    sends, :meth:`on_open` follows a 101 answer, :meth:`on_message` takes each text or binary message,
    :meth:`on_refused` any other status, :meth:`on_closed_by_server` a Close frame (already answered)
    and :meth:`on_broken` a protocol error.
    """

    __slots__ = ()

    reader: FrameReader
    upgraded: bool
    upgrade_buffer: bytes

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            payload = self.reader.whole_message(data)
            if payload is not None:  # one whole data frame: most deliveries
                self.on_message(payload)
                return
        try:
            if not self.upgraded:
                self.upgrade_buffer += data
                parsed = parse_upgrade_response(self.upgrade_buffer)
                if parsed is None:
                    return
                status, length = parsed
                if status != 101:
                    self.on_refused(status)
                    return
                self.upgraded = True
                data, self.upgrade_buffer = self.upgrade_buffer[length:], b""
                self.on_open()
                if not data:
                    return
            for opcode, payload in self.reader.feed(data):
                if opcode in (OP_TEXT, OP_BINARY):
                    self.on_message(payload)
                elif opcode == OP_PING:
                    self.write_frame(OP_PONG, payload)
                elif opcode == OP_CLOSE:
                    self.write_frame(OP_CLOSE, payload[:2])
                    self.on_closed_by_server()
                    return
        except WebSocketError as error:
            self.on_broken(str(error))

    def write_frame(self, opcode: int, payload: bytes) -> None:
        raise NotImplementedError

    def on_open(self) -> None:
        raise NotImplementedError

    def on_message(self, payload: bytes) -> None:
        raise NotImplementedError

    def on_refused(self, status: int) -> None:
        raise NotImplementedError

    def on_closed_by_server(self) -> None:
        raise NotImplementedError

    def on_broken(self, why: str) -> None:
        raise NotImplementedError
