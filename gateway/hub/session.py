"""A live hub connection as the hub and the fan-out router see it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.auth import Principal
from gateway.hub.outbound import SharedMessage, TransportLink
from gateway.signalr.connection import CloseReason, ServerConnection
from gateway.signalr.messages import HubMessage, Invocation


class HubSession:
    """The sans-I/O :class:`ServerConnection` with identity, hub groups and its transport's link.

    Everything that queues output tells the link (:meth:`TransportLink.output_queued`); nothing here
    awaits a socket, so fan-out can call :meth:`deliver` for thousands of sessions in a loop.
    """

    __slots__ = (
        "_link",
        "_token_deadline",
        "_wall_clock",
        "client_ip",
        "connection",
        "connection_id",
        "connection_token",
        "groups",
        "principal",
        "transport",
    )

    def __init__(
        self,
        *,
        connection: ServerConnection,
        connection_id: str,
        connection_token: str,
        principal: Principal,
        client_ip: str,
        transport: str,
        link: TransportLink,
        token_leeway_seconds: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.connection_id = connection_id
        """The public id (what ``ConnectionEstablished`` and ``GetConnectionCount`` report)."""
        self.connection_token = connection_token
        """The secret routing key the transport requests carry (``id=``); the registry's key."""
        self.principal = principal
        self.client_ip = client_ip
        self.transport = transport
        self.groups: tuple[str, ...] = ()
        """The hub groups joined, in join order."""
        self._link = link
        self._token_deadline = principal.expires_at + token_leeway_seconds
        self._wall_clock = wall_clock

    @property
    def protocol_name(self) -> str:
        protocol = self.connection.protocol
        return protocol.name if protocol is not None else ""

    @property
    def user_id(self) -> str | None:
        return self.principal.user_id

    def deliver(self, message: SharedMessage, now: float) -> bool:
        """Hand a broadcast (encoded for this session's protocol) to the transport; never blocks."""
        return self._link.write_shared(message, now)

    def send(self, target: str, *arguments: Any) -> None:
        """Call a client method on this connection only (non-blocking invocation)."""
        self.send_message(Invocation(target=target, arguments=arguments))

    def send_message(self, message: HubMessage) -> None:
        self.connection.send(message, transport_buffered=self._link.buffered())
        self._link.output_queued()

    def close(self, reason: CloseReason, *, error: str | None = None, allow_reconnect: bool = True) -> None:
        self.connection.close(reason, error=error, allow_reconnect=allow_reconnect)
        self._link.output_queued()

    def notify_output(self) -> None:
        """Wake the transport if the connection has output queued or wants to close."""
        if self.connection.pending_bytes or self.connection.should_close:
            self._link.output_queued()

    def tick(self, now: float) -> None:
        """Run protocol timers and close the connection once its access token has expired."""
        if self._wall_clock() > self._token_deadline:
            self.close(CloseReason.TOKEN_EXPIRED, allow_reconnect=True)
        self.connection.tick(now, transport_buffered=self._link.buffered())
        self.notify_output()
