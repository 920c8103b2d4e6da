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
    def unauthorized(request: web.Request, error: AuthenticationError) -> web.HTTPUnauthorized:
        metrics.auth_failures.labels(status="401").inc()
        log.info("401 %s %s: %s", request.method, request.path, error.reason)
        return _unauthorized(error.reason)

    def token_of(request: web.Request) -> str:
        """The request's bearer token; raises 401."""
        try:
            token = bearer_token(request)
        except AuthenticationError as error:
            raise unauthorized(request, error) from None
        if token is None:
            metrics.auth_failures.labels(status="401").inc()
            raise web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: "Bearer"}, text="")
        return token

    def admit(request: web.Request, principal: Principal, handler: Handler) -> Awaitable[web.StreamResponse]:
        """The handler's answer for ``principal`` when it holds a required role; raises 403."""
        if not principal.has_any_role(required_roles):
            metrics.auth_failures.labels(status="403").inc()
            log.info("403 %s %s: token lacks a required role", request.method, request.path)
            raise web.HTTPForbidden(text="")
        request[PRINCIPAL] = principal
        return handler(request)

    async def after_key_refresh(request: web.Request, token: str, handler: Handler) -> web.StreamResponse:
        try:
            principal = await verifier.verify_after_key_refresh(token)
        except AuthenticationError as error:
            raise unauthorized(request, error) from None
        del token  # this frame lives as long as the handler runs
        return await admit(request, principal, handler)

    @web.middleware
    def authenticate(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        """A plain function returning the handler's awaitable, not a coroutine: a WebSocket's handler
        runs as long as the connection, and a coroutine frame of the middleware would stay suspended
        under it (about 250 bytes). Only a token whose key id is not known yet waits, for the keys."""
        if request.method == hdrs.METH_OPTIONS or not needs_authentication(request.path):
            return handler(request)
        token = token_of(request)
        try:
            principal = verifier.verify_with_current_keys(token)
        except AuthenticationError as error:
            raise unauthorized(request, error) from None
        if principal is None:
            return after_key_refresh(request, token, handler)
        return admit(request, principal, handler)

    return authenticate
