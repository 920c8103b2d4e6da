"""``python -m stats_collector`` as a real process for integration tests, and helpers to read what it wrote.

A :class:`tests.support.processes.ServiceProcess` like the gateway: a free port (here for ``/metrics``,
``/healthz`` and ``/readyz``), environment overrides, a log file, and waits that poll (never a fixed sleep)::

    collector = CollectorProcess(nats.url, env={"REALTIME_PUBLISH_INTERVAL_SECONDS": "1"})
    await collector.astart()
    await collector.wait_metric("collector_last_sequence", lambda v: v >= 10, seconds=10)
    collector.kill()            # SIGKILL, no chance to save anything
    code = collector.stop()     # SIGTERM: save, publish a last snapshot, drain, exit 0
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

import aiohttp
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import KeyNotFoundError, NotFoundError

from scripts.processes import wait_until_async
from tests.support.fanout import metric_value
from tests.support.processes import ServiceProcess

EVENTS_STREAM = "PLATFORM_EVENTS"
DEADLETTER_STREAM = "PLATFORM_DEADLETTER"
STATE_BUCKET = "COLLECTOR_STATE"
CHECKPOINT_KEY = "checkpoint"
SNAPSHOT_BUCKET = "REALTIME_SNAPSHOT"


class CollectorProcess(ServiceProcess):
    """``python -m stats_collector`` against ``nats_url`` with ``/metrics`` on a free port."""

    module = "stats_collector"

    def __init__(
        self, nats_url: str, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (), label: str = "collector"
    ) -> None:
        super().__init__(label=label, env=env, args=args)
        self.nats_url = nats_url

    def service_env(self) -> dict[str, str]:
        return {
            "REALTIME_NATS_URL": self.nats_url,
            "REALTIME_METRICS_HOST": "127.0.0.1",
            "REALTIME_METRICS_PORT": str(self.port),
        }

    async def astart(self, *, seconds: float = 20) -> None:
        """:meth:`start` without blocking the event loop (background publishers keep running)."""
        await asyncio.to_thread(self.start, seconds=seconds)

    async def astop(self, *, seconds: float = 15) -> int | None:
        return await asyncio.to_thread(self.stop, timeout=seconds)

    # -- /metrics -----------------------------------------------------------------------------

    async def metrics_text(self) -> str:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(self.base_url + "/metrics") as response,
        ):
            assert response.status == 200, response.status
            return await response.text()

    async def metric(self, name: str, **labels: str) -> float:
        return metric_value(await self.metrics_text(), name, **labels)

    async def wait_metric(
        self,
        name: str,
        predicate: Callable[[float], bool],
        *,
        seconds: float = 10,
        interval: float = 0.02,
        **labels: str,
    ) -> float:
        """Poll ``/metrics`` until ``name`` (summed over ``labels``) satisfies ``predicate``; return it."""
        seen: list[float] = []

        async def matches() -> bool:
            if self.child is not None:
                self.child.raise_if_exited()
            seen.append(await self.metric(name, **labels))
            return predicate(seen[-1])

        async def last_value() -> str:
            return f"{name}{labels or ''} = {seen[-1] if seen else None}"

        what = f"{self.label}'s {name} to match"
        await wait_until_async(matches, timeout=seconds, what=what, interval=interval, describe=last_value)
        return seen[-1]


class Sampler:
    """Publishes samples of ``platform.metrics.<metric>`` every ``interval`` seconds at the current ``level``."""

    def __init__(
        self, nc: Client, *, metric: str = "api_response_time_ms", level: float = 100.0, interval: float = 0.025
    ) -> None:
        self.nc = nc
        self.subject = "platform.metrics." + metric
        self.level = level
        self.interval = interval
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            sample = {"value": self.level, "timestamp": iso(datetime.now(UTC))}
            await self.nc.publish(self.subject, json.dumps(sample).encode())
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# -- reading what the collector stored in NATS -------------------------------------------------


async def kv_json(nc: Client, bucket: str, key: str) -> tuple[dict[str, Any], int] | None:
    """The JSON value and revision of ``bucket/key``, or None when the bucket or key does not exist."""
    js = nc.jetstream()
    try:
        kv = await js.key_value(bucket)
        entry = await kv.get(key)
    except (KeyNotFoundError, NotFoundError):
        return None
    if entry.value is None:
        return None
    value: dict[str, Any] = json.loads(entry.value)
    return value, int(entry.revision or 0)


async def saved_state(nc: Client) -> dict[str, Any] | None:
    """``COLLECTOR_STATE/checkpoint``: ``{"sequence": ..., "counts": {...}, ...}``."""
    found = await kv_json(nc, STATE_BUCKET, CHECKPOINT_KEY)
    return found[0] if found else None


async def stored_snapshot(nc: Client) -> dict[str, Any] | None:
    """The ``data`` of ``REALTIME_SNAPSHOT/platform`` (what the gateway serves)."""
    record = await stored_snapshot_record(nc)
    return None if record is None else dict(record["data"])


async def stored_snapshot_record(nc: Client) -> dict[str, Any] | None:
    """All of ``REALTIME_SNAPSHOT/platform``: ``{"timestamp", "data", "complete", "gap"?}``."""
    found = await kv_json(nc, SNAPSHOT_BUCKET, "platform")
    return None if found is None else found[0]


async def stream_last_seq(nc: Client, stream: str = EVENTS_STREAM) -> int:
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.last_seq)


async def read_stream(nc: Client, stream: str) -> list[RawStreamMsg]:
    """Every message of ``stream`` (with headers), in sequence order; for small test streams."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    messages = []
    for seq in range(int(info.state.first_seq), int(info.state.last_seq) + 1):
        if seq == 0:
            continue
        messages.append(await js.get_msg(stream, seq))
    return messages


