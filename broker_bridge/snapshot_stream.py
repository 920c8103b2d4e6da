"""The snapshot history: JetStream stream ``PLATFORM_SNAPSHOTS`` on ``platform.snapshots``.

The collector appends every snapshot it publishes (:func:`append_snapshot`: the same record it writes
to KV ``REALTIME_SNAPSHOT``, :func:`shared.models.encode_snapshot_record`) and creates the stream with
its limits (:func:`snapshots_stream_config`: kept ``max_age`` seconds, 24 h by default, and at most
``max_bytes``, oldest discarded first). Gateways only read it; their NATS role may not create, change
or write it. :class:`SnapshotStreamReader` loads what the stream holds from a given time on, then
follows each new snapshot with an ordered consumer, handing every record to a callback once, in
stream order, with its stream position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.ordered_reader import JetStreamOf, OrderedReader
from broker_bridge.subjects import SNAPSHOTS_SUBJECT
from shared.retry import retry_until_done

log = logging.getLogger(__name__)

SNAPSHOTS_STREAM: Final = "PLATFORM_SNAPSHOTS"
# Messages per pull request while loading: a day of 5-second snapshots takes 18 requests.
LOAD_BATCH: Final = 1000
# How long a load waits for the next batch before it takes the stream as read to its end.
LOAD_FETCH_TIMEOUT_SECONDS: Final = 2.0
# Pull requests in a row that may come back empty while snapshots are still pending before a load fails
# (and is retried).
MAX_EMPTY_LOAD_FETCHES: Final = 3
# A load consumer left behind by a killed replica is removed by the server after this long.
LOAD_CONSUMER_INACTIVE_SECONDS: Final = 30.0
# The following consumer's heartbeat: snapshots come every few seconds, so a slower beat than the fan-out's.
HEARTBEAT_SECONDS: Final = 5.0
# While no collector has created the stream yet, look for it this often.
MISSING_STREAM_RETRY_SECONDS: Final = 5.0
# What reading the stream raises while NATS is away, JetStream is electing a leader or the stream is missing.
READ_ERRORS: Final = (nats.errors.Error, TimeoutError, BrokerUnavailable)

RecordCallback = Callable[[int, bytes], None]
"""Called with (stream position, snapshot record) for each stored snapshot; must not block."""


def snapshots_stream_config(*, max_age_seconds: float, max_bytes: int, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=SNAPSHOTS_STREAM,
        subjects=[SNAPSHOTS_SUBJECT],
        max_age=max_age_seconds,
        max_bytes=max_bytes,
        num_replicas=replicas,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
    )


async def append_snapshot(js: JetStreamContext, record: bytes) -> int:
    """Store one snapshot record and return its position; BrokerUnavailable when JetStream does not take it."""
    try:
        ack = await js.publish(SNAPSHOTS_SUBJECT, record, stream=SNAPSHOTS_STREAM)
    except (nats.errors.Error, TimeoutError) as error:
        raise BrokerUnavailable(SNAPSHOTS_SUBJECT) from error
    return int(ack.seq)


class SnapshotStreamReader:
    """Loads the stored snapshots from a time on, then follows new ones; each reaches ``deliver`` once."""

    def __init__(self, client: Callable[[], Client], *, deliver: RecordCallback, on_loaded: Callable[[], None]) -> None:
        """``client`` returns the current NATS client; ``on_loaded`` is called once the first load is done
        (or found no stream to load from)."""
        self._jetstream = JetStreamOf(client)
        self._deliver_record = deliver
        self._on_loaded = on_loaded
        self._reader = OrderedReader(
            self._jetstream,
            stream=SNAPSHOTS_STREAM,
            subjects=[SNAPSHOTS_SUBJECT],
            heartbeat_seconds=HEARTBEAT_SECONDS,
            deliver=self._deliver,
        )

    @property
    def following(self) -> bool:
        return self._reader.following

    async def run(self, since: Callable[[], datetime]) -> None:
        """Load from ``since()``, then follow. While the stream does not exist (no collector has run
        yet) there is nothing to load: loaded, and the stream is looked for again every few seconds.
        Other failures are retried with backoff, one log line each."""
        announced = False
        while not await retry_until_done(
            lambda: self._load_and_follow(since()), what="loading the snapshot history", retriable=READ_ERRORS
        ):
            if not announced:
                announced = True
                log.info("stream %s does not exist yet (the collector creates it): no history", SNAPSHOTS_STREAM)
                self._on_loaded()
            await asyncio.sleep(MISSING_STREAM_RETRY_SECONDS)

    async def _load_and_follow(self, since: datetime) -> bool:
        try:
            await self.load(since=since)
        except nats.js.errors.NotFoundError:
            return False
        self._on_loaded()
        await self._reader.follow()
        return True

    async def load(self, *, since: datetime) -> None:
        """Deliver every snapshot the stream received since ``since`` (its own arrival times), in order,
        at least up to its end when the load began. Raises NotFoundError when there is no stream."""
        js = self._jetstream.context
        info = await js.stream_info(SNAPSHOTS_STREAM)
        end = info.state.last_seq
        if end < self._reader.last_position:  # the stream was made anew: its positions start over
            self._reader.last_position = 0
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=LOAD_CONSUMER_INACTIVE_SECONDS,
            mem_storage=True,
        )
        pull = await js.pull_subscribe(SNAPSHOTS_SUBJECT, stream=SNAPSHOTS_STREAM, config=config)
        try:
            pending = (await pull.consumer_info()).num_pending
            empty_fetches = 0
            while pending:
                try:
                    batch = await pull.fetch(LOAD_BATCH, timeout=LOAD_FETCH_TIMEOUT_SECONDS)
                except (nats.errors.TimeoutError, TimeoutError):
                    batch = []
                for msg in batch:
                    self._reader.take(msg)
                if batch:
                    pending, empty_fetches = batch[-1].metadata.num_pending, 0
                    continue
                # Nothing came: the rest expired meanwhile (then nothing is pending any more), or the
                # server was slow. Following from the end with snapshots still pending would leave them
                # out of the history, so the load fails instead and is retried from the start (what was
                # delivered already is not delivered again).
                pending = (await pull.consumer_info()).num_pending
                empty_fetches += 1
                if pending and empty_fetches >= MAX_EMPTY_LOAD_FETCHES:
                    raise TimeoutError(f"{pending} snapshots pending, {empty_fetches} pull requests got none")
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await pull.unsubscribe()
        # Older snapshots were left out on purpose; follow from the end the load reached.
        self._reader.last_position = max(self._reader.last_position, end)

    async def resume(self) -> None:
        """After NATS came back: follow again from the last snapshot delivered."""
        await self._reader.resume()

    def _deliver(self, msg: Msg, position: int) -> None:
        self._deliver_record(position, msg.data)

    async def stop(self) -> None:
        await self._reader.stop()
