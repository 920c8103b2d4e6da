"""``python -m bench.loadclient``: one process holding many WebSocket connections, driven over stdin/stdout.

Every connection is a non-blocking socket read with ``recvmsg`` (no task, no transport, no aiohttp object per
connection) speaking one of four application protocols over the minimal RFC 6455 client in
:mod:`bench.wsframes`. When :mod:`bench.fastrecv` is built (``make bench`` builds it), one compiled epoll loop
reads every socket and counts the benchmark messages itself, handing every other read to the connection's
:meth:`Conn.on_data`; without it each socket has its own reader callback (:meth:`Conn.on_readable`), which
counts the same messages the same way, in Python:

* ``signalr`` - the SignalR JSON hub protocol against our gateway (``skipNegotiation``: the WebSocket is
  opened with ``Authorization: Bearer``), a ``{"type":6}`` ping every 15 s, hub methods invoked with ids;
* ``socketio`` - Engine.IO v4 / Socket.IO v5 over a WebSocket (``0{..}`` open, ``40`` connect, ``42[..]``
  events, acks ``43<id>[..]``, answering the server's ``2`` pings with ``3``);
* ``raw`` - the bare aiohttp peer: text frames, groups in the query string, a ``joined`` frame when registered;
* ``nats`` - nats-py subscribers (one NATS connection each) for the broker-leg peer.

A benchmark message carries ``"bt":<time.time_ns() of the publisher>`` first and ``"bs":<sequence>``.
Latency is the kernel's receive timestamp of the read that carried the message (``SO_TIMESTAMPNS``,
CLOCK_REALTIME, the same clock on one machine) minus ``bt``, so the load client's own queueing while it
works through a burst is not counted against the server. Echo round trips are timed the same way.

Protocol on stdin/stdout: one JSON object per line, ``{"id": n, "cmd": ..., ...}`` in, ``{"id": n, ...}``
out. Commands: ``connect``, ``stats``, ``echo``, ``pause``, ``close``, ``exit`` (see :meth:`Pool.handle`).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import random
import resource
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar, Final

from bench import histogram
from bench.wsframes import OP_TEXT, FrameReader, WebSocketClient, client_frame, upgrade_request

RS: Final = b"\x1e"
HANDSHAKE: Final = b'{"protocol":"json","version":1}\x1e'
PING_RECORD: Final = b'{"type":6}\x1e'
# The gateway times a client out after 30 s of silence; the official clients ping every 15 s.
PING_INTERVAL_SECONDS: Final = 15.0
PING_SWEEP_SECONDS: Final = 1.0
READY_TIMEOUT_SECONDS: Final = 60.0
SUBSCRIBE_METHODS: Final = {
    "analytics": "SubscribeToAnalytics",
    "alerts": "SubscribeToAlerts",
    "user-activity": "SubscribeToUserActivity",
}
BT: Final = b'"bt":'
# Linux: SO_TIMESTAMPNS (not exported by Python 3.11's socket module) and its control message type.
SO_TIMESTAMPNS: Final = 35
SCM_TIMESTAMPNS: Final = SO_TIMESTAMPNS
TIMESPEC: Final = struct.Struct("@qq")
RECV_BYTES: Final = 256 * 1024
ANCILLARY_BYTES: Final = 64
# A subscriber's counters, shared with the compiled receive loop (bench/fastrecv.pyx reads the same order).
COUNT, COUNT_AFTER, SUBSCRIBED_AT = range(3)
NEVER: Final = 1 << 62  # nothing counts as "after subscribing" before it happened


def compiled_receiver(max_fds: int) -> Any:
    """The compiled receive loop for descriptors below ``max_fds``, or None when it is not built."""
    try:
        from bench import fastrecv  # type: ignore[attr-defined]
    except ImportError:
        return None
    return fastrecv.Receiver(max_fds)


class TagStats:
    """What every connection of one tag saw since the last reset."""

    __slots__ = ("closed_by_peer", "connected", "failed", "hist", "ready_times", "reconnects")

    def __init__(self) -> None:
        # An array, filled in place: the compiled receive loop writes into its buffer.
        self.hist = array.array("q", histogram.new())
        self.failed = 0
        self.connected = 0
        self.closed_by_peer = 0
        self.reconnects = 0
        self.ready_times: list[int] = []

    @property
    def received(self) -> int:
        """Messages timed since the last reset (every one is in the histogram)."""
        return sum(self.hist)

    def reset(self) -> None:
        self.hist[:] = array.array("q", histogram.new())
        self.ready_times = []


class Subscriber:
    """What every load-client subscriber has: its pool, connection spec, index, tag and message counts."""

    __slots__ = ("index", "pool", "spec", "stats", "tag", "tally")

    def __init__(self, pool: Pool, spec: dict[str, Any], index: int) -> None:
        self.pool = pool
        self.spec = spec
        self.index = index
        self.tag: str = spec["tag"]
        self.stats = pool.tag(self.tag)
        self.tally = array.array("q", [0, 0, NEVER])
        """Messages received, those sent after subscribing, and when it subscribed (time_ns)."""

    @property
    def count(self) -> int:
        return self.tally[COUNT]

    @property
    def count_after(self) -> int:
        return self.tally[COUNT_AFTER]

    @property
    def subscribed_at(self) -> int:
        return self.tally[SUBSCRIBED_AT]

    def subscribed(self) -> None:
        self.tally[SUBSCRIBED_AT] = time.time_ns()
        self.stats.ready_times.append(self.tally[SUBSCRIBED_AT])


class Conn(Subscriber, WebSocketClient):
    """One WebSocket; subclasses implement the application protocol (``on_open``/``on_message``)."""

    RECEIVE_KIND: ClassVar[int]
    """What the compiled receive loop takes for one benchmark message (bench/fastrecv.pyx ``KIND_*``)."""

    __slots__ = (
        "closing",
        "echo_sent_at",
        "echoing",
        "fd",
        "last_send",
        "lost",
        "next_id",
        "outbox",
        "paused",
        "pending_steps",
        "reader",
        "ready",
        "rx_ns",
        "sock",
        "upgrade_buffer",
        "upgraded",
    )

    def __init__(self, pool: Pool, spec: dict[str, Any], index: int) -> None:
        super().__init__(pool, spec, index)
        self.sock: socket.socket | None = None
        self.fd = -1
        self.outbox = bytearray()
        self.rx_ns = 0
        self.reader = FrameReader()
        self.upgraded = False
        self.upgrade_buffer = b""
        self.ready: asyncio.Future[bool] = pool.loop.create_future()
        self.echoing = False
        self.echo_sent_at = 0
        self.paused = False
        self.closing = False
        self.lost = False
        self.last_send = time.monotonic()
        self.next_id = 0
        self.pending_steps: list[Any] = []

    # -- socket ------------------------------------------------------------------------------
    # No asyncio transport: the socket is read with recvmsg() so that every read carries the kernel's
    # receive timestamp (SO_TIMESTAMPNS). Latency is measured to that timestamp, not to the moment this
    # single-threaded client gets round to the socket: a burst to 5,000 connections takes the client
    # tens of milliseconds to work through, which would otherwise be counted as server latency.

    def attach(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.watch()
        self.write(upgrade_request(self.spec["host"], self.spec["port"], self.path(), self.headers()))

    def watch(self) -> None:
        receiver = self.pool.receiver
        if receiver is not None:
            receiver.add(self.fd, self, self.RECEIVE_KIND, self.tally, self.stats.hist)
        else:
            self.pool.loop.add_reader(self.fd, self.on_readable)

    def unwatch(self) -> None:
        receiver = self.pool.receiver
        if receiver is not None:
            receiver.remove(self.fd)
        else:
            self.pool.loop.remove_reader(self.fd)

    def on_readable(self) -> None:
        """The reader callback when the compiled receive loop is not built."""
        view = self.pool.receive_view
        rx_ns = 0
        try:
            received, ancillary, _flags, _address = self.sock.recvmsg_into([view], ANCILLARY_BYTES)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            received, ancillary = 0, []
        for _level, kind, raw in ancillary:
            if kind == SCM_TIMESTAMPNS:
                seconds, nanoseconds = TIMESPEC.unpack_from(raw)
                rx_ns = seconds * 1_000_000_000 + nanoseconds
        self.on_data(view[:received].tobytes(), rx_ns)

    def on_data(self, data: bytes, rx_ns: int) -> bool:
        """Take one read (empty: the stream ended or failed) received at ``rx_ns``; say whether the next
        read may be counted by the compiled loop (upgraded, nothing buffered, still open)."""
        if not data:
            self.shutdown()
            return False
        self.rx_ns = rx_ns
        self.data_received(data)
        return self.upgraded and self.fd >= 0 and self.reader.idle()

    def write(self, data: bytes) -> None:
        if self.fd < 0:
            return
        if self.outbox:
            self.outbox += data
            return
        try:
            sent = self.sock.send(data)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.shutdown()
            return
        if sent < len(data):
            self.outbox = bytearray(data[sent:])
            self.pool.loop.add_writer(self.fd, self.on_writable)

    def on_writable(self) -> None:
        try:
            sent = self.sock.send(self.outbox)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.shutdown()
            return
        del self.outbox[:sent]
        if not self.outbox:
            self.pool.loop.remove_writer(self.fd)

    def shutdown(self) -> None:
        """Close the socket (once) and account for it."""
        if self.fd < 0:
            return
        if not self.paused:
            self.unwatch()
        if self.outbox:
            self.pool.loop.remove_writer(self.fd)
        self.fd = -1
        if self.sock is not None:
            self.sock.close()
        self.lost = True
        if not self.ready.done():
            self.ready.set_result(False)
        elif not self.closing:
            self.stats.closed_by_peer += 1
        self.pool.on_lost(self)

    def write_frame(self, opcode: int, payload: bytes) -> None:
        self.write(client_frame(opcode, payload))
        self.last_send = time.monotonic()

    def send_text(self, payload: bytes) -> None:
        self.write_frame(OP_TEXT, payload)

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.pool.note_error(why)
            self.ready.set_result(False)
        self.close()

    def close(self) -> None:
        self.closing = True
        self.shutdown()

    def on_refused(self, status: int) -> None:
        self.fail(f"upgrade answered {status}")

    def on_broken(self, why: str) -> None:
        self.fail(why)

    def on_closed_by_server(self) -> None:
        self.shutdown()

    def mark_ready(self) -> None:
        self.subscribed()
        if not self.ready.done():
            self.ready.set_result(True)

    def pause(self) -> None:
        """Stop reading: the kernel's receive buffer fills and the server's writes back up."""
        if self.fd >= 0 and not self.paused:
            self.unwatch()
            self.paused = True

    # -- measurement ----------------------------------------------------------------------------

    def on_bench(self, message: bytes) -> None:
        start = message.find(BT) + 5
        sent = int(message[start : message.find(b",", start)])
        now = self.rx_ns
        self.stats.hist[histogram.bucket((now - sent) // 1000)] += 1
        tally = self.tally
        tally[COUNT] += 1
        if sent >= tally[SUBSCRIBED_AT]:
            tally[COUNT_AFTER] += 1

    def echo_done(self) -> None:
        now = self.rx_ns
        stats = self.stats
        stats.hist[histogram.bucket((now - self.echo_sent_at) // 1000)] += 1
        if self.echoing:
            interval = self.pool.echo_interval
            if interval:
                self.pool.loop.call_later(interval, self.echo_again)
            else:
                self.send_echo()

    def echo_again(self) -> None:
        """A paced probe's next round trip (the connection may have ended or the probe stopped)."""
        if self.echoing and self.fd >= 0:
            self.send_echo()

    # -- application protocol ------------------------------------------------------------------

    def path(self) -> str:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        return {}

    def on_open(self) -> None:
        raise NotImplementedError

    def on_message(self, payload: bytes) -> None:
        raise NotImplementedError

    def send_echo(self) -> None:
        raise NotImplementedError

    def keepalive(self) -> None:
        """Called about once a second; send whatever keeps an idle connection open."""

    def groups(self) -> list[str]:
        spec = self.spec
        names: list[str] = list(spec.get("groups", []))
        rotate = spec.get("group_of")
        if rotate:
            names.append(rotate[self.index % len(rotate)])
        return names

    def user(self) -> str:
        return str(self.spec.get("user", "bench-{i}")).format(i=self.index, u=self.index // self.spec.get("tabs", 1))


class SignalRConn(Conn):
    __slots__ = ()
    RECEIVE_KIND = 1  # bench/fastrecv.pyx KIND_SIGNALR

    def path(self) -> str:
        return str(self.spec.get("path", "/hubs/admin"))

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.pool.token(self.spec, self.user())}

    def on_open(self) -> None:
        self.send_text(HANDSHAKE)
        self.pending_steps = [SUBSCRIBE_METHODS[name] for name in self.groups()]

    def invoke(self, method: str, *arguments: Any) -> None:
        self.next_id += 1
        record = {"type": 1, "invocationId": str(self.next_id), "target": method, "arguments": list(arguments)}
        self.send_text(json.dumps(record, separators=(",", ":")).encode() + RS)

    def next_step(self) -> None:
        if self.pending_steps:
            self.invoke(self.pending_steps.pop(0))
        else:
            self.mark_ready()

    def on_message(self, payload: bytes) -> None:
        if BT in payload and payload.find(RS) == len(payload) - 1:  # one benchmark record: most deliveries
            self.on_bench(payload)
            return
        for record in payload.split(RS):
            if not record:
                continue
            if BT in record:
                self.on_bench(record)
            elif record.startswith(b'{"type":3') or b'"type":3,' in record:
                self.on_completion(record)
            elif record == b"{}":
                self.next_step()
            elif record.startswith(b'{"error"'):
                self.fail(record.decode(errors="replace"))
            elif b'"type":7' in record:
                self.pool.note_error("server Close: " + record.decode(errors="replace")[:120])

    def on_completion(self, record: bytes) -> None:
        message = json.loads(record)
        if "error" in message:
            self.fail("invocation failed: " + str(message["error"]))
        elif self.echoing or self.echo_sent_at:
            self.echo_done()
        else:
            self.next_step()

    def send_echo(self) -> None:
        self.echo_sent_at = time.time_ns()
        self.invoke("SendTestMessage", self.pool.echo_payload)

    def keepalive(self) -> None:
        if time.monotonic() - self.last_send >= PING_INTERVAL_SECONDS:
            self.send_text(PING_RECORD)


