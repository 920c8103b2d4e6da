"""Literal SignalR frames the tests send or expect, in the spec's own bytes, written once for every tier."""

from typing import Final

RS: Final = b"\x1e"
JSON_HANDSHAKE: Final = b'{"protocol":"json","version":1}\x1e'
# Version 2 of the JSON protocol asks for stateful reconnect (Ack and Sequence messages).
JSON_V2_HANDSHAKE: Final = b'{"protocol":"json","version":2}\x1e'
MSGPACK_HANDSHAKE: Final = b'{"protocol":"messagepack","version":1}\x1e'
# The server's answer to a handshake it accepts.
HANDSHAKE_OK: Final = b"{}\x1e"
PING_FRAME: Final = b'{"type":6}\x1e'
