"""The link of the HTTP transports (long polling, Server-Sent Events): output waits here, as whole
messages, until a poll or an event-stream writer takes it.

A WebSocket writes to its socket whenever it likes; a long-polling connection can only answer the
poll the client holds, and a Server-Sent Events stream forwarded from another replica is written one
acknowledged event at a time. So everything the connection queues is moved here at once, in order,
and taken in slices of whole messages (:meth:`Outbox.take`): a hub message is never split across poll
bodies or events. What waits here counts towards the connection's outbound limit, so a client that
stops polling is cut as a slow consumer like any other.

A broadcast costs a recipient no allocation: the shared payload itself is appended, or, for an event
stream with nothing waiting, written straight to the socket, framed once for every recipient
(:meth:`Outbox.attach`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from gateway.hub.outbound import Framing, SharedMessage
from gateway.signalr.connection import ServerConnection, SharedSend


class Outbox:
    """A :class:`gateway.hub.outbound.TransportLink` holding output for the transport to take."""

    __slots__ = ("_chunks", "_connection", "_direct", "_framing", "_size", "_waiter", "_woken", "in_flight")

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection
        # Each chunk is one or more whole messages (a data_to_send() or a broadcast payload).
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._direct: asyncio.Transport | None = None
        self._framing: Framing | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self.in_flight = 0
        """Bytes taken and not yet confirmed delivered (a forwarded event awaiting its reply)."""

    def attach(self, transport: asyncio.Transport | None, framing: Framing) -> None:
        """Write broadcasts straight to ``transport``, framed by ``framing``, while nothing waits here.

        No ``isinstance(transport, asyncio.Transport)`` test: uvloop's transports do not derive from
        asyncio's classes (see :meth:`gateway.transport.websocket.WebSocketLink.attach`).
        """
        self._direct = transport
        self._framing = framing

    def detach(self) -> None:
        self._direct = None

    # -- TransportLink --------------------------------------------------------------------------

    def write_shared(self, message: SharedMessage, now: float) -> bool:
        outcome = self._connection.send_shared(message.payload, now, transport_buffered=self.buffered())
        if outcome is SharedSend.WRITE_NOW:
            direct = self._direct
            if direct is not None and not self._chunks and not direct.is_closing():
                assert self._framing is not None
                direct.write(message.framed(self._framing))
                return True
            self._append(message.payload)
            self._wake()
            return False
        self.output_queued()  # queued behind earlier output, or cut as a slow consumer
        return False

    def output_queued(self) -> None:
        connection = self._connection
        if connection.must_abort:
            # Not reading: what waits is dropped and a stream's socket aborted; the transport ends it.
            self._chunks.clear()
            self._size = 0
            if self._direct is not None:
                self._direct.abort()
        else:
            data = connection.data_to_send(time.monotonic())
            if data:
                self._append(data)
        self._wake()

    def buffered(self) -> int:
        direct = self._direct
        socket = direct.get_write_buffer_size() if direct is not None and not direct.is_closing() else 0
        return self._size + self.in_flight + socket

    # -- the transport's side -------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Bytes waiting to be taken."""
        return self._size

    def take(self, limit: int) -> bytes:
        """Whole chunks from the front, at most ``limit`` bytes, except that one larger chunk goes alone."""
        chunks = self._chunks
        if not chunks:
            return b""
        taken = [chunks.popleft()]
        size = len(taken[0])
        while chunks and size + len(chunks[0]) <= limit:
            chunk = chunks.popleft()
            taken.append(chunk)
            size += len(chunk)
        self._size -= size
        return taken[0] if len(taken) == 1 else b"".join(taken)

    def wake(self) -> None:
        """Make the waiting poll or writer look again (superseded, ended, client gone)."""
        self._wake()

    async def wait(self) -> None:
        """Return once output was queued or :meth:`wake` was called since the last return.

        One party waits at a time, but a superseded poll may still be unwinding when the next one
        waits: each only clears the waiter it made.
        """
        if self._woken:
            self._woken = False
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def _append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        else:
            self._woken = True
