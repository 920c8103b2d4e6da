"""The fan-out stream: JetStream stream ``REALTIME_FANOUT`` over every fan-out subject, read by each
replica through one ordered consumer, so every message reaches a replica with its stream position.

Publishers need not change: a plain NATS publish on ``realtime.group.*`` is stored like any other
(JetStream captures the subjects). The gateway's own publishes wait for JetStream's acknowledgement,
so a 200 from the REST API means the message is stored. The stream keeps messages for
``max_age_seconds``; a connection can be replayed from any position still in it
(:meth:`JetStreamFeed.replay`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig

from broker_bridge.interface import BrokerUnavailable, FeedCallback, ReplayGap, StreamMessage, Subscription
from broker_bridge.ordered_reader import JetStreamOf, OrderedReader
from broker_bridge.subjects import FANOUT_STREAM_SUBJECTS

log = logging.getLogger(__name__)

FANOUT_STREAM: Final = "REALTIME_FANOUT"
# A replay reads this many messages per request.
REPLAY_BATCH: Final = 512
# How long a replay waits for the next batch before it takes the stream as read to its end.
REPLAY_FETCH_TIMEOUT_SECONDS: Final = 1.0
# A replay consumer left behind by a killed replica is removed by the server after this long.
REPLAY_CONSUMER_INACTIVE_SECONDS: Final = 30.0
# The ordered consumer's heartbeat (broker_bridge.ordered_reader).
HEARTBEAT_SECONDS: Final = 1.0
# Bounds the stream whatever the message rate; oldest messages go first.
MAX_STREAM_BYTES: Final = 1024**3


class _Attached:
    """Interest in a subject: the consumer delivers every subject anyway, so there is nothing to undo."""

    async def unsubscribe(self) -> None:
        return None


class JetStreamFeed:
    """Creates or updates the stream, consumes it from now on, publishes into it and replays it."""

    def __init__(self, client: Callable[[], Client], *, max_age_seconds: float, replicas: int) -> None:
        """``client`` returns the current NATS client (the broker replaces it until its first connection)."""
        self._jetstream = JetStreamOf(client)
        self._config = StreamConfig(
            name=FANOUT_STREAM,
            subjects=list(FANOUT_STREAM_SUBJECTS),
            max_age=max_age_seconds,
            max_bytes=MAX_STREAM_BYTES,
            num_replicas=replicas,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
        )
        self._callback: FeedCallback | None = None
        self._reader = OrderedReader(
            self._jetstream,
            stream=FANOUT_STREAM,
            subjects=FANOUT_STREAM_SUBJECTS,
            heartbeat_seconds=HEARTBEAT_SECONDS,
            deliver=self._deliver,
        )

    @property
    def _client(self) -> Client:
        return self._jetstream.client

    @property
    def _js(self) -> JetStreamContext:
        return self._jetstream.context

    @property
    def last_position(self) -> int:
        """Everything up to here was delivered (or predates this replica): later copies are dropped."""
        return self._reader.last_position

    @property
    def positions(self) -> bool:
        return True

    @property
    def running(self) -> bool:
        return self._reader.following and self._client.is_connected

    def deliver_to(self, callback: FeedCallback) -> None:
        self._callback = callback

    async def attach(self, subject: str) -> Subscription:
        return _Attached()

    async def start(self) -> None:
        """Create or update the stream, then consume it from its current end."""
        try:
            info = await self._js.stream_info(FANOUT_STREAM)
        except nats.js.errors.NotFoundError:
            info = await self._js.add_stream(self._config)
        else:
            info = await self._js.update_stream(self._config)
        self._reader.last_position = info.state.last_seq
        await self._reader.follow()

    async def resume(self) -> None:
        """After NATS came back: consume again from the last position delivered."""
        await self._reader.resume()

    def _deliver(self, msg: Msg, position: int) -> None:
        if self._callback is not None:
            self._callback(msg.subject, msg.data, position)

    async def publish(self, subject: str, payload: bytes) -> None:
        await self.append(subject, payload)

    async def append(self, subject: str, payload: bytes) -> int:
        """Store ``payload`` and return its position; BrokerUnavailable when JetStream does not take it."""
        if not self._client.is_connected:
            raise BrokerUnavailable(subject)
        try:
            ack = await self._js.publish(subject, payload, stream=FANOUT_STREAM)
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(subject) from error
        return int(ack.seq)

    async def replay(self, subjects: Sequence[str], *, after: int) -> AsyncIterator[StreamMessage]:
        """Every stored message on ``subjects`` after position ``after``, in order, up to the stream's end
        when the replay began; raises :class:`ReplayGap` when the stream no longer starts early enough."""
        try:
            info = await self._js.stream_info(FANOUT_STREAM)
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(FANOUT_STREAM) from error
        # Messages after ``after`` existed (last_seq) but the stream starts later: they are gone, also when
        # every message has expired (JetStream then reports first_seq = last_seq + 1 and no messages).
        if info.state.first_seq > after + 1 and info.state.last_seq > after:
            raise ReplayGap(wanted=after + 1, first=info.state.first_seq)
        end = info.state.last_seq
        if end <= after:
            return
        config = ConsumerConfig(
            filter_subjects=list(subjects),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=REPLAY_CONSUMER_INACTIVE_SECONDS,
            mem_storage=True,
        )
        try:
            pull = await self._js.pull_subscribe("", stream=FANOUT_STREAM, config=config)
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(FANOUT_STREAM) from error
        try:
            if (await pull.consumer_info()).num_pending == 0:
                return
            while True:
                try:
                    batch = await pull.fetch(REPLAY_BATCH, timeout=REPLAY_FETCH_TIMEOUT_SECONDS)
                except (nats.errors.TimeoutError, TimeoutError):
                    return  # nothing more on these subjects
                for msg in batch:
                    position = msg.metadata.sequence.stream
                    if position > end:
                        return
                    yield StreamMessage(msg.subject, msg.data, position)
                if batch and batch[-1].metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await pull.unsubscribe()

    async def stop(self) -> None:
        await self._reader.stop()
