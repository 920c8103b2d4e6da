"""Record framing: 0x1E-terminated text records and VarInt length-prefixed binary records.

Both readers accept arbitrary chunks, return every complete record, buffer the partial tail and enforce a
size limit that, as in ASP.NET's ``MaximumReceiveMessageSize``, counts the framing too (the separator, or
the length prefix). A reader that raised is unusable: the connection must be closed.
"""

from __future__ import annotations

from typing import Final

from gateway.signalr.errors import MessageTooLargeError, ProtocolError

__all__ = ["RECORD_SEPARATOR", "BinaryRecordReader", "TextRecordReader", "encode_varint"]

# Terminates every JSON hub message and the handshake in both directions.
RECORD_SEPARATOR: Final = b"\x1e"
_SEPARATOR_BYTE: Final = 0x1E

# The VarInt prefix holds at most 5 groups of 7 bits; the spec caps the value at 2**31 - 1 (2 GB).
MAX_VARINT_BYTES: Final = 5
MAX_RECORD_LENGTH: Final = 2**31 - 1
# Low 7 bits of a VarInt byte carry data; the high bit means "another byte follows".
_VARINT_DATA_MASK: Final = 0x7F
_VARINT_CONTINUE: Final = 0x80
# The 5th byte only has room for the top 3 bits of a 31-bit value (4 * 7 = 28 bits already read).
_VARINT_LAST_BYTE_MAX: Final = 0x07


class _RecordReader:
    """What both readers share: the limit, the buffer of input not yet returned, and :meth:`feed`.

    The buffer is the input itself while one chunk holds everything unread (the usual case: a
    WebSocket message carries whole records), a bytearray only while input arrives behind unread
    bytes, and the empty ``b""`` once everything was returned: an idle connection holds no buffer.
    """

    __slots__ = ("_buffer", "_limit", "_start")

    def __init__(self, *, max_record_bytes: int | None) -> None:
        if max_record_bytes is not None and max_record_bytes < 1:
            raise ValueError("max_record_bytes must be positive or None")
        self._limit = max_record_bytes
        self._buffer: bytes | bytearray = b""
        # Where the next record starts in the buffer.
        self._start = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet returned as a record."""
        return len(self._buffer) - self._start

    def append(self, data: bytes) -> None:
        buffer = self._buffer
        if not buffer:
            self._buffer = bytes(data)  # no copy for bytes; a caller's bytearray is not kept
        elif isinstance(buffer, bytearray):
            buffer += data
        else:
            self._buffer = bytearray(buffer)
            self._buffer += data

    def _drop_returned(self) -> None:
        """Forget the records already returned: only the unread tail is kept (moved to the front)."""
        buffer, start = self._buffer, self._start
        if start == len(buffer):
            self._buffer = b""
        elif isinstance(buffer, bytearray):
            del buffer[:start]
        else:
            self._buffer = buffer[start:]
        self._start = 0

    def next_record(self) -> bytes | None:
        raise NotImplementedError

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every complete record, without its framing."""
        self.append(data)
        records: list[bytes] = []
        while (record := self.next_record()) is not None:
            records.append(record)
        return records


class TextRecordReader(_RecordReader):
    """Splits a byte stream into records terminated by 0x1E.

    :meth:`append` adds input, :meth:`next_record` takes one complete record at a time, so a caller can
    handle each record before decoding the next. ``max_record_bytes`` bounds one record including its
    separator (None = unlimited); a partial record that already fills the limit is rejected without
    waiting for its separator. :meth:`feed` does both at once (append, then every complete record).
    """

    __slots__ = ("_scanned",)

    def __init__(self, *, max_record_bytes: int | None) -> None:
        super().__init__(max_record_bytes=max_record_bytes)
        # How far the buffer has been searched for a separator: each byte is searched once, so feeding
        # a large record one byte at a time stays linear.
        self._scanned = 0

    def next_record(self) -> bytes | None:
        """The next complete record without its separator, or None until more input arrives."""
        buffer = self._buffer
        limit = self._limit
        end = buffer.find(_SEPARATOR_BYTE, self._scanned)
        if end < 0:
            if self._start:
                # Only the tail after the last record is moved, and it arrived with the latest input.
                self._drop_returned()
            unread = self._scanned = len(self._buffer)
            if limit is not None and unread >= limit:
                # The separator still has to come, so the record is already at least limit + 1 bytes.
                raise MessageTooLargeError(size=None, limit=limit)
            return None
        size = end - self._start + 1
        if limit is not None and size > limit:
            raise MessageTooLargeError(size=size, limit=limit)
        record = bytes(buffer[self._start : end])
        self._start = self._scanned = end + 1
        return record


def encode_varint(n: int) -> bytes:
    """Encode a record length as the 1 to 5 byte VarInt prefix used by binary framing."""
    if not 0 <= n <= MAX_RECORD_LENGTH:
        raise ValueError(f"record length {n} is outside 0..{MAX_RECORD_LENGTH}")
    out = bytearray()
    while n > _VARINT_DATA_MASK:
        out.append((n & _VARINT_DATA_MASK) | _VARINT_CONTINUE)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buffer: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Decode a prefix at ``pos``: (length, prefix size), or None if more bytes are needed."""
    value = 0
    available = len(buffer) - pos
    for index in range(MAX_VARINT_BYTES):
        if index >= available:
            return None
        byte = buffer[pos + index]
        if index == MAX_VARINT_BYTES - 1 and byte > _VARINT_LAST_BYTE_MAX:
            raise ProtocolError("message length prefix is longer than 5 bytes or exceeds 2 GB")
        value |= (byte & _VARINT_DATA_MASK) << (7 * index)
        if not byte & _VARINT_CONTINUE:
            return value, index + 1
    raise AssertionError("unreachable: the 5th byte never has the continuation bit")


class BinaryRecordReader(_RecordReader):
    """Splits a byte stream into VarInt length-prefixed records, one at a time like
    :class:`TextRecordReader`.

    ``max_record_bytes`` bounds one record including its prefix (None = unlimited); a declared length over
    the limit is rejected as soon as the prefix is read, before the body arrives.
    """

    __slots__ = ()

    def next_record(self) -> bytes | None:
        """The body of the next complete record without its prefix, or None until more input arrives."""
        buffer = self._buffer
        start = self._start
        prefix = _read_varint(buffer, start) if start < len(buffer) else None
        if prefix is not None:
            length, prefix_size = prefix
            size = prefix_size + length
            if self._limit is not None and size > self._limit:
                raise MessageTooLargeError(size=size, limit=self._limit)
            if len(buffer) - start >= size:
                self._start = start + size
                return bytes(buffer[start + prefix_size : start + size])
        if start:
            # Only the incomplete tail is moved, and it arrived with the latest input.
            self._drop_returned()
        return None
