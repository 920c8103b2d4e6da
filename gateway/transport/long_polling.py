"""Long polling, as the ASP.NET Core transport spec describes it, on the replica that owns the connection.

* The first ``GET ?id=`` starts the connection and answers ``200`` with no body at once.
* Every later poll answers as soon as there is output (``200``, ``application/octet-stream``, whole
  messages, at most ``max_poll_bytes`` unless one message is larger), with an empty ``200`` after
  ``poll_timeout_seconds``, or ``204`` when the connection is over or a newer poll took its place.
* ``DELETE ?id=`` ends the connection (``202``); the pending poll answers ``204``.
* A long-polling client neither pings nor expects pings (ASP.NET: inherent keep-alive), so the
  keep-alive, client-timeout and write-timeout timers are off for these connections; a connection
  nobody polls for ``disconnect_timeout_seconds`` is ended instead
  (:meth:`gateway.transport.http_connections.HttpConnections.sweep`), and one that lets more than
  the outbound limit pile up is cut as a slow consumer.

The same methods answer local requests and requests forwarded from other replicas; they return a
:class:`gateway.transport.replies.Reply` either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Final

from gateway.signalr.connection import ConnectionLimits
from gateway.signalr.protocol import TransferFormat
from gateway.transport.answers import CANNOT_CHANGE_TRANSPORT, DELETE_NOT_SUPPORTED
from gateway.transport.connection_token import NegotiatedConnection
from gateway.transport.http_connections import LONG_POLLING, Caller, HttpConnection, HttpConnections, never
from gateway.transport.replies import Reply, poll_reply, unknown_connection

TRANSFER_FORMATS: Final[tuple[TransferFormat, ...]] = ("Text", "Binary")
# The answer once a closing connection has delivered everything, the Close message included: the
# poll ends the connection and the client learns it is over.
_DELIVERED_ALL: Final = poll_reply(204)


def long_polling_limits(limits: ConnectionLimits) -> ConnectionLimits:
    """``limits`` without the timers a long-polling connection has no use for (see the module doc)."""
    return dataclasses.replace(
        limits, keep_alive_interval_seconds=math.inf, client_timeout_seconds=math.inf, write_timeout_seconds=math.inf
    )


class LongPolling:
    """Polls and DELETEs of long-polling connections owned by this replica."""

    def __init__(
        self,
        *,
        connections: HttpConnections,
        limits: ConnectionLimits,
        poll_timeout_seconds: float,
        max_poll_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` dates the end of each poll, for the disconnect timeout (the connections' clock)."""
        self._connections = connections
        self._limits = long_polling_limits(limits)
        self._poll_timeout = poll_timeout_seconds
        self._max_poll_bytes = max_poll_bytes
        self._clock = clock

    async def poll(
        self,
        negotiated: NegotiatedConnection,
        caller: Caller,
        *,
        client_gone: Callable[[], bool] = never,
        hold_seconds: float | None = None,
    ) -> Reply:
        """Answer one ``GET``; ``client_gone`` says whether the client of this request went away;
        ``hold_seconds`` shortens the poll timeout for this poll (a forwarded one)."""
        token = negotiated.connection_token
        entry = self._connections.get(token)
        if entry is None:
            if self._connections.is_websocket(token):
                return Reply.text(400, CANNOT_CHANGE_TRANSPORT)
            started = await self._connections.start(
                LONG_POLLING, negotiated, caller, limits=self._limits, transfer_formats=TRANSFER_FORMATS
            )
            # The first poll starts the connection and returns at once (the JS client requires 200).
            return started if isinstance(started, Reply) else poll_reply(200)
        if entry.transport != LONG_POLLING:
            return Reply.text(400, CANNOT_CHANGE_TRANSPORT)
        timeout = self._poll_timeout if hold_seconds is None else min(self._poll_timeout, hold_seconds)
        return await self._hold(entry, client_gone, seconds=timeout)

    async def _hold(self, entry: HttpConnection, client_gone: Callable[[], bool], *, seconds: float) -> Reply:
        entry.poll += 1
        number = entry.poll
        entry.outbox.wake()  # a poll still held answers 204: this one replaces it
        entry.idle_since = None
        entry.client_gone = client_gone
        try:
            try:
                async with asyncio.timeout(seconds):
                    while (reply := self._answer(entry, number, client_gone)) is None:
                        await entry.outbox.wait()
            except TimeoutError:
                reply = poll_reply(200)
            if reply is _DELIVERED_ALL:  # outside the timeout: ending the connection is never cut short
                await self._connections.end(entry)
            return reply
        finally:
            if entry.poll == number:
                entry.idle_since = self._clock()
                entry.client_gone = never

    def _answer(self, entry: HttpConnection, number: int, client_gone: Callable[[], bool]) -> Reply | None:
        """What the poll ``number`` answers now, or None to keep waiting."""
        if entry.poll != number or client_gone() or entry.ended:
            return poll_reply(204)
        if entry.outbox.waiting:
            return poll_reply(200, entry.outbox.take(self._max_poll_bytes))
        if entry.connection.should_close:
            return _DELIVERED_ALL
        return None

    async def delete(self, negotiated: NegotiatedConnection) -> Reply:
        """``DELETE``: end the connection; its pending poll answers 204."""
        token = negotiated.connection_token
        entry = self._connections.get(token)
        if entry is None:
            if self._connections.is_websocket(token):
                return Reply.text(400, DELETE_NOT_SUPPORTED)
            return unknown_connection()
        if entry.transport != LONG_POLLING:
            return Reply.text(400, DELETE_NOT_SUPPORTED)
        await self._connections.end(entry)
        return Reply(202)
