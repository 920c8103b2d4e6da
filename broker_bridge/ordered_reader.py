"""Reading a JetStream stream in order from a position: every message once, with its stream position.

:class:`OrderedReader` follows a stream with nats-py's ordered consumer (recreated by nats-py after two
missed heartbeats, and by :meth:`OrderedReader.resume` after a NATS reconnect, from the last position
delivered) and drops any message at or before that position, so a consumer made again from an earlier
position repeats nothing. Messages read another way (a replay or a load through a pull consumer) go
through :meth:`OrderedReader.take` and count the same. The fan-out stream
(:mod:`broker_bridge.feed_stream`) and the snapshot history (:mod:`broker_bridge.snapshot_stream`) read
their streams this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from broker_bridge.interface import Subscription

MessageCallback = Callable[[Msg, int], None]
"""Called with each new message and its stream position; must not block."""


class JetStreamOf:
    """The JetStream context of the current NATS client (the broker replaces its client until the first
    connection succeeds), made once per client."""

    def __init__(self, client: Callable[[], Client]) -> None:
        self._client_of = client
        self._jetstream: tuple[Client, JetStreamContext] | None = None

    @property
    def client(self) -> Client:
        return self._client_of()

    @property
    def context(self) -> JetStreamContext:
        client = self._client_of()
        if self._jetstream is None or self._jetstream[0] is not client:
            self._jetstream = (client, client.jetstream())
        return self._jetstream[1]


class OrderedReader:
    """Follows ``stream`` (its ``subjects``) after :attr:`last_position`, handing each new message to ``deliver``."""

    def __init__(
        self,
        jetstream: JetStreamOf,
        *,
        stream: str,
        subjects: Sequence[str],
        heartbeat_seconds: float,
        deliver: MessageCallback,
    ) -> None:
        self._jetstream = jetstream
        self._stream = stream
        self._subjects = list(subjects)
        self._heartbeat_seconds = heartbeat_seconds
        self._deliver = deliver
        self._subscription: Subscription | None = None
        # Everything up to here was delivered (or was passed over on purpose): later copies are dropped.
        self.last_position = 0

    @property
    def following(self) -> bool:
        return self._subscription is not None

    async def follow(self) -> None:
        """Deliver every message after :attr:`last_position` as it is stored."""
        config = ConsumerConfig(
            filter_subjects=self._subjects,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.last_position + 1,
        )
        self._subscription = await self._jetstream.context.subscribe(
            "",
            stream=self._stream,
            cb=self._on_message,
            ordered_consumer=True,
            idle_heartbeat=self._heartbeat_seconds,
            config=config,
        )

    async def resume(self) -> None:
        """After NATS came back: follow again from the last position delivered (a restarted server has
        forgotten the consumer; if it has not, the old one is replaced and repeats are dropped)."""
        await self.stop()
        await self.follow()

    async def _on_message(self, msg: Msg) -> None:
        self.take(msg)

    def take(self, msg: Msg) -> None:
        """Deliver ``msg`` unless its position was delivered already."""
        position = msg.metadata.sequence.stream
        if position <= self.last_position:
            return  # a consumer recreated from an earlier position sends some again
        self.last_position = position
        self._deliver(msg, position)

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self._subscription.unsubscribe()
            self._subscription = None
