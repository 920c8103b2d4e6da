"""The NATS implementation of :class:`broker_bridge.interface.Broker` (nats-py).

Subscriptions use nats-py callbacks (its async-iterator path is much slower) and survive
reconnects: nats-py re-sends every SUB when it reconnects. Publishing while disconnected raises
:class:`BrokerUnavailable` rather than buffering a message the caller believes was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from broker_bridge.interface import BrokerUnavailable, MessageCallback, NoResponder, RequestHandler

log = logging.getLogger(__name__)

StateCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsOptions:
    """Connection settings passed to nats-py; see README "NATS reconnects"."""

    servers: list[str]
    name: str
    reconnect_time_wait_seconds: float = 1.0
    connect_timeout_seconds: float = 2.0
    ping_interval_seconds: float = 10.0
    max_outstanding_pings: int = 3
    publish_flush_timeout_seconds: float = 2.0
    drain_timeout_seconds: float = 5.0


class _NatsSubscription:
    def __init__(self, subscription: NatsSubscription) -> None:
        self._subscription = subscription

    async def unsubscribe(self) -> None:
        try:
            await self._subscription.unsubscribe()
        except nats.errors.Error as error:  # closed or draining: the server drops it anyway
            log.debug("unsubscribe failed: %s", type(error).__name__)


class NatsBroker:
    """A broker over one nats-py client that reconnects forever."""

    def __init__(self, options: NatsOptions, *, on_state: StateCallback | None = None) -> None:
        self._options = options
        self._client = Client()
        self._on_state = on_state or (lambda _state: None)
        self._ever_connected = asyncio.Event()

    @property
    def client(self) -> Client:
        return self._client

    @property
    def is_connected(self) -> bool:
        return bool(self._client.is_connected)

    async def connect(self) -> None:
        """Connect, retrying until a server answers (run it as a background task)."""
        await self._client.connect(
            servers=self._options.servers,
            name=self._options.name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self._options.reconnect_time_wait_seconds,  # type: ignore[arg-type]
            connect_timeout=self._options.connect_timeout_seconds,  # type: ignore[arg-type]
            ping_interval=self._options.ping_interval_seconds,  # type: ignore[arg-type]
            max_outstanding_pings=self._options.max_outstanding_pings,
            drain_timeout=self._options.drain_timeout_seconds,  # type: ignore[arg-type]
            error_cb=self._error,
            disconnected_cb=self._state("disconnected"),
            reconnected_cb=self._state("reconnected"),
            closed_cb=self._state("closed"),
        )
        self._ever_connected.set()
        log.info("nats connected")
        self._on_state("connected")

    def _state(self, state: str) -> Callable[[], Awaitable[None]]:
        async def callback() -> None:
            log.info("nats %s", state)
            self._on_state(state)

        return callback

    async def _error(self, error: Exception) -> None:
        log.warning("nats error: %s", type(error).__name__)

    async def publish(self, subject: str, payload: bytes) -> None:
        if not self._client.is_connected:
            raise BrokerUnavailable(subject)
        try:
            await self._client.publish(subject, payload)
            await self._client.flush(timeout=self._options.publish_flush_timeout_seconds)  # type: ignore[arg-type]
        except (TimeoutError, nats.errors.Error) as error:
            raise BrokerUnavailable(subject) from error

    async def request(self, subject: str, payload: bytes, *, timeout_seconds: float) -> bytes:
        if not self._client.is_connected:
            raise BrokerUnavailable(subject)
        try:
            reply = await self._client.request(subject, payload, timeout=timeout_seconds)
        except nats.errors.NoRespondersError:
            raise NoResponder(subject) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise TimeoutError(f"no reply on {subject} within {timeout_seconds:g} s") from None
        except nats.errors.Error as error:
            raise BrokerUnavailable(subject) from error
        return reply.data

    async def serve(
        self, subject: str, handler: RequestHandler, *, max_in_flight: int, busy_reply: bytes
    ) -> _NatsSubscription:
        if not self._ever_connected.is_set() or self._client.is_closed:
            raise BrokerUnavailable(subject)
        in_flight: set[asyncio.Task[None]] = set()

        async def answer(msg: Msg) -> None:
            try:
                reply = await handler(msg.data)
            except Exception:  # a handler bug must not take the subscription down; the requester times out
                log.exception("request handler for %s failed", subject)
                return
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(reply)

        async def accept(msg: Msg) -> None:
            if len(in_flight) >= max_in_flight:
                with contextlib.suppress(nats.errors.Error):
                    await msg.respond(busy_reply)
                return
            task = asyncio.create_task(answer(msg))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        try:
            subscription = await self._client.subscribe(subject, cb=accept)
        except nats.errors.Error as error:
            raise BrokerUnavailable(subject) from error
        return _NatsSubscription(subscription)

    async def subscribe(self, subject: str, callback: MessageCallback) -> _NatsSubscription:
        if not self._ever_connected.is_set() or self._client.is_closed:
            raise BrokerUnavailable(subject)

        async def deliver(msg: Msg) -> None:
            callback(msg.subject, msg.data)

        try:
            subscription = await self._client.subscribe(subject, cb=deliver, pending_bytes_limit=64 * 1024 * 1024)
        except nats.errors.Error as error:
            raise BrokerUnavailable(subject) from error
        if self._client.is_connected:
            # Answer only once the server has the interest, so a message published right after a
            # SubscribeTo... call returns is delivered. While reconnecting, nats-py re-sends the SUB.
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self._client.flush(timeout=self._options.publish_flush_timeout_seconds)  # type: ignore[arg-type]
        return _NatsSubscription(subscription)

    async def close(self) -> None:
        """Drain (deliver what was received, flush what was published), then close."""
        if self._client.is_connected:
            try:
                await self._client.drain()
            except (TimeoutError, nats.errors.Error) as error:
                log.warning("nats drain failed: %s", type(error).__name__)
        if not self._client.is_closed:
            await self._client.close()

    def __repr__(self) -> str:
        return f"NatsBroker(servers={self._options.servers!r})"
