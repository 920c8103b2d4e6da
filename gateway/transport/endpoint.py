"""``GET /hubs/admin``: the hub path, where a negotiated connection starts its transport.

``?id=<token>`` names a negotiated connection (verified by signature, on any replica); a WebSocket
upgrade without ``id`` opens a new connection on the spot (clients using ``skipNegotiation``).
Unknown or forged ids get 404, an id already open on this replica 409, requests for transports
this endpoint does not serve the ASP.NET answers.
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web

from gateway.http.auth_middleware import PRINCIPAL
from gateway.hub.host import HubHost
from gateway.hub.registry import DuplicateConnection
from gateway.paths import HUB_PATH
from gateway.transport.connection_token import ConnectionTokenSigner, InvalidConnectionToken
from gateway.transport.negotiate import SHUTTING_DOWN
from gateway.transport.websocket import WebSocketTransport

UNKNOWN_CONNECTION: Final = "No Connection with that ID"
ALREADY_CONNECTED: Final = "Connection already has a WebSocket"


class HubEndpoint:
    """Routes each request at the hub path to its transport."""

    def __init__(self, *, host: HubHost, signer: ConnectionTokenSigner, websocket: WebSocketTransport) -> None:
        self._host = host
        self._signer = signer
        self._websocket = websocket

    def routes(self) -> list[web.RouteDef]:
        return [web.get(HUB_PATH, self.get)]

    async def get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return _not_served(request)
        if not self._host.accepting:
            raise web.HTTPServiceUnavailable(text=SHUTTING_DOWN)
        user_id = request[PRINCIPAL].user_id
        token = request.query.get("id")
        try:
            if token is None:
                negotiated = self._signer.issue(user_id=user_id, negotiate_version=0)
            else:
                negotiated = self._signer.verify(token, user_id=user_id)
        except InvalidConnectionToken:
            return web.Response(status=404, text=UNKNOWN_CONNECTION)
        if negotiated.connection_token in self._host.registry:
            return web.Response(status=409, text=ALREADY_CONNECTED)
        try:
            return await self._websocket.serve(request, negotiated)
        except DuplicateConnection:  # opened by a concurrent request since the check above
            return web.Response(status=409, text=ALREADY_CONNECTED)


def _not_served(request: web.Request) -> web.Response:
    if request.headers.get(hdrs.ACCEPT, "").startswith("text/event-stream"):
        return web.Response(status=404, text="ServerSentEvents transport not supported by this end point type")
    if "id" not in request.query:
        return web.Response(status=400, text="Connection ID required")
    return web.Response(status=404, text="LongPolling transport not supported by this end point type")
