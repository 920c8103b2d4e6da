"""S8 soak: the gateway as users start it under a steady, mixed load for a long time.

``python -m gateway`` (pinned to core 0, every setting at its default), a JetStream nats-server and
``python -m stats_collector``; the orchestrator, holding every client connection itself, on core 1:

* ``connections`` SignalR JSON WebSockets (``skipNegotiation``, one user id each, source addresses spread
  over 127.0.1.x so no per-IP limit is reached), subscribed to ``alerts`` and ``analytics`` and pinging
  every 15 s like the official clients;
* churn: ``churn_per_minute`` of them closed (a clean WebSocket Close) and a new one opened, evenly spread;
* ``broadcasts_per_s`` ``SystemAlert``s to ``alerts``, alternately through ``POST /alert`` and straight into
  NATS (``broker_bridge.publisher``); each path numbers its broadcasts (``data.sp``/``data.sq``);
* REST traffic of a few admin users: GETs of ``status``, ``platform-snapshot`` and ``health`` and POSTs to
  ``notify/user-action``, well inside the per-user POST limit;
* ``misbehaving_fraction`` of extra clients, in turn: an oversized frame (more than
  ``REALTIME_MAX_FRAME_BYTES``), junk (invalid JSON, or bytes that are not WebSocket framing) and slow
  readers (they stop reading); each is cut, then reconnects after a pause and misbehaves again.

Checks: every healthy client gets, per path, every broadcast sent while it was subscribed, once and in
order (a gap is a loss, a repeat or a step back a duplicate); none is closed by the server; the misbehaving
ones are cut, and ``realtime_connections_closed_total{reason}`` counts the documented reasons; the gateway's
RSS is sampled and its growth after the warm-up reported; the gateway log is scanned for tracebacks and
ERROR lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.collector_backlog import Collector
from bench.loadclient import HANDSHAKE, PING_INTERVAL_SECONDS, PING_RECORD, RS
from bench.procs import JWT_SECRET, Proc, rss_kib, start_nats, start_server
from bench.wsframes import OP_CLOSE, OP_TEXT, FrameReader, WebSocketClient, client_frame, upgrade_request
from broker_bridge import catalog
from broker_bridge.publisher import RealtimePublisher
from gateway.devtoken import mint_token
from shared.alert_state import new_alert_id
from shared.timeutil import iso_utc

HUB_PATH: Final = "/hubs/admin"
API: Final = "/api/admin/realtime/"
SUBSCRIPTIONS: Final = ("SubscribeToAlerts", "SubscribeToAnalytics")
PATHS: Final = ("r", "n")  # REST, NATS
SEQ: Final = b'"sq":'
SOURCE: Final = b'"sp":"'
# Per client IP the gateway admits 200 connections by default: at most 150 from each source address.
PER_SOURCE: Final = 150
MISBEHAVIOURS: Final = ("oversized", "invalid_json", "junk_bytes", "slow")
# What the gateway should count for each misbehaviour (realtime_connections_closed_total{reason}).
EXPECTED_REASONS: Final[dict[str, tuple[str, ...]]] = {
    "oversized": ("frame_too_large",),
    "invalid_json": ("protocol_error",),
    "junk_bytes": ("transport_closed",),  # not WebSocket framing: aiohttp closes the socket (1002)
    "slow": ("slow_consumer", "write_timeout"),
}
OVERSIZED_BYTES: Final = 256 * 1024  # 4x REALTIME_MAX_FRAME_BYTES' default
SLOW_RCVBUF: Final = 4096
SLOW_ECHO_BYTES: Final = 30_000  # under REALTIME_MAX_MESSAGE_BYTES' 32 KB
SLOW_ECHOES_PER_S: Final = 8.0  # under REALTIME_INVOCATION_RATE_PER_CONNECTION's 10/s
TRACEBACK: Final = re.compile(r"Traceback \(most recent call last\)|\"exc\":")
ERROR_LINE: Final = re.compile(r"\b(ERROR|CRITICAL)\b")

DEFAULTS: Final[dict[str, Any]] = {
    "connections": 2000,
    "minutes": 30.0,
    "warmup_minutes": 5.0,
    "churn_per_minute": 0.05,
    "broadcasts_per_s": 10.0,
    "rest_gets_per_s": 5.0,
    "rest_posts_per_s": 2.0,
    "rest_users": 5,
    "misbehaving_fraction": 0.01,
    "misbehave_after_seconds": [0.0, 2.0],  # how long a misbehaving client behaves first
    "misbehave_pause_seconds": [2.0, 10.0],  # how long it waits before reconnecting after its cut
    "pad_bytes": 256,
    "sample_seconds": 5.0,
    "settle_seconds": 10.0,
    "ramp_per_s": 100.0,
    "gateway_env": {},  # REALTIME_* overrides, for experiments; the soak of record runs the defaults
}


@dataclass
class Life:
    """One connection from its Completion of the last subscription to its end: what it received, per path."""

    kind: str
    subscribed_at: float = 0.0  # time.monotonic()
    ended_at: float | None = None
    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    received: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    closed_by_server: bool = False
    close_text: str = ""


class SoakConn(WebSocketClient, asyncio.Protocol):
    """One SignalR JSON client over a raw WebSocket (``bench.wsframes``); healthy or one misbehaviour."""

    def __init__(self, soak: Soak, kind: str, user: str) -> None:
        self.soak = soak
        self.kind = kind
        self.user = user
        self.life = Life(kind)
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.upgraded = False
        self.upgrade_buffer = b""
        self.steps = list(SUBSCRIPTIONS)
        self.next_id = 0
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False
        self.last_send = time.monotonic()

    # -- transport ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        headers = {"Authorization": "Bearer " + self.soak.token(self.user)}
        transport.write(upgrade_request("127.0.0.1", self.soak.port, HUB_PATH, headers))

    def connection_lost(self, exc: Exception | None) -> None:
        self.life.ended_at = time.monotonic()
        if not self.closing:
            self.life.closed_by_server = True
        if not self.ready.done():
            self.ready.set_result(False)
        if not self.done.done():
            self.done.set_result(None)

    def on_open(self) -> None:
        self.send(HANDSHAKE)

    def on_refused(self, status: int) -> None:
        self.life.close_text = f"upgrade answered {status}"
        self.close()

    def on_broken(self, why: str) -> None:
        self.life.close_text = why
        self.abort()

    def on_closed_by_server(self) -> None:
        self.abort()

    def write_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))
            self.last_send = time.monotonic()

    def send(self, record: bytes) -> None:
        self.write_frame(OP_TEXT, record)

    def close(self) -> None:
        """A clean close by the client: a WebSocket Close, then the socket."""
        self.closing = True
        self.write_frame(OP_CLOSE, b"\x03\xe8")
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- SignalR ------------------------------------------------------------------------------

    def invoke(self, method: str) -> None:
        self.next_id += 1
        record = {"type": 1, "invocationId": str(self.next_id), "target": method, "arguments": []}
        self.send(json.dumps(record, separators=(",", ":")).encode() + RS)

    def next_step(self) -> None:
        if self.steps:
            self.invoke(self.steps.pop(0))
        elif not self.ready.done():
            self.life.subscribed_at = time.monotonic()
            self.ready.set_result(True)

    def on_message(self, payload: bytes) -> None:
        for record in payload.split(RS):
            if not record:
                continue
            if SEQ in record:
                self.on_numbered(record)
            elif record == b"{}" or b'"type":3' in record:
                if b'"error"' in record:
                    self.life.close_text = record.decode(errors="replace")[:200]
                    self.close()
                else:
                    self.next_step()
            elif b'"type":7' in record:
                self.life.close_text = record.decode(errors="replace")[:200]

    def on_numbered(self, record: bytes) -> None:
        start = record.index(SEQ) + len(SEQ)
        end = start
        while record[end : end + 1].isdigit():
            end += 1
        seq = int(record[start:end])
        at = record.index(SOURCE) + len(SOURCE)
        path = record[at : at + 1].decode()
        life = self.life
        life.received += 1
        last = life.last.get(path)
        if last is None:
            life.first[path] = seq
        elif seq <= last:
            life.duplicates += 1
            return
        elif seq > last + 1:
            life.gaps += 1
            life.missing += seq - last - 1
        life.last[path] = seq

    def keepalive(self) -> None:
        if self.upgraded and time.monotonic() - self.last_send >= PING_INTERVAL_SECONDS:
            self.send(PING_RECORD)


class Soak:
    """One S8 run: the processes, every client, the publishers and the samples."""

    def __init__(self, config: dict[str, Any], workdir: Path, log: Callable[[str], None]) -> None:
        self.config = {**DEFAULTS, **config}
        self.workdir = workdir
        self.log = log
        self.port = 0
        self.base_url = ""
        self._tokens: dict[str, str] = {}
        self._users = 0
        self._sources = 0
        self.healthy: set[SoakConn] = set()
        self.pinging: set[SoakConn] = set()  # slow readers: silent, they would be cut as client_timeout
        self.lives: list[Life] = []
        self.connect_failures: dict[str, int] = {}
        self.sent: dict[str, list[float]] = {path: [] for path in PATHS}  # monotonic send time of each seq
        self.publish_failures: dict[str, int] = {path: 0 for path in PATHS}
        self.publish_errors: dict[str, str] = {}
        self.rest_calls: dict[str, int] = {}
        self.misbehaviour: dict[str, dict[str, Any]] = {
            kind: {"attempts": 0, "cut": 0, "not_cut": 0, "seconds_to_cut": []} for kind in MISBEHAVIOURS
        }
        self.samples: list[list[float]] = []  # [seconds since start, gateway RSS MiB, open healthy clients]
        self.stopping = False

    def token(self, user: str) -> str:
        token = self._tokens.get(user)
        if token is None:
            token = self._tokens[user] = mint_token(
                secret=JWT_SECRET, roles=["Admin"], subject=user, ttl_seconds=24 * 3600, name=user
            )
        return token

    def new_user(self, kind: str) -> str:
        self._users += 1
        return f"soak-{kind}-{self._users}"

    def next_source(self) -> str:
        count = max(2, -(-int(self.config["connections"] * 1.2) // PER_SOURCE) + 1)
        self._sources = (self._sources + 1) % count
        return f"127.0.1.{self._sources + 1}"

    async def open(self, kind: str, *, rcvbuf: int = 0) -> SoakConn | None:
        loop = asyncio.get_running_loop()
        conn = SoakConn(self, kind, self.new_user(kind))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.next_source(), 0))
            async with asyncio.timeout(60):
                await loop.sock_connect(sock, ("127.0.0.1", self.port))
                await loop.create_connection(lambda: conn, sock=sock)
                ok = await conn.ready
        except (OSError, TimeoutError) as error:
            sock.close()
            ok = False
            conn.life.close_text = f"{type(error).__name__}: {error}"
        if not ok:
            conn.closing = True
            conn.abort()
            key = f"{kind}: {conn.life.close_text[:120]}"
            self.connect_failures[key] = self.connect_failures.get(key, 0) + 1
            return None
        return conn

    # -- healthy clients ----------------------------------------------------------------------

    async def open_healthy(self) -> bool:
        conn = await self.open("healthy")
        if conn is None:
            return False
        self.healthy.add(conn)
        self.lives.append(conn.life)
        conn.done.add_done_callback(lambda _f: self.healthy.discard(conn))
        return True

    async def ramp(self, count: int) -> None:
        rate = float(self.config["ramp_per_s"])
        started = time.monotonic()
        tasks = []
        for n in range(count):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.open_healthy()))
        await asyncio.gather(*tasks)

    async def churn(self) -> None:
        """Close ``churn_per_minute`` of the healthy clients a minute, one at a time, and open one for each."""
        interval = 60.0 / max(self.config["churn_per_minute"] * self.config["connections"], 1e-9)
        while not self.stopping:
            await asyncio.sleep(random.uniform(0.5, 1.5) * interval)
            if self.stopping or not self.healthy:
                break
            victim = random.choice(list(self.healthy))
            self.healthy.discard(victim)
            victim.close()
            await self.open_healthy()

    async def keepalive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for conn in [*self.healthy, *self.pinging]:
                conn.keepalive()

    # -- misbehaving clients ------------------------------------------------------------------

    async def misbehave(self, kind: str) -> None:
        """Connect, misbehave, wait to be cut; again after a pause, until the soak stops."""
        low, high = self.config["misbehave_pause_seconds"]
        figures = self.misbehaviour[kind]
        await asyncio.sleep(random.uniform(0, high))
        while not self.stopping:
            conn = await self.open(kind, rcvbuf=SLOW_RCVBUF if kind == "slow" else 0)
            if conn is None:
                await asyncio.sleep(high)
                continue
            figures["attempts"] += 1
            await asyncio.sleep(random.uniform(*self.config["misbehave_after_seconds"]))
            started = time.monotonic()
            if kind == "oversized":
                conn.write_frame(
                    OP_TEXT, b'{"type":1,"target":"SendTestMessage","arguments":["' + b"x" * OVERSIZED_BYTES
                )
            elif kind == "invalid_json":
                conn.send(b'{"type":1,"target":"Subscri\x00beToAlerts",,,}' + RS)
            elif kind == "junk_bytes":  # not WebSocket framing: an unmasked frame with a reserved opcode, then noise
                assert conn.transport is not None
                conn.transport.write(b"\x83\x05hello" + os.urandom(64))
            else:
                assert conn.transport is not None
                conn.transport.pause_reading()
                self.pinging.add(conn)
                echoes = asyncio.create_task(self.echo_unread(conn))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.done), 120.0 if kind == "slow" else 30.0)
            self.pinging.discard(conn)
            if kind == "slow":
                echoes.cancel()
            if conn.life.closed_by_server:
                figures["cut"] += 1
                figures["seconds_to_cut"].append(time.monotonic() - started)
            else:
                figures["not_cut"] += 1
                conn.closing = True
                conn.abort()
            await asyncio.sleep(random.uniform(low, high))

    async def echo_unread(self, conn: SoakConn) -> None:
        """A slow reader asks for echoes it never reads, within the invocation rate limit: its output
        grows by ``SLOW_ECHO_BYTES`` per invocation until the gateway cuts it (slow consumer or write
        timeout). Broadcasts alone (a few KB/s) would take many minutes to fill the socket buffers (the
        kernel's send buffer grows to 4 MiB on loopback) and the 1 MiB outbound limit behind them."""
        record = b'{"type":1,"invocationId":"e","target":"SendTestMessage","arguments":["'
        record += b"x" * SLOW_ECHO_BYTES + b'"]}' + RS
        while not conn.done.done():
            conn.send(record)
            await asyncio.sleep(1 / SLOW_ECHOES_PER_S)

    # -- publishers ---------------------------------------------------------------------------

    def alert_data(self, path: str, seq: int) -> dict[str, Any]:
        return {"sp": path, "sq": seq, "pad": "x" * int(self.config["pad_bytes"])}

    async def broadcast(self, session: aiohttp.ClientSession, nats_url: str) -> None:
        """``broadcasts_per_s`` SystemAlerts, half through REST and half through NATS, each path numbered from 0.

        Each path publishes one message at a time (the next POST after the last one's answer), so its numbers
        are in the order the gateway got them; a path that falls behind its schedule catches up at once.
        """
        import nats

        client = await nats.connect(nats_url)
        publisher = RealtimePublisher(_NatsPublish(client))
        headers = {"Authorization": "Bearer " + self.token("soak-publisher")}
        rate = float(self.config["broadcasts_per_s"]) / len(PATHS)

        async def rest(seq: int) -> None:
            body = {"type": "info", "message": "soak", "data": self.alert_data("r", seq)}
            async with session.post(self.base_url + API + "alert", json=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"POST alert answered {response.status}")

        async def nats_path(seq: int) -> None:
            alert = catalog.system_alert(
                alert_id=new_alert_id(time.time()),
                alert_type="info",
                message="soak",
                timestamp=iso_utc(),
                data=self.alert_data("n", seq),
            )
            await publisher.publish(alert)

        async def path_loop(path: str, send: Callable[[int], Any], offset: float) -> None:
            started = time.monotonic() + offset
            while not self.stopping:
                seq = len(self.sent[path])
                delay = started + seq / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.sent[path].append(time.monotonic())
                try:
                    await send(seq)
                except Exception as error:  # counted, the first of each path kept; the soak goes on
                    self.publish_failures[path] += 1
                    self.publish_errors.setdefault(path, f"{type(error).__name__}: {error}")

        try:
            await asyncio.gather(path_loop("r", rest, 0.0), path_loop("n", nats_path, 0.5 / rate))
        finally:
            await client.flush()
            await client.close()

    async def rest_traffic(self, session: aiohttp.ClientSession) -> None:
        """A few admins' GETs and POSTs at a steady rate (each user far inside 50 POSTs/s)."""
        users = [self.token(f"soak-admin-{n}") for n in range(int(self.config["rest_users"]))]
        gets = ["status", "platform-snapshot", "health"]
        rate = float(self.config["rest_gets_per_s"]) + float(self.config["rest_posts_per_s"])
        post_share = float(self.config["rest_posts_per_s"]) / rate
        n = 0
        started = time.monotonic()
        while not self.stopping:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            headers = {"Authorization": "Bearer " + users[n % len(users)]}
            try:
                if random.random() < post_share:
                    body = {"userId": str(uuid.UUID(int=n % 500 + 1)), "action": "login", "details": {"n": n}}
                    request = session.post(self.base_url + API + "notify/user-action", json=body, headers=headers)
                else:
                    request = session.get(self.base_url + API + gets[n % len(gets)], headers=headers)
                async with request as response:
                    await response.read()
                    key = f"{response.method} {response.status}"
            except aiohttp.ClientError as error:
                key = type(error).__name__
            self.rest_calls[key] = self.rest_calls.get(key, 0) + 1
            n += 1

    async def settle(self) -> None:
        """Until every healthy client has the last broadcast of each path (at most ``settle_seconds``)."""
        deadline = time.monotonic() + float(self.config["settle_seconds"])
        finals = {path: len(times) - 1 for path, times in self.sent.items()}
        while time.monotonic() < deadline:
            if all(conn.life.last.get(path, -1) >= final for conn in self.healthy for path, final in finals.items()):
                return
            await asyncio.sleep(0.2)

    # -- samples and checks -------------------------------------------------------------------

    async def sample(self, gateway: Proc, started: float) -> None:
        while True:
            self.samples.append(
                [round(time.monotonic() - started, 1), round(rss_kib(gateway.pid) / 1024, 2), len(self.healthy)]
            )
            await asyncio.sleep(float(self.config["sample_seconds"]))

    def check_lives(self, end: float) -> dict[str, Any]:
        """Per life and path: the broadcasts sent while it was subscribed, all there, once, in order."""
        settle = float(self.config["settle_seconds"])
        lost = duplicates = short_lives = 0
        for life in self.lives:
            lost += life.missing
            duplicates += life.duplicates
            until = (life.ended_at - settle) if life.ended_at is not None else end
            short = False
            for path in PATHS:
                times = self.sent[path]
                expected = [seq for seq, at in enumerate(times) if life.subscribed_at < at <= until]
                if not expected:
                    continue
                first, last = life.first.get(path), life.last.get(path)
                if first is None or last is None:
                    lost += len(expected)
                    short = True
                    continue
                if first > expected[0]:
                    lost += first - expected[0]
                    short = True
                if last < expected[-1]:
                    lost += expected[-1] - last
                    short = True
            short_lives += short
        return {"lost": lost, "duplicates": duplicates, "lives_short": short_lives}


class _NatsPublish:
    """``broker_bridge.interface.Publisher`` over a plain nats-py client (as any internal service publishes)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def publish(self, subject: str, payload: bytes) -> None:
        await self.client.publish(subject, payload)


def closed_by_reason(metrics_text: str) -> dict[str, float]:
    reasons: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("realtime_connections_closed_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            reasons[reason] = float(line.rsplit(" ", 1)[1])
    return reasons


def scan_log(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    tracebacks = [line for line in lines if TRACEBACK.search(line)]
    errors = [line for line in lines if ERROR_LINE.search(line)]
    return {
        "lines": len(lines),
        "tracebacks": len(tracebacks),
        "error_lines": len(errors),
        "examples": [line[:300] for line in (tracebacks + errors)[:5]],
    }


def rss_growth(samples: list[list[float]], warmup_seconds: float, window: int = 6) -> dict[str, Any]:
    """Gateway RSS after the warm-up (median of the first ``window`` samples after it) against the end
    (median of the last ``window``): MiB and percent."""
    after = [rss for at, rss, _open in samples if at >= warmup_seconds]
    if len(after) < 2:
        return {"start_mib": None, "end_mib": None, "growth_mib": None, "growth_pct": None}
    size = max(1, min(window, len(after) // 3))
    start = statistics.median(after[:size])
    end = statistics.median(after[-size:])
    return {
        "start_mib": round(start, 2),
        "end_mib": round(end, 2),
        "growth_mib": round(end - start, 2),
        "growth_pct": round(100 * (end - start) / start, 2),
        "max_mib": round(max(after), 2),
    }


async def metrics_text(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.get(base_url + "/metrics") as response:
        return await response.text()


async def s8(workdir: Path, config: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Run the soak; every figure of the S8 section."""
    soak = Soak(config, workdir, log)
    cfg = soak.config
    nats = await start_nats(workdir, core=1, name="nats-s8")
    collector = Collector(workdir, nats.extra["url"], "collector-s8", batch=100)
    gateway: Proc | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        await collector.start()
        gateway = await start_server(
            "gateway", "uvloop", workdir, nats_url=nats.extra["url"], tag="s8", env=cfg.get("gateway_env")
        )
        soak.port, soak.base_url = gateway.extra["port"], gateway.extra["base_url"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            before = closed_by_reason(await metrics_text(session, soak.base_url))
            started = time.monotonic()
            tasks.append(asyncio.create_task(soak.sample(gateway, started)))
            tasks.append(asyncio.create_task(soak.keepalive()))
            await soak.ramp(int(cfg["connections"]))
            log(f"S8: {len(soak.healthy)} healthy clients after {time.monotonic() - started:.0f} s")
            bad = max(len(MISBEHAVIOURS), round(cfg["connections"] * cfg["misbehaving_fraction"]))
            tasks += [asyncio.create_task(soak.misbehave(MISBEHAVIOURS[n % len(MISBEHAVIOURS)])) for n in range(bad)]
            tasks.append(asyncio.create_task(soak.churn()))
            tasks.append(asyncio.create_task(soak.rest_traffic(session)))
            publisher = asyncio.create_task(soak.broadcast(session, nats.extra["url"]))
            load_started = time.monotonic()
            await asyncio.sleep(float(cfg["minutes"]) * 60)
            soak.stopping = True
            await publisher
            end = time.monotonic()
            await soak.settle()
            after = closed_by_reason(await metrics_text(session, soak.base_url))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks = []
        healthy_at_end = len(soak.healthy)
        for conn in list(soak.healthy):
            conn.close()
        await gateway.stop()  # a traceback on shutdown counts too
        gateway_log = gateway.child.log()
        gateway_rss_note = soak.samples[-1][1] if soak.samples else None
        checks = soak.check_lives(end)
        reasons = {reason: after.get(reason, 0) - before.get(reason, 0) for reason in after}
        warmup = float(cfg["warmup_minutes"]) * 60 + (load_started - started)
        return {
            "config": cfg,
            "load_seconds": round(end - load_started, 1),
            "healthy_at_end": healthy_at_end,
            "healthy_lives": len(soak.lives),
            "healthy_dropped": sum(1 for life in soak.lives if life.closed_by_server),
            "dropped_examples": [life.close_text for life in soak.lives if life.closed_by_server][:5],
            "connect_failures": soak.connect_failures,
            "broadcasts": {path: len(times) for path, times in soak.sent.items()},
            "publish_failures": soak.publish_failures,
            "publish_errors": soak.publish_errors,
            "received": sum(life.received for life in soak.lives),
            **checks,
            "rest_calls": soak.rest_calls,
            "misbehaving": {
                kind: {
                    **{key: value for key, value in figures.items() if key != "seconds_to_cut"},
                    "median_seconds_to_cut": round(statistics.median(figures["seconds_to_cut"]), 2)
                    if figures["seconds_to_cut"]
                    else None,
                    "max_seconds_to_cut": round(max(figures["seconds_to_cut"]), 2)
                    if figures["seconds_to_cut"]
                    else None,
                }
                for kind, figures in soak.misbehaviour.items()
            },
            "closed_by_reason": reasons,
            "warmup_seconds": round(warmup, 1),
            "rss": rss_growth(soak.samples, warmup),
            "rss_samples": soak.samples,
            "gateway_rss_last_sample_mib": gateway_rss_note,
            "collector_rss_mib": round(rss_kib(collector.child.pid) / 1024, 1),
            "nats_rss_mib": round(rss_kib(nats.pid) / 1024, 1),
            "gateway_log": scan_log(gateway_log),
        }
    finally:
        for task in tasks:
            task.cancel()
        if gateway is not None and gateway.child.alive:
            await gateway.stop()
        await asyncio.to_thread(collector.child.stop)
        await nats.stop()


# -- report -------------------------------------------------------------------------------------------

RSS_GROWTH_TARGET_PCT: Final = 5.0


def _entry(results: dict[str, Any]) -> Any:
    return results.get("ours", {}).get("soak")


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def rss_over_time(samples: list[list[float]], rows: int = 12) -> list[list[float]]:
    """About ``rows`` samples, evenly spaced, the last included."""
    if not samples:
        return []
    step = max(1, len(samples) // rows)
    picked = samples[::step]
    return picked if picked[-1] is samples[-1] else [*picked, samples[-1]]


def markdown_section(results: dict[str, Any]) -> list[str]:
    entry = _entry(results)
    out = ["## S8 soak", ""]
    if not isinstance(entry, dict) or "error" in entry:
        return [*out, f"Not measured: {entry}", ""]
    cfg, rss, log = entry["config"], entry["rss"], entry["gateway_log"]
    reasons = entry["closed_by_reason"]
    out += [
        "`python -m gateway` (defaults, pinned to core 0) with a JetStream nats-server and "
        "`python -m stats_collector`; "
        f"{cfg['connections']:,} SignalR JSON dashboards subscribed to `alerts` and `analytics` for "
        f"{entry['load_seconds'] / 60:.0f} minutes of load, {100 * cfg['churn_per_minute']:g} % of them closed and "
        f"reopened per minute, {cfg['broadcasts_per_s']:g} numbered SystemAlerts/s (half `POST alert`, half straight "
        f"into NATS), {cfg['rest_gets_per_s']:g} REST GETs/s and {cfg['rest_posts_per_s']:g} POSTs/s from "
        f"{cfg['rest_users']} admins, and {100 * cfg['misbehaving_fraction']:g} % misbehaving clients (oversized "
        "frame, invalid JSON, bytes that are not WebSocket framing, a slow reader that stops reading while asking "
        "for 30 KB echoes), each reconnecting and misbehaving again after a pause. Warm-up: "
        f"{entry['warmup_seconds'] / 60:.1f} minutes from the first connection. Method: bench/soak.py.",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
        f"| gateway RSS after warm-up → end (MiB) | {rss['start_mib']} → {rss['end_mib']} "
        f"({rss['growth_pct']} %, max {rss.get('max_mib')}) | < {RSS_GROWTH_TARGET_PCT:g} % growth | "
        f"{_yes(rss['growth_pct'] is not None and rss['growth_pct'] < RSS_GROWTH_TARGET_PCT)} |",
        f"| healthy clients closed by the server | {entry['healthy_dropped']} of {entry['healthy_lives']:,} "
        f"connections (churn included) | 0 | {_yes(entry['healthy_dropped'] == 0)} |",
        f"| healthy connections refused | {sum(entry['connect_failures'].values())} | 0 | "
        f"{_yes(not entry['connect_failures'])} |",
        f"| broadcasts lost / duplicated for healthy clients | {entry['lost']} / {entry['duplicates']} "
        f"({entry['received']:,} received; {entry['broadcasts']['r']:,} via REST, {entry['broadcasts']['n']:,} "
        f"via NATS) | 0 / 0 | {_yes(entry['lost'] == 0 and entry['duplicates'] == 0)} |",
        f"| tracebacks / ERROR lines in the gateway log | {log['tracebacks']} / {log['error_lines']} | 0 | "
        f"{_yes(log['tracebacks'] == 0)} |",
        "",
        "| misbehaviour | attempts | cut | not cut | median / max s to cut | counted as |",
        "|---|---|---|---|---|---|",
    ]
    for kind, figures in entry["misbehaving"].items():
        counted = ", ".join(f"`{reason}` {reasons.get(reason, 0):,.0f}" for reason in EXPECTED_REASONS[kind])
        out.append(
            f"| {kind} | {figures['attempts']} | {figures['cut']} | {figures['not_cut']} | "
            f"{figures['median_seconds_to_cut']} / {figures['max_seconds_to_cut']} | {counted} |"
        )
    out += [
        "",
        "`realtime_connections_closed_total` over the run: "
        + ", ".join(f"`{reason}` {count:,.0f}" for reason, count in sorted(reasons.items()))
        + ". REST calls: "
        + ", ".join(f"{key}: {count:,}" for key, count in sorted(entry["rest_calls"].items()))
        + f". At the end: collector RSS {entry['collector_rss_mib']} MiB, nats-server {entry['nats_rss_mib']} MiB.",
        "",
        "Gateway RSS over time (s from the first connection, MiB, healthy clients open):",
        "",
        "| s | RSS MiB | open |",
        "|---|---|---|",
        *[f"| {at:,.0f} | {mib} | {open_:,.0f} |" for at, mib, open_ in rss_over_time(entry["rss_samples"])],
        "",
    ]
    if log["examples"]:
        out += ["Gateway log lines counted:", "", *[f"- `{line}`" for line in log["examples"]], ""]
    return out


def console_line(results: dict[str, Any]) -> str | None:
    entry = _entry(results)
    if not isinstance(entry, dict) or "rss" not in entry:
        return None
    return (
        f"  S8 soak {entry['config']['connections']:,} clients {entry['load_seconds'] / 60:.0f} min: "
        f"RSS {entry['rss']['growth_pct']} % after warm-up, dropped {entry['healthy_dropped']}, "
        f"lost {entry['lost']}, duplicates {entry['duplicates']}, tracebacks {entry['gateway_log']['tracebacks']}"
    )
