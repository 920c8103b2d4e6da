"""The "json" hub protocol: one UTF-8 JSON object per message, each followed by 0x1E.

Decoding validates every envelope field the message type needs and ignores unknown keys (pysignalr sends
snake_case extras); unknown ``type`` numbers are skipped. Encoding writes only the standard keys, because
pysignalr raises on any unexpected key, and omits optional keys rather than writing null.
"""

from __future__ import annotations

from typing import Any, Final, Literal, assert_never

import orjson

from gateway.signalr.errors import ProtocolError
from gateway.signalr.framing import RECORD_SEPARATOR, TextRecordReader
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
from shared.nesting import text_nesting_exceeds

__all__ = ["JSON_PROTOCOL", "JsonHubProtocol", "decode_json_message"]

# Datetimes become ISO 8601 with "Z" (naive ones are taken as UTC), matching what JS Date.toJSON() emits.
_DUMPS_OPTIONS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC

# Pre-encoded because pings are sent to every idle connection every keep-alive interval.
_PING_FRAME: Final = b'{"type":6}' + RECORD_SEPARATOR

_Object = dict[str, Any]


def _is_int(value: object) -> bool:
    # JSON true/false decode to bool, which is an int subclass but never a valid number here.
    return isinstance(value, int) and not isinstance(value, bool)


def _required_id(obj: _Object) -> str:
    value = obj.get("invocationId")
    if not isinstance(value, str) or not value:
        raise ProtocolError("'invocationId' is missing or not a non-empty string")
    return value


def _optional_id(obj: _Object) -> str | None:
    value = obj.get("invocationId")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("'invocationId' is not a string")
    # ASP.NET treats an empty id like a missing one: a non-blocking invocation.
    return value or None


def _target(obj: _Object) -> str:
    value = obj.get("target")
    if not isinstance(value, str) or not value:
        raise ProtocolError("'target' is missing or not a non-empty string")
    return value


def _arguments(obj: _Object) -> tuple[Any, ...]:
    value = obj.get("arguments")
    if not isinstance(value, list):
        raise ProtocolError("'arguments' is missing or not an array")
    return tuple(value)


def _stream_ids(obj: _Object) -> tuple[str, ...]:
    value = obj.get("streamIds")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ProtocolError("'streamIds' is not an array of non-empty strings")
    return tuple(value)


def _headers(obj: _Object) -> dict[str, str] | None:
    value = obj.get("headers")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise ProtocolError("'headers' is not an object of strings")
    # Empty and absent headers mean the same; None keeps equality independent of the wire form.
    return value or None


def _sequence_id(obj: _Object) -> int:
    value = obj.get("sequenceId")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("'sequenceId' is missing or not a non-negative integer")
    return value


def _call(obj: _Object, *, streaming: bool) -> Invocation | StreamInvocation:
    """An Invocation, or a StreamInvocation (whose id is required)."""
    target, arguments, stream_ids, headers = _target(obj), _arguments(obj), _stream_ids(obj), _headers(obj)
    if streaming:
        return StreamInvocation(_required_id(obj), target, arguments, stream_ids, headers)
    return Invocation(target, arguments, _optional_id(obj), stream_ids, headers)


def _completion(obj: _Object) -> Completion:
    invocation_id = _required_id(obj)
    headers = _headers(obj)
    error = obj.get("error")
    # pysignalr always sends "error": null, so null means "no error".
    if error is not None:
        if not isinstance(error, str) or not error:
            raise ProtocolError("'error' is not a non-empty string")
        if obj.get("result") is not None:
            raise ProtocolError("a completion carries both 'result' and 'error'")
        return Completion(invocation_id, error=error, headers=headers)
    if "result" in obj:
        return Completion(invocation_id, result=obj["result"], has_result=True, headers=headers)
    return Completion(invocation_id, headers=headers)


def _close(obj: _Object) -> Close:
    error = obj.get("error")
    if error is not None and not isinstance(error, str):
        raise ProtocolError("'error' is not a string")
    allow_reconnect = obj.get("allowReconnect", False)
    if allow_reconnect is None:
        allow_reconnect = False
    if not isinstance(allow_reconnect, bool):
        raise ProtocolError("'allowReconnect' is not a boolean")
    return Close(error=error, allow_reconnect=allow_reconnect)


