"""The WebSocket transport: moves bytes between aiohttp and a :class:`HubSession`.

:meth:`WebSocketTransport.open` (or ``resume``) registers and upgrades a connection; its read loop is
the hub GET handler's own (:meth:`gateway.transport.endpoint.HubEndpoint.get`), so the whole life of a
connection is that one suspended coroutine: each coroutine frame suspended under an idle connection
costs about 250 bytes. The loop feeds every received frame (:func:`received_data`) to
:meth:`HubHost.receive` and keeps none it has handled. Output needs no task: whatever the
session's connection queues is framed (text frames for JSON, binary for MessagePack) and written to
the socket when it is queued (:meth:`WebSocketLink.output_queued`), and broadcasts take the fast
path, :meth:`WebSocketLink.write_shared`: a frame shared by every recipient is written at once when
nothing is queued before it. Neither waits for the socket to drain: what the kernel has not taken
counts towards the connection's outbound limit, and a client that does not read is cut as a slow
consumer. So an idle connection holds its reader and nothing else. A task is made only to close the
WebSocket once the connection ends: when the client closes its WebSocket the session ends at once;
when the server closes, the Close message is written first and the close handshake is bounded by
:data:`CLOSE_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Final, TypeAlias

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from broker_bridge.interface import BrokerUnavailable
from gateway.auth import Principal
from gateway.hub.outbound import Framing, SharedMessage
from gateway.hub.registry import DuplicateConnection
from gateway.hub.resumable import ConnectionRecord, ResumableConnections, ResumeRefused
from gateway.hub.session import HubSession
from gateway.signalr.connection import CloseReason, ConnectionLimits, ServerConnection, SharedSend
from gateway.signalr.protocol import HubProtocol, TransferFormat
from gateway.transport.answers import ALREADY_CONNECTED, BROKER_UNAVAILABLE, UNKNOWN_CONNECTION
from gateway.transport.connection_token import NegotiatedConnection
from gateway.transport.services import TransportServices
from gateway.transport.ws_frames import binary_frame, text_frame

log = logging.getLogger(__name__)

TRANSPORT_NAME: Final = "websockets"
TRANSFER_FORMATS: Final[tuple[TransferFormat, ...]] = ("Text", "Binary")
# How long to wait for the client's close frame once everything is written (ASP.NET: 5 s).
CLOSE_TIMEOUT_SECONDS: Final = 5.0
# One global lookup per recipient instead of an enum member through its class (about 0.1 µs on 3.11).
_WRITE_NOW: Final = SharedSend.WRITE_NOW


class HubWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocket, plus the SignalR Close message before it closes for an oversized frame.

    aiohttp refuses a frame over ``max_msg_size`` as soon as its header declares the length (nothing
    of it is buffered) and closes with code 1009 from inside ``receive()``; the client first gets the
    hub's Close with an error, so the JS client reports it and reconnects.
    """

    def __init__(self, connection: ServerConnection, *, max_frame_bytes: int) -> None:
        # aiohttp refuses a message of max_msg_size bytes or more; the limit here is inclusive.
        super().__init__(
            max_msg_size=max_frame_bytes + 1, autoping=True, heartbeat=None, compress=False, decode_text=False
        )
        self._connection = connection
        self._max_frame_bytes = max_frame_bytes

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            connection = self._connection
            connection.frame_too_large(self._max_frame_bytes)
            farewell = connection.data_to_send(time.monotonic())
            if farewell:
                opcode = WSMsgType.BINARY if connection.binary_frames else WSMsgType.TEXT
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.send_frame(farewell, opcode)
        return await super().close(code=code, message=message, drain=drain)