class SocketIOConn(Conn):
    __slots__ = ()
    RECEIVE_KIND = 2  # KIND_SOCKETIO

    def path(self) -> str:
        return "/socket.io/?EIO=4&transport=websocket"

    def on_open(self) -> None:
        self.pending_steps = self.groups()
        personal = self.spec.get("personal")
        if personal:
            self.pending_steps.append(str(personal).format(i=self.index))

    def emit_ack(self, event: str, data: Any) -> None:
        self.next_id += 1
        self.send_text(b"42" + str(self.next_id).encode() + json.dumps([event, data]).encode())

    def next_step(self) -> None:
        if self.pending_steps:
            self.emit_ack("join", self.pending_steps.pop(0))
        else:
            self.mark_ready()

    def on_message(self, payload: bytes) -> None:
        if payload.startswith(b"42"):
            if BT in payload:
                self.on_bench(payload)
        elif payload == b"2":
            self.send_text(b"3")
        elif payload.startswith(b"43"):
            if self.echoing or self.echo_sent_at:
                self.echo_done()
            else:
                self.next_step()
        elif payload.startswith(b"0{"):
            self.send_text(b"40")
        elif payload.startswith(b"40"):
            self.next_step()
        elif payload.startswith(b"44"):
            self.fail("socket.io connect error: " + payload.decode(errors="replace"))

    def send_echo(self) -> None:
        self.echo_sent_at = time.time_ns()
        self.emit_ack("echo", self.pool.echo_payload)