def decode_json_message(record: bytes, *, max_depth: int | None = None) -> HubMessage | None:
    """Decode one record (without its separator); None for an unknown message type.

    ``max_depth`` bounds the nesting of the whole message object (the envelope is depth 1).
    """
    try:
        obj = orjson.loads(record)
    except orjson.JSONDecodeError:
        raise ProtocolError("message is not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message is not a JSON object")
    if max_depth is not None and text_nesting_exceeds(record, obj, max_depth):
        raise ProtocolError(f"message nests deeper than {max_depth} levels")
    kind = obj.get("type")
    if not _is_int(kind):
        raise ProtocolError("'type' is missing or not an integer")
    match kind:
        case MessageType.INVOCATION | MessageType.STREAM_INVOCATION:
            return _call(obj, streaming=kind == MessageType.STREAM_INVOCATION)
        case MessageType.STREAM_ITEM:
            if "item" not in obj:
                raise ProtocolError("'item' is missing")
            return StreamItem(_required_id(obj), obj["item"], headers=_headers(obj))
        case MessageType.COMPLETION:
            return _completion(obj)
        case MessageType.CANCEL_INVOCATION:
            return CancelInvocation(_required_id(obj), headers=_headers(obj))
        case MessageType.PING:
            return Ping()
        case MessageType.CLOSE:
            return _close(obj)
        case MessageType.ACK:
            return Ack(_sequence_id(obj))
        case MessageType.SEQUENCE:
            return Sequence(_sequence_id(obj))
        case _:
            # Newer message types are ignored, as ASP.NET and the JS client do.
            return None


def _with_common(out: _Object, stream_ids: tuple[str, ...], headers: Any) -> _Object:
    if stream_ids:
        out["streamIds"] = stream_ids
    if headers:
        out["headers"] = dict(headers)
    return out


def _to_object(message: HubMessage) -> _Object:
    match message:
        case Invocation():
            out: _Object = {"type": MessageType.INVOCATION.value}
            if message.invocation_id is not None:
                out["invocationId"] = message.invocation_id
            out["target"] = message.target
            out["arguments"] = message.arguments
            return _with_common(out, message.stream_ids, message.headers)
        case StreamInvocation():
            out = {
                "type": MessageType.STREAM_INVOCATION.value,
                "invocationId": message.invocation_id,
                "target": message.target,
                "arguments": message.arguments,
            }
            return _with_common(out, message.stream_ids, message.headers)
        case StreamItem():
            out = {"type": MessageType.STREAM_ITEM.value, "invocationId": message.invocation_id}
            out["item"] = message.item
            return _with_common(out, (), message.headers)
        case Completion():
            out = {"type": MessageType.COMPLETION.value, "invocationId": message.invocation_id}
            if message.error is not None:
                out["error"] = message.error
            elif message.has_result:
                out["result"] = message.result
            return _with_common(out, (), message.headers)
        case CancelInvocation():
            out = {"type": MessageType.CANCEL_INVOCATION.value, "invocationId": message.invocation_id}
            return _with_common(out, (), message.headers)
        case Ping():
            return {"type": MessageType.PING.value}
        case Close():
            out = {"type": MessageType.CLOSE.value}
            if message.error is not None:
                out["error"] = message.error
            if message.allow_reconnect:
                out["allowReconnect"] = True
            return out
        case Ack():
            return {"type": MessageType.ACK.value, "sequenceId": message.sequence_id}
        case Sequence():
            return {"type": MessageType.SEQUENCE.value, "sequenceId": message.sequence_id}
        case _:
            assert_never(message)


class JsonHubProtocol:
    """The stateless "json" protocol: Text transfer format, versions up to 2."""

    __slots__ = ()

    name: Final = "json"
    transfer_format: Final[Literal["Text"]] = "Text"
    # ASP.NET reports version 2 (stateful reconnect); the JSON encoding is identical for 0, 1 and 2.
    max_version: Final = 2

    def encode(self, message: HubMessage) -> bytes:
        """Encode ``message`` as JSON + 0x1E; raises TypeError for values orjson cannot serialise."""
        if isinstance(message, Ping):
            return _PING_FRAME
        return orjson.dumps(_to_object(message), option=_DUMPS_OPTIONS) + RECORD_SEPARATOR

    def new_reader(self, *, max_message_bytes: int | None, max_depth: int | None = None) -> DecodingReader:
        """A reader for one connection; the size limit counts the separator (None = unlimited)."""
        return DecodingReader(self.record_reader(max_message_bytes=max_message_bytes), self.decode, max_depth)

    def record_reader(self, *, max_message_bytes: int | None) -> TextRecordReader:
        return TextRecordReader(max_record_bytes=max_message_bytes)

    def decode(self, record: bytes, /, *, max_depth: int | None) -> HubMessage | None:
        return decode_json_message(record, max_depth=max_depth)


# Stateless, so one instance serves every connection.
JSON_PROTOCOL: Final = JsonHubProtocol()
