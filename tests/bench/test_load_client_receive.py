"""The load client counts the same messages the same way with its compiled receive loop and without it.

A scripted WebSocket server on a real loopback socket sends one SignalR connection of ``bench.loadclient`` a
mix of reads: whole benchmark frames (the compiled loop counts these itself), a frame split over two reads,
two records in one frame, a 16-bit-length frame, a ping record and a message stamped before the
connection subscribed; then it closes the stream.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from bench import histogram, loadclient
from bench.wsframes import OP_TEXT, server_frame

RS = b"\x1e"
COMPILED = importlib.util.find_spec("bench.fastrecv") is not None


def bench_record(sent_ns: int, pad: int = 10) -> bytes:
    body = {"bt": sent_ns, "bs": 1, "pad": "x" * pad}
    invocation = {"type": 1, "target": "SystemAlert", "arguments": [{"data": body}]}
    return json.dumps(invocation, separators=(",", ":")).encode() + RS


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - counters the load client fills, not an event
            await asyncio.sleep(0.005)


async def scripted_run(receiver: Any) -> dict[str, Any]:
    ready = asyncio.Event()
    script_done = asyncio.Event()
    state: dict[str, Any] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        await reader.readexactly(2 + 4 + len(loadclient.HANDSHAKE))  # the masked handshake frame
        writer.write(server_frame(OP_TEXT, b"{}" + RS))
        await ready.wait()
        conn = state["conn"]
        now = time.time_ns()

        async def send(data: bytes, count: int) -> None:
            writer.write(data)
            await writer.drain()
            await until(lambda: conn.count == count)

        await send(server_frame(OP_TEXT, bench_record(now)), 1)  # one whole frame
        split = server_frame(OP_TEXT, bench_record(now))
        writer.write(split[:7])
        await writer.drain()
        await asyncio.sleep(0.05)  # a read of its own: the rest arrives later
        await send(split[7:], 2)
        await send(server_frame(OP_TEXT, bench_record(now) + bench_record(now)), 4)
        await send(server_frame(OP_TEXT, bench_record(now, pad=300)), 5)  # 16-bit length
        await send(server_frame(OP_TEXT, b'{"type":6}' + RS) + server_frame(OP_TEXT, bench_record(now)), 6)
        await send(server_frame(OP_TEXT, bench_record(1_000)), 7)  # stamped long before it subscribed
        writer.close()
        script_done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = loadclient.Pool(asyncio.get_running_loop(), receiver)
    spec = {"kind": "signalr", "tag": "t", "host": "127.0.0.1", "port": port, "secret": "s" * 32, "groups": []}
    opened = asyncio.create_task(pool.open_one(spec, 0, timeout=5))
    await until(lambda: 0 in pool.conns.get("t", {}) or opened.done())
    assert await opened
    state["conn"] = pool.conns["t"][0]
    ready.set()
    await script_done.wait()
    await until(lambda: 0 not in pool.conns["t"])  # the end of the stream shut it down
    server.close()
    conn, stats = state["conn"], pool.tags["t"]
    answer = pool.stats({})
    if receiver is not None:
        pool.loop.remove_reader(receiver.fileno())
        receiver.close()
    return {"conn": conn, "stats": stats, "answer": answer, "receiver": receiver}


@pytest.mark.parametrize(
    "compiled", [False, pytest.param(True, marks=pytest.mark.skipif(not COMPILED, reason="make bench builds it"))]
)
async def test_both_receive_loops_count_every_message_once(compiled: bool) -> None:
    receiver = loadclient.compiled_receiver(4096) if compiled else None
    run = await scripted_run(receiver)
    conn, stats = run["conn"], run["stats"]
    assert (conn.count, conn.count_after) == (7, 6)
    assert stats.received == 7 and stats.closed_by_peer == 1
    assert run["answer"]["receive_loop"] == ("compiled" if compiled else "python")
    latencies_us = [histogram.bucket_value(index) for index in sorted(histogram.sparse(stats.hist))]
    assert latencies_us[0] < 1_000_000  # the six sent now
    assert latencies_us[-1] > time.time_ns() // 2_000  # the one stamped at the epoch's first microsecond
    if compiled:
        # The whole single-record frames (the first, the 16-bit one, the late one) were counted in C;
        # everything else went through the connection.
        assert run["answer"]["compiled_reads"] == 3
        assert run["receiver"].handed_over >= 5


def test_the_bench_extra_builds_the_compiled_loop() -> None:
    # `make test` (and so CI) installs the bench extra and builds bench/fastrecv.pyx: both loops are tested.
    pytest.importorskip("Cython", reason="the bench extra is not installed")
    assert COMPILED, "make .venv/.bench-installed builds bench/fastrecv.pyx"
