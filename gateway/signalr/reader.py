"""A per-connection message reader: a record framer plus a protocol's decode function."""

from __future__ import annotations

from typing import Protocol

from gateway.signalr.messages import HubMessage


class RecordReader(Protocol):
    """Splits a byte stream into complete records (``TextRecordReader``, ``BinaryRecordReader``)."""

    @property
    def buffered_bytes(self) -> int: ...

    def append(self, data: bytes) -> None: ...

    def next_record(self) -> bytes | None: ...


class Decode(Protocol):
    """A protocol's decode function: one record -> its hub message (None for an unknown type)."""

    def __call__(self, record: bytes, /, *, max_depth: int | None) -> HubMessage | None: ...


class DecodingReader:
    """Decodes hub messages from arbitrary chunks of one connection's input, one message at a time
    (:meth:`~gateway.signalr.protocol.HubProtocol.new_reader`: clients and tests read a server's
    output with it). The server's connection holds the record reader alone and decodes with its
    protocol: one object fewer per connection."""

    __slots__ = ("_decode", "_max_depth", "_records")

    def __init__(self, records: RecordReader, decode: Decode, max_depth: int | None = None) -> None:
        self._records = records
        self._decode = decode
        self._max_depth = max_depth

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet decoded."""
        return self._records.buffered_bytes

    def append(self, data: bytes) -> None:
        """Add input; nothing is decoded until :meth:`next_message` asks."""
        self._records.append(data)

    def next_message(self) -> HubMessage | None:
        """Decode the next complete message (unknown types are skipped); None until more input arrives."""
        while (record := self._records.next_record()) is not None:
            message = self._decode(record, max_depth=self._max_depth)
            if message is not None:
                return message
        return None

    def feed(self, data: bytes) -> list[HubMessage]:
        """Add ``data``; return every message it completes (unknown types left out)."""
        self.append(data)
        messages: list[HubMessage] = []
        while (message := self.next_message()) is not None:
            messages.append(message)
        return messages
