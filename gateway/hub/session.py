"""A live hub connection as the hub, the fan-out router and the transports see it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.auth import Principal
from gateway.hub.fanout import EncodedBroadcast
from gateway.signalr.connection import CloseReason, ServerConnection
from gateway.signalr.messages import HubMessage, Invocation
from gateway.transport.connection_token import NegotiatedConnection


class HubSession:
    """Wraps the sans-I/O :class:`ServerConnection` with identity, joined subjects and a wake-up signal.

    Everything that queues output calls :meth:`wake`; the transport's writer waits on it. Nothing
    here awaits a socket, so fan-out can call :meth:`deliver` for thousands of sessions in a loop.
    """

    def __init__(
        self,
        *,
        connection: ServerConnection,
        negotiated: NegotiatedConnection,
        principal: Principal,
        transport: str,
        token_leeway_seconds: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.connection_id = negotiated.connection_id
        self.connection_token = negotiated.connection_token
        self.principal = principal
        self.transport = transport
        self.subjects: set[str] = set()
        self.dropped_frames = 0
        # monotonic time of the oldest fan-out message queued but not yet written.
        self.oldest_fanout_at: float | None = None
        # Set by a transport that can write a fan-out frame synchronously (see deliver).
        self.write_now: Callable[[EncodedBroadcast], bool] | None = None
        self._token_deadline = principal.expires_at + token_leeway_seconds
        self._wall_clock = wall_clock
        # A woken flag and a future made only while the writer waits: an asyncio.Event would hold a
        # deque (over 600 bytes) for every idle connection.
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def protocol_name(self) -> str:
        protocol = self.connection.protocol
        return protocol.name if protocol is not None else ""

    @property
    def user_id(self) -> str | None:
        return self.principal.user_id

    def deliver(self, frame: EncodedBroadcast, received_at: float) -> bool:
        """Hand a fan-out message to the socket now if nothing is queued and the transport takes
        it; otherwise queue it for the writer. Returns True when it was written now."""
        write_now = self.write_now
        if write_now is not None and self.connection.can_write_directly() and write_now(frame):
            self.connection.note_sent(received_at)
            return True
        if not self.connection.send_encoded(frame.payload):
            self.dropped_frames += 1
        elif self.oldest_fanout_at is None:
            self.oldest_fanout_at = received_at
        self.wake()
        return False

    def send(self, target: str, *arguments: Any) -> None:
        """Call a client method on this connection only (non-blocking invocation)."""
        self.connection.send(Invocation(target=target, arguments=arguments))
        self.wake()

    def send_message(self, message: HubMessage) -> None:
        self.connection.send(message)
        self.wake()

    def close(self, reason: CloseReason, *, error: str | None = None, allow_reconnect: bool = True) -> None:
        self.connection.close(reason, error=error, allow_reconnect=allow_reconnect)
        self.wake()

    def tick(self, now: float) -> None:
        """Run protocol timers and close the connection once its access token has expired."""
        if self._wall_clock() > self._token_deadline:
            self.close(CloseReason.TOKEN_EXPIRED, allow_reconnect=True)
        self.connection.tick(now)
        if self.connection.pending_bytes or self.connection.should_close:
            self.wake()

    def wake(self) -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for_output(self) -> None:
        """Return once :meth:`wake` has been called since the last return (at once if it already was)."""
        if not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._woken = False
