"""The fan-out stream in memory, for component tests of resumable connections without nats-server.

:class:`MemoryStream` plays JetStream's ``REALTIME_FANOUT`` (one per test, shared by every "replica");
:meth:`MemoryStream.feed` gives one replica's :class:`MemoryStreamFeed`, which implements
:class:`broker_bridge.interface.FanoutFeed` and :class:`broker_bridge.interface.ReplayableFeed` with the
semantics of :class:`broker_bridge.feed_stream.JetStreamFeed`:

* every stored message gets the next position, from 1 up by 1, whatever its subject;
* a feed delivers every message stored after it was made (it starts at the stream's end, as
  ``JetStreamFeed.start`` does) to its ``deliver_to`` callback, in stream order, and
  ``last_position`` is the last one delivered;
* delivery is **asynchronous**, as with nats-py's ordered consumer: :meth:`MemoryStreamFeed.append`
  stores the message and returns its position at once, and each feed delivers it on a later turn of the
  event loop, one message per turn (other tasks run in between, as they do between NATS reads);
* :meth:`MemoryStreamFeed.replay` yields the stored messages on the given subjects after a position, up
  to the stream's end when it began, giving the loop a turn before each one (as fetching batches does),
  and raises :class:`ReplayGap` when the stream no longer starts early enough (as JetStream, only while
  it holds any message).

Controls for fault and race tests: :meth:`MemoryStream.trim` (retention dropped old messages),
:attr:`MemoryStream.unavailable` and :meth:`MemoryStream.fail_appends` (JetStream refuses appends),
:meth:`MemoryStreamFeed.hold` / :meth:`MemoryStreamFeed.release` (a consumer lagging behind the stream),
:meth:`MemoryStream.hold_replays` / :meth:`MemoryStream.release_replays` with
:meth:`MemoryStream.replay_waiting` (a replay stopped before its next message). Wait for deliveries
with :meth:`MemoryStreamFeed.settled`, which also raises what a callback raised.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Sequence

from broker_bridge.interface import BrokerUnavailable, FeedCallback, ReplayGap, StreamMessage
from broker_bridge.subjects import subject_matches


class _Attached:
    """Interest in a subject: the feed delivers every subject anyway (as the stream's consumer does)."""

    async def unsubscribe(self) -> None:
        return None


class MemoryStream:
    """The stored messages, shared by every replica's feed."""

    def __init__(self) -> None:
        self._messages: list[StreamMessage] = []
        self.first_position = 1
        """The oldest position still held (the next one to be stored while the stream is empty)."""
        self.last_position = 0
        """The newest position stored."""
        self.unavailable = False
        """While True every append raises BrokerUnavailable."""
        self._failures_left = 0
        self._feeds: list[MemoryStreamFeed] = []
        self._replays_open = asyncio.Event()
        self._replays_open.set()
        self._replay_waiting = asyncio.Event()

    def feed(self) -> MemoryStreamFeed:
        """A replica's consumer, from the stream's current end on."""
        feed = MemoryStreamFeed(self)
        self._feeds.append(feed)
        return feed

    def messages(self, subject: str | None = None) -> list[StreamMessage]:
        """The messages held (on ``subject`` only, if given), oldest first."""
        return [message for message in self._messages if subject is None or message.subject == subject]

    # -- writing --------------------------------------------------------------------------------

    def fail_appends(self, count: int) -> None:
        """The next ``count`` appends raise BrokerUnavailable (JetStream did not acknowledge them)."""
        self._failures_left = count

    def store(self, subject: str, payload: bytes) -> int:
        """Store a message and hand it to every feed; its position. Raises BrokerUnavailable on demand."""
        if self.unavailable:
            raise BrokerUnavailable(subject)
        if self._failures_left:
            self._failures_left -= 1
            raise BrokerUnavailable(subject)
        self.last_position += 1
        message = StreamMessage(subject, payload, self.last_position)
        self._messages.append(message)
        for feed in self._feeds:
            feed._stored(message)
        return message.position

    async def publish(self, subject: str, payload: bytes) -> int:
        """A publisher outside the gateway replicas (the REST API of another replica, the collector)."""
        return self.store(subject, payload)

    def trim(self, *, before: int) -> None:
        """Drop every message before position ``before`` (as ``max_age`` retention would)."""
        self._messages = [message for message in self._messages if message.position >= before]
        self.first_position = max(self.first_position, min(before, self.last_position + 1))

    # -- replaying ------------------------------------------------------------------------------

    def hold_replays(self) -> None:
        """Stop every replay before the next message it would yield, until :meth:`release_replays`."""
        self._replay_waiting.clear()
        self._replays_open.clear()

    def release_replays(self) -> None:
        self._replays_open.set()

    async def replay_waiting(self) -> None:
        """Return once a replay is stopped by :meth:`hold_replays`."""
        await self._replay_waiting.wait()

    async def replay(self, subjects: Sequence[str], *, after: int) -> AsyncIterator[StreamMessage]:
        if self.first_position > after + 1 and self.last_position > after:
            raise ReplayGap(wanted=after + 1, first=self.first_position)
        end = self.last_position
        for message in list(self._messages):
            if not after < message.position <= end:
                continue
            if not any(subject_matches(pattern, message.subject) for pattern in subjects):
                continue
            if not self._replays_open.is_set():
                self._replay_waiting.set()
                await self._replays_open.wait()
            else:
                await asyncio.sleep(0)  # a turn for the rest of the loop, as a fetch would give
            yield message


class MemoryStreamFeed:
    """One replica's view of a :class:`MemoryStream` (see the module docstring for its semantics)."""

    def __init__(self, stream: MemoryStream) -> None:
        self._stream = stream
        self._callback: FeedCallback | None = None
        self.last_position = stream.last_position
        """Every message up to here has been delivered (or predates this feed)."""
        self._pending: collections.deque[StreamMessage] = collections.deque()
        self._scheduled = False
        self._hold_after: int | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.errors: list[BaseException] = []
        """What the callback raised (nats-py would hand it to the error callback); :meth:`settled` raises it."""

    @property
    def positions(self) -> bool:
        return True

    def deliver_to(self, callback: FeedCallback) -> None:
        self._callback = callback

    async def attach(self, subject: str) -> _Attached:
        return _Attached()

    async def append(self, subject: str, payload: bytes) -> int:
        return self._stream.store(subject, payload)

    async def publish(self, subject: str, payload: bytes) -> None:
        await self.append(subject, payload)

    def replay(self, subjects: Sequence[str], *, after: int) -> AsyncIterator[StreamMessage]:
        return self._stream.replay(subjects, after=after)

    # -- delivery -------------------------------------------------------------------------------

    def hold(self, *, after: int | None = None) -> None:
        """Deliver nothing after position ``after`` (default: what was delivered so far) until
        :meth:`release`: a consumer lagging behind the stream."""
        self._hold_after = self.last_position if after is None else after
        self._update()

    def release(self) -> None:
        self._hold_after = None
        self._update()

    async def settled(self) -> None:
        """Return once every message stored so far has been delivered, up to a :meth:`hold`; raise
        what a callback raised."""
        await self._idle.wait()
        if self.errors:
            raise self.errors[0]

    def _stored(self, message: StreamMessage) -> None:
        self._pending.append(message)
        self._update()

    def _deliverable(self) -> bool:
        return bool(self._pending) and (self._hold_after is None or self._pending[0].position <= self._hold_after)

    def _update(self) -> None:
        if not self._deliverable():
            self._idle.set()
            return
        self._idle.clear()
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver_one)

    def _deliver_one(self) -> None:
        self._scheduled = False
        if self._deliverable():
            message = self._pending.popleft()
            self.last_position = message.position
            if self._callback is not None:
                try:
                    self._callback(message.subject, message.payload, message.position)
                except Exception as error:  # kept for settled(), as nats-py keeps the consumer going
                    self.errors.append(error)
        self._update()
