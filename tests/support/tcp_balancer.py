"""A round-robin TCP load balancer for tests: each client connection goes to the next live upstream.

Like an L4 balancer without affinity, it knows nothing of HTTP: a negotiate and the WebSocket that
follows, or a resumed WebSocket, may land on different gateways. An upstream that refuses the
connection is skipped; when an upstream dies, its relayed connections end with it::

    async with TcpBalancer([a.port, b.port, c.port]) as balancer:
        url = f"http://127.0.0.1:{balancer.port}/hubs/admin"
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from scripts.processes import LOCALHOST

RELAY_CHUNK_BYTES: Final = 65536


class TcpBalancer:
    def __init__(self, upstream_ports: Sequence[int]) -> None:
        self._upstreams = list(upstream_ports)
        self._next = itertools.cycle(range(len(self._upstreams)))
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self.port = 0
        self.routed: list[int] = []
        """The upstream port of every connection relayed, in order."""

    async def __aenter__(self) -> TcpBalancer:
        self._server = await asyncio.start_server(self._accept, LOCALHOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object | TracebackType) -> None:
        if self._server is not None:
            self._server.close()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            upstream = await self._connect()
            if upstream is None:
                return
            up_reader, up_writer = upstream
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        finally:
            self._relays.discard(task)
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self._upstreams)):
            port = self._upstreams[next(self._next)]
            try:
                connection = await asyncio.open_connection(LOCALHOST, port)
            except OSError:
                continue
            self.routed.append(port)
            return connection
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.close()
