"""The WebSocket transport: a thin loop moving bytes between aiohttp and a :class:`HubSession`.

A reader feeds every received frame to :meth:`HubHost.receive`; a writer task per connection writes
what the session's connection queues (text frames for JSON, binary for MessagePack). Broadcasts take
the fast path, :meth:`WebSocketLink.write_shared`: a frame shared by every recipient is written to
the socket at once when nothing is queued before it. When the client closes its WebSocket the
session ends at once; when the server closes, the writer sends the Close message first (bounded by
:data:`CLOSE_TIMEOUT_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Final

from aiohttp import WSCloseCode, WSMsgType, web

from broker_bridge.interface import BrokerUnavailable
from gateway.http.auth_middleware import PRINCIPAL
from gateway.hub.host import HubHost
from gateway.hub.outbound import Framing, SharedMessage
from gateway.hub.registry import DuplicateConnection
from gateway.hub.resumable import ConnectionRecord, ResumableConnections, ResumeRefused
from gateway.hub.session import HubSession
from gateway.signalr.connection import CloseReason, ConnectionLimits, ServerConnection, SharedSend
from gateway.signalr.protocol import HubProtocol, TransferFormat
from gateway.transport.answers import ALREADY_CONNECTED, BROKER_UNAVAILABLE, UNKNOWN_CONNECTION
from gateway.transport.connection_token import NegotiatedConnection
from gateway.transport.ws_frames import binary_frame, text_frame

log = logging.getLogger(__name__)

TRANSPORT_NAME: Final = "websockets"
TRANSFER_FORMATS: Final[tuple[TransferFormat, ...]] = ("Text", "Binary")
# How long to wait for the client's close frame once everything is written (ASP.NET: 5 s).
CLOSE_TIMEOUT_SECONDS: Final = 5.0


class _HubWebSocket(web.WebSocketResponse):
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
        host: HubHost,
        limits: ConnectionLimits,
        max_frame_bytes: int,
        token_leeway_seconds: float,
        resumables: ResumableConnections | None,
        protocols: Mapping[str, HubProtocol],
    ) -> None:
        self._host = host
        self._limits = limits
        self._max_frame_bytes = max_frame_bytes
        self._token_leeway = token_leeway_seconds
        self._resumables = resumables
        self._protocols = protocols

    def _session(
        self, request: web.Request, negotiated: NegotiatedConnection, connection: ServerConnection, client_ip: str
    ) -> tuple[HubSession, WebSocketLink]:
        link = WebSocketLink(connection)
        session = HubSession(
            connection=connection,
            connection_id=negotiated.connection_id,
            connection_token=negotiated.connection_token,
            principal=request[PRINCIPAL],
            client_ip=client_ip,
            transport=TRANSPORT_NAME,
            link=link,
            token_leeway_seconds=self._token_leeway,
        )
        return session, link

    async def serve(
        self, request: web.Request, negotiated: NegotiatedConnection, *, client_ip: str
    ) -> web.StreamResponse:
        """Upgrade and run the connection until it ends; raises DuplicateConnection (nothing sent) when
        the token is already open on this replica."""
        connection = ServerConnection(
            limits=self._limits,
            now=time.monotonic(),
            transfer_formats=TRANSFER_FORMATS,
            stateful_allowed=negotiated.stateful and self._resumables is not None,
        )
        session, link = self._session(request, negotiated, connection, client_ip)
        self._host.add(session)
        try:
            ws = _HubWebSocket(connection, max_frame_bytes=self._max_frame_bytes)
            if await self._prepared(ws, request, link):
                await self._run(ws, session, link)
            return ws
        finally:
            await self._host.end(session)

    async def resume(
        self,
        request: web.Request,
        negotiated: NegotiatedConnection,
        record: ConnectionRecord,
        revision: int,
        *,
        client_ip: str,
    ) -> web.StreamResponse:
        """Take a stateful connection up on this socket: Sequence, the replay from its checkpoint, then
        live. A resume that cannot be made gets 404 (before the upgrade) or a closed socket (after it):
        the client then starts a new connection."""
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
        session, link = self._session(request, negotiated, connection, client_ip)
        try:
            self._host.add(session)
        except DuplicateConnection:
            return self._refused(resumables, "conflict", 409, ALREADY_CONNECTED)
        try:
            try:
                state = await resumables.take_over(session, record, revision)
            except ResumeRefused as refused:
                return self._refused(resumables, refused.outcome, 409, ALREADY_CONNECTED)
            except BrokerUnavailable:
                return self._refused(resumables, "unavailable", 503, BROKER_UNAVAILABLE)
            ws = _HubWebSocket(connection, max_frame_bytes=self._max_frame_bytes)
            if not await self._prepared(ws, request, link):
                return ws
            writer = asyncio.create_task(_write_loop(ws, connection, link))
            try:
                await resumables.replay(session, state)
            except (ResumeRefused, BrokerUnavailable) as error:
                outcome = error.outcome if isinstance(error, ResumeRefused) else "unavailable"
                log.warning("resume of %s failed: %s", session.connection_key, outcome)
                resumables.count(outcome)
                connection.drop(CloseReason.TRANSPORT_CLOSED)
                link.output_queued()
                await self._finish(ws, connection, link, writer)
                return ws
            assert connection.received is not None
            connection.received.resume_after(state.log.inbound)
            self._host.adopt(session)
            resumables.count("resumed")
            await self._run(ws, session, link, writer=writer)
            return ws
        finally:
            await self._host.end(session)

    def _refused(self, resumables: ResumableConnections, outcome: str, status: int, text: str) -> web.Response:
        resumables.count(outcome)
        return web.Response(status=status, text=text)

    async def _prepared(self, ws: _HubWebSocket, request: web.Request, link: WebSocketLink) -> bool:
        try:
            await ws.prepare(request)
        except ConnectionError:  # the client went away during the upgrade: nothing to serve, nothing to log
            log.debug("client left during the WebSocket upgrade")
            return False
        link.attach(request.transport)
        return True

    async def _run(
        self,
        ws: _HubWebSocket,
        session: HubSession,
        link: WebSocketLink,
        *,
        writer: asyncio.Task[None] | None = None,
    ) -> None:
        connection = session.connection
        if writer is None:
            writer = asyncio.create_task(_write_loop(ws, connection, link))
        try:
            await self._read_loop(ws, session)
        finally:
            if not connection.should_close:
                # The socket ended: nothing more can be delivered, and the writer must not wait out
                # the close timeout for output that will never come.
                connection.mark_closed()
            link.output_queued()
            await self._finish(ws, connection, link, writer)

    async def _finish(
        self, ws: _HubWebSocket, connection: ServerConnection, link: WebSocketLink, writer: asyncio.Task[None]
    ) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT_SECONDS)
        writer.cancel()
        if not ws.closed:
            await ws.close()
        forget_traceback(ws.exception())

    async def _read_loop(self, ws: web.WebSocketResponse, session: HubSession) -> None:
        while not session.connection.should_close:
            message = await ws.receive()
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                data = message.data if isinstance(message.data, bytes) else message.data.encode()
                await self._host.receive(session, data)
            elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING):
                # The client closed the WebSocket on purpose: the connection ends (no resume).
                session.connection.mark_closed(CloseReason.CLIENT_CLOSED)
                return
            elif message.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                if isinstance(message.data, BaseException):
                    forget_traceback(message.data)
                return  # the socket dropped


class WebSocketLink:
    """The transport's side of one session: the fast path for broadcasts and the writer's wake-up.

    A woken flag and a future made only while the writer waits: an asyncio.Event would hold a deque
    (over 600 bytes) for every idle connection.
    """

    __slots__ = ("_connection", "_framing", "_transport", "_waiter", "_woken")

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection
        self._transport: asyncio.Transport | None = None
        self._framing: Framing | None = None
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None

    def attach(self, transport: asyncio.Transport | None) -> None:
        """The socket, once the upgrade is done (before it, broadcasts only queue).

        No ``isinstance(transport, asyncio.Transport)`` test: uvloop's transports do not derive from
        asyncio's classes, and such a test left every broadcast unwritten on uvloop.
        """
        self._transport = transport

    def write_shared(self, message: SharedMessage, now: float) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        outcome = self._connection.send_shared(
            message.payload, now, transport_buffered=transport.get_write_buffer_size()
        )
        if outcome is SharedSend.WRITE_NOW:
            framing = self._framing
            if framing is None:
                framing = self._framing = binary_frame if self._connection.binary_frames else text_frame
            transport.write(message.framed(framing))
            return True
        self.output_queued()  # queued behind earlier output, or cut as a slow consumer
        return False

    def output_queued(self) -> None:
        if self._connection.must_abort and self._transport is not None:
            # Not reading: drop what is buffered and close the socket now; the reader then sees the
            # connection end and the session is unregistered.
            self._transport.abort()
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def buffered(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0

    async def wait_for_output(self) -> None:
        """Return once :meth:`output_queued` has been called since the last return (at once if it was)."""
        if not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._woken = False


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


async def _write_loop(ws: web.WebSocketResponse, connection: ServerConnection, link: WebSocketLink) -> None:
    try:
        while True:
            data = connection.data_to_send(time.monotonic())
            if data:
                await ws.send_frame(data, WSMsgType.BINARY if connection.binary_frames else WSMsgType.TEXT)
                continue
            if connection.should_close:
                break
            await link.wait_for_output()
    except (ConnectionError, RuntimeError) as error:
        log.debug("websocket write failed: %s", type(error).__name__)
    finally:
        connection.mark_closed()
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close()
