"""``POST /hubs/admin/negotiate``: hands out a connection id and a signed connection token.

Version selection follows ASP.NET: no ``negotiateVersion`` means 0 (pysignalr, signalrcore), a
higher request is answered with 1, a non-integer or negative one gets a JSON ``error`` with HTTP
200. Only transports that work are advertised (WebSockets, Text and Binary).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.context import CONTEXT
from gateway.http.auth_middleware import PRINCIPAL
from shared import jsoncodec

MAX_NEGOTIATE_VERSION: Final = 1
AVAILABLE_TRANSPORTS: Final = ({"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},)


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


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(
        body=jsoncodec.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-cache, no-store"},
    )


async def negotiate(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    if context.readiness.draining:
        raise web.HTTPServiceUnavailable(text="Server is shutting down")
    version = select_version(query_value(request, "negotiateVersion"))
    if isinstance(version, str):
        return _json({"error": version})
    negotiated = context.signer.issue(user_id=request[PRINCIPAL].user_id, negotiate_version=version)
    body: dict[str, Any] = {"negotiateVersion": version, "connectionId": negotiated.connection_id}
    if version > 0:
        body["connectionToken"] = negotiated.connection_token
    body["availableTransports"] = AVAILABLE_TRANSPORTS
    return _json(body)
