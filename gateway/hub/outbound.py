"""What the hub hands to transports: messages encoded once, and the link a transport gives each session.

A broadcast is encoded once per hub protocol into a :class:`SharedMessage`; every recipient using that
protocol gets the same object. A transport frames it (a WebSocket header, an SSE ``data:`` line) once,
too, through :meth:`SharedMessage.framed`, so a recipient costs no allocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Framing = Callable[[bytes], bytes]


class SharedMessage:
    """One hub message encoded for one protocol, shared by every recipient using that protocol."""

    __slots__ = ("_framed", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        """The hub-protocol bytes (JSON + 0x1E, or the VarInt-prefixed MessagePack record)."""
        self._framed: dict[Framing, bytes] | None = None

    def framed(self, framing: Framing) -> bytes:
        """``framing(payload)``, computed once per framing function and shared by every caller."""
        cache = self._framed
        if cache is None:
            cache = self._framed = {}
        elif framing in cache:  # every recipient after the first
            return cache[framing]
        frame = cache[framing] = framing(self.payload)
        return frame


class TransportLink(Protocol):
    """A transport's side of one session; implemented by every transport, never by the hub."""

    def write_shared(self, message: SharedMessage, now: float) -> bool:
        """Send a broadcast without awaiting: write it to the socket now when nothing is queued before it,
        else queue it; cut the connection if it is over its outbound limit. Never raises.

        ``now`` is ``time.monotonic()`` of the broadcast. Returns True when the bytes reached the socket.
        """
        ...

    def output_queued(self) -> None:
        """The session's connection has queued output or wants to close: wake the writer, or abort
        the socket at once when the connection was cut for not reading (``must_abort``)."""
        ...

    def buffered(self) -> int:
        """Bytes the transport holds and has not yet sent to the client."""
        ...
