"""``python -m bench.peers.aiohttp_broadcast --mode send_str|prebuilt``: the bare aiohttp peers.

* ``GET /ws?groups=a,b`` - a subscriber: joins the groups, gets ``joined``, then every broadcast; any
  text it sends is echoed back (the S1 round trip).
* ``GET /publish`` - one WebSocket for the publisher: each text frame ``{"rooms": [...], "data": "<text>"}``
  is broadcast to the members of those rooms before the next frame is read.
* ``GET /healthz``.

``send_str`` awaits ``ws.send_str`` per member (the naive loop, the Python floor); ``prebuilt`` builds the
WebSocket frame once and ``transport.write``s the same bytes to every member (the Python ceiling).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from bench.peers.common import parse_args
from bench.wsframes import OP_TEXT, server_frame

MEMBERS = web.AppKey("members", dict[str, dict[web.WebSocketResponse, asyncio.Transport]])


async def subscriber(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=None, compress=False, autoping=True)
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    groups = [name for name in request.query.get("groups", "").split(",") if name]
    members = request.app[MEMBERS]
    for group in groups:
        members.setdefault(group, {})[ws] = transport  # type: ignore[assignment]
    await ws.send_str("joined")
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
    finally:
        for group in groups:
            room = members.get(group)
            if room is not None:
                room.pop(ws, None)
                if not room:
                    del members[group]
    return ws


def publisher(mode: str) -> Any:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, compress=False, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        members = request.app[MEMBERS]
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            command = json.loads(message.data)
            text: str = command["data"]
            for room in command["rooms"]:
                group = members.get(room)
                if not group:
                    continue
                if mode == "prebuilt":
                    frame = server_frame(OP_TEXT, text.encode())
                    for transport in group.values():
                        if not transport.is_closing():
                            transport.write(frame)
                else:
                    for member in list(group):
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await member.send_str(text)
        return ws

    return handler


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def application(mode: str) -> web.Application:
    app = web.Application()
    app[MEMBERS] = {}
    app.router.add_get("/ws", subscriber)
    app.router.add_get("/publish", publisher(mode))
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    args = parse_args("python -m bench.peers.aiohttp_broadcast", modes=("send_str", "prebuilt"))
    web.run_app(application(args.mode), host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=1)


if __name__ == "__main__":
    main()
