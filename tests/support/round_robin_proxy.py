"""A round-robin HTTP and WebSocket proxy for tests: a plain load balancer without session affinity.

Each request - every poll, POST, DELETE, event-stream GET and WebSocket upgrade - goes to the next
upstream in turn, with ``X-Forwarded-For``. Responses are streamed back as they arrive (Server-Sent
Events, long polls), WebSocket messages are relayed both ways, and a refused upgrade gets the
upstream's status::

    async with RoundRobinProxy([a.base_url, b.base_url, c.base_url]) as proxy:
        hub_url = proxy.url + "/hubs/admin"
        proxy.take_out(1)       # no new request goes to upstream 1 ...
        proxy.put_back(1)       # ... until it is put back
        await proxy.sever(1)    # every open exchange with upstream 1 is cut at once, as a network
                                # failure would: client sockets aborted (no close frame, no final
                                # chunk), upstream connections closed; new requests still go there

``block_websockets=True`` answers every upgrade 403, like a proxy that does not pass WebSockets;
``block_event_streams=True`` answers every ``Accept: text/event-stream`` GET 403.

Synchronous code (Playwright's sync API) runs one in a thread of its own:
``with RoundRobinProxy.running([...]) as proxy:`` gives the same ``url``, ``take_out``, ``put_back``
and a blocking ``sever``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Final

import aiohttp
from aiohttp import WSMsgType, hdrs, web

# Headers that belong to one hop (RFC 9110 section 7.6.1) or that the proxy sets again.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# How long a WebSocket closing handshake may take once one side started it.
CLOSING_HANDSHAKE_SECONDS: Final = 5.0
# Handshake headers the upstream WebSocket client makes itself.
WEBSOCKET_HANDSHAKE: Final = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept"}
)


class RoundRobinProxy:
    """See the module docstring; ``upstreams`` are base URLs (``http://127.0.0.1:<port>``)."""

    def __init__(
        self, upstreams: Sequence[str], *, block_websockets: bool = False, block_event_streams: bool = False
    ) -> None:
        if not upstreams:
            raise ValueError("name at least one upstream")
        self.upstreams = [url.rstrip("/") for url in upstreams]
        self.block_websockets = block_websockets
        self.block_event_streams = block_event_streams
        self.requests = [0] * len(self.upstreams)
        """How many requests (upgrades included) each upstream was sent."""
        self._turn = itertools.count()
        self._out: set[int] = set()
        # Open exchanges per upstream: what to cut when it is severed.
        self._open: list[set[_Exchange]] = [set() for _ in self.upstreams]
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=5),
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
        )
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        for index in range(len(self.upstreams)):
            await self.sever(index)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> RoundRobinProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @classmethod
    @contextlib.contextmanager
    def running(cls, upstreams: Sequence[str], **options: Any) -> Iterator[ThreadedProxy]:
        """The proxy on an event loop in a thread of its own, for synchronous callers."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="round-robin-proxy", daemon=True)
        thread.start()
        proxy = cls(upstreams, **options)
        try:
            asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout=10)
            yield ThreadedProxy(proxy, loop)
        finally:
            asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    # -- control --------------------------------------------------------------------------------

    def take_out(self, index: int) -> None:
        """Send no new request to upstream ``index`` (open exchanges go on; see :meth:`sever`)."""
        self._out.add(index)
        if len(self._out) == len(self.upstreams):
            raise ValueError("every upstream is out")

    def put_back(self, index: int) -> None:
        self._out.discard(index)

    async def sever(self, index: int) -> None:
        """Cut every open exchange with upstream ``index`` at once, as a network failure would."""
        for exchange in list(self._open[index]):
            exchange.cut()

    # -- relaying -------------------------------------------------------------------------------

    def _next(self) -> int:
        while True:
            index = next(self._turn) % len(self.upstreams)
            if index not in self._out:
                return index

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        index = self._next()
        self.requests[index] += 1
        exchange = _Exchange(request)
        self._open[index].add(exchange)
        try:
            if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
                if self.block_websockets:
                    return web.Response(status=403, text="WebSockets are blocked by this proxy")
                return await self._relay_websocket(request, self.upstreams[index], exchange)
            if self.block_event_streams and "text/event-stream" in request.headers.get(hdrs.ACCEPT, ""):
                return web.Response(status=403, text="Event streams are blocked by this proxy")
            return await self._relay_http(request, self.upstreams[index], exchange)
        finally:
            self._open[index].discard(exchange)

    def _forward_headers(self, request: web.Request, *, skip: frozenset[str] = frozenset()) -> dict[str, str]:
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() not in skip
        }
        forwarded = request.headers.get(hdrs.X_FORWARDED_FOR)
        peer = request.remote or "unknown"
        headers[hdrs.X_FORWARDED_FOR] = f"{forwarded}, {peer}" if forwarded else peer
        return headers

    async def _relay_http(self, request: web.Request, upstream: str, exchange: _Exchange) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read() if request.body_exists else None
        try:
            upstream_response = await self._session.request(
                request.method,
                upstream + request.path_qs,
                headers=self._forward_headers(request),
                data=body,
                allow_redirects=False,
            )
        except aiohttp.ClientError as error:
            return web.Response(status=502, text=f"upstream unreachable: {type(error).__name__}")
        exchange.upstream = upstream_response
        async with upstream_response:
            response = web.StreamResponse(status=upstream_response.status, reason=upstream_response.reason)
            for name, value in upstream_response.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            if upstream_response.content_length is not None:
                response.content_length = upstream_response.content_length
            await response.prepare(request)
            try:
                async for chunk in upstream_response.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                exchange.cut()  # one side went away mid-response: end the other one as abruptly
        return response

    async def _relay_websocket(self, request: web.Request, upstream: str, exchange: _Exchange) -> web.StreamResponse:
        assert self._session is not None
        target = "ws" + upstream.removeprefix("http") + request.path_qs
        try:
            upstream_ws = await self._session.ws_connect(
                target,
                headers=self._forward_headers(request, skip=WEBSOCKET_HANDSHAKE),
                autoping=True,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSING_HANDSHAKE_SECONDS),
            )
        except aiohttp.WSServerHandshakeError as error:
            return web.Response(status=error.status, text=error.message)
        except aiohttp.ClientError as error:
            return web.Response(status=502, text=f"upstream unreachable: {type(error).__name__}")
        exchange.upstream_ws = upstream_ws
        client_ws = web.WebSocketResponse(autoping=True, max_msg_size=0, timeout=CLOSING_HANDSHAKE_SECONDS)
        await client_ws.prepare(request)
        directions = {
            asyncio.ensure_future(_pump(client_ws, upstream_ws)): (client_ws, upstream_ws),
            asyncio.ensure_future(_pump(upstream_ws, client_ws)): (upstream_ws, client_ws),
        }
        try:
            done, _ = await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in directions:
                pump.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
        # One side closed or dropped; nothing reads the other now, so closing it waits for its answer
        # (aiohttp would not, with a reader in another task). A drop is passed on as a drop.
        source, sink = directions[next(iter(done))]
        if not sink.closed and not exchange.severed:
            code = source.close_code
            if code is None or code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
                exchange.cut()
            else:
                await sink.close(code=code)
        return client_ws


class _Exchange:
    """One request being relayed: enough to cut it."""

    __slots__ = ("request", "severed", "upstream", "upstream_ws")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.upstream: aiohttp.ClientResponse | None = None
        self.upstream_ws: aiohttp.ClientWebSocketResponse | None = None
        self.severed = False

    def cut(self) -> None:
        """Both sockets end at once, without a WebSocket close frame or a final HTTP chunk."""
        self.severed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        if self.upstream is not None:
            self.upstream.close()
        if self.upstream_ws is not None:
            sock = self.upstream_ws.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    """Relay messages from ``source`` to ``sink`` until ``source`` closes or drops."""
    async for message in source:
        if message.type is WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is WSMsgType.ERROR:
            break


class ThreadedProxy:
    """A :class:`RoundRobinProxy` running on its own loop; the methods block until done."""

    def __init__(self, proxy: RoundRobinProxy, loop: asyncio.AbstractEventLoop) -> None:
        self._proxy = proxy
        self._loop = loop

    @property
    def url(self) -> str:
        return self._proxy.url

    @property
    def requests(self) -> list[int]:
        return list(self._proxy.requests)

    def take_out(self, index: int) -> None:
        self._loop.call_soon_threadsafe(self._proxy.take_out, index)

    def put_back(self, index: int) -> None:
        self._loop.call_soon_threadsafe(self._proxy.put_back, index)

    def sever(self, index: int) -> None:
        asyncio.run_coroutine_threadsafe(self._proxy.sever(index), self._loop).result(timeout=10)
