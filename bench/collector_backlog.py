"""S7: the stats collector drains a backlog of platform events from JetStream.

A private JetStream nats-server (core 1, with the orchestrator) gets a backlog: ``events`` mixed events of
``users`` distinct users, timestamps spread over the 48 hours before the run in shuffled order, 1 %
malformed, and 5 % re-sent without the ``Nats-Msg-Id`` header a few seconds after their originals (JetStream
stores both; the collector must count one). Then ``python -m stats_collector`` runs pinned to core 0:

* **drain**: from an empty state to the end of the backlog: events/s (stream messages applied between the
  first sample after the collector is ready and the one that sees the last message applied; none when the
  backlog was gone before the first sample, as in the smoke run), peak RSS (sampled every 50 ms), the
  largest value it wrote to KV, and
  whether the stored snapshot equals the figures computed here from the backlog; py-spy samples the first
  seconds of the drain;
* **kill**: from an empty state again, SIGKILL once half the backlog is applied, start a new collector, and
  check the figures again when it has drained the rest.

The figures are computed independently of ``stats_collector`` (tests/support/collector.py). No event is
stamped within 5 minutes either side of the active window's edge, so the active-user count cannot change
while the run compares it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import nats
from nats.aio.client import Client

from bench.procs import CLIENT_CORE, SERVER_CORE, pinned, rss_kib, start_nats
from bench.scenarios import summarise_pyspy
from scripts.processes import ChildProcess, free_port, http_status
from stats_collector.jetstream import ensure_stream, events_stream_config
from tests.support.collector import expected_figures
from tests.support.fanout import metric_value

SUBJECT_PREFIX: Final = "platform.events."
# Kinds and their shares (the simulator's mix).
KINDS: Final = (
    ("user.active", 50),
    ("image.generated", 18),
    ("website.generated", 14),
    ("payment.succeeded", 8),
    ("user.registered", 7),
    ("generation.failed", 3),
)
MALFORMED: Final = (b"not json", b'{"timestamp": "2026-01-01T00:00:00Z"}', b'{"id": "x", "timestamp": "yesterday"}')
DUPLICATE_SHARE: Final = 0.05
MALFORMED_SHARE: Final = 0.01
# Duplicates are re-sent this many events after their original (a few seconds at the publish rate).
DUPLICATE_DELAY_EVENTS: Final = 60_000
# Timestamps: 48 h before the run, but none within 5 minutes either side of the 15-minute active window's edge.
SPREAD: Final = timedelta(hours=48)
ACTIVE_EDGE: Final = timedelta(minutes=15)
EDGE_MARGIN: Final = timedelta(minutes=5)
SAMPLE_SECONDS: Final = 0.05
NO_VALUE: Final = "\u2013"  # an en dash, as in the other tables
COLLECTOR_START_SECONDS: Final = 60.0
# Buckets the collector owns (emptied between the two runs so each starts from nothing).
COLLECTOR_BUCKETS: Final = (
    "COLLECTOR_STATE",
    "COLLECTOR_IDS",
    "COLLECTOR_USERS",
    "COLLECTOR_LEASE",
    "REALTIME_SNAPSHOT",
)


@dataclass
class Backlog:
    """What is published (subject, payload, headers) and the valid (subject, body) pairs JetStream stores."""

    messages: list[tuple[str, bytes, dict[str, str] | None]] = field(default_factory=list)
    valid: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    duplicates: int = 0
    malformed: int = 0


def make_backlog(count: int, users: int, now: datetime, rng: random.Random) -> Backlog:
    """``count`` stream messages in total (originals, duplicates and malformed ones)."""
    names = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(users)]
    kinds = [kind for kind, _ in KINDS]
    weights = [weight for _, weight in KINDS]
    duplicates = round(count * DUPLICATE_SHARE)
    malformed = round(count * MALFORMED_SHARE)
    originals = count - duplicates - malformed
    seconds = SPREAD.total_seconds()
    edge = (ACTIVE_EDGE - EDGE_MARGIN).total_seconds(), (ACTIVE_EDGE + EDGE_MARGIN).total_seconds()
    bodies: list[tuple[str, dict[str, Any]]] = []
    for n in range(originals):
        ago = rng.uniform(60, seconds)
        while edge[0] <= ago <= edge[1]:
            ago = rng.uniform(60, seconds)
        kind = rng.choices(kinds, weights)[0]
        stamp = (now - timedelta(seconds=ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body: dict[str, Any] = {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "timestamp": stamp}
        if kind != "generation.failed" or n % 2:
            body["userId"] = names[n % users] if n < users else rng.choice(names)
        if kind == "website.generated":
            body["generationTime"] = round(rng.uniform(0.5, 30.0), 2)
        elif kind == "payment.succeeded":
            body.update(amount=rng.choice((0.1, 0.07, 9.99, 19.99, 49.0, 99.95)), currency="USD")
        bodies.append((SUBJECT_PREFIX + kind, body))
    backlog = Backlog(duplicates=duplicates, malformed=malformed)
    # Every message gets a position; sorting by it interleaves duplicates and malformed ones (list inserts
    # into half a million entries would take minutes).
    order: list[tuple[float, int, tuple[str, dict[str, Any], bool] | bytes]] = [
        (float(index), index, (subject, body, True)) for index, (subject, body) in enumerate(bodies)
    ]
    for index in rng.sample(range(originals), duplicates):
        subject, body = bodies[index]
        at = index + DUPLICATE_DELAY_EVENTS + rng.randrange(DUPLICATE_DELAY_EVENTS) + 0.5
        order.append((at, len(order), (subject, body, False)))
    for _ in range(malformed):
        order.append((rng.uniform(0, originals), len(order), rng.choice(MALFORMED)))
    order.sort(key=lambda item: (item[0], item[1]))
    for _, _, item in order:
        if isinstance(item, bytes):
            backlog.messages.append((SUBJECT_PREFIX + "user.active", item, None))
            continue
        subject, body, first = item
        headers = {"Nats-Msg-Id": body["id"]} if first else None
        backlog.messages.append((subject, json.dumps(body).encode(), headers))
        backlog.valid.append((subject, body))
    return backlog


async def publish_backlog(client: Client, backlog: Backlog) -> float:
    """Publish every message with acknowledgements, many in flight (a stream drops core publishes that
    outrun its ingest); every one must be stored."""
    js = client.jetstream()
    started = time.monotonic()
    acks = [await js.publish_async(subject, payload, headers=headers) for subject, payload, headers in backlog.messages]
    stored = sum(1 for ack in await asyncio.gather(*acks) if not ack.duplicate)
    if stored != len(backlog.messages):
        raise RuntimeError(f"JetStream stored {stored} of {len(backlog.messages)} backlog messages")
    return time.monotonic() - started


class Collector:
    """``python -m stats_collector`` pinned to the server core, with its probes on a free port."""

    def __init__(self, workdir: Path, nats_url: str, name: str, batch: int) -> None:
        self.port = free_port()
        env = {
            "REALTIME_NATS_URL": nats_url,
            "REALTIME_METRICS_HOST": "127.0.0.1",
            "REALTIME_METRICS_PORT": str(self.port),
            "REALTIME_LOG_LEVEL": "WARNING",
            "REALTIME_PUBLISH_INTERVAL_SECONDS": "1",
            "REALTIME_LEASE_TTL_SECONDS": "2",
            "REALTIME_FETCH_BATCH": str(batch),
            "REALTIME_REPLICA_ID": name,
        }
        argv = pinned(SERVER_CORE, [sys.executable, "-m", "stats_collector"])
        self.child = ChildProcess(argv, name=name, log_path=workdir / f"{name}.log", env=env)
        self.peak_rss_kib = 0

    async def start(self) -> None:
        self.child.start()
        url = f"http://127.0.0.1:{self.port}/readyz"
        await asyncio.to_thread(
            self.child.wait_until,
            lambda: http_status(url) == 200,
            timeout=COLLECTOR_START_SECONDS,
            what=self.child.name,
        )

    async def metrics(self) -> str:
        def fetch() -> str:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                return str(response.read().decode())

        self.child.raise_if_exited()
        return await asyncio.to_thread(fetch)

    async def metric(self, name: str, **labels: str) -> float:
        return metric_value(await self.metrics(), name, **labels)

    async def follow(self, until: int, *, timeout: float) -> tuple[float, float, float | None]:  # noqa: ASYNC109
        """Sample the applied sequence and RSS until it reaches ``until``: (time and sequence of the first
        sample, time it reached ``until`` or None)."""
        first: tuple[float, float] | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.peak_rss_kib = max(self.peak_rss_kib, rss_kib(self.child.pid))
            sampled_at = time.monotonic()
            sequence = await self.metric("collector_last_sequence")
            if first is None:
                first = (sampled_at, sequence)
            if sequence >= until:
                return first[0], first[1], time.monotonic()
            await asyncio.sleep(SAMPLE_SECONDS)
        return (first or (0.0, 0.0))[0], (first or (0.0, 0.0))[1], None

    async def stop(self) -> None:
        await asyncio.to_thread(self.child.stop)


async def snapshot_equals(client: Client, expected: dict[str, Any], *, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    """Wait until the stored snapshot has every expected figure; the mismatches left at the end ({} = exact)."""
    kv = await client.jetstream().key_value("REALTIME_SNAPSHOT")
    wrong: dict[str, Any] = {"snapshot": "missing"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            data = json.loads((await kv.get("platform")).value or b"{}")["data"]
            wrong = {key: [value, data.get(key)] for key, value in expected.items() if data.get(key) != value}
            if not wrong:
                return {}
        await asyncio.sleep(0.2)
    return wrong


async def reset_state(client: Client) -> None:
    js = client.jetstream()
    for bucket in COLLECTOR_BUCKETS:
        with contextlib.suppress(Exception):
            await js.delete_key_value(bucket)


def profile_drain(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        return None
    argv = [pyspy, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds))]
    argv += ["--rate", "250", "--nonblocking", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(pinned(CLIENT_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603


async def s7(workdir: Path, cfg: dict[str, Any], log: Any) -> dict[str, Any]:
    """Run S7 with ``cfg`` (events, users, batch, drain_timeout, profile_seconds); figures as a dict."""
    server = await start_nats(workdir, core=CLIENT_CORE, name="nats-s7")
    client = await nats.connect(server.extra["url"], max_reconnect_attempts=5)
    try:
        stream = events_stream_config(max_age_seconds=86400, max_bytes=4 * 1024**3, replicas=1, duplicate_window=120)
        await ensure_stream(client.jetstream(), stream)
        now = datetime.now(UTC)
        log(f"S7 building a backlog of {cfg['events']:,} events")
        backlog = await asyncio.to_thread(make_backlog, cfg["events"], cfg["users"], now, random.Random(7))
        publish_seconds = await publish_backlog(client, backlog)
        total = len(backlog.messages)
        log(f"S7 backlog stored in {publish_seconds:.1f} s; draining")
        expected = await asyncio.to_thread(lambda: expected_figures(backlog.valid, now=datetime.now(UTC)).figures)
        result: dict[str, Any] = {
            "events": total,
            "users": cfg["users"],
            "duplicates": backlog.duplicates,
            "malformed": backlog.malformed,
            "publish_seconds": publish_seconds,
            "expected": expected,
        }
        result["drain"] = await _drain(workdir, client, server.extra["url"], cfg, total, expected)
        await reset_state(client)
        log("S7 SIGKILL in the middle")
        result["kill"] = await _kill_in_the_middle(workdir, client, server.extra["url"], cfg, total, expected)
        return result
    finally:
        await client.close()
        await server.stop()


async def _drain(
    workdir: Path, client: Client, url: str, cfg: dict[str, Any], total: int, expected: dict[str, Any]
) -> dict[str, Any]:
    collector = Collector(workdir, url, "collector-s7-drain", cfg["batch"])
    await collector.start()
    raw = workdir / "collector-s7.pyspy.txt"
    spy = profile_drain(collector.child.pid, cfg["profile_seconds"], raw)
    try:
        started, start_sequence, end = await collector.follow(total, timeout=cfg["drain_timeout"])
        mismatches = await snapshot_equals(client, expected, timeout=15)
        largest = await collector.metric("collector_largest_kv_write_bytes")
        duplicates = await collector.metric("collector_events_total", outcome="duplicate")
    finally:
        await collector.stop()
        if spy is not None:
            await asyncio.to_thread(spy.communicate)
    seconds = end - started if end is not None else None
    profile = summarise_pyspy(raw) if raw.exists() else {"skipped": "py-spy not available or failed"}
    return {
        "seconds": seconds,
        "events_per_s": (total - start_sequence) / seconds if seconds and total > start_sequence else None,
        "peak_rss_kib": collector.peak_rss_kib,
        "largest_kv_write_bytes": largest,
        "duplicates_counted_once": duplicates,
        "exact": not mismatches,
        "mismatches": mismatches,
        "profile": profile,
    }


async def _kill_in_the_middle(
    workdir: Path, client: Client, url: str, cfg: dict[str, Any], total: int, expected: dict[str, Any]
) -> dict[str, Any]:
    first = Collector(workdir, url, "collector-s7-killed", cfg["batch"])
    await first.start()
    try:
        *_, reached = await first.follow(total // 2, timeout=cfg["drain_timeout"])
        killed_at = await first.metric("collector_last_sequence")
    finally:
        first.child.kill()
    if reached is None:
        return {"error": "the first collector never reached the middle of the backlog"}
    second = Collector(workdir, url, "collector-s7-after-kill", cfg["batch"])
    await second.start()
    try:
        resumed = await second.metric("collector_checkpoint_sequence")
        *_, end = await second.follow(total, timeout=cfg["drain_timeout"])
        mismatches = await snapshot_equals(client, expected, timeout=15)
        largest = max(await second.metric("collector_largest_kv_write_bytes"), 0.0)
    finally:
        await second.stop()
    return {
        "killed_at_sequence": killed_at,
        "resumed_after_sequence": resumed,
        "drained": end is not None,
        "peak_rss_kib": max(first.peak_rss_kib, second.peak_rss_kib),
        "largest_kv_write_bytes": largest,
        "exact": end is not None and not mismatches,
        "mismatches": mismatches,
    }


# -- results ---------------------------------------------------------------------------------------------


TARGET_EVENTS_PER_S: Final = 15_000
TARGET_LARGEST_WRITE_BYTES: Final = 256 * 1024
TARGET_RSS_KIB: Final = 300 * 1024


def smoke_problems(results: dict[str, Any]) -> list[str]:
    """What makes an S7 result junk (not slow): no drain, figures not exact, nothing measured."""
    entry = results.get("collector", {}).get("backlog")
    if not isinstance(entry, dict) or "error" in entry:
        return [f"S7: no result ({entry})"]
    problems = []
    drain, kill = entry["drain"], entry["kill"]
    if drain.get("seconds") is None:
        problems.append("S7: the collector did not drain the backlog")
    if not drain.get("exact"):
        problems.append(f"S7: figures after the drain are not exact: {drain.get('mismatches')}")
    if not kill.get("exact"):
        problems.append(f"S7: figures after SIGKILL are not exact: {kill}")
    if not drain.get("peak_rss_kib") or not drain.get("largest_kv_write_bytes"):
        problems.append("S7: no RSS or KV write figure")
    return problems


def markdown_section(results: dict[str, Any]) -> list[str]:
    entry = results.get("collector", {}).get("backlog")
    out = ["## S7 collector backlog", ""]
    if not isinstance(entry, dict) or "error" in entry:
        return [*out, f"Not measured: {entry}", ""]
    drain, kill = entry["drain"], entry["kill"]
    out += [
        f"`python -m stats_collector` pinned to core 0 drains {entry['events']:,} events from JetStream "
        f"({entry['users']:,} distinct users, {entry['duplicates']:,} re-sent without `Nats-Msg-Id` seconds after "
        f"their originals, {entry['malformed']:,} malformed, timestamps spread over 48 h and shuffled); "
        "nats-server and the orchestrator on core 1. Then, from an empty state again, SIGKILL at half the backlog "
        "and a new collector drains the rest. Figures are checked against ones computed from the backlog.",
        "",
        "| figure | drain | after SIGKILL in the middle | target |",
        "|---|---|---|---|",
        f"| events/s | {_num(drain.get('events_per_s'))} | {NO_VALUE} | ≥ {TARGET_EVENTS_PER_S:,} |",
        f"| peak RSS (MiB) | {_mib(drain.get('peak_rss_kib'))} | {_mib(kill.get('peak_rss_kib'))} | < 300 |",
        f"| largest KV write (bytes) | {_num(drain.get('largest_kv_write_bytes'))} | "
        f"{_num(kill.get('largest_kv_write_bytes'))} | < {TARGET_LARGEST_WRITE_BYTES:,} |",
        f"| figures exact | {'yes' if drain.get('exact') else 'no'} | {'yes' if kill.get('exact') else 'no'} | yes |",
        "",
        f"Killed at stream sequence {_num(kill.get('killed_at_sequence'))}; the new collector resumed after the "
        f"checkpoint at {_num(kill.get('resumed_after_sequence'))}. Duplicates counted once in the drain: "
        f"{_num(drain.get('duplicates_counted_once'))}.",
        "",
    ]
    profile = drain.get("profile", {})
    if profile.get("self"):
        out += [
            f"Where the collector's busy samples were during the drain (py-spy, {profile['samples']} busy samples):",
            "",
            "| self % | function | inclusive % | function |",
            "|---|---|---|---|",
        ]
        for (leaf, share), (frame, inclusive) in zip(profile["self"][:10], profile["inclusive"][:10], strict=False):
            out.append(f"| {share:.1f} | `{leaf}` | {inclusive:.1f} | `{frame}` |")
        out.append("")
    return out


def console_line(results: dict[str, Any]) -> str | None:
    entry = results.get("collector", {}).get("backlog")
    if not isinstance(entry, dict) or "drain" not in entry:
        return None
    drain, kill = entry["drain"], entry["kill"]
    return (
        f"  S7 collector {entry['events']:,} events: {_num(drain.get('events_per_s'))}/s, "
        f"RSS {_mib(drain.get('peak_rss_kib'))} MiB, largest KV write {_num(drain.get('largest_kv_write_bytes'))} B, "
        f"exact {drain.get('exact')}, after SIGKILL exact {kill.get('exact')}"
    )


def _num(value: Any) -> str:
    return NO_VALUE if value is None else f"{value:,.0f}"


def _mib(kib: Any) -> str:
    return NO_VALUE if not kib else f"{kib / 1024:,.0f}"