# -- events and the figures they imply, computed independently of stats_collector.aggregate -------

SUBJECT_PREFIX = "platform.events."
ACTIVE_WINDOW = timedelta(minutes=15)
# Amounts whose float sum drifts from the exact cent total (0.1 + 0.2 ...), and common prices.
AMOUNTS = (0.1, 0.2, 0.3, 0.01, 0.07, 9.99, 19.99, 49.0, 99.95, 1234.56, 333.33)
KIND_WEIGHTS = (
    ("user.registered", 12),
    ("user.active", 35),
    ("website.generated", 18),
    ("image.generated", 15),
    ("generation.failed", 5),
    ("payment.succeeded", 15),
)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One publish: ``msg_id`` is the ``Nats-Msg-Id`` header (the event id, or another for a retry copy)."""

    subject: str
    body: dict[str, Any]
    msg_id: str


def make_events(count: int, rng: random.Random, *, prefix: str = "evt") -> list[Outgoing]:
    """``count`` fresh events stamped now, plus duplicates mixed in after their originals.

    About 5 % are re-sent with the same ``Nats-Msg-Id`` (JetStream drops them) and about 3 % with the
    same event id but another ``Nats-Msg-Id`` (stored twice; the collector itself must not count them twice).
    """
    users = [f"user-{n}" for n in range(300)]
    kinds = [kind for kind, _ in KIND_WEIGHTS]
    weights = [weight for _, weight in KIND_WEIGHTS]
    out: list[Outgoing] = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        body: dict[str, Any] = {"id": f"{prefix}-{n}", "timestamp": iso(datetime.now(UTC))}
        if kind == "user.registered":
            user = f"new-{prefix}-{n}"
            users.append(user)
            body["userId"] = user
        elif kind != "generation.failed" or rng.random() < 0.5:
            body["userId"] = rng.choice(users)
        if kind == "website.generated":
            body["generationTime"] = round(rng.uniform(0.5, 30.0), 2)
        elif kind == "image.generated" and rng.random() < 0.5:
            body["generationTime"] = round(rng.uniform(0.5, 10.0), 2)
        elif kind == "payment.succeeded":
            body["amount"] = rng.choice(AMOUNTS)
            body["currency"] = "USD"
        out.append(Outgoing(SUBJECT_PREFIX + kind, body, body["id"]))
    originals = list(out)
    for original in rng.sample(originals, count * 5 // 100):
        out.insert(rng.randint(out.index(original) + 1, len(out)), original)
    for original in rng.sample(originals, count * 3 // 100):
        retry = Outgoing(original.subject, original.body, original.msg_id + "-retry")
        out.insert(rng.randint(out.index(original) + 1, len(out)), retry)
    return out


class PublishedEvents:
    """Publishes events to JetStream and records which stream sequence each one got."""

    def __init__(self) -> None:
        self.stored: list[tuple[int, str, dict[str, Any]]] = []  # (stream seq, subject, body)
        self.dropped_by_jetstream = 0

    async def publish(self, js: JetStreamContext, event: Outgoing) -> None:
        ack = await js.publish(
            event.subject, json.dumps(event.body).encode(), headers={"Nats-Msg-Id": event.msg_id}, timeout=10
        )
        if ack.duplicate:
            self.dropped_by_jetstream += 1
        else:
            self.stored.append((int(ack.seq), event.subject, event.body))

    def up_to(self, seq: int) -> list[tuple[str, dict[str, Any]]]:
        return [(subject, body) for s, subject, body in self.stored if s <= seq]

    @property
    def last_seq(self) -> int:
        return max((s for s, _, _ in self.stored), default=0)


@dataclass(slots=True)
class Expected:
    """The figures implied by a list of events (first copy of each id counts), exact to the cent."""

    figures: dict[str, Any]
    mean_generation_time: Decimal | None

    def mismatches(self, actual: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
        """``{field: (expected, actual)}`` for every field that differs (empty: all equal)."""
        if actual is None:
            return {"<snapshot>": ("present", None)}
        wrong = {key: (value, actual.get(key)) for key, value in self.figures.items() if actual.get(key) != value}
        average = actual.get("averageGenerationTime")
        if not self._average_ok(average):
            wrong["averageGenerationTime"] = (self.mean_generation_time, average)
        return wrong

    def _average_ok(self, actual: Any) -> bool:
        if not isinstance(actual, int | float):
            return False
        if self.mean_generation_time is None:
            return actual == 0
        mean = self.mean_generation_time
        milli = Decimal("0.001")
        if (mean / milli) % 1 == Decimal("0.5"):  # an exact tie: either neighbour is a correct rounding
            return actual in (float(mean.quantize(milli, ROUND_FLOOR)), float(mean.quantize(milli, ROUND_CEILING)))
        return actual == float(mean.quantize(milli, ROUND_HALF_EVEN))


def expected_figures(
    events: Iterable[tuple[str, dict[str, Any]]],
    *,
    now: datetime,
    base_users: int = 0,
    base_websites: int = 0,
) -> Expected:
    seen: set[str] = set()
    registered = new_today = websites = images = failed = 0
    cents = cents_today = 0
    active: set[str] = set()
    generation_times: list[Decimal] = []
    today = now.astimezone(UTC).date()
    for subject, body in events:
        if body["id"] in seen:
            continue
        seen.add(body["id"])
        kind = subject.removeprefix(SUBJECT_PREFIX)
        moment = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        on_today = moment.astimezone(UTC).date() == today
        if body.get("userId") and moment >= now - ACTIVE_WINDOW:
            active.add(body["userId"])
        if kind == "user.registered":
            registered += 1
            new_today += on_today
        elif kind == "website.generated":
            websites += 1
            generation_times.append(Decimal(repr(body["generationTime"])))
        elif kind == "image.generated":
            images += 1
        elif kind == "generation.failed":
            failed += 1
        elif kind == "payment.succeeded":
            amount = int(Decimal(repr(body["amount"])).quantize(Decimal("0.01"), ROUND_HALF_EVEN) * 100)
            cents += amount
            cents_today += amount if on_today else 0
    figures = {
        "totalUsers": base_users + registered,
        # never more active users than users (README, "The numbers"): activity of users not known is not counted
        "activeUsers": min(len(active), base_users + registered),
        "newUsersToday": new_today,
        "websitesGenerated": base_websites + websites,
        "imagesGenerated": images,
        "failedGenerations": failed,
        "totalRevenue": cents / 100,
        "revenueToday": cents_today / 100,
    }
    mean = sum(generation_times, Decimal(0)) / len(generation_times) if generation_times else None
    return Expected(figures, mean)
