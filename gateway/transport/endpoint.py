"""``/hubs/admin``: the hub path, where a negotiated connection runs its transport.

* ``GET`` with an upgrade: the WebSocket transport, on whichever replica receives it. ``?id=<token>``
  names a negotiated connection (verified by signature, on any replica); without ``id`` a new
  connection opens on the spot (clients using ``skipNegotiation``). An id whose transport already
  started, here or on any other replica, gets 409 (:mod:`gateway.transport.claims`), unless it is a
  stateful connection resuming (:mod:`gateway.hub.resumable`).
* ``GET`` with ``Accept: text/event-stream``: Server-Sent Events; any other ``GET``: a long poll;
  ``POST``: the client's messages (both); ``DELETE``: the end of a long-polling connection. These run
  on the replica that owns the connection (named in the token): here, or forwarded there
  (:mod:`gateway.transport.forwarding`), so no request needs to reach any particular replica.

Answers use ASP.NET's status codes and texts: 400 ``Connection ID required``, 404 ``No Connection
with that ID`` (unknown, forged, expired before it started, or its owner is gone), 400 ``Cannot
change transports mid-connection``, 405 for a POST to a WebSocket connection, 409 for a second event
stream; a transport not enabled gets ASP.NET's 404 text, a start over a connection limit 429
(:mod:`gateway.transport.admission`).
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web

from broker_bridge.interface import BrokerUnavailable
from gateway.auth import Principal
from gateway.http.request_parts import query_of
from gateway.hub.registry import DuplicateConnection
from gateway.hub.resumable import ResumableConnections
from gateway.paths import HUB_PATH
from gateway.signalr.connection import CloseReason
from gateway.transport.answers import (
    ALREADY_CONNECTED,
    BROKER_UNAVAILABLE,
    CANNOT_CHANGE_TRANSPORT,
    CONNECTION_ID_REQUIRED,
    DELETE_NOT_SUPPORTED,
    POST_TO_WEBSOCKET,
    UNKNOWN_CONNECTION,
    transport_not_supported,
)
from gateway.transport.connection_token import InvalidConnectionToken, NegotiatedConnection
from gateway.transport.forwarding import ForwardingClient
from gateway.transport.http_connections import LONG_POLLING, SERVER_SENT_EVENTS, Caller, HttpConnections
from gateway.transport.long_polling import LongPolling
from gateway.transport.replies import Reply, unknown_connection
from gateway.transport.server_sent_events import ServerSentEvents, is_event_stream_request
from gateway.transport.services import TransportServices
from gateway.transport.websocket import Upgraded, WebSocketTransport, received_data

# How long a resume waits for a half-open socket of the same connection on this replica to end.
STALE_SESSION_WAIT_SECONDS: Final = 2.0


class HubEndpoint:
    """Routes each request at the hub path to its transport, here or on the connection's owner."""

    def __init__(
        self,
        *,
        services: TransportServices,
        websocket: WebSocketTransport,
        resumables: ResumableConnections | None = None,
        connections: HttpConnections,
        long_polling: LongPolling,
        events: ServerSentEvents,
        forwarding: ForwardingClient,
        transports: tuple[str, ...],
        max_frame_bytes: int,
    ) -> None:
        self._host = services.host
        self._admission = services.admission
        self._claims = services.claims
        self._signer = services.signer
        self._websocket = websocket
        self._resumables = resumables
        self._connections = connections
        self._long_polling = long_polling
        self._events = events
        self._forwarding = forwarding
        self._transports = frozenset(transports)
        self._max_frame_bytes = max_frame_bytes

    def routes(self) -> list[web.RouteDef]:
        return [web.get(HUB_PATH, self.get), web.post(HUB_PATH, self.post), web.delete(HUB_PATH, self.delete)]

    # -- GET ------------------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.StreamResponse:
        principal = await self._admission.principal(request)
        if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return await self._http_get(request, principal)
        if "WebSockets" not in self._transports:
            return web.Response(status=404, text=transport_not_supported("WebSockets"))
        opened = await self._open_websocket(request, principal)
        if isinstance(opened, web.StreamResponse):
            return opened
        # This frame is the connection's whole life (admission and the upgrade are awaited to their
        # end first): the read loop is written out here and keeps no message it has handled.
        session, link, ws = opened
        del opened, principal
        connection = session.connection
        try:
            while not connection.should_close:
                data = received_data(connection, await ws.receive())
                if data is None:
                    break
                if data:
                    await self._host.receive(session, data)
                del data
        finally:
            await self._websocket.end(session, link, ws)
        return ws

    async def _http_get(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        transport = SERVER_SENT_EVENTS if is_event_stream_request(request) else LONG_POLLING
        if transport not in self._transports:
            return web.Response(status=404, text=transport_not_supported(transport))
        resolved = self._resolve(request, principal)
        if isinstance(resolved, Reply):
            return resolved.response()
        negotiated, caller = resolved
        token = negotiated.connection_token
        if self._connections.is_websocket(token):
            return Reply.text(400, CANNOT_CHANGE_TRANSPORT).response()
        if transport == SERVER_SENT_EVENTS:
            if self._owns(negotiated):
                return await self._events.serve(request, negotiated, caller)
            return await self._forwarding.stream(request, negotiated, caller)
        if self._owns(negotiated):
            client = request.transport
            reply = await self._long_polling.poll(
                negotiated, caller, client_gone=lambda: client is None or client.is_closing()
            )
        else:
            reply = await self._forwarding.poll(negotiated, caller)
        return reply.response()

    async def _open_websocket(self, request: web.Request, principal: Principal) -> Upgraded | web.StreamResponse:
        """The connection a WebSocket request opens or resumes, upgraded, or the answer it gets instead."""
        user_id = principal.user_id
        client_ip = self._admission.client_ip(request)
        token = query_of(request).get("id")
        if token is None:  # skipNegotiation: a new connection, admitted like a negotiate
            refusal = self._admission.refuse_negotiate(request, user_id)
            if refusal is not None:
                return refusal
            negotiated = self._signer.issue(user_id=user_id, negotiate_version=0)
        else:
            try:
                negotiated = self._signer.verify(token, user_id=user_id, allow_expired=True)
            except InvalidConnectionToken:
                return unknown_connection().response()
            if self._connections.get(negotiated.connection_token) is not None:
                return Reply.text(400, CANNOT_CHANGE_TRANSPORT).response()
            if negotiated.stateful and self._resumables is not None:
                resumed = await self._resume(request, negotiated, principal, client_ip)
                if resumed is not None:
                    return resumed
            if not self._signer.fresh(negotiated):
                return unknown_connection().response()
            if negotiated.connection_token in self._host.registry:
                return web.Response(status=409, text=ALREADY_CONNECTED)
            refusal = self._admission.refuse_connection(client_ip, user_id)
            if refusal is not None:
                return refusal
            if not await self._claims.claim(negotiated.key):
                return web.Response(status=409, text=ALREADY_CONNECTED)
        try:
            return await self._websocket.open(request, negotiated, principal=principal, client_ip=client_ip)
        except DuplicateConnection:  # opened by a concurrent request since admission
            return web.Response(status=409, text=ALREADY_CONNECTED)

    async def _resume(
        self, request: web.Request, negotiated: NegotiatedConnection, principal: Principal, client_ip: str
    ) -> Upgraded | web.StreamResponse | None:
        """Take up a resumable connection known in NATS; None when there is none (a new connection)."""
        resumables = self._resumables
        assert resumables is not None
        stale = self._host.registry.get(negotiated.connection_token)
        if stale is not None:
            # Still open here (its socket half-open): drop it, then take the connection over.
            stale.drop(CloseReason.TRANSPORT_CLOSED)
            if not await self._host.wait_gone(stale, STALE_SESSION_WAIT_SECONDS):
                return web.Response(status=409, text=ALREADY_CONNECTED)
        try:
            found = await resumables.lookup(negotiated.key)
        except BrokerUnavailable:
            resumables.count("unavailable")
            return web.Response(status=503, text=BROKER_UNAVAILABLE)
        if found is None:
            return None
        record, revision = found
        if record.user_id != principal.user_id or not resumables.resumable_now(record):
            resumables.count("expired")
            return web.Response(status=404, text=UNKNOWN_CONNECTION)
        return await self._websocket.resume(
            request, negotiated, record, revision, principal=principal, client_ip=client_ip
        )

    # -- POST and DELETE -------------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.StreamResponse:
        resolved = self._resolve(request, await self._admission.principal(request))
        if isinstance(resolved, Reply):
            return resolved.response()
        negotiated, caller = resolved
        if self._connections.is_websocket(negotiated.connection_token):
            return Reply.text(405, POST_TO_WEBSOCKET).response()
        body = await read_limited(request, self._max_frame_bytes)
        if self._owns(negotiated):
            reply = await self._connections.send(negotiated, body)
        else:
            reply = await self._forwarding.send(negotiated, caller, body)
        return reply.response()

    async def delete(self, request: web.Request) -> web.StreamResponse:
        resolved = self._resolve(request, await self._admission.principal(request))
        if isinstance(resolved, Reply):
            return resolved.response()
        negotiated, caller = resolved
        if self._connections.is_websocket(negotiated.connection_token):
            return Reply.text(400, DELETE_NOT_SUPPORTED).response()
        if self._owns(negotiated):
            reply = await self._long_polling.delete(negotiated)
        else:
            reply = await self._forwarding.delete(negotiated, caller)
        return reply.response()

    # -- shared ---------------------------------------------------------------------------------

    def _resolve(self, request: web.Request, principal: Principal) -> tuple[NegotiatedConnection, Caller] | Reply:
        """The connection ``?id=`` names (its start window may be over: later requests come any time)."""
        token = query_of(request).get("id")
        if not token:
            return Reply.text(400, CONNECTION_ID_REQUIRED)
        try:
            negotiated = self._signer.verify(token, user_id=principal.user_id, allow_expired=True)
        except InvalidConnectionToken:
            return unknown_connection()
        return negotiated, Caller(principal, self._admission.client_ip(request))

    def _owns(self, negotiated: NegotiatedConnection) -> bool:
        return negotiated.owner == self._signer.replica


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to be longer than ``limit`` bytes."""
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
