"""CORS for browser dashboards served from another origin (exact-match allow-list).

The JS client sends credentials by default and custom headers, so an allowed origin is echoed
exactly with ``Access-Control-Allow-Credentials: true``; preflights are answered here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

ALLOWED_HEADERS: Final = "Authorization, Content-Type, X-Requested-With, X-SignalR-User-Agent"
ALLOWED_METHODS: Final = "GET, POST, DELETE, OPTIONS"
# Browsers cache a preflight this long (seconds), saving a round trip per negotiate.
PREFLIGHT_MAX_AGE: Final = "600"


def cors_middleware(origins: Collection[str]) -> Middleware:
    allowed = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or origin not in allowed:
            return await handler(request)
        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ALLOWED_METHODS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = PREFLIGHT_MAX_AGE
        else:
            try:
                response = await handler(request)
            except web.HTTPException as error:
                response = error
                _allow(response, origin)
                raise
        _allow(response, origin)
        return response

    return cors


def _allow(response: web.StreamResponse, origin: str) -> None:
    if response.prepared:  # a WebSocket upgrade: headers are already sent and CORS does not apply
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
    response.headers[hdrs.VARY] = hdrs.ORIGIN
