"""``python -m bench.conn_memory``: what one idle hub connection holds in the gateway, object by object.

The gateway runs in this process (the production app, :func:`gateway.app.create_gateway`, on the loop
``python -m gateway`` picks) with :mod:`tracemalloc` on; a load-client process opens ``--connections``
WebSocket connections of Admin users, each in one group (``SubscribeToAlerts``), exactly as S2 and S3
do. After ``gc.collect()`` the memory allocated since before the first connection and still held is
grouped by where it was allocated and divided by the number of connections: the per-object accounting
of an idle connection (BENCHMARKS.md's method notes quote it). tracemalloc counts Python allocations
only; RSS adds the kernel's socket buffers and allocator overhead (S2 measures that).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import linecache
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Final

from aiohttp import web

from bench.peers import aiohttp_broadcast
from bench.procs import BENCH_CONNECTIONS_PER_IP, JWT_SECRET, ROOT, LoadClient, start_nats
from scripts.processes import free_port

TRACE_FRAMES: Final = 12
SETTLE_SECONDS: Final = 2.0


# Where an allocation is charged: the innermost frame in the gateway's own packages, else in aiohttp,
# else in the event loop; allocations with no Python frame at all were made by uvloop's C code.
_OWNERS: Final = tuple(str(ROOT / package) for package in ("gateway", "shared", "broker_bridge"))
_LIBRARIES: Final = ("/aiohttp/", "/asyncio/", "/uvloop/")


def _site(trace: tracemalloc.Traceback) -> str:
    """Where ``trace`` was allocated, as file:line and its code."""
    frames = list(trace)  # most recent call last: reversed walks outwards from the allocation
    chosen = None
    for wanted in (_OWNERS, _LIBRARIES):
        chosen = next((frame for frame in reversed(frames) if any(part in frame.filename for part in wanted)), None)
        if chosen is not None:
            break
    if chosen is None:
        return "(no frame of the gateway, aiohttp or asyncio: uvloop's C code, e.g. its transport and socket)"
    name = chosen.filename.removeprefix(str(ROOT) + "/")
    if "site-packages/" in name:
        name = name.split("site-packages/", 1)[1]
    elif "/lib/python" in name:
        name = name.split("/lib/python", 1)[1].split("/", 1)[1]
    code = linecache.getline(chosen.filename, chosen.lineno).strip()
    return f"{name}:{chosen.lineno}  {code[:70]}"


async def measure(connections: int, top: int, server: str) -> None:
    from gateway.app import PathOnlyAccessLogger, create_gateway
    from gateway.settings import load_settings

    workdir = Path(tempfile.mkdtemp(prefix="conn-memory-"))
    nats = await start_nats(workdir, core=1)
    port = free_port()
    environ = {
        "REALTIME_HOST": "127.0.0.1",
        "REALTIME_PORT": str(port),
        "REALTIME_NATS_URL": nats.extra["url"],
        "REALTIME_JWT_SECRET": JWT_SECRET,
        "REALTIME_LOG_LEVEL": "WARNING",
        "REALTIME_REPLICA_ID": "conn-memory",
        "REALTIME_MAX_CONNECTIONS_PER_IP": str(BENCH_CONNECTIONS_PER_IP),
        "REALTIME_NEGOTIATE_RATE_PER_IP": "0",
    }
    if server == "ours":  # as python -m gateway runs it
        app = create_gateway(load_settings([], {**os.environ, **environ}))
        runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger)
        spec: dict[str, object] = {"kind": "signalr", "secret": JWT_SECRET, "user": "mem-{i}"}
    else:  # the bare aiohttp peer, as S2 runs it
        app = aiohttp_broadcast.application("prebuilt")
        runner = web.AppRunner(app, access_log=None)
        spec = {"kind": "raw"}
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = await LoadClient.start()
    try:
        spec.update(tag="idle", groups=["alerts"], host="127.0.0.1", port=port, sources=["127.0.0.1"])
        # A few connections first, so lazily made shared things (caches, subscriptions) are not counted.
        await client.call("connect", spec={**spec, "tag": "warm", "count": 5, "first_index": 10**6})
        await asyncio.sleep(SETTLE_SECONDS)
        gc.collect()
        types_before = _by_type()
        before = tracemalloc.take_snapshot()
        answer = await client.call("connect", spec={**spec, "count": connections})
        await asyncio.sleep(SETTLE_SECONDS)
        gc.collect()
        after = tracemalloc.take_snapshot()
        types_after = _by_type()
    finally:
        await client.stop()
        await runner.cleanup()
        await nats.stop()
    opened = int(answer["established"])
    if not opened:
        raise SystemExit(f"no connection opened: {answer}")
    sites: dict[str, list[int]] = {}
    for stat in after.compare_to(before, "traceback"):
        if stat.size_diff <= 0:
            continue
        entry = sites.setdefault(_site(stat.traceback), [0, 0])
        entry[0] += stat.size_diff
        entry[1] += stat.count_diff
    total = sum(size for size, _ in sites.values())
    who = "ours, Admin users" if server == "ours" else "the bare aiohttp peer"
    print(f"{opened} idle connections ({who}, one group), Python {sys.version.split()[0]}")
    print(f"tracemalloc: {total / opened:.0f} B per connection held after gc.collect()\n")
    print(f"{'B/conn':>8} {'objs/conn':>9}  allocated at")
    ranked = sorted(sites.items(), key=lambda item: -item[1][0])
    for site, (size, count) in ranked[:top]:
        print(f"{size / opened:8.0f} {count / opened:9.2f}  {site}")
    rest = sum(size for _, (size, _) in ranked[top:])
    print(f"{rest / opened:8.0f} {'':>9}  (the rest, {len(ranked) - top} sites)")
    print(
        f"\nGC-tracked objects by type (sys.getsizeof, shallow), per connection\n{'B/conn':>8} {'objs/conn':>9}  type"
    )
    grown = {
        name: (size - types_before.get(name, (0, 0))[0], count - types_before.get(name, (0, 0))[1])
        for name, (size, count) in types_after.items()
    }
    for name, (size, count) in sorted(grown.items(), key=lambda item: -item[1][0])[:top]:
        if size > 0:
            print(f"{size / opened:8.0f} {count / opened:9.2f}  {name}")


def _by_type() -> dict[str, tuple[int, int]]:
    """Shallow size and count of every GC-tracked object, by type (frozen ones too: the gateway's GC
    policy freezes survivors, which gc.get_objects() would not list)."""
    gc.unfreeze()
    totals: dict[str, tuple[int, int]] = {}
    for thing in gc.get_objects():
        kind = type(thing)
        name = f"{kind.__module__}.{kind.__qualname__}"
        size, count = totals.get(name, (0, 0))
        totals[name] = (size + sys.getsizeof(thing), count + 1)
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.conn_memory", description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    parser.add_argument("--server", choices=("ours", "bare"), default="ours", help="bare: the aiohttp peer of S2")
    args = parser.parse_args()
    tracemalloc.start(TRACE_FRAMES)
    from shared.event_loop import choose_event_loop_or_exit  # as python -m gateway picks its loop

    loop = choose_event_loop_or_exit(args.loop, prog="python -m bench.conn_memory").new_loop()
    try:
        loop.run_until_complete(measure(args.connections, args.top, args.server))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
