"""A raw SignalR-over-WebSocket client for integration tests: bytes on the wire, nothing hidden.

It negotiates (or not), opens the WebSocket with aiohttp, and lets a test send handshakes, records or
arbitrary bytes and read back whole JSON records, so the tests can assert on exactly what the
gateway sends (handshake replies, Completions, Pings, Close messages) and when it closes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

import aiohttp

from tests.support.processes import GatewayProcess

RS = "\x1e"
CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
JSON_HANDSHAKE = '{"protocol":"json","version":1}' + RS


def record(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":")) + RS


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def negotiate(
    session: aiohttp.ClientSession, gateway: GatewayProcess, token: str, *, version: int | None = 1
) -> dict[str, Any]:
    query = "" if version is None else f"?negotiateVersion={version}"
    async with session.post(f"{gateway.hub_url}/negotiate{query}", headers=bearer(token)) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


class RawConnection:
    """One WebSocket to the hub; reads are split into JSON records (text and binary frames alike)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frame_types: list[aiohttp.WSMsgType] = []
        self._buffer = ""
        self._records: deque[dict[str, Any]] = deque()
        self.closed = False

    @classmethod
    async def open(
        cls,
        session: aiohttp.ClientSession,
        gateway: GatewayProcess,
        token: str,
        *,
        negotiated: bool = True,
        connection_token: str | None = None,
    ) -> RawConnection:
        """Negotiate (unless ``negotiated`` is False: skipNegotiation) and open the WebSocket."""
        url = gateway.hub_url
        if connection_token is None and negotiated:
            connection_token = (await negotiate(session, gateway, token))["connectionToken"]
        if connection_token is not None:
            url += f"?id={connection_token}"
        ws = await session.ws_connect(url, headers=bearer(token), autoping=True, timeout=aiohttp.ClientWSTimeout(10))
        return cls(ws)

    async def send(self, *messages: dict[str, Any]) -> None:
        """Send JSON records, all in one text frame."""
        await self.ws.send_str("".join(record(message) for message in messages))

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def handshake(self, request: str = JSON_HANDSHAKE) -> dict[str, Any]:
        """Send a handshake and return the server's reply record (``{}`` on success)."""
        await self.send_text(request)
        reply = await self.receive()
        assert reply is not None, "the server closed the connection without a handshake reply"
        return reply

    async def receive(self, within: float = 5.0) -> dict[str, Any] | None:
        """The next JSON record, or None once the server has closed the WebSocket."""
        deadline = time.monotonic() + within
        while not self._records:
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no record from the server within {within}s")
            try:
                message = await self.ws.receive(timeout=remaining)
            except TimeoutError:
                raise TimeoutError(f"no record from the server within {within}s") from None
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.frame_types.append(message.type)
                data = message.data if isinstance(message.data, str) else message.data.decode()
                self._buffer += data
                *complete, self._buffer = self._buffer.split(RS)
                self._records.extend(json.loads(item) for item in complete)
            elif message.type in CLOSED_TYPES:
                self.closed = True
        return self._records.popleft()

    async def receive_non_ping(self, within: float = 5.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + within
        while True:
            message = await self.receive(max(deadline - time.monotonic(), 0.01))
            if message is None or message.get("type") != 6:
                return message

    async def completion(self, invocation_id: str, within: float = 5.0) -> dict[str, Any]:
        """Skip pings and server invocations until the Completion for ``invocation_id``."""
        deadline = time.monotonic() + within
        while True:
            message = await self.receive(max(deadline - time.monotonic(), 0.01))
            assert message is not None, f"connection closed before the completion of {invocation_id}"
            if message.get("type") == 3 and message.get("invocationId") == invocation_id:
                return message
            assert message.get("type") in (1, 6), f"unexpected message {message}"

    async def invoke(self, invocation_id: str, target: str, *arguments: Any, within: float = 5.0) -> dict[str, Any]:
        await self.send({"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(arguments)})
        return await self.completion(invocation_id, within)

    async def wait_closed(self, within: float = 5.0) -> list[dict[str, Any]]:
        """Read until the server closes the WebSocket; return every record received meanwhile."""
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        while True:
            message = await self.receive(max(deadline - time.monotonic(), 0.01))
            if message is None:
                return records
            records.append(message)

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())


async def open_connected(
    session: aiohttp.ClientSession, gateway: GatewayProcess, token: str, *, negotiated: bool = True
) -> tuple[RawConnection, dict[str, Any]]:
    """Open, handshake, and read ConnectionEstablished; returns the connection and that message."""
    connection = await RawConnection.open(session, gateway, token, negotiated=negotiated)
    assert await connection.handshake() == {}
    established = await connection.receive_non_ping()
    assert established is not None
    assert established["type"] == 1 and established["target"] == "ConnectionEstablished", established
    return connection, established