class WebSocketTransport:
    """Serves negotiated connections over WebSockets, and resumes stateful ones.

    ``max_frame_bytes`` bounds one WebSocket message (a client may batch several hub messages into
    one, as the JS client does; each hub message is bounded by ``limits.max_message_bytes``).
    """

    def __init__(
        self,
        *,
        services: TransportServices,
        limits: ConnectionLimits,
        max_frame_bytes: int,
        resumables: ResumableConnections | None,
        protocols: Mapping[str, HubProtocol],
    ) -> None:
        self._services = services
        self._host = services.host
        self._limits = limits
        self._max_frame_bytes = max_frame_bytes
        self._resumables = resumables
        self._protocols = protocols

    def _session(
        self, negotiated: NegotiatedConnection, connection: ServerConnection, principal: Principal, client_ip: str
    ) -> tuple[HubSession, WebSocketLink]:
        link = WebSocketLink(connection)
        session = self._services.session(
            negotiated, connection, link, principal=principal, client_ip=client_ip, transport=TRANSPORT_NAME
        )
        return session, link

    async def open(
        self, request: web.Request, negotiated: NegotiatedConnection, *, principal: Principal, client_ip: str
    ) -> Upgraded | web.StreamResponse:
        """Register a new connection and upgrade its request; raises DuplicateConnection (nothing sent)
        when the token is already open on this replica. The caller runs the upgraded connection (see
        the module's docstring); a client gone during the upgrade gets the unprepared response."""
        connection = ServerConnection(
            limits=self._limits,
            now=time.monotonic(),
            transfer_formats=TRANSFER_FORMATS,
            stateful_allowed=negotiated.stateful and self._resumables is not None,
        )
        session, link = self._session(negotiated, connection, principal, client_ip)
        self._host.add(session)
        ws = HubWebSocket(connection, max_frame_bytes=self._max_frame_bytes)
        upgraded = False
        try:
            upgraded = await self._prepared(ws, request, link)
        finally:
            if not upgraded:
                await self._host.end(session)
        return (session, link, ws) if upgraded else ws

    async def resume(
        self,
        request: web.Request,
        negotiated: NegotiatedConnection,
        record: ConnectionRecord,
        revision: int,
        *,
        principal: Principal,
        client_ip: str,
    ) -> Upgraded | web.StreamResponse:
        """Take a stateful connection up on this socket: Sequence and the replay from its checkpoint;
        the caller then runs it like a new one. A resume that cannot be made gets 404 (before the
        upgrade) or a closed socket (after it): the client then starts a new connection."""
        resumables = self._resumables
        protocol = self._protocols.get(record.protocol)
        if resumables is None or protocol is None:
            return web.Response(status=404, text=UNKNOWN_CONNECTION)
        connection = ServerConnection.resumed(
            protocol=protocol,
            limits=self._limits,
            now=time.monotonic(),
            next_message_id=record.checkpoint.sent + 1,
            latest_processed=record.checkpoint.inbound,
        )
        session, link = self._session(negotiated, connection, principal, client_ip)
        try:
            self._host.add(session)
        except DuplicateConnection:
            return self._refused(resumables, "conflict", 409, ALREADY_CONNECTED)
        live = False  # from then on the session is the caller's to end
        try:
            try:
                state = await resumables.take_over(session, record, revision)
            except ResumeRefused as refused:
                return self._refused(resumables, refused.outcome, 409, ALREADY_CONNECTED)
            except BrokerUnavailable:
                return self._refused(resumables, "unavailable", 503, BROKER_UNAVAILABLE)
            ws = HubWebSocket(connection, max_frame_bytes=self._max_frame_bytes)
            if not await self._prepared(ws, request, link):
                return ws
            try:
                await resumables.replay(session, state)
            except (ResumeRefused, BrokerUnavailable) as error:
                outcome = error.outcome if isinstance(error, ResumeRefused) else "unavailable"
                log.warning("resume of %s failed: %s", session.connection_key, outcome)
                resumables.count(outcome)
                connection.drop(CloseReason.TRANSPORT_CLOSED)
                link.output_queued()
                await self._finish(ws, link)
                return ws
            assert connection.received is not None
            connection.received.resume_after(state.log.inbound)
            self._host.adopt(session)
            resumables.count("resumed")
            live = True
        finally:
            if not live:
                await self._host.end(session)
        return session, link, ws

    def _refused(self, resumables: ResumableConnections, outcome: str, status: int, text: str) -> web.Response:
        resumables.count(outcome)
        return web.Response(status=status, text=text)

    async def _prepared(self, ws: HubWebSocket, request: web.Request, link: WebSocketLink) -> bool:
        try:
            await ws.prepare(request)
        except ConnectionError:  # the client went away during the upgrade: nothing to serve, nothing to log
            log.debug("client left during the WebSocket upgrade")
            return False
        link.attach(request.transport, ws)
        return True

    async def end(self, session: HubSession, link: WebSocketLink, ws: HubWebSocket) -> None:
        """The end of an upgraded connection, however its read loop ended: close the WebSocket (its
        Close message, if any, written first) and end the session."""
        connection = session.connection
        try:
            if not connection.should_close:
                # The socket ended: nothing more can be delivered, and the close must not wait out
                # the close timeout for output that will never come.
                connection.mark_closed()
            link.output_queued()
            await self._finish(ws, link)
        finally:
            await self._host.end(session)

    async def _finish(self, ws: HubWebSocket, link: WebSocketLink) -> None:
        closing = link.closing
        if closing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closing), CLOSE_TIMEOUT_SECONDS)
            closing.cancel()
        if not ws.closed:
            await ws.close()
        forget_traceback(ws.exception())


