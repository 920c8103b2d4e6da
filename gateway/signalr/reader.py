"""A per-connection message reader: a record framer plus a protocol's decode function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.signalr.messages import HubMessage


class RecordReader(Protocol):
    """Splits a byte stream into complete records (``TextRecordReader``, ``BinaryRecordReader``)."""

    @property
    def buffered_bytes(self) -> int: ...

    def feed(self, data: bytes) -> list[bytes]: ...


class DecodingReader:
    """Decodes hub messages from arbitrary chunks of one connection's input."""

    __slots__ = ("_decode", "_records")

    def __init__(self, records: RecordReader, decode: Callable[[bytes], HubMessage | None]) -> None:
        self._records = records
        self._decode = decode

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete message held back for the next feed."""
        return self._records.buffered_bytes

    def feed(self, data: bytes) -> list[HubMessage]:
        """Add ``data``; return every message it completes (unknown types left out)."""
        messages: list[HubMessage] = []
        for record in self._records.feed(data):
            message = self._decode(record)
            if message is not None:
                messages.append(message)
        return messages
