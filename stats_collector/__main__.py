"""``python -m stats_collector``: run the collector; ``python -m stats_collector seed ...``: set baseline counts.

SIGTERM/SIGINT stop it in order: stop reading; the active replica saves, publishes a last snapshot and
releases its lease (a standby takes over at once); then drain NATS. SIGHUP reads the alert rules file
again (a file with an error is logged, naming its line, and the rules in use stay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import nats.errors

from broker_bridge.broker_nats import NatsBroker
from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import NatsKeyValueStore
from broker_bridge.nats_options import nats_options_or_exit
from broker_bridge.publisher import RealtimePublisher
from shared import jsoncodec
from shared.event_loop import run_on_event_loop, running_event_loop
from shared.logging import configure_logging
from shared.probes import Readiness, probe_routes, serve_probes
from shared.process_settings import ProcessSettings, add_process_arguments, process_settings_from
from shared.timeutil import iso_utc
from stats_collector.alerting import Alerting
from stats_collector.alerts import load_rules
from stats_collector.jetstream import BASELINE_KEY, STATE_BUCKET
from stats_collector.metrics import CollectorMetrics
from stats_collector.service import CollectorService
from stats_collector.settings import CollectorSettings, load_settings

log = logging.getLogger("stats_collector")

# A fetch waits at most 1 s and a batch applies in milliseconds; more than this means something hangs.
STOP_TIMEOUT_SECONDS = 5.0
# Start-up retries: JetStream may be off, still electing stream leaders after a node died, or unreachable.
PREPARE_FIRST_DELAY_SECONDS = 0.5
PREPARE_MAX_DELAY_SECONDS = 5.0
PREPARE_RETRIABLE = (nats.errors.Error, TimeoutError, BrokerUnavailable)
SEED_FIELDS = ("total_users", "websites_generated", "images_generated", "failed_generations", "total_revenue")


async def _prepare_until_ready(service: CollectorService, stopping: asyncio.Future[Any]) -> bool:
    """Run ``service.prepare`` until it succeeds, backing off between tries; False if asked to stop first."""
    delay = PREPARE_FIRST_DELAY_SECONDS
    while True:
        preparing = asyncio.create_task(service.prepare())
        await asyncio.wait({preparing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            preparing.cancel()
            with contextlib.suppress(asyncio.CancelledError, *PREPARE_RETRIABLE):
                await preparing
            return False
        error = preparing.exception()
        if error is None:
            return True
        if not isinstance(error, PREPARE_RETRIABLE):
            raise error
        log.warning("JetStream not ready (%s: %s); retrying in %.1f s", type(error).__name__, error, delay)
        await asyncio.wait({stopping}, timeout=delay)
        if stopping.done():
            return False
        delay = min(delay * 2, PREPARE_MAX_DELAY_SECONDS)


async def run(settings: CollectorSettings) -> int:
    rules = load_rules(settings.rules_path.read_text())
    metrics = CollectorMetrics()
    metrics.record_event_loop(*running_event_loop())
    broker = NatsBroker(nats_options_or_exit(settings, name="stats-collector", prog="python -m stats_collector"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    alerting = Alerting(
        rules_path=settings.rules_path, rules=rules, publisher=RealtimePublisher(broker), metrics=metrics
    )
    loop.add_signal_handler(signal.SIGHUP, alerting.reload)
    prepared = False
    readiness = Readiness()
    readiness.require("nats", lambda: broker.is_connected)
    readiness.require("jetstream", lambda: prepared)
    # The probes answer from the first second, whether NATS is reachable or not.
    runner = None
    if settings.metrics_port:
        routes = probe_routes(readiness=readiness, registry=metrics.registry)
        runner = await serve_probes(routes, host=settings.metrics_host, port=settings.metrics_port)
    connecting = asyncio.create_task(broker.connect())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            connecting.cancel()
            return 0
        service = CollectorService(
            settings,
            client=broker.client,
            publisher=RealtimePublisher(broker),
            metrics=metrics,
            alerting=alerting,
            replica=settings.replica_name,
        )
        if not await _prepare_until_ready(service, stopping):
            return 0
        prepared = True
        log.info(
            "collector running (%d alert rules) as replica %s; active once it holds the lease",
            len(rules),
            settings.replica_name,
        )
        return await _run_until_stopped(service, stopping, stopped_by_signal=stop)
    finally:
        if runner is not None:
            await runner.cleanup()
        await broker.close()


async def _run_until_stopped(
    service: CollectorService, stopping: asyncio.Future[Any], *, stopped_by_signal: asyncio.Event
) -> int:
    """Run the loops until a signal (exit 0) or a loop failure (exit 1); the active replica then saves,
    publishes once more and releases its lease."""
    running = asyncio.create_task(service.run())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    service.stop()
    try:
        await asyncio.wait_for(running, STOP_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("loops did not stop within %.0f s; cancelled", STOP_TIMEOUT_SECONDS)
    except Exception:
        log.exception("collector loop failed")
    await service.shutdown()
    log.info("collector stopped at stream sequence %d", service.sequence)
    return 0 if stopped_by_signal.is_set() else 1


async def seed(settings: ProcessSettings, values: dict[str, float]) -> dict[str, Any]:
    """Set baseline counts that predate the stream (merged with earlier ones; setting twice is harmless).

    The record also says when it was seeded: a collector whose figures lack a stream gap takes a new
    seeding as accounting for it and marks its figures complete again."""
    options = nats_options_or_exit(settings, name="stats-collector-seed", prog="python -m stats_collector seed")
    broker = NatsBroker(options)
    await asyncio.wait_for(broker.connect(), timeout=30)
    try:
        store = await NatsKeyValueStore.open(broker.client, bucket=STATE_BUCKET)
        raw = await store.get(BASELINE_KEY)
        baseline = {**(jsoncodec.loads(raw) if raw else {}), **values, "seededAt": iso_utc()}
        await store.put(BASELINE_KEY, jsoncodec.dumps(baseline))
        return baseline
    finally:
        await broker.close()


def seed_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m stats_collector seed", description=seed.__doc__)
    add_process_arguments(parser)  # the collector's NATS URL, credentials and TLS flags and variables
    for field in SEED_FIELDS:
        kind = float if field == "total_revenue" else int
        parser.add_argument("--" + field.replace("_", "-"), type=kind, default=None)
    args = parser.parse_args(argv)
    values = {field: getattr(args, field) for field in SEED_FIELDS if getattr(args, field) is not None}
    if any(value < 0 for value in values.values()):
        parser.error("baseline counts must be >= 0")
    if not values:
        parser.error("give at least one count, e.g. --total-users 5432")
    settings = process_settings_from(parser, args, os.environ)
    baseline = run_on_event_loop(
        settings.event_loop, lambda: seed(settings, values), prog="python -m stats_collector seed"
    )
    print(jsoncodec.dumps(baseline).decode())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["seed"]:
        return seed_main(argv[1:])
    settings = load_settings(argv, os.environ)
    configure_logging(level=settings.log_level, json_format=settings.log_format == "json")
    return run_on_event_loop(settings.event_loop, lambda: run(settings), prog="python -m stats_collector", log=log)


if __name__ == "__main__":
    sys.exit(main())
