"""CORS for browser dashboards served from another origin (exact-match allow-list).

The JS client sends credentials by default and custom headers, so an allowed origin is echoed
exactly with ``Access-Control-Allow-Credentials: true``. Preflights are answered by the middleware;
every other response gets its headers as it is prepared (the ``on_response_prepare`` signal), so a
streamed response such as a Server-Sent Events stream, whose headers go out before its handler
returns, carries them too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

ALLOWED_HEADERS: Final = "Authorization, Content-Type, X-Requested-With, X-SignalR-User-Agent"
ALLOWED_METHODS: Final = "GET, POST, DELETE, OPTIONS"
# Browsers cache a preflight this long (seconds), saving a round trip per negotiate.
PREFLIGHT_MAX_AGE: Final = "600"


class Cors:
    """Install with :meth:`install`: the preflight middleware and the response-prepare hook."""

    def __init__(self, origins: Collection[str]) -> None:
        self._allowed = frozenset(origins)

    def install(self, app: web.Application) -> None:
        allowed = self._allowed

        @web.middleware
        def preflight(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
            """A plain function returning the handler's awaitable: no frame of it stays suspended under
            a WebSocket's handler (see :func:`gateway.http.auth_middleware.auth_middleware`)."""
            if (
                request.method == hdrs.METH_OPTIONS
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
                and request.headers.get(hdrs.ORIGIN) in allowed
            ):
                return _preflight_answer()
            return handler(request)

        app.middlewares.append(preflight)
        app.on_response_prepare.append(self.add_headers)

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or origin not in self._allowed:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
        response.headers[hdrs.VARY] = hdrs.ORIGIN


async def _preflight_answer() -> web.StreamResponse:
    return web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE,
        },
    )
