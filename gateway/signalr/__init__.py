"""Pure SignalR codec: handshake, record framing and the JSON / MessagePack hub protocols.

Imports no asyncio, aiohttp, NATS, socket or threading: callers feed received bytes into readers and
write the bytes that encoders return.
"""

from gateway.signalr.errors import HandshakeError, MessageTooLargeError, ProtocolError, SignalRError
from gateway.signalr.framing import RECORD_SEPARATOR, BinaryRecordReader, TextRecordReader, encode_varint
from gateway.signalr.handshake import (
    HANDSHAKE_OK,
    HandshakeReader,
    HandshakeRequest,
    encode_handshake_error,
)
from gateway.signalr.json_protocol import JSON_PROTOCOL, JsonHubProtocol
from gateway.signalr.messages import (
    PING,
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
from gateway.signalr.msgpack_protocol import MESSAGEPACK_PROTOCOL, MessagePackHubProtocol
from gateway.signalr.protocol import HubProtocol, MessageReader, TransferFormat
from gateway.signalr.selection import ALL_PROTOCOLS, resolve_protocol

__all__ = [
    "ALL_PROTOCOLS",
    "HANDSHAKE_OK",
    "JSON_PROTOCOL",
    "MESSAGEPACK_PROTOCOL",
    "PING",
    "RECORD_SEPARATOR",
    "Ack",
    "BinaryRecordReader",
    "CancelInvocation",
    "Close",
    "Completion",
    "HandshakeError",
    "HandshakeReader",
    "HandshakeRequest",
    "HubMessage",
    "HubProtocol",
    "Invocation",
    "JsonHubProtocol",
    "MessagePackHubProtocol",
    "MessageReader",
    "MessageTooLargeError",
    "MessageType",
    "Ping",
    "ProtocolError",
    "Sequence",
    "SignalRError",
    "StreamInvocation",
    "StreamItem",
    "TextRecordReader",
    "TransferFormat",
    "encode_handshake_error",
    "encode_varint",
    "resolve_protocol",
]
