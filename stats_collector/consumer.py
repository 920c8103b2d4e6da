"""Reading a JetStream stream fast: an ephemeral pull consumer fed through a callback subscription.

nats-py's ``PullSubscription.fetch`` awaits every message of a batch separately (a ``wait_for`` per
message), which costs more than applying the event. :class:`StreamReader` asks for a batch with one pull
request and collects the replies in the subscription's callback, so the reader gets whole lists of
messages, at most ``batch`` at a time (the bound on what it holds), and applies them without an await per
message. The consumer acknowledges nothing (``AckPolicy.NONE``): where to start again is the caller's own
checkpoint, not the consumer's.

:func:`position` reads a message's stream sequence, stored time and pending count from its reply subject
(what ``Msg.metadata`` does, without building a dataclass and a datetime per message).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared import jsoncodec

# A consumer left behind by a killed process is removed by the server after this long.
CONSUMER_INACTIVE_SECONDS: Final = 30.0
# How much longer than a pull request's own expiry the reader waits before it takes the request as lost.
REQUEST_GRACE_SECONDS: Final = 1.0
_NANOS_PER_MICRO: Final = 1000
# Status codes of pull replies: no messages / request expired end a request; 409 (consumer deleted, leader
# change, ...) and 503 (no responders: the consumer is gone) mean the consumer must be made again.
_REQUEST_DONE: Final = frozenset({"404", "408"})
_HEARTBEAT: Final = "100"


class ConsumerLost(Exception):
    """The server ended the consumer (or it never answered); make a new reader from where you are."""


def position(reply: str) -> tuple[int, int, int]:
    """(stream sequence, stored time in µs since the epoch, messages pending) from a JetStream reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` or the form with a domain and
    account hash after ``$JS.ACK`` (12 tokens or more).
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]) // _NANOS_PER_MICRO, int(tokens[8])
    return int(tokens[7]), int(tokens[9]) // _NANOS_PER_MICRO, int(tokens[10])


class StreamReader:
    """One ephemeral pull consumer of ``stream`` from ``start_sequence`` (``filter_subject`` optional)."""

    def __init__(
        self,
        client: Client,
        *,
        stream: str,
        start_sequence: int,
        batch: int,
        filter_subject: str | None = None,
        api_prefix: str = "$JS.API",
    ) -> None:
        self._client = client
        self._stream = stream
        self._start = start_sequence
        self._batch = batch
        self._filter = filter_subject
        self._api_prefix = api_prefix
        self._subscription: Subscription | None = None
        self._next_subject = ""
        self._inbox = ""
        self._buffer: list[Msg] = []
        self._arrived = asyncio.Event()
        self._outstanding = 0  # messages still due on the open pull request (0: none open)
        self._lost: str | None = None

    async def start(self) -> None:
        self._inbox = self._client.new_inbox()
        self._subscription = await self._client.subscribe(self._inbox, cb=self._on_message)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(self._start, 1),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=CONSUMER_INACTIVE_SECONDS,
            filter_subject=self._filter,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            info = await self._client.jetstream().add_consumer(self._stream, config)
        except BaseException:
            await self.close()
            raise
        self._next_subject = f"{self._api_prefix}.CONSUMER.MSG.NEXT.{self._stream}.{info.name}"

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            self._outstanding -= 1
        elif status == _HEARTBEAT:
            return
        elif status in _REQUEST_DONE:
            self._outstanding = 0
        else:
            self._outstanding = 0
            self._lost = f"status {status} {msg.headers.get('Description', '') if msg.headers else ''}".strip()
        self._arrived.set()

    async def read(self, *, timeout: float) -> list[Msg]:  # noqa: ASYNC109 - the pull request's own expiry
        """The messages delivered since the last read (at most ``batch``); [] when none came within
        ``timeout``. Raises :class:`ConsumerLost` when the consumer is gone."""
        if self._lost is not None:
            raise ConsumerLost(self._lost)
        if self._outstanding <= 0 and not self._buffer:
            self._arrived.clear()
            self._outstanding = self._batch
            request = {"batch": self._batch, "expires": int(timeout * 1e9)}
            await self._client.publish(self._next_subject, jsoncodec.dumps(request), reply=self._inbox)
        if not self._buffer:
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout + REQUEST_GRACE_SECONDS)
            except TimeoutError:
                self._outstanding = 0  # the request or its expiry notice was lost; ask again next time
        self._arrived.clear()
        messages, self._buffer = self._buffer, []
        if not messages and self._lost is not None:
            raise ConsumerLost(self._lost)
        return messages

    async def close(self) -> None:
        """Stop listening; the server removes the consumer after :data:`CONSUMER_INACTIVE_SECONDS`."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await subscription.unsubscribe()
