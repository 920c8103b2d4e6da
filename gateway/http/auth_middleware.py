"""Authentication: bearer tokens on the hub and the REST API, roles enforced on both.

:class:`Authenticator` decides; the REST API gets it through :func:`auth_middleware`, the hub's
handlers (negotiate and the transports) call it themselves.

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
from gateway.http.request_parts import path_of, query_of
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
    if path_of(request).startswith(HUB_PREFIX):
        return query_of(request).get("access_token") or None
    return None


def _unauthorized(description: str) -> web.HTTPUnauthorized:
    challenge = f'Bearer error="invalid_token", error_description="{description}"'
    return web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: challenge}, text="")


class Authenticator:
    """Who a request comes from: its bearer token verified and one of ``required_roles`` held, else 401
    (``web.HTTPUnauthorized`` with a ``Bearer`` challenge) or 403 (``web.HTTPForbidden``) is raised,
    counted in ``realtime_auth_failures_total`` and logged with the reason only."""

    def __init__(self, verifier: TokenVerifier, *, required_roles: Collection[str], metrics: GatewayMetrics) -> None:
        self._verifier = verifier
        self._required_roles = required_roles
        self._metrics = metrics

    def _unauthorized(self, request: web.Request, error: AuthenticationError) -> web.HTTPUnauthorized:
        self._metrics.auth_failures.labels(status="401").inc()
        log.info("401 %s %s: %s", request.method, request.path, error.reason)
        return _unauthorized(error.reason)

    def _token(self, request: web.Request) -> str:
        try:
            token = bearer_token(request)
        except AuthenticationError as error:
            raise self._unauthorized(request, error) from None
        if token is None:
            self._metrics.auth_failures.labels(status="401").inc()
            raise web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: "Bearer"}, text="")
        return token

    def _admitted(self, request: web.Request, principal: Principal) -> Principal:
        if not principal.has_any_role(self._required_roles):
            self._metrics.auth_failures.labels(status="403").inc()
            log.info("403 %s %s: token lacks a required role", request.method, request.path)
            raise web.HTTPForbidden(text="")
        return principal

    def now(self, request: web.Request) -> Principal | None:
        """The request's principal, decided without waiting; None when the token's key id is not known
        yet (then :meth:`after_key_refresh` decides)."""
        try:
            principal = self._verifier.verify_with_current_keys(self._token(request))
        except AuthenticationError as error:
            raise self._unauthorized(request, error) from None
        return None if principal is None else self._admitted(request, principal)

    async def after_key_refresh(self, request: web.Request) -> Principal:
        try:
            principal = await self._verifier.verify_after_key_refresh(self._token(request))
        except AuthenticationError as error:
            raise self._unauthorized(request, error) from None
        return self._admitted(request, principal)

    async def principal(self, request: web.Request) -> Principal:
        """The request's principal (waiting for the keys only when its key id is not known yet)."""
        return self.now(request) or await self.after_key_refresh(request)


def auth_middleware(authenticator: Authenticator) -> Middleware:
    """Authenticates the REST API and the published contracts, and puts the principal in the request
    (:data:`PRINCIPAL`). The hub's handlers authenticate themselves and pass the principal on as an
    argument: a WebSocket request lives as long as its connection, and a principal stored in the
    request would cost each one about 160 bytes."""

    async def after_key_refresh(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[PRINCIPAL] = await authenticator.after_key_refresh(request)
        return await handler(request)

    @web.middleware
    def authenticate(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        """A plain function returning the handler's awaitable, not a coroutine: no frame of it stays
        suspended while the handler runs. Only a token whose key id is not known yet waits, for the keys."""
        path = path_of(request)
        if request.method == hdrs.METH_OPTIONS or not needs_authentication(path) or path.startswith(HUB_PREFIX):
            return handler(request)
        principal = authenticator.now(request)
        if principal is None:
            return after_key_refresh(request, handler)
        request[PRINCIPAL] = principal
        return handler(request)

    return authenticate
