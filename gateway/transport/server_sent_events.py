"""Server-Sent Events, as the ASP.NET Core transport spec describes it, on the replica that owns the connection.

``GET ?id=`` with ``Accept: text/event-stream`` starts the connection and holds the response open:
``200``, ``Content-Type: text/event-stream``, no caching, no compression; first the comment line
``:\\r\\n`` (EventSource opens on it), then one event per write, ``data: <line>\\r\\n`` per line of
the payload and a blank line. An event carries whole hub messages (Text transfer format only). The
client sends by ``POST`` (:meth:`gateway.transport.http_connections.HttpConnections.send`); a second
event-stream GET for a live connection gets 409. The connection ends with its stream.

The stream is written where the client's request arrived: here, by a writer that takes what the
connection queued (:class:`gateway.transport.outbox.Outbox`) plus the broadcast fast path straight
to the socket; or on another replica, which holds the response and is sent each event over NATS
(:class:`EventSink`, implemented in :mod:`gateway.transport.forwarding`), one at a time, each
acknowledged once written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from aiohttp import HttpVersion11, hdrs, web

from gateway.signalr.connection import ConnectionLimits
from gateway.signalr.protocol import TransferFormat
from gateway.transport.answers import CANNOT_CHANGE_TRANSPORT
from gateway.transport.connection_token import NegotiatedConnection
from gateway.transport.http_connections import (
    SERVER_SENT_EVENTS,
    Caller,
    HttpConnection,
    HttpConnections,
)
from gateway.transport.replies import TEXT, Reply
from shared.background import start_background

log = logging.getLogger(__name__)

TRANSFER_FORMATS: Final[tuple[TransferFormat, ...]] = ("Text",)
CONTENT_TYPE: Final = "text/event-stream"
HEADERS: Final[dict[str, str]] = {
    "Cache-Control": "no-cache,no-store",
    "Pragma": "no-cache",
    "Content-Encoding": "identity",
}
# Written and flushed first: EventSource fires "open" on it (Firefox needs the bytes), and the JS
# client sends its handshake only after "open".
OPENING: Final = b":\r\n"


def event(payload: bytes) -> bytes:
    """One event: each line of ``payload`` (a trailing ``\\r`` dropped) as ``data: <line>\\r\\n``, then a blank line."""
    lines = payload.split(b"\n")
    return b"".join(b"data: " + line.removesuffix(b"\r") + b"\r\n" for line in lines) + b"\r\n"


def chunked_event(payload: bytes) -> bytes:
    """:func:`event` as one HTTP/1.1 chunk, for writing straight to the socket of a chunked response."""
    body = event(payload)
    return b"%x\r\n%b\r\n" % (len(body), body)


def is_event_stream_request(request: web.BaseRequest) -> bool:
    """Whether ``Accept`` lists ``text/event-stream`` (how a Server-Sent Events GET differs from a poll)."""
    for accept in request.headers.getall(hdrs.ACCEPT, ()):
        for item in accept.split(","):
            if item.split(";", 1)[0].strip().lower() == CONTENT_TYPE:
                return True
    return False


async def open_stream(request: web.Request) -> web.StreamResponse:
    """Send the headers and the opening comment of an event stream (raises ConnectionError if the client left)."""
    response = web.StreamResponse(headers=HEADERS)
    response.content_type = CONTENT_TYPE
    if request.version >= HttpVersion11:
        response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(OPENING)
    return response


class EventSink(Protocol):
    """Where the events of a stream go when the client's response is held by another replica."""

    async def write(self, event: bytes) -> bool:
        """Deliver one event; False when the stream is gone (the client or the other replica left)."""
        ...

    async def close(self) -> None:
        """Tell the other replica the stream is over (best effort)."""
        ...


class ServerSentEvents:
    """Event streams of connections owned by this replica."""

    def __init__(self, *, connections: HttpConnections, limits: ConnectionLimits, max_event_bytes: int) -> None:
        self._connections = connections
        self._limits = limits
        # A forwarded stream has its own write timeout: each event must be acknowledged within it.
        self._forwarded_limits = dataclasses.replace(limits, write_timeout_seconds=math.inf)
        self._max_event_bytes = max_event_bytes

    async def _start(
        self, negotiated: NegotiatedConnection, caller: Caller, limits: ConnectionLimits
    ) -> HttpConnection | Reply:
        token = negotiated.connection_token
        entry = self._connections.get(token)
        if entry is not None:
            if entry.transport == SERVER_SENT_EVENTS:
                return Reply(409, b"", TEXT)  # a second stream for a live connection
            return Reply.text(400, CANNOT_CHANGE_TRANSPORT)
        if self._connections.is_websocket(token):
            return Reply.text(400, CANNOT_CHANGE_TRANSPORT)
        return await self._connections.start(
            SERVER_SENT_EVENTS, negotiated, caller, limits=limits, transfer_formats=TRANSFER_FORMATS
        )

    async def serve(self, request: web.Request, negotiated: NegotiatedConnection, caller: Caller) -> web.StreamResponse:
        """Start the connection and write its events to ``request``'s response until either side ends it."""
        started = await self._start(negotiated, caller, self._limits)
        if isinstance(started, Reply):
            return started.response()
        entry = started
        try:
            try:
                response = await open_stream(request)
            except ConnectionError:
                log.debug("client left before its event stream opened")
                return web.Response(status=204)
            transport = request.transport
            entry.client_gone = lambda: transport is None or transport.is_closing()
            entry.outbox.attach(transport, chunked_event if response.chunked else event)

            async def write(data: bytes) -> bool:
                try:
                    await response.write(data)
                except (ConnectionError, RuntimeError) as error:
                    log.debug("event stream write failed: %s", type(error).__name__)
                    return False
                return True

            await self._write_loop(entry, write, hold_in_flight=False)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
            return response
        finally:
            await self._connections.end(entry)

    async def start_forwarded(self, negotiated: NegotiatedConnection, caller: Caller, sink: EventSink) -> Reply:
        """Start the connection for a client whose response another replica holds; events go to ``sink``."""
        started = await self._start(negotiated, caller, self._forwarded_limits)
        if isinstance(started, Reply):
            return started
        start_background(f"event stream {started.session.connection_id}", self._run_forwarded(started, sink))
        return Reply(200)

    async def _run_forwarded(self, entry: HttpConnection, sink: EventSink) -> None:
        try:
            await self._write_loop(entry, sink.write, hold_in_flight=True)
            await sink.close()
        finally:
            await self._connections.end(entry)

    async def _write_loop(
        self, entry: HttpConnection, write: Callable[[bytes], Awaitable[bool]], *, hold_in_flight: bool
    ) -> None:
        """Write what the connection queues, one event per take, until it is over or a write fails.

        ``hold_in_flight``: count an event as unsent until ``write`` returns (a forwarded event is
        in no socket buffer of ours while it travels).
        """
        outbox = entry.outbox
        connection = entry.connection
        while not entry.ended and not entry.client_gone():
            data = outbox.take(self._max_event_bytes)
            if data:
                if hold_in_flight:
                    outbox.in_flight = len(data)
                try:
                    delivered = await write(event(data))
                finally:
                    outbox.in_flight = 0
                if not delivered:
                    return
                continue
            if connection.should_close:
                return
            await outbox.wait()
