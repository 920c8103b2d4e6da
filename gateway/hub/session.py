"""A live hub connection as the hub and the fan-out router see it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.auth import Principal
from gateway.hub.outbound import SharedMessage, TransportLink
from gateway.signalr.connection import CloseReason, ServerConnection
from gateway.signalr.messages import HubMessage, Invocation

if TYPE_CHECKING:
    from gateway.hub.resumable import Resumable


class HubSession:
    """The sans-I/O :class:`ServerConnection` with identity, hub groups and its transport's link.

    Everything that queues output tells the link (:meth:`TransportLink.output_queued`); nothing here
    awaits a socket, so fan-out can call :meth:`deliver` for thousands of sessions in a loop.
    """

    __slots__ = (
        "_link",
        "_token_leeway",
        "_wall_clock",
        "client_ip",
        "connection",
        "connection_id",
        "connection_token",
        "groups",
        "hub_connected",
        "invocations_full_at",
        "principal",
        "resumable",
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
        self.resumable: Resumable | None = None
        """Set when the connection can be resumed on any replica (:mod:`gateway.hub.resumable`)."""
        self.hub_connected = False
        """The hub's connect logic ran (or the connection resumed here) and its disconnect logic has not."""
        self.invocations_full_at = 0.0
        """When the invocation rate's bucket is full again (:meth:`shared.rate_limit.Rate.take`)."""
        self._link = link
        self._token_leeway = token_leeway_seconds
        self._wall_clock = wall_clock

    @property
    def protocol_name(self) -> str:
        protocol = self.connection.protocol
        return protocol.name if protocol is not None else ""

    @property
    def user_id(self) -> str | None:
        return self.principal.user_id

    @property
    def connection_key(self) -> str:
        """The random id inside the connection token: the connection's name in NATS."""
        return self.connection_token.split(".", 1)[0]

    def deliver(self, message: SharedMessage, now: float, position: int) -> bool:
        """Hand a broadcast (encoded for this session's protocol) to the transport; never blocks."""
        resumable = self.resumable
        if resumable is not None and not resumable.admit(self, position, len(message.payload)):
            return True  # paused (a catch-up from the stream sends it), or a replay sent it already
        return self._link.write_shared(message, now)

    def write(self, message: SharedMessage, now: float) -> bool:
        """Hand an encoded message to the transport as it is (no numbering: the caller did that)."""
        return self._link.write_shared(message, now)

    def send(self, target: str, *arguments: Any) -> None:
        """Call a client method on this connection only (non-blocking invocation)."""
        self.send_message(Invocation(target=target, arguments=arguments))

    def send_message(self, message: HubMessage, *, inbound: int = 0) -> None:
        """Send ``message`` to this connection; ``inbound`` is the number of the client message it
        answers (resumable connections record it, so a resent request is not handled twice)."""
        resumable = self.resumable
        if resumable is not None:
            resumable.send(self, message, inbound)
            return
        self.connection.send(message, transport_buffered=self._link.buffered())
        self._link.output_queued()

    def processed(self, inbound: int) -> None:
        """The client message numbered ``inbound`` was handled without an answer."""
        resumable = self.resumable
        if resumable is not None:
            resumable.processed(self, inbound)

    def close(self, reason: CloseReason, *, error: str | None = None, allow_reconnect: bool = True) -> None:
        self.connection.close(reason, error=error, allow_reconnect=allow_reconnect)
        self._link.output_queued()

    def drop(self, reason: CloseReason) -> None:
        """End the transport without a Close message (a resumable connection's client then resumes)."""
        self.connection.drop(reason)
        self._link.output_queued()

    @property
    def unsent_bytes(self) -> int:
        """What the connection and its transport hold and have not yet sent."""
        return self.connection.pending_bytes + self._link.buffered()

    def notify_output(self) -> None:
        """Wake the transport if the connection has output queued or wants to close."""
        if self.connection.pending_bytes or self.connection.should_close:
            self._link.output_queued()

    def tick(self, now: float) -> None:
        """Run protocol timers and close the connection once its access token has expired."""
        if self._wall_clock() > self.principal.expires_at + self._token_leeway:
            self.close(CloseReason.TOKEN_EXPIRED, allow_reconnect=True)
        self.connection.tick(now, transport_buffered=self._link.buffered())
        if self.resumable is not None:
            self.resumable.tick(self)
        self.notify_output()
