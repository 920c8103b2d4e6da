"""The long-polling and Server-Sent Events connections this replica owns.

A connection token names the replica that negotiated it (its owner); every long-polling and
Server-Sent Events request of the connection is served there, sent by the client to whichever
replica the load balancer picked and forwarded if that is not the owner
(:mod:`gateway.transport.forwarding`). So the owner alone knows whether the connection has started,
which transport it uses and whether a poll is pending, exactly as an ASP.NET server does.

Here: starting a connection (the first poll, or the event-stream GET: within the connect window,
admitted by the owner's limits, claimed once across replicas), sending to it (the POST half both
transports share, one body at a time), ending it once, and the once-a-second sweep that ends a
long-polling connection nobody polls for ``disconnect_timeout_seconds`` (ASP.NET's
DisconnectTimeout) and notices requests whose client went away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final, Literal

from gateway.auth import Principal
from gateway.hub.session import HubSession
from gateway.signalr.connection import ConnectionLimits, ServerConnection
from gateway.signalr.protocol import TransferFormat
from gateway.transport.answers import CANNOT_CHANGE_TRANSPORT, POST_TO_WEBSOCKET
from gateway.transport.connection_token import NegotiatedConnection
from gateway.transport.outbox import Outbox
from gateway.transport.replies import Reply, unknown_connection
from gateway.transport.services import TransportServices

log = logging.getLogger(__name__)

HttpTransport = Literal["LongPolling", "ServerSentEvents"]
LONG_POLLING: Final = "LongPolling"
SERVER_SENT_EVENTS: Final = "ServerSentEvents"
# The ``transport`` label of sessions and of ``realtime_connections`` (WebSockets: "websockets").
SESSION_LABELS: Final[dict[HttpTransport, str]] = {
    "LongPolling": "longpolling",
    "ServerSentEvents": "serversentevents",
}
BODY_TOO_LARGE: Final = "Request body too large"
SWEEP_INTERVAL_SECONDS: Final = 1.0  # ASP.NET scans for inactive connections once a second too


def never() -> bool:
    """The client-gone check of a forwarded request: the owner cannot see that client."""
    return False


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the access token's principal and the client address the receiving replica saw."""

    principal: Principal
    client_ip: str

    @property
    def user_id(self) -> str | None:
        return self.principal.user_id


class HttpConnection:
    """One long-polling or Server-Sent Events connection on its owner."""

    __slots__ = ("client_gone", "ended", "idle_since", "outbox", "poll", "receiving", "sending", "session", "transport")

    def __init__(self, transport: HttpTransport, session: HubSession, outbox: Outbox, now: float) -> None:
        self.transport: HttpTransport = transport
        self.session = session
        self.outbox = outbox
        self.sending = asyncio.Lock()
        """Held while a POST body is fed to the hub: bodies are handled one at a time, in order."""
        self.receiving: asyncio.Task[None] | None = None
        self.poll = 0
        """Number of the latest poll: a newer poll makes an older one answer 204."""
        self.idle_since: float | None = now
        """Long polling: when the last poll ended; None while one is held."""
        self.client_gone: Callable[[], bool] = never
        """Whether the client of the request now serving this connection (poll, stream) went away."""
        self.ended = False

    @property
    def connection(self) -> ServerConnection:
        return self.session.connection