class RawConn(Conn):
    __slots__ = ()
    RECEIVE_KIND = 3  # KIND_RAW

    def path(self) -> str:
        groups = self.groups()
        personal = self.spec.get("personal")
        if personal:
            groups.append(str(personal).format(i=self.index))
        return "/ws?groups=" + ",".join(groups)

    def on_open(self) -> None:
        pass

    def on_message(self, payload: bytes) -> None:
        if BT in payload:
            self.on_bench(payload)
        elif payload == b"joined":
            self.mark_ready()
        elif self.echoing or self.echo_sent_at:
            self.echo_done()

    def send_echo(self) -> None:
        self.echo_sent_at = time.time_ns()
        self.send_text(self.pool.echo_payload.encode())


class NatsSub(Subscriber):
    """One nats-py connection with one subscription, counted like a WebSocket connection."""

    def __init__(self, pool: Pool, spec: dict[str, Any], index: int) -> None:
        super().__init__(pool, spec, index)
        self.client: Any = None
        self.closing = False
        self.lost = False
        self.paused = False
        self.rx_ns = 0

    def on_bench(self, message: bytes) -> None:
        self.rx_ns = time.time_ns()  # nats-py gives no kernel timestamp: measured when the callback runs
        Conn.on_bench(self, message)  # type: ignore[arg-type]

    async def open(self) -> bool:
        import nats

        self.client = await nats.connect(self.spec["url"], allow_reconnect=False, max_reconnect_attempts=0)

        async def callback(msg: Any) -> None:
            self.on_bench(msg.data)

        await self.client.subscribe(self.spec["subject"], cb=callback, pending_bytes_limit=64 * 1024 * 1024)
        await self.client.flush()
        self.subscribed()
        return True

    def close(self) -> None:
        self.closing = True
        if self.client is not None:
            self.pool.loop.create_task(self.client.close())

    def keepalive(self) -> None:
        pass


