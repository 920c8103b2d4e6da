"""The WebSocket transport: a thin loop moving bytes between aiohttp and a :class:`HubSession`.

``GET /hubs/admin?id=<token>`` with an upgrade opens a negotiated connection; without ``id`` it
opens a new one on the spot (clients using ``skipNegotiation``). Unknown or forged ids get 404,
an id already open on this replica 409. Non-upgrade GETs get the ASP.NET answers for transports
this endpoint does not serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from aiohttp import WSMsgType, hdrs, web

from gateway.context import CONTEXT, GatewayContext
from gateway.http.auth_middleware import PRINCIPAL
from gateway.hub.fanout import EncodedBroadcast
from gateway.hub.registry import DuplicateConnection
from gateway.hub.session import HubSession
from gateway.metrics import GatewayMetrics
from gateway.signalr.connection import ConnectionLimits, ServerConnection
from gateway.signalr.protocol import TransferFormat
from gateway.transport.connection_token import InvalidConnectionToken, NegotiatedConnection

log = logging.getLogger(__name__)

TRANSPORT_NAME: Final = "websockets"
TRANSFER_FORMATS: Final[tuple[TransferFormat, ...]] = ("Text", "Binary")
# A client may batch many hub messages into one frame (the JS client does), so a frame may be far
# larger than one message; this only bounds a single frame, the per-message limit is SignalR's.
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
# How long to wait for the client's close frame once everything is written (ASP.NET: 5 s).
CLOSE_TIMEOUT_SECONDS: Final = 5.0


def _limits(context: GatewayContext) -> ConnectionLimits:
    settings = context.settings
    return ConnectionLimits(
        max_message_bytes=settings.max_message_bytes,
        max_outbound_bytes=settings.max_outbound_bytes,
        keep_alive_interval_seconds=settings.keep_alive_interval_seconds,
        client_timeout_seconds=settings.client_timeout_seconds,
        handshake_timeout_seconds=settings.handshake_timeout_seconds,
    )


def _not_websocket(request: web.Request) -> web.Response:
    if request.headers.get(hdrs.ACCEPT, "").startswith("text/event-stream"):
        return web.Response(status=404, text="ServerSentEvents transport not supported by this end point type")
    if "id" not in request.query:
        return web.Response(status=400, text="Connection ID required")
    return web.Response(status=404, text="LongPolling transport not supported by this end point type")


async def hub_endpoint(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
        return _not_websocket(request)
    if context.readiness.draining:
        raise web.HTTPServiceUnavailable(text="Server is shutting down")
    principal = request[PRINCIPAL]
    token = request.query.get("id")
    try:
        if token is None:
            negotiated = context.signer.issue(user_id=principal.user_id, negotiate_version=0)
        else:
            negotiated = context.signer.verify(token, user_id=principal.user_id)
    except InvalidConnectionToken:
        return web.Response(status=404, text="No Connection with that ID")
    if negotiated.connection_token in context.host.registry:
        return web.Response(status=409, text="Connection already has a WebSocket")
    return await _serve(request, context, negotiated)


async def _serve(request: web.Request, context: GatewayContext, negotiated: NegotiatedConnection) -> web.StreamResponse:
    session = HubSession(
        connection=ServerConnection(limits=_limits(context), now=time.monotonic(), transfer_formats=TRANSFER_FORMATS),
        negotiated=negotiated,
        principal=request[PRINCIPAL],
        transport=TRANSPORT_NAME,
        token_leeway_seconds=context.settings.jwt_leeway_seconds,
    )
    try:
        context.host.add(session)
    except DuplicateConnection:
        return web.Response(status=409, text="Connection already has a WebSocket")
    ws = web.WebSocketResponse(
        max_msg_size=MAX_FRAME_BYTES, autoping=True, heartbeat=None, compress=False, decode_text=False
    )
    try:
        try:
            await ws.prepare(request)
        except ConnectionError:  # the client went away during the upgrade: nothing to serve, nothing to log
            log.debug("client left during the WebSocket upgrade")
            return ws
        session.write_now = _direct_writer(request, context)
        writer = asyncio.create_task(_write_loop(ws, session, context.metrics))
        try:
            await _read_loop(ws, session, context)
        finally:
            if not session.connection.should_close:
                # The client closed or the socket failed: nothing more can be delivered, and the
                # writer must not wait out the close timeout for output that will never come.
                session.connection.mark_closed()
            session.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT_SECONDS)
            writer.cancel()
            if not ws.closed:
                await ws.close()
    finally:
        await context.host.end(session)
    return ws


def _direct_writer(request: web.Request, context: GatewayContext) -> Callable[[EncodedBroadcast], bool] | None:
    """A synchronous writer of fan-out frames for the fast path, or None.

    The router frames a broadcast once, so a recipient costs one ``transport.write`` of shared bytes:
    no per-recipient task, future, tuple or copy. It declines (returns False) while the transport is
    closing or holds more than ``max_outbound_bytes`` unsent, and the message is then queued (and
    counted against the slow-consumer limit) instead.
    """
    transport = request.transport
    if transport is None:
        return None
    limit = context.settings.max_outbound_bytes

    def write_now(frame: EncodedBroadcast) -> bool:
        if transport.is_closing() or transport.get_write_buffer_size() > limit:
            return False
        transport.write(frame.websocket_frame)
        return True

    return write_now


async def _read_loop(ws: web.WebSocketResponse, session: HubSession, context: GatewayContext) -> None:
    while not session.connection.should_close:
        message = await ws.receive()
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            data = message.data if isinstance(message.data, bytes) else message.data.encode()
            await context.host.receive(session, data)
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


async def _write_loop(ws: web.WebSocketResponse, session: HubSession, metrics: GatewayMetrics) -> None:
    connection = session.connection
    try:
        while True:
            data = connection.data_to_send(time.monotonic())
            if data:
                fanout_at, session.oldest_fanout_at = session.oldest_fanout_at, None
                opcode = WSMsgType.BINARY if connection.binary_frames else WSMsgType.TEXT
                await ws.send_frame(data, opcode)
                if fanout_at is not None:
                    metrics.fanout_seconds.observe(time.monotonic() - fanout_at)
                continue
            if connection.should_close:
                break
            await session.wait_for_output()
    except (ConnectionError, RuntimeError) as error:
        log.debug("websocket write failed: %s", type(error).__name__)
    finally:
        connection.mark_closed()
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
