"""``python -m stats_collector.simulate``: demo traffic for ``make run`` and tests.

Publishes a realistic mix of platform events into JetStream (with ``Nats-Msg-Id``) and one sample
per second of ``api_response_time_ms``, ``cpu_usage`` and ``memory_usage``; every
``--spike-every`` seconds the API latency spikes for ``--spike-seconds`` so an alert fires and clears.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import nats.js.errors
from nats.js import JetStreamContext

from broker_bridge.broker_nats import NatsBroker
from broker_bridge.nats_options import nats_options_or_exit
from shared.event_loop import run_on_event_loop
from shared.process_settings import ProcessSettings, add_process_arguments, process_settings_from
from stats_collector.events import EventKind, MetricSample, PlatformEvent, encode_event, encode_metric

# Share of each event kind in the mix (sums to 1).
EVENT_MIX: Final = (
    (EventKind.USER_ACTIVE, 0.50),
    (EventKind.IMAGE_GENERATED, 0.18),
    (EventKind.WEBSITE_GENERATED, 0.14),
    (EventKind.PAYMENT_SUCCEEDED, 0.08),
    (EventKind.USER_REGISTERED, 0.07),
    (EventKind.GENERATION_FAILED, 0.03),
)


def _percent(value: float) -> float:
    return round(min(100.0, max(1.0, value)), 1)


class TrafficModel:
    """Makes plausible events for a growing pool of users (pure apart from its random source).

    Every user it makes active registered first (the first event is a registration): activity of users the
    collector has never seen registered is not counted as active (activeUsers is at most totalUsers), so
    demo traffic made of such users would show figures that disagree with the events.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._users: list[str] = []

    def next_event(self, now: datetime) -> PlatformEvent:
        kinds = [kind for kind, _ in EVENT_MIX]
        kind = self._rng.choices(kinds, weights=[weight for _, weight in EVENT_MIX])[0]
        event_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        if kind is EventKind.USER_REGISTERED or not self._users:
            kind = EventKind.USER_REGISTERED
            user = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            self._users.append(user)
            return PlatformEvent(id=event_id, kind=kind, timestamp=now, user_id=user)
        user = self._rng.choice(self._users)
        if kind is EventKind.WEBSITE_GENERATED:
            seconds = round(max(0.5, self._rng.gauss(4.0, 1.2)), 2)
            return PlatformEvent(id=event_id, kind=kind, timestamp=now, user_id=user, generation_time=seconds)
        if kind is EventKind.PAYMENT_SUCCEEDED:
            amount = self._rng.choice((9.99, 19.99, 49.0, 99.0, 249.0))
            return PlatformEvent(id=event_id, kind=kind, timestamp=now, user_id=user, amount=amount, currency="USD")
        return PlatformEvent(id=event_id, kind=kind, timestamp=now, user_id=user)

    def gap(self, rate: float) -> float:
        """Seconds until the next event of a Poisson process with ``rate`` events per second."""
        return self._rng.expovariate(rate)

    def samples(self, now: datetime, *, spiking: bool) -> list[MetricSample]:
        latency = self._rng.gauss(2600.0, 300.0) if spiking else self._rng.gauss(320.0, 80.0)
        return [
            MetricSample(name="api_response_time_ms", value=round(max(5.0, latency), 1), timestamp=now),
            MetricSample(name="cpu_usage", value=_percent(self._rng.gauss(45, 10)), timestamp=now),
            MetricSample(name="memory_usage", value=_percent(self._rng.gauss(60, 5)), timestamp=now),
        ]


# The collector creates the stream; until it has, retry this often.
STREAM_WAIT_SECONDS: Final = 0.5


async def _publish_event(
    js: JetStreamContext, subject: str, payload: bytes, event_id: str, stop: asyncio.Event
) -> None:
    """Publish with ``Nats-Msg-Id`` (so a retry is deduplicated), waiting for the stream to exist."""
    while not stop.is_set():
        try:
            await js.publish(subject, payload, headers={"Nats-Msg-Id": event_id})
            return
        except nats.js.errors.NoStreamResponseError:
            await asyncio.sleep(STREAM_WAIT_SECONDS)


async def simulate(
    *,
    settings: ProcessSettings,
    rate: float,
    duration: float | None,
    spike_every: float,
    spike_seconds: float,
    seed: int | None,
) -> int:
    options = nats_options_or_exit(settings, name="simulator", prog="python -m stats_collector.simulate")
    broker = NatsBroker(options)
    await broker.connect()
    js = broker.client.jetstream()
    model = TrafficModel(random.Random(seed))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    started = loop.time()
    next_sample = started
    published = 0
    try:
        while not stop.is_set() and (duration is None or loop.time() - started < duration):
            now = datetime.now(UTC)
            event = model.next_event(now)
            subject, payload = encode_event(event)
            await _publish_event(js, subject, payload, event.id, stop)
            published += 1
            if loop.time() >= next_sample:
                elapsed = loop.time() - started
                spiking = spike_every > 0 and elapsed % spike_every >= spike_every - spike_seconds
                for sample in model.samples(now, spiking=spiking):
                    await broker.publish(*encode_metric(sample))
                next_sample += 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=model.gap(rate))
    finally:
        await broker.close()
    print(f"published {published} events", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stats_collector.simulate", description=__doc__)
    add_process_arguments(parser)  # NATS URL, credentials (event-publisher role) and TLS, as the services take them
    parser.add_argument("--rate", type=float, default=20.0, help="events per second (Poisson)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--spike-every", type=float, default=300.0, help="seconds between latency spikes (0: none)")
    parser.add_argument("--spike-seconds", type=float, default=90.0, help="length of each latency spike")
    parser.add_argument("--seed", type=int, default=None, help="random seed for repeatable traffic")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    settings = process_settings_from(parser, args, os.environ)
    return run_on_event_loop(
        settings.event_loop,
        lambda: simulate(
            settings=settings,
            rate=args.rate,
            duration=args.duration,
            spike_every=args.spike_every,
            spike_seconds=args.spike_seconds,
            seed=args.seed,
        ),
        prog="python -m stats_collector.simulate",
    )


if __name__ == "__main__":
    sys.exit(main())