class WebSocketLink:
    """The transport's side of one session: broadcasts and queued output go to the socket as they come.

    No writer task and no waiter per connection: :meth:`output_queued` writes what the connection has
    queued at once (the socket's own buffer holds what the kernel has not taken yet, counted towards
    the outbound limit), and makes a task only to close the WebSocket once the connection ends.
    """

    __slots__ = ("_connection", "_framing", "_transport", "_ws", "closing")

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection
        self._transport: asyncio.Transport | None = None
        self._ws: web.WebSocketResponse | None = None
        self._framing: Framing | None = None
        self.closing: asyncio.Task[None] | None = None
        """The task closing the WebSocket, once the connection has ended."""

    def attach(self, transport: asyncio.Transport | None, ws: web.WebSocketResponse | None = None) -> None:
        """The socket, once the upgrade is done (before it, everything queues); writes what waits.

        No ``isinstance(transport, asyncio.Transport)`` test: uvloop's transports do not derive from
        asyncio's classes, and such a test left every broadcast unwritten on uvloop.
        """
        self._transport = transport
        self._ws = ws
        self.output_queued()

    def write_shared(self, message: SharedMessage, now: float) -> bool:
        # The fan-out's per-recipient path: every lookup here is paid once per member per broadcast.
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        outcome = self._connection.send_shared(
            message.payload, now, transport_buffered=transport.get_write_buffer_size()
        )
        if outcome is _WRITE_NOW:
            transport.write(message.framed(self._framing or self._choose_framing()))
            return True
        self.output_queued()  # queued behind earlier output, or cut as a slow consumer
        return False

    def output_queued(self) -> None:
        connection = self._connection
        transport = self._transport
        if transport is None:
            return  # before the upgrade: attach() writes it
        if connection.must_abort:
            # Not reading: drop what is buffered and close the socket now; the reader then sees the
            # connection end and the session is unregistered.
            transport.abort()
        elif not transport.is_closing():
            data = connection.data_to_send(time.monotonic())
            if data:
                transport.write((self._framing or self._choose_framing())(data))
        if connection.should_close and self.closing is None and self._ws is not None:
            self.closing = asyncio.get_running_loop().create_task(_close(self._ws, connection))

    def buffered(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0

    def _choose_framing(self) -> Framing:
        # Known once the handshake chose the protocol (nothing but the handshake reply, a text frame
        # either way, is written before it).
        framing = binary_frame if self._connection.binary_frames else text_frame
        if self._connection.protocol is not None:
            self._framing = framing
        return framing


# An upgraded connection, for its caller to run: read with ``ws.receive()`` and
# :func:`received_data`, feed the hub, and :meth:`WebSocketTransport.end` it.
Upgraded: TypeAlias = tuple[HubSession, WebSocketLink, HubWebSocket]


def received_data(connection: ServerConnection, message: WSMessage) -> bytes | None:
    """The bytes a received WebSocket message carries for the hub (``b""``: nothing), or None when the
    WebSocket has ended. A Close from the client ends the connection on purpose (no resume)."""
    kind = message.type
    if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
        data = message.data
        return data if isinstance(data, bytes) else data.encode()
    if kind is WSMsgType.CLOSE or kind is WSMsgType.CLOSING:
        connection.mark_closed(CloseReason.CLIENT_CLOSED)
        return None
    if kind is WSMsgType.CLOSED or kind is WSMsgType.ERROR:
        if isinstance(message.data, BaseException):
            forget_traceback(message.data)
        return None  # the socket dropped
    return b""


def forget_traceback(error: BaseException | None) -> None:
    """Drop the traceback of an error aiohttp keeps on a finished WebSocket (and of its causes).

    aiohttp keeps a read error (an oversized frame, bytes that are not WebSocket framing) in the
    socket's message queue and a write error (a slow reader's socket reset) on the response; the
    traceback's frames refer back to both, so each such connection (request, transport, hub
    connection) would stay in a reference cycle that only a full collection frees, and the GC policy
    (gateway/gc_policy.py) runs one an hour: the S8 soak saw RSS grow by about 1 MiB a minute.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


async def _close(ws: web.WebSocketResponse, connection: ServerConnection) -> None:
    """Close the WebSocket after the connection ended (its Close message, if any, is written already)."""
    try:
        if not ws.closed:
            await ws.close()
    except (ConnectionError, RuntimeError) as error:
        log.debug("websocket close failed: %s", type(error).__name__)
    finally:
        connection.mark_closed()
