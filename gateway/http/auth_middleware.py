"""The authentication middleware: bearer tokens on the hub and the REST API, roles enforced on both.

* Token from ``Authorization: Bearer <token>``; on ``/hubs/`` paths only, from the ``access_token``
  query parameter when there is no header (browsers cannot set headers on WebSocket requests).
* No token or a bad token: 401 with ``WWW-Authenticate: Bearer`` (and a safe ``error_description``);
  a valid token without one of the required roles: 403. Bodies are empty, as ASP.NET Core's are.
* The token itself is never logged; rejections are logged at INFO with the reason only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from gateway.auth import AuthenticationError, Principal, TokenVerifier
from gateway.metrics import GatewayMetrics
from gateway.paths import HUB_PREFIX, needs_authentication

log = logging.getLogger(__name__)

PRINCIPAL: Final = web.RequestKey("principal", Principal)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_token(request: web.Request) -> str | None:
    """The bearer token of a request, or None; raises AuthenticationError on a malformed header."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("Authorization header is not a bearer token")
        return token.strip()
    if request.path.startswith(HUB_PREFIX):
        return request.query.get("access_token") or None
    return None


def _unauthorized(description: str) -> web.HTTPUnauthorized:
    challenge = f'Bearer error="invalid_token", error_description="{description}"'
    return web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: challenge}, text="")


def auth_middleware(verifier: TokenVerifier, *, required_roles: Collection[str], metrics: GatewayMetrics) -> Middleware:
    async def authorized(request: web.Request) -> Principal:
        """The request's principal with a required role; raises 401 or 403. A coroutine of its own so
        that the token and claims it reads are not held by the middleware's frame while the handler
        runs (a WebSocket's handler runs as long as the connection)."""
        try:
            token = bearer_token(request)
            if token is None:
                metrics.auth_failures.labels(status="401").inc()
                raise web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: "Bearer"}, text="")
            principal = await verifier.verify(token)
        except AuthenticationError as error:
            metrics.auth_failures.labels(status="401").inc()
            log.info("401 %s %s: %s", request.method, request.path, error.reason)
            raise _unauthorized(error.reason) from None
        if not principal.has_any_role(required_roles):
            metrics.auth_failures.labels(status="403").inc()
            log.info("403 %s %s: token lacks a required role", request.method, request.path)
            raise web.HTTPForbidden(text="")
        return principal

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS or not needs_authentication(request.path):
            return await handler(request)
        request[PRINCIPAL] = await authorized(request)
        return await handler(request)

    return authenticate
