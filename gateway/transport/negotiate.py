"""``POST /hubs/admin/negotiate``: hands out a connection id and a signed connection token.

Version selection follows ASP.NET: no ``negotiateVersion`` means 0 (pysignalr, signalrcore), a
higher request is answered with 1, a non-integer or negative one gets a JSON ``error`` with HTTP
200. Only transports that work are advertised (WebSockets, Text and Binary).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.http.auth_middleware import PRINCIPAL
from gateway.http.responses import json_response
from gateway.paths import NEGOTIATE_PATH
from gateway.transport.admission import Admission
from gateway.transport.connection_token import ConnectionTokenSigner

MAX_NEGOTIATE_VERSION: Final = 1
AVAILABLE_TRANSPORTS: Final = ({"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},)
NO_CACHE: Final = {"Cache-Control": "no-cache, no-store"}


def query_value(request: web.Request, name: str) -> str | None:
    """Query parameters are matched case-insensitively, as ASP.NET does."""
    wanted = name.lower()
    for key, value in request.query.items():
        if key.lower() == wanted:
            return value
    return None


def select_version(raw: str | None) -> int | str:
    """The version to answer with, or the error text for the client."""
    if raw is None:
        return 0
    try:
        requested = int(raw)
    except ValueError:
        return "The client requested a non-integer protocol version."
    if requested < 0:
        return f"The client requested version '{requested}', but the server does not support this version."
    return min(requested, MAX_NEGOTIATE_VERSION)


class NegotiateEndpoint:
    """Issues connection tokens any replica can verify (see :mod:`gateway.transport.connection_token`)."""

    def __init__(self, *, admission: Admission, signer: ConnectionTokenSigner) -> None:
        self._admission = admission
        self._signer = signer

    def routes(self) -> list[web.RouteDef]:
        return [web.post(NEGOTIATE_PATH, self.negotiate)]

    async def negotiate(self, request: web.Request) -> web.Response:
        user_id = request[PRINCIPAL].user_id
        refusal = self._admission.refuse_negotiate(request, user_id)
        if refusal is not None:
            return refusal
        version = select_version(query_value(request, "negotiateVersion"))
        if isinstance(version, str):
            return json_response({"error": version}, headers=NO_CACHE)
        negotiated = self._signer.issue(user_id=user_id, negotiate_version=version)
        body: dict[str, Any] = {"negotiateVersion": version, "connectionId": negotiated.connection_id}
        if version > 0:
            body["connectionToken"] = negotiated.connection_token
        body["availableTransports"] = AVAILABLE_TRANSPORTS
        return json_response(body, headers=NO_CACHE)
