"""The records on ``realtime.conn.<key>``: what one resumable connection was sent, and when its
membership changed, in the order of the fan-out stream.

A resumable connection's view of the stream is a pure function of the stream: from its ``start``
record on, it receives every message of ``realtime.all``, of its user's subject, of the groups it is
in (changed only by ``join`` / ``leave`` records) and the ``message`` records of its own subject. So any
replica that reads the stream from a checkpoint numbers and replays exactly what the first one sent.

Format (gateway replicas only write and read these): one kind byte, then

* ``m`` message: 8 bytes big-endian inbound id (the client message it answers, 0 for none), then the
  hub-protocol frame, already encoded for the connection's protocol;
* ``p`` processed: 8 bytes inbound id (a client message handled without an answer);
* ``s`` start, ``j`` join, ``l`` leave, ``t`` takeover, ``e`` end: a JSON object.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from shared import jsoncodec

_INBOUND: Final = struct.Struct("!Q")


class RecordKind(enum.Enum):
    MESSAGE = b"m"
    PROCESSED = b"p"
    START = b"s"
    JOIN = b"j"
    LEAVE = b"l"
    TAKEOVER = b"t"
    END = b"e"


class InvalidRecord(ValueError):
    """A payload on a connection subject that no gateway wrote."""


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record on a resumable connection's subject: a message sent to it, or a change of its state."""

    kind: RecordKind
    inbound: int = 0
    frame: bytes = b""
    fields: dict[str, Any] = field(default_factory=dict)


def message_record(frame: bytes, *, inbound: int = 0) -> bytes:
    return RecordKind.MESSAGE.value + _INBOUND.pack(inbound) + frame


def processed_record(inbound: int) -> bytes:
    return RecordKind.PROCESSED.value + _INBOUND.pack(inbound)


def marker_record(kind: RecordKind, **fields: Any) -> bytes:
    if kind in (RecordKind.MESSAGE, RecordKind.PROCESSED):
        raise ValueError(f"{kind.name} is not a marker")
    prefix: bytes = kind.value
    return prefix + jsoncodec.dumps(fields)


def decode_record(payload: bytes) -> StreamRecord:
    try:
        kind = RecordKind(payload[:1])
    except ValueError:
        raise InvalidRecord("unknown record kind") from None
    if kind in (RecordKind.MESSAGE, RecordKind.PROCESSED):
        if len(payload) < 1 + _INBOUND.size:
            raise InvalidRecord("record too short")
        (inbound,) = _INBOUND.unpack_from(payload, 1)
        return StreamRecord(kind, inbound=inbound, frame=payload[1 + _INBOUND.size :])
    try:
        fields = jsoncodec.loads(payload[1:])
    except jsoncodec.JSONDecodeError:
        raise InvalidRecord("marker is not JSON") from None
    if not isinstance(fields, dict):
        raise InvalidRecord("marker is not an object")
    return StreamRecord(kind, fields=fields)