class HttpConnections:
    """The table of HTTP-transport connections by connection token, and what every transport shares."""

    def __init__(
        self,
        *,
        services: TransportServices,
        max_frame_bytes: int,
        disconnect_timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._services = services
        self._host = services.host
        self._max_frame_bytes = max_frame_bytes
        self._disconnect_timeout = disconnect_timeout_seconds
        self._clock = clock
        self._connections: dict[str, HttpConnection] = {}

    def get(self, token: str) -> HttpConnection | None:
        return self._connections.get(token)

    def is_websocket(self, token: str) -> bool:
        """Whether ``token`` is a WebSocket connection open on this replica."""
        return token in self._host.registry and token not in self._connections

    def __len__(self) -> int:
        return len(self._connections)

    async def start(
        self,
        transport: HttpTransport,
        negotiated: NegotiatedConnection,
        caller: Caller,
        *,
        limits: ConnectionLimits,
        transfer_formats: Collection[TransferFormat],
    ) -> HttpConnection | Reply:
        """Open a connection for its first request, or the answer refusing it."""
        token = negotiated.connection_token
        services = self._services
        if not services.signer.fresh(negotiated):  # it starts within the connect window; later requests any time
            return unknown_connection()
        refusal = services.admission.refuse_connection(caller.client_ip, caller.user_id)
        if refusal is not None:
            return Reply.of(refusal)
        if not await services.claims.claim(negotiated.key):
            # Started before, here or on another replica (ASP.NET: a disposed connection is unknown).
            return unknown_connection()
        if token in self._host.registry:  # a WebSocket with this token opened here meanwhile
            return Reply.text(400, CANNOT_CHANGE_TRANSPORT)
        connection = ServerConnection(limits=limits, now=self._clock(), transfer_formats=transfer_formats)
        outbox = Outbox(connection)
        session = services.session(
            negotiated,
            connection,
            outbox,
            principal=caller.principal,
            client_ip=caller.client_ip,
            transport=SESSION_LABELS[transport],
        )
        self._host.add(session)
        entry = self._connections[token] = HttpConnection(transport, session, outbox, self._clock())
        return entry

    async def send(self, negotiated: NegotiatedConnection, body: bytes | None) -> Reply:
        """The POST half of both transports: feed ``body`` (None: over ``max_frame_bytes``) to the hub.

        Answers once the hub has taken every message of the body, so a client that sends faster than
        its invocations run waits (back-pressure, as with a WebSocket that is not read).
        """
        token = negotiated.connection_token
        entry = self._connections.get(token)
        if entry is None:
            if token in self._host.registry:
                return Reply.text(405, POST_TO_WEBSOCKET)
            return unknown_connection()
        if body is None:
            # As for an oversized WebSocket message: Close with an error, which the client reads from
            # its poll or event stream and reconnects after.
            entry.connection.frame_too_large(self._max_frame_bytes)
            entry.session.notify_output()
            return Reply.text(413, BODY_TOO_LARGE)
        async with entry.sending:
            if entry.ended:
                return unknown_connection()
            # In a task of its own, so that ending the connection stops the body's handling at once
            # and the POST is answered as for an unknown connection.
            receiving = entry.receiving = asyncio.ensure_future(self._host.receive(entry.session, body))
            try:
                await receiving
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if receiving.cancelled() and entry.ended and (current is None or not current.cancelling()):
                    return unknown_connection()
                raise
            finally:
                entry.receiving = None
        return Reply(200)

    async def end(self, entry: HttpConnection) -> None:
        """End ``entry`` once: whatever waits on it (a poll, a stream, a POST) stops, the hub forgets it."""
        if entry.ended:
            return
        entry.ended = True
        token = entry.session.connection_token
        if self._connections.get(token) is entry:
            del self._connections[token]
        entry.connection.mark_closed()
        entry.outbox.detach()
        entry.outbox.wake()
        if entry.receiving is not None:
            entry.receiving.cancel()
        await self._host.end(entry.session)

    async def sweep(self) -> None:
        """Wake requests whose client left; end long-polling connections not polled for the disconnect timeout."""
        now = self._clock()
        for entry in list(self._connections.values()):
            if entry.client_gone():
                entry.outbox.wake()
            idle_since = entry.idle_since
            if (
                entry.transport == LONG_POLLING
                and idle_since is not None
                and now - idle_since >= self._disconnect_timeout
            ):
                log.debug(
                    "long-polling connection %s not polled for %.0f s",
                    entry.session.connection_id,
                    now - idle_since,
                )
                await self.end(entry)

    async def run_timers(self) -> None:
        """Sweep once a second until cancelled."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            await self.sweep()
