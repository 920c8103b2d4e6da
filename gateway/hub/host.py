"""Runs hub sessions independent of transport: open, receive bytes, dispatch, close.

A transport checks :attr:`HubHost.accepting`, creates a :class:`HubSession` with its link, calls
:meth:`HubHost.add`, then :meth:`HubHost.receive` with each chunk of client bytes, writes whatever the
session queues, and calls :meth:`HubHost.end` once when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, assert_never

from broker_bridge import catalog
from broker_bridge.interface import BrokerUnavailable
from gateway.hub.admin_hub import AdminHub
from gateway.hub.dispatcher import HubDispatcher
from gateway.hub.registry import ConnectionRegistry
from gateway.hub.session import HubSession
from gateway.metrics import GatewayMetrics
from gateway.signalr.connection import CLOSED_WITH_ERROR, CloseReason
from gateway.signalr.messages import (
    Ack,
    CancelInvocation,
    Close,
    Completion,
    Invocation,
    Ping,
    Sequence,
    StreamInvocation,
    StreamItem,
)
from shared.rate_limit import Rate
from shared.timeutil import iso_utc

log = logging.getLogger(__name__)

# How often the timers of every session run (ASP.NET's heartbeat is 1 s as well).
TICK_INTERVAL_SECONDS: Final = 1.0
# Transport ends that a resumable connection survives (the client resumes); any other end is final.
DETACH_REASONS: Final = frozenset(
    {
        CloseReason.TRANSPORT_CLOSED,
        CloseReason.SLOW_CONSUMER,
        CloseReason.WRITE_TIMEOUT,
        CloseReason.CLIENT_TIMEOUT,
        CloseReason.SERVER_SHUTDOWN,
    }
)
# How often wait_gone looks (a rare path: a resume meeting a half-open socket of its connection).
GONE_POLL_SECONDS: Final = 0.01
# No invocation rate limit (component tests; the gateway passes its configured rate).
UNLIMITED: Final = Rate(per_second=0, burst=1)


RATE_LIMITED: Final = "Rate limit exceeded."
# Shutdown: the Close messages are spread over this share of the grace period, leaving the rest for
# the last clients told to go, and sent in batches this far apart.
SHUTDOWN_SPREAD_SHARE: Final = 0.8
SHUTDOWN_BATCH_INTERVAL_SECONDS: Final = 0.1


T = TypeVar("T")


async def paced(
    sessions: list[T],
    act: Callable[[T], object],
    *,
    spread_seconds: float,
    interval_seconds: float = SHUTDOWN_BATCH_INTERVAL_SECONDS,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """``act`` on every session, in order, in equal batches ``interval_seconds`` apart, over ``spread_seconds``.

    Clients told to reconnect all at once would all negotiate with the other replicas in the same
    instant; spread out, the others see a steady trickle. No spread: all at once.
    """
    if not sessions:
        return
    batches = max(1, min(len(sessions), int(spread_seconds / interval_seconds)))
    size = math.ceil(len(sessions) / batches)
    for start in range(0, len(sessions), size):
        if start:
            await sleep(interval_seconds)
        for session in sessions[start : start + size]:
            act(session)


class HubHost:
    """Owns the registry, the dispatcher and the per-session invocation limits."""

    def __init__(
        self,
        *,
        hub: AdminHub,
        registry: ConnectionRegistry,
        metrics: GatewayMetrics,
        max_parallel_invocations: int,
        invocation_rate: Rate = UNLIMITED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.registry = registry
        self._metrics = metrics
        self._dispatcher = HubDispatcher(hub.methods(), metrics=metrics)
        self._max_parallel = max_parallel_invocations
        self._invocation_rate = invocation_rate
        self._clock = clock
        # Invocations in flight, per session with any (an idle connection has no entry), and the
        # future a session's reader waits on while it has max_parallel of them.
        self._tasks: dict[HubSession, set[asyncio.Task[None]]] = {}
        self._slot_free: dict[HubSession, asyncio.Future[None]] = {}
        self._empty = asyncio.Event()
        self._accepting = True

    @property
    def accepting(self) -> bool:
        """False once shutdown began: transports refuse new connections from then on."""
        return self._accepting

    def add(self, session: HubSession) -> None:
        """Register a session whose transport just opened (raises DuplicateConnection)."""
        self.registry.add(session)

    async def receive(self, session: HubSession, data: bytes) -> None:
        """Feed client bytes, run the hub's connect logic after the handshake, then handle the messages
        they complete one at a time: the next is decoded only once the previous one has a slot, so a
        client that sends faster than its invocations run is read no further (back-pressure)."""
        connection = session.connection
        if connection.receive_data(data, self._clock()):
            await self._connected_hook(session)
        while not self._ended(session) and (message := connection.next_message()) is not None:
            inbound = connection.last_inbound
            match message:
                case Invocation() | StreamInvocation():
                    await self._start_invocation(session, message, inbound)
                case StreamItem() | CancelInvocation() | Completion():
                    # No upload streams, server streams or client results exist on this hub: ASP.NET
                    # ignores such messages for unknown ids, and so do we.
                    log.debug("ignoring %s for unknown id", type(message).__name__)
                    session.processed(inbound)
                case Ack() | Sequence():
                    log.debug("ignoring %s: stateful reconnect was not negotiated", type(message).__name__)
                case Ping() | Close():
                    pass  # handled by the connection state machine
                case _:
                    assert_never(message)
        session.notify_output()

    async def _connected_hook(self, session: HubSession) -> None:
        protocol = session.protocol_name
        self._metrics.connections.labels(transport=session.transport, protocol=protocol).inc()
        session.hub_connected = True
        try:
            await self.hub.on_connected(session)
        except BrokerUnavailable:
            log.warning("closing connection: could not join its subjects (broker unavailable)")
            session.close(CloseReason.PROTOCOL_ERROR, error=CLOSED_WITH_ERROR, allow_reconnect=True)

    def _admit(self, session: HubSession) -> bool:
        """Take one token of the session's invocation rate."""
        full_at = self._invocation_rate.take(session.invocations_full_at, self._clock())
        if full_at is None:
            return False
        session.invocations_full_at = full_at
        return True

    async def _start_invocation(
        self, session: HubSession, message: Invocation | StreamInvocation, inbound: int
    ) -> None:
        tasks = self._tasks.get(session)
        # Back-pressure: stop reading while the limit is reached, as ASP.NET does. Invocations without
        # an id count too. Only this session's reader calls here, so one waiter per session at most.
        while tasks is not None and len(tasks) >= self._max_parallel:
            waiter = self._slot_free[session] = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._slot_free.pop(session, None)
            if self._ended(session):  # woken by end(): nothing more runs for this session
                return
            tasks = self._tasks.get(session)
        # Checked in arrival order, once the invocation's turn has come: a refusal never overtakes the
        # answer to an earlier invocation.
        if not self._admit(session):
            self._metrics.limit_refusals.labels(limit="invocation_rate").inc()
            self._metrics.invocations.labels(method="any", outcome="rate_limited").inc()
            if message.invocation_id is not None:
                self._reply(session, Completion.with_error(message.invocation_id, RATE_LIMITED), inbound)
            else:
                session.processed(inbound)
            return
        if tasks is None:
            tasks = self._tasks[session] = set()
        task = asyncio.create_task(self._invoke(session, message, inbound))
        tasks.add(task)
        task.add_done_callback(functools.partial(self._invocation_done, session))

    def _ended(self, session: HubSession) -> bool:
        return self.registry.get(session.connection_token) is not session

    def _wake_reader(self, session: HubSession) -> None:
        waiter = self._slot_free.get(session)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _invocation_done(self, session: HubSession, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(session)
        if tasks is None:  # the session has ended
            return
        tasks.discard(task)
        if not tasks:
            del self._tasks[session]
        self._wake_reader(session)

    async def _invoke(self, session: HubSession, message: Invocation | StreamInvocation, inbound: int) -> None:
        completion = await self._dispatcher.invoke(session, message)
        if completion is not None:
            self._reply(session, completion, inbound)
        else:
            session.processed(inbound)

    def _reply(self, session: HubSession, completion: Completion, inbound: int) -> None:
        """Send the Completion; a failure also goes to the caller's ``ErrorOccurred`` handler."""
        session.send_message(completion, inbound=inbound)
        if completion.error is not None:
            session.send(catalog.ERROR_OCCURRED, catalog.error_occurred(message=completion.error, timestamp=iso_utc()))

    async def end(self, session: HubSession) -> None:
        """Forget a session whose transport has finished: cancel its work and leave its groups."""
        self.registry.remove(session)
        if not len(self.registry):
            self._empty.set()
        for task in self._tasks.pop(session, set()):
            task.cancel()
        self._wake_reader(session)  # a reader held back by the invocation limit returns now
        reason = session.connection.close_reason or CloseReason.TRANSPORT_CLOSED
        detail = session.connection.close_detail
        log.debug("connection %s ended: %s%s", session.connection_id, reason.value, f" ({detail})" if detail else "")
        session.connection.mark_closed(reason)
        self._metrics.connections_closed.labels(reason=reason.value).inc()
        if session.hub_connected:
            session.hub_connected = False
            self._metrics.connections.labels(transport=session.transport, protocol=session.protocol_name).dec()
            # A resumable connection whose transport dropped waits for a resume on any replica.
            if not (reason in DETACH_REASONS and await self.hub.on_transport_lost(session)):
                await self.hub.on_disconnected(session)

    async def wait_gone(self, session: HubSession, timeout_seconds: float) -> bool:
        """Wait (bounded) until ``session`` has ended; True if it did."""
        deadline = self._clock() + timeout_seconds
        while self.registry.get(session.connection_token) is session:
            if self._clock() >= deadline:
                return False
            await asyncio.sleep(GONE_POLL_SECONDS)
        return True

    def adopt(self, session: HubSession) -> None:
        """Count a resumed connection as connected (its hub state comes from the stream, not from a
        new handshake)."""
        self._metrics.connections.labels(transport=session.transport, protocol=session.protocol_name).inc()
        session.hub_connected = True
        self.hub.on_resumed(session)

    def tick(self) -> None:
        now = self._clock()
        for session in self.registry.snapshot():
            session.tick(now)

    async def run_timers(self) -> None:
        """Run every session's timers once a second until cancelled."""
        while True:
            await asyncio.sleep(TICK_INTERVAL_SECONDS)
            self.tick()

    async def close_all(self, *, grace_seconds: float) -> None:
        """Shutdown: refuse new connections, ask every client to reconnect elsewhere, paced over most
        of the grace period (:func:`paced`), then wait for the rest of it (bounded) for them to go."""
        self._accepting = False
        if not len(self.registry):
            return
        self._empty.clear()
        deadline = self._clock() + grace_seconds
        await paced(self.registry.snapshot(), _close_for_shutdown, spread_seconds=grace_seconds * SHUTDOWN_SPREAD_SHARE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), max(0.0, deadline - self._clock()))


def _close_for_shutdown(session: HubSession) -> None:
    if session.resumable is not None:
        session.drop(CloseReason.SERVER_SHUTDOWN)  # no Close message: the client resumes elsewhere
    else:
        session.close(CloseReason.SERVER_SHUTDOWN, allow_reconnect=True)
