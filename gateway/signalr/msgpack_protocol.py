"""The "messagepack" hub protocol: one MessagePack array per message behind a VarInt length prefix.

Layouts (element 0 is the type; ``h`` is the headers map, required on types 1-5)::

    [1, h, id|nil, target, [args], [streamIds]?]     [4, h, id, target, [args], [streamIds]?]
    [2, h, id, item]                                 [5, h, id]
    [3, h, id, 1, error] / [3, h, id, 2] / [3, h, id, 3, result]
    [6]   [7, error|nil, allowReconnect?]   [8, sequenceId]   [9, sequenceId]

Trailing extra elements are ignored (as the JS client does) and unknown type numbers are skipped. Written
invocations always have 6 elements because signalrcore reads ``raw[5]`` unconditionally.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal, assert_never

import msgpack

from gateway.signalr.errors import ProtocolError
from gateway.signalr.framing import BinaryRecordReader, encode_varint
from gateway.signalr.messages import (
    Ack,
    CancelInvocation,
    Close,
    Completion,
    HubMessage,
    Invocation,
    MessageType,
    Ping,
    Sequence,
    StreamInvocation,
    StreamItem,
)
from gateway.signalr.reader import DecodingReader
from shared.nesting import nesting_exceeds

__all__ = [
    "MESSAGEPACK_PROTOCOL",
    "MessagePackHubProtocol",
    "decode_msgpack_message",
]

# Completion "resultKind" values (element 3).
RESULT_KIND_ERROR: Final = 1
RESULT_KIND_VOID: Final = 2
RESULT_KIND_VALUE: Final = 3

# Pre-encoded because pings are sent to every idle connection every keep-alive interval: [6] framed.
_PING_FRAME: Final = b"\x02\x91\x06"

# Minimum array lengths, matching what the JS client requires of the messages it reads.
_MIN_LENGTH: Final[dict[int, int]] = {
    MessageType.INVOCATION: 5,
    MessageType.STREAM_ITEM: 4,
    MessageType.COMPLETION: 4,
    MessageType.STREAM_INVOCATION: 5,
    MessageType.CANCEL_INVOCATION: 3,
    MessageType.PING: 1,
    MessageType.CLOSE: 2,
    MessageType.ACK: 2,
    MessageType.SEQUENCE: 2,
}
# Index of the streamIds array in (stream) invocations; it is absent when the JS client has none.
_STREAM_IDS_INDEX: Final = 5
_COMPLETION_VALUE_LENGTH: Final = 5
_CLOSE_ALLOW_RECONNECT_INDEX: Final = 2


def _unpack(body: bytes) -> Any:
    try:
        # raw=False: strings are str; timestamp=3: ext -1 becomes an aware UTC datetime; strict_map_key
        # keeps maps keyed by str/bytes only. unpackb bounds every length by len(body), already size-capped.
        return msgpack.unpackb(body, raw=False, timestamp=3, strict_map_key=True)
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError):
        raise ProtocolError("message is not a single valid MessagePack value") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _headers(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise ProtocolError("headers are not a map of strings")
    # Always present on the wire, usually empty; None matches the JSON decoder's "no headers".
    return value or None


def _required_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError("invocation id is not a non-empty string")
    return value


def _optional_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("invocation id is not a string or nil")
    # The spec and ASP.NET treat nil and "" alike: a non-blocking invocation.
    return value or None


def _target(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError("target is not a non-empty string")
    return value


def _arguments(value: object) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ProtocolError("arguments are not an array")
    return tuple(value)


def _stream_ids(array: list[Any]) -> tuple[str, ...]:
    if len(array) <= _STREAM_IDS_INDEX:
        return ()
    value = array[_STREAM_IDS_INDEX]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ProtocolError("stream ids are not an array of non-empty strings")
    return tuple(value)


def _sequence_id(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("sequence id is not a non-negative integer")
    return value


def _completion(array: list[Any]) -> Completion:
    headers = _headers(array[1])
    invocation_id = _required_id(array[2])
    kind = array[3]
    if not _is_int(kind) or kind not in (RESULT_KIND_ERROR, RESULT_KIND_VOID, RESULT_KIND_VALUE):
        raise ProtocolError("completion result kind is not 1, 2 or 3")
    if kind == RESULT_KIND_VOID:
        return Completion(invocation_id, headers=headers)
    if len(array) < _COMPLETION_VALUE_LENGTH:
        raise ProtocolError("completion result or error is missing")
    if kind == RESULT_KIND_VALUE:
        return Completion(invocation_id, result=array[4], has_result=True, headers=headers)
    error = array[4]
    if not isinstance(error, str) or not error:
        raise ProtocolError("completion error is not a non-empty string")
    return Completion(invocation_id, error=error, headers=headers)


def _close(array: list[Any]) -> Close:
    error = array[1]
    if error is not None and not isinstance(error, str):
        raise ProtocolError("close error is not a string or nil")
    allow_reconnect = False
    if len(array) > _CLOSE_ALLOW_RECONNECT_INDEX:
        allow_reconnect = array[_CLOSE_ALLOW_RECONNECT_INDEX]
        if not isinstance(allow_reconnect, bool):
            raise ProtocolError("close allowReconnect is not a boolean")
    return Close(error=error, allow_reconnect=allow_reconnect)


def decode_msgpack_message(body: bytes, *, max_depth: int | None = None) -> HubMessage | None:
    """Decode one record body (without its prefix); None for an unknown message type.

    ``max_depth`` bounds the nesting of the whole message array (the envelope is depth 1).
    """
    array = _unpack(body)
    if not isinstance(array, list) or not array:
        raise ProtocolError("message is not a non-empty MessagePack array")
    if max_depth is not None and nesting_exceeds(array, max_depth):
        raise ProtocolError(f"message nests deeper than {max_depth} levels")
    kind = array[0]
    if not _is_int(kind):
        raise ProtocolError("message type is not an integer")
    min_length = _MIN_LENGTH.get(kind)
    if min_length is None:
        # Newer message types are ignored, as ASP.NET and the JS client do.
        return None
    if len(array) < min_length:
        raise ProtocolError(f"message of type {kind} has too few elements")
    match kind:
        case MessageType.INVOCATION:
            return Invocation(
                headers=_headers(array[1]),
                invocation_id=_optional_id(array[2]),
                target=_target(array[3]),
                arguments=_arguments(array[4]),
                stream_ids=_stream_ids(array),
            )
        case MessageType.STREAM_ITEM:
            return StreamItem(headers=_headers(array[1]), invocation_id=_required_id(array[2]), item=array[3])
        case MessageType.COMPLETION:
            return _completion(array)
        case MessageType.STREAM_INVOCATION:
            return StreamInvocation(
                headers=_headers(array[1]),
                invocation_id=_required_id(array[2]),
                target=_target(array[3]),
                arguments=_arguments(array[4]),
                stream_ids=_stream_ids(array),
            )
        case MessageType.CANCEL_INVOCATION:
            return CancelInvocation(headers=_headers(array[1]), invocation_id=_required_id(array[2]))
        case MessageType.PING:
            return Ping()
        case MessageType.CLOSE:
            return _close(array)
        case MessageType.ACK:
            return Ack(_sequence_id(array[1]))
        case MessageType.SEQUENCE:
            return Sequence(_sequence_id(array[1]))
    raise AssertionError(f"type {kind} has a minimum length but no decoder")


def _to_array(message: HubMessage) -> list[Any]:
    match message:
        case Invocation():
            return [
                MessageType.INVOCATION.value,
                dict(message.headers or {}),
                message.invocation_id,
                message.target,
                message.arguments,
                message.stream_ids,
            ]
        case StreamInvocation():
            return [
                MessageType.STREAM_INVOCATION.value,
                dict(message.headers or {}),
                message.invocation_id,
                message.target,
                message.arguments,
                message.stream_ids,
            ]
        case StreamItem():
            return [
                MessageType.STREAM_ITEM.value,
                dict(message.headers or {}),
                message.invocation_id,
                message.item,
            ]
        case Completion():
            head = [MessageType.COMPLETION.value, dict(message.headers or {}), message.invocation_id]
            if message.error is not None:
                return [*head, RESULT_KIND_ERROR, message.error]
            if message.has_result:
                return [*head, RESULT_KIND_VALUE, message.result]
            return [*head, RESULT_KIND_VOID]
        case CancelInvocation():
            return [
                MessageType.CANCEL_INVOCATION.value,
                dict(message.headers or {}),
                message.invocation_id,
            ]
        case Ping():
            return [MessageType.PING.value]
        case Close():
            return [MessageType.CLOSE.value, message.error, message.allow_reconnect]
        case Ack():
            return [MessageType.ACK.value, message.sequence_id]
        case Sequence():
            return [MessageType.SEQUENCE.value, message.sequence_id]
        case _:
            assert_never(message)


def _pack_default(value: object) -> object:
    # msgpack only packs aware datetimes; a naive one is taken as UTC, as ASP.NET assumes for DateTime.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    raise TypeError(f"cannot serialise {type(value).__name__} to MessagePack")


class MessagePackHubProtocol:
    """The stateless "messagepack" protocol: Binary transfer format, versions up to 2."""

    __slots__ = ()

    name: Final = "messagepack"
    transfer_format: Final[Literal["Binary"]] = "Binary"
    # ASP.NET reports version 2 (stateful reconnect); the encoding is identical for 0, 1 and 2.
    max_version: Final = 2

    def encode(self, message: HubMessage) -> bytes:
        """Encode ``message`` as VarInt prefix + MessagePack body; TypeError for unserialisable values."""
        if isinstance(message, Ping):
            return _PING_FRAME
        body = msgpack.packb(_to_array(message), datetime=True, default=_pack_default)
        return encode_varint(len(body)) + body

    def new_reader(self, *, max_message_bytes: int | None, max_depth: int | None = None) -> DecodingReader:
        """A reader for one connection; the size limit counts the length prefix (None = unlimited)."""
        return DecodingReader(self.record_reader(max_message_bytes=max_message_bytes), self.decode, max_depth)

    def record_reader(self, *, max_message_bytes: int | None) -> BinaryRecordReader:
        return BinaryRecordReader(max_record_bytes=max_message_bytes)

    def decode(self, record: bytes, /, *, max_depth: int | None) -> HubMessage | None:
        return decode_msgpack_message(record, max_depth=max_depth)


# Stateless, so one instance serves every connection.
MESSAGEPACK_PROTOCOL: Final = MessagePackHubProtocol()