CONN_KINDS: Final[dict[str, type[Conn]]] = {"signalr": SignalRConn, "socketio": SocketIOConn, "raw": RawConn}


class Pool:
    """Every connection of this process, by tag; answers the orchestrator's commands."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Any = None) -> None:
        self.loop = loop
        self.receiver = receiver
        """The compiled receive loop (:func:`compiled_receiver`), or None: a reader callback per socket."""
        if receiver is not None:
            loop.add_reader(receiver.fileno(), receiver.drain)
        self.conns: dict[str, dict[int, Any]] = {}
        self.tags: dict[str, TagStats] = {}
        self.errors: dict[str, int] = {}
        self.echo_payload = ""
        self.echo_interval = 0.0
        self._tokens: dict[tuple[str, str], str] = {}
        self._sources: list[str] = ["127.0.0.1"]
        self._source_index = 0
        self._reconnecting: set[asyncio.Task[None]] = set()
        # One receive buffer for every connection (the process is single-threaded): recvmsg(RECV_BYTES)
        # would allocate 256 KiB per read, which glibc serves with mmap/munmap while its dynamic mmap
        # threshold is low - a cost per delivery that made the client's CPU per delivery bimodal
        # (7 or 20 µs) from one run to the next.
        self.receive_view = memoryview(bytearray(RECV_BYTES))

    def receive_loop(self) -> str:
        return "python" if self.receiver is None else "compiled"

    def tag(self, name: str) -> TagStats:
        stats = self.tags.get(name)
        if stats is None:
            stats = self.tags[name] = TagStats()
            self.conns.setdefault(name, {})
        return stats

    def note_error(self, why: str) -> None:
        key = why[:160]
        self.errors[key] = self.errors.get(key, 0) + 1

    def token(self, spec: dict[str, Any], user: str) -> str:
        key = (spec["secret"], user)
        token = self._tokens.get(key)
        if token is None:
            from gateway.devtoken import mint_token

            token = self._tokens[key] = mint_token(
                secret=spec["secret"], roles=["Admin"], subject=user, ttl_seconds=6 * 3600, name=user
            )
        return token

    def next_source(self) -> str:
        self._source_index = (self._source_index + 1) % len(self._sources)
        return self._sources[self._source_index]

    # -- opening --------------------------------------------------------------------------------

    async def open_one(self, spec: dict[str, Any], index: int, timeout: float) -> bool:  # noqa: ASYNC109
        if spec["kind"] == "nats":
            sub = NatsSub(self, spec, index)
            try:
                ok = await asyncio.wait_for(sub.open(), timeout)
            except Exception as error:
                self.note_error(f"nats: {type(error).__name__}: {error}")
                ok = False
            if ok:
                self.conns[sub.tag][index] = sub
            return ok
        conn = CONN_KINDS[spec["kind"]](self, spec, index)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if spec.get("rcvbuf"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(spec["rcvbuf"]))
            sock.bind((self.next_source(), 0))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.timeout(timeout):
                await self.loop.sock_connect(sock, (spec["host"], spec["port"]))
                conn.attach(sock)
                ok = await conn.ready
        except (OSError, TimeoutError) as error:
            self.note_error(f"{type(error).__name__}: {error}")
            sock.close()
            conn.close()
            ok = False
        if ok:
            self.conns[conn.tag][index] = conn
        else:
            conn.close()
        return ok

    async def connect(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Open ``count`` connections (``concurrency`` at a time, at most ``rate`` per second)."""
        stats = self.tag(spec["tag"])
        self._sources = spec.get("sources") or self._sources
        first = int(spec.get("first_index", 0))
        count = int(spec["count"])
        concurrency = asyncio.Semaphore(int(spec.get("concurrency", 200)))
        rate = float(spec.get("rate", 0))
        timeout = float(spec.get("timeout", READY_TIMEOUT_SECONDS))
        started = time.monotonic()
        results: list[bool] = []

        async def one(index: int) -> None:
            try:
                results.append(await self.open_one(spec, index, timeout))
            finally:
                concurrency.release()

        tasks = []
        for n, index in enumerate(range(first, first + count)):
            if rate:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await concurrency.acquire()
            tasks.append(self.loop.create_task(one(index)))
        await asyncio.gather(*tasks)
        seconds = time.monotonic() - started
        ok = sum(results)
        stats.connected += ok
        stats.failed += count - ok
        return {"established": ok, "failed": count - ok, "seconds": seconds, "per_second": ok / max(seconds, 1e-9)}

    def on_lost(self, conn: Conn) -> None:
        live = self.conns.get(conn.tag, {})
        if live.get(conn.index) is conn:
            del live[conn.index]
            if conn.spec.get("reconnect") and not conn.closing:
                task = self.loop.create_task(self.reconnect(conn.spec, conn.index))
                self._reconnecting.add(task)
                task.add_done_callback(self._reconnecting.discard)

    async def reconnect(self, spec: dict[str, Any], index: int) -> None:
        """Reconnect with full-jitter exponential backoff, rotating through ``hosts``."""
        backoff = spec["reconnect"]
        hosts: list[list[Any]] = backoff["hosts"]
        here = [spec["host"], spec["port"]]
        current = hosts.index(here) if here in hosts else -1
        attempt = 0
        while True:
            ceiling = min(float(backoff.get("max_seconds", 10.0)), float(backoff.get("base_seconds", 1.0)) * 2**attempt)
            await asyncio.sleep(random.uniform(0, ceiling))
            host, port = hosts[(current + attempt + 1) % len(hosts)]
            retry_spec = {**spec, "host": host, "port": port}
            self.tag(spec["tag"]).reconnects += 1
            if await self.open_one(retry_spec, index, timeout=float(backoff.get("timeout", 10.0))):
                return
            attempt += 1

    # -- commands -------------------------------------------------------------------------------

    def stats(self, command: dict[str, Any]) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        expected = command.get("expected")
        tags: dict[str, Any] = {}
        for name, stats in self.tags.items():
            conns = list(self.conns.get(name, {}).values())
            counts = [conn.count for conn in conns if not conn.paused]
            entry: dict[str, Any] = {
                "received": stats.received,
                "hist": histogram.sparse(stats.hist),
                "open": len(conns),
                "paused_open": sum(1 for conn in conns if conn.paused),
                "connected": stats.connected,
                "failed": stats.failed,
                "closed_by_peer": stats.closed_by_peer,
                "reconnects": stats.reconnects,
                "min_count": min(counts) if counts else 0,
                "ready_count": len(stats.ready_times),
            }
            if expected is not None:
                entry["shortfall"] = sum(max(0, int(expected) - count) for count in counts)
                entry["short_connections"] = sum(1 for count in counts if count < int(expected))
            if command.get("want_times"):
                entry["ready_times"] = stats.ready_times
            if command.get("want_after"):
                entry["after"] = [[conn.subscribed_at, conn.count_after] for conn in conns]
            tags[name] = entry
            if command.get("reset"):
                stats.reset()
            if command.get("reset_counts"):
                for conn in conns:
                    conn.tally[COUNT] = 0
        errors, self.errors = self.errors, {}  # each error is reported once
        return {
            "tags": tags,
            "receive_loop": self.receive_loop(),
            "compiled_reads": self.receiver.fast_reads if self.receiver is not None else 0,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "rss_kib": usage.ru_maxrss,
            "errors": errors,
        }

    async def echo(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run a closed loop of echo round trips on every connection of ``tag`` for ``seconds``; with
        ``interval_seconds``, a paced probe instead (the next round trip that long after an answer)."""
        conns = list(self.conns.get(command["tag"], {}).values())
        stats = self.tag(command["tag"])
        stats.reset()
        self.echo_payload = "x" * int(command.get("payload_bytes", 100))
        self.echo_interval = float(command.get("interval_seconds", 0.0))
        started_cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        for conn in conns:
            conn.echoing = True
            conn.send_echo()
        await asyncio.sleep(float(command["seconds"]))
        for conn in conns:
            conn.echoing = False
        elapsed = time.monotonic() - started
        done = stats.received
        await asyncio.sleep(0.2)  # let the last round trips land before the next command
        ended_cpu = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ended_cpu.ru_utime + ended_cpu.ru_stime) - (started_cpu.ru_utime + started_cpu.ru_stime)
        for conn in conns:
            conn.echo_sent_at = 0
        return {
            "round_trips": done,
            "seconds": elapsed,
            "hist": histogram.sparse(stats.hist),
            "client_cpu_seconds": cpu,
        }

    def pause(self, command: dict[str, Any]) -> dict[str, Any]:
        conns = list(self.conns.get(command["tag"], {}).values())
        for conn in conns:
            conn.pause()
        return {"paused": len(conns)}

    def close(self, command: dict[str, Any]) -> dict[str, Any]:
        live = self.conns.get(command["tag"], {})
        victims = list(live.values())
        if command.get("count") is not None:
            victims = random.sample(victims, min(int(command["count"]), len(victims)))
        for conn in victims:
            conn.close()
            live.pop(conn.index, None)
        return {"closed": len(victims)}

    async def keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_SWEEP_SECONDS)
            for conns in self.conns.values():
                for conn in list(conns.values()):
                    conn.keepalive()

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        match command["cmd"]:
            case "connect":
                return await self.connect(command["spec"])
            case "stats":
                return self.stats(command)
            case "echo":
                return await self.echo(command)
            case "pause":
                return self.pause(command)
            case "close":
                return self.close(command)
            case "ping":
                return {"pid": os.getpid()}
            case other:
                raise ValueError(f"unknown command {other!r}")


def raise_open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def serve(reply: Callable[[dict[str, Any]], None]) -> None:
    loop = asyncio.get_running_loop()
    open_files = raise_open_file_limit()
    pool = Pool(loop, compiled_receiver(open_files))
    keepalive = loop.create_task(pool.keepalive_loop())
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: set[asyncio.Task[None]] = set()

    async def run(command: dict[str, Any]) -> None:
        try:
            answer = await pool.handle(command)
            reply({"id": command.get("id"), **answer})
        except Exception as error:
            reply({"id": command.get("id"), "error": f"{type(error).__name__}: {error}"})

    reply({"ready": True, "pid": os.getpid(), "open_files": open_files, "receive_loop": pool.receive_loop()})
    while line := await reader.readline():
        command = json.loads(line)
        if command.get("cmd") == "exit":
            break
        task = loop.create_task(run(command))
        pending.add(task)
        task.add_done_callback(pending.discard)
    keepalive.cancel()
    for conns in list(pool.conns.values()):
        for conn in list(conns.values()):
            conn.close()
    if pool.receiver is not None:
        loop.remove_reader(pool.receiver.fileno())
        pool.receiver.close()
    with contextlib.suppress(Exception):
        await asyncio.sleep(0.1)


def main() -> int:
    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    try:
        import uvloop
    except ImportError:  # the harness measures the server: the client's loop only changes its own CPU
        asyncio.run(serve(reply))
    else:
        uvloop.run(serve(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
