"""A recording stand-in for a transport's link, for component tests of the hub without sockets, and
a session on one."""

from __future__ import annotations

import asyncio
import time

from gateway.auth import Principal
from gateway.hub.outbound import SharedMessage
from gateway.hub.session import HubSession
from gateway.signalr.connection import ConnectionLimits, ServerConnection, SharedSend


class RecordingLink:
    """Implements :class:`gateway.hub.outbound.TransportLink` over an in-memory "wire".

    Broadcasts the connection lets through go onto :attr:`wire` at once, as a socket write would; the
    wire counts as the transport's unsent buffer until :meth:`take_output` (the client reading) empties
    it, so a client that never reads is cut as slow. :meth:`take_output` returns everything sent since
    the last call, in order (the wire first: anything queued on the connection was queued after the last
    direct write).
    """

    def __init__(self) -> None:
        self.connection: ServerConnection | None = None
        self.wire = bytearray()
        self.wakeups = 0
        self._woken = asyncio.Event()
        self._changed = asyncio.Event()

    def bind(self, connection: ServerConnection) -> None:
        self.connection = connection

    def write_shared(self, message: SharedMessage, now: float) -> bool:
        assert self.connection is not None
        if self.connection.send_shared(message.payload, now, transport_buffered=len(self.wire)) is SharedSend.WRITE_NOW:
            self.wire += message.payload
            self._changed.set()
            return True
        self.output_queued()
        return False

    def output_queued(self) -> None:
        self.wakeups += 1
        self._woken.set()
        self._changed.set()

    def buffered(self) -> int:
        return len(self.wire)

    def take_output(self) -> bytes:
        assert self.connection is not None
        data = bytes(self.wire) + self.connection.data_to_send(time.monotonic())
        self.wire.clear()
        return data

    async def wait_for_output(self) -> None:
        await self._woken.wait()
        self._woken.clear()

    async def changed(self) -> None:
        """Return at the next write or wake-up (at once if there was one since the last call)."""
        await self._changed.wait()
        self._changed.clear()


def linked_session(
    *, key: str, user_id: str | None, name: str | None = None, link: RecordingLink | None = None
) -> HubSession:
    """An Admin's session (not yet shaken hands) on ``link`` (a new :class:`RecordingLink` by default)."""
    connection = ServerConnection(limits=ConnectionLimits(), now=time.monotonic(), transfer_formats=("Text",))
    link = link or RecordingLink()
    link.bind(connection)
    return HubSession(
        connection=connection,
        connection_id=f"id-{key}",
        connection_token=key,
        principal=Principal(user_id, name, frozenset({"Admin"}), time.time() + 3600),
        client_ip="192.0.2.1",
        transport="test",
        link=link,
        token_leeway_seconds=0,
    )
