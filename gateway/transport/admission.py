"""Who may start a connection: an authenticated caller holding a required role, not while draining,
within the per-user and per-IP caps of this replica, and within the negotiate rate per client IP.

Refusals are answered as the API's other errors are: 429 problem+json with ``Retry-After`` (seconds),
503 while the replica drains. Each refusal is counted in ``realtime_limit_refusals_total{limit}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from aiohttp import web

from gateway.auth import Principal
from gateway.http.auth_middleware import Authenticator
from gateway.http.client_address import ClientAddress
from gateway.http.responses import too_many_requests
from gateway.hub.host import HubHost
from gateway.metrics import GatewayMetrics
from shared.rate_limit import KeyedBuckets, Rate

# Connections close at the client's pace, so a refused client is told to come back in a while.
CONNECTION_CAP_RETRY_AFTER_SECONDS: Final = 10
SHUTTING_DOWN: Final = "Server is shutting down"


class Admission:
    """Decides on negotiate requests and transport starts; returns the refusal to send, or None."""

    def __init__(
        self,
        *,
        host: HubHost,
        authenticator: Authenticator,
        client_address: ClientAddress,
        max_connections_per_user: int,
        max_connections_per_ip: int,
        negotiate_rate: Rate,
        max_tracked_ips: int,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._authenticator = authenticator
        self._client_address = client_address
        self._max_per_user = max_connections_per_user
        self._max_per_ip = max_connections_per_ip
        self._negotiations = KeyedBuckets(negotiate_rate, max_keys=max_tracked_ips)
        self._metrics = metrics
        self._clock = clock

    async def principal(self, request: web.Request) -> Principal:
        """Who a request at the hub comes from; raises 401 or 403 (:class:`Authenticator`)."""
        return await self._authenticator.principal(request)

    def client_ip(self, request: web.BaseRequest) -> str:
        return self._client_address.of(request)

    def refuse_negotiate(self, request: web.Request, user_id: str | None) -> web.Response | None:
        """A new connection id is asked for (negotiate, or a WebSocket without ``id``)."""
        if not self._host.accepting:
            return _shutting_down()
        client_ip = self.client_ip(request)
        wait = self._negotiations.take(client_ip, self._clock())
        if wait is not None:
            return self._refuse("negotiate_rate", "Too many connection attempts from this address.", wait)
        return self.refuse_connection(client_ip, user_id)

    def refuse_connection(self, client_ip: str, user_id: str | None) -> web.Response | None:
        """A transport is about to start for a user from an address."""
        if not self._host.accepting:
            return _shutting_down()
        registry = self._host.registry
        if registry.open_for_user(user_id) >= self._max_per_user:
            detail = f"This user already has {self._max_per_user} connections open on this server."
            return self._refuse("connections_per_user", detail, CONNECTION_CAP_RETRY_AFTER_SECONDS)
        if registry.open_for_ip(client_ip) >= self._max_per_ip:
            detail = f"This address already has {self._max_per_ip} connections open on this server."
            return self._refuse("connections_per_ip", detail, CONNECTION_CAP_RETRY_AFTER_SECONDS)
        return None

    def _refuse(self, limit: str, detail: str, retry_after: float) -> web.Response:
        self._metrics.limit_refusals.labels(limit=limit).inc()
        return too_many_requests(detail, retry_after)


def _shutting_down() -> web.Response:
    return web.Response(status=503, text=SHUTTING_DOWN)
