"""``GET /hubs/admin``: the hub path, where a negotiated connection starts its transport.

``?id=<token>`` names a negotiated connection (verified by signature, on any replica); a WebSocket
upgrade without ``id`` opens a new connection on the spot (clients using ``skipNegotiation``).
Unknown or forged ids get 404; an id whose transport already started, here or on any other replica,
409 (:mod:`gateway.transport.claims`); requests over a connection limit 429
(:mod:`gateway.transport.admission`); requests for transports this endpoint does not serve the
ASP.NET answers.
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web

from broker_bridge.interface import BrokerUnavailable
from gateway.http.auth_middleware import PRINCIPAL
from gateway.hub.host import HubHost
from gateway.hub.registry import DuplicateConnection
from gateway.hub.resumable import ResumableConnections
from gateway.paths import HUB_PATH
from gateway.signalr.connection import CloseReason
from gateway.transport.admission import Admission
from gateway.transport.answers import ALREADY_CONNECTED, BROKER_UNAVAILABLE, UNKNOWN_CONNECTION
from gateway.transport.claims import ConnectionClaims
from gateway.transport.connection_token import ConnectionTokenSigner, InvalidConnectionToken, NegotiatedConnection
from gateway.transport.websocket import WebSocketTransport

# How long a resume waits for a half-open socket of the same connection on this replica to end.
STALE_SESSION_WAIT_SECONDS: Final = 2.0


class HubEndpoint:
    """Routes each request at the hub path to its transport."""

    def __init__(
        self,
        *,
        host: HubHost,
        admission: Admission,
        claims: ConnectionClaims,
        signer: ConnectionTokenSigner,
        websocket: WebSocketTransport,
        resumables: ResumableConnections | None = None,
    ) -> None:
        self._host = host
        self._admission = admission
        self._claims = claims
        self._signer = signer
        self._websocket = websocket
        self._resumables = resumables

    def routes(self) -> list[web.RouteDef]:
        return [web.get(HUB_PATH, self.get)]

    async def get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return _not_served(request)
        user_id = request[PRINCIPAL].user_id
        client_ip = self._admission.client_ip(request)
        token = request.query.get("id")
        if token is None:  # skipNegotiation: a new connection, admitted like a negotiate
            refusal = self._admission.refuse_negotiate(request, user_id)
            if refusal is not None:
                return refusal
            negotiated = self._signer.issue(user_id=user_id, negotiate_version=0)
        else:
            try:
                negotiated = self._signer.verify(token, user_id=user_id, allow_expired=True)
            except InvalidConnectionToken:
                return web.Response(status=404, text=UNKNOWN_CONNECTION)
            if negotiated.stateful and self._resumables is not None:
                resumed = await self._resume(request, negotiated, user_id, client_ip)
                if resumed is not None:
                    return resumed
            if not self._signer.fresh(negotiated):
                return web.Response(status=404, text=UNKNOWN_CONNECTION)
            if negotiated.connection_token in self._host.registry:
                return web.Response(status=409, text=ALREADY_CONNECTED)
            refusal = self._admission.refuse_connection(client_ip, user_id)
            if refusal is not None:
                return refusal
            if not await self._claims.claim(negotiated.key):
                return web.Response(status=409, text=ALREADY_CONNECTED)
        try:
            return await self._websocket.serve(request, negotiated, client_ip=client_ip)
        except DuplicateConnection:  # opened by a concurrent request since the check above
            return web.Response(status=409, text=ALREADY_CONNECTED)

    async def _resume(
        self, request: web.Request, negotiated: NegotiatedConnection, user_id: str | None, client_ip: str
    ) -> web.StreamResponse | None:
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
        if record.user_id != user_id or not resumables.resumable_now(record):
            resumables.count("expired")
            return web.Response(status=404, text=UNKNOWN_CONNECTION)
        return await self._websocket.resume(request, negotiated, record, revision, client_ip=client_ip)


def _not_served(request: web.Request) -> web.Response:
    if request.headers.get(hdrs.ACCEPT, "").startswith("text/event-stream"):
        return web.Response(status=404, text="ServerSentEvents transport not supported by this end point type")
    if "id" not in request.query:
        return web.Response(status=400, text="Connection ID required")
    return web.Response(status=404, text="LongPolling transport not supported by this end point type")
