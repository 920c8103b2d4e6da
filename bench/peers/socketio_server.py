"""``python -m bench.peers.socketio_server``: python-socketio's AsyncServer on aiohttp, rooms as groups.

Events: ``join(room)`` (acked once the client is in the room), ``echo(data)`` (acked with ``data``).
``GET /publish`` is the publisher's WebSocket, as in :mod:`bench.peers.aiohttp_broadcast`: each text
frame ``{"rooms": [...], "data": "<json text>"}`` becomes ``sio.emit("bench", data, room=room)``.
"""

from __future__ import annotations

import json
from typing import Any

import socketio
from aiohttp import WSMsgType, web

from bench.peers.common import parse_args


def build() -> web.Application:
    sio = socketio.AsyncServer(
        async_mode="aiohttp", transports=["websocket"], cors_allowed_origins="*", http_compression=False
    )
    app = web.Application()
    sio.attach(app)

    @sio.event  # type: ignore[misc]
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    @sio.event  # type: ignore[misc]
    async def echo(sid: str, data: Any) -> Any:
        return data

    async def publish(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, compress=False, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            command = json.loads(message.data)
            data = json.loads(command["data"])
            for room in command["rooms"]:
                await sio.emit("bench", data, room=room)
        return ws

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/publish", publish)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    args = parse_args("python -m bench.peers.socketio_server")
    web.run_app(build(), host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=1)


if __name__ == "__main__":
    main()
