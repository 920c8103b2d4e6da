"""The NATS implementation of :class:`broker_bridge.interface.Broker` (nats-py).

Subscriptions use nats-py callbacks (its async-iterator path is much slower) and survive
reconnects: nats-py re-sends every SUB when it reconnects. Publishing while disconnected raises
:class:`BrokerUnavailable` rather than buffering a message the caller believes was sent.

Connecting: :meth:`NatsBroker.connect` owns the first connection. Each attempt uses a fresh nats-py
client that may not retry on its own, reads the credential files again (see
:mod:`broker_bridge.nats_options`), and is bounded in time; a failed attempt is logged as one line
naming its cause (:func:`broker_bridge.nats_failure.describe`: refused credentials, an untrusted
certificate, no server answering...) and retried after a growing pause, forever, until it succeeds or
the caller cancels. This also covers what nats-py's own first-connect loop cannot: after a TLS
verification failure its close path hangs, so a process relying on it tried once and then sat there.
Once connected, nats-py reconnects by itself (forever, every ``reconnect_time_wait_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

import nats
import nkeys
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from broker_bridge.interface import BrokerUnavailable, MessageCallback, NoResponder, RequestHandler
from broker_bridge.nats_failure import describe
from broker_bridge.nats_options import NatsOptions, client_arguments

__all__ = ["NatsBroker", "NatsOptions"]

log = logging.getLogger(__name__)

StateCallback = Callable[[str], None]
# What a failed first-connect attempt raises: sockets and TLS (OSError, ssl.SSLError), the server's
# -ERR (nats.errors.Error), a bounded wait (TimeoutError), a malformed seed or creds file (nkeys,
# ValueError).
CONNECT_FAILURES = (OSError, ssl.SSLError, nats.errors.Error, TimeoutError, ValueError, nkeys.NkeysError)


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
        self._connecting = False
        self._attempt_errors: list[BaseException] = []
        self.last_failure: str | None = None

    @property
    def client(self) -> Client:
        return self._client

    @property
    def is_connected(self) -> bool:
        return bool(self._client.is_connected)

    async def connect(self) -> None:
        """Connect, retrying with backoff until a server accepts us (run it as a background task)."""
        options = self._options
        delay = options.connect_retry_first_seconds
        while True:
            try:
                await self._attempt()
                break
            except CONNECT_FAILURES as error:
                cause = describe(self._cause(error), auth_method=options.auth.method)
            self.last_failure = cause
            log.warning("nats connection failed: %s; retrying in %.1f s", cause, delay)
            self._on_state("failed")
            await asyncio.sleep(delay)
            delay = min(delay * 2, options.connect_retry_max_seconds)
        self.last_failure = None
        self._ever_connected.set()
        log.info("nats connected to %s (auth: %s, tls: %s)", self._server(), options.auth.method, self._tls_state())
        self._on_state("connected")

    async def _attempt(self) -> None:
        """One bounded attempt on a fresh client that does not retry by itself; on success it is
        switched to reconnecting forever, as nats-py does only after a first connection."""
        options = self._options
        client = Client()
        self._attempt_errors = []
        self._connecting = True
        try:
            arguments = client_arguments(options)
            # Every server may be tried twice within connect_timeout each, with reconnect_time_wait
            # between rounds; past that the attempt counts as failed.
            budget = (options.connect_timeout_seconds * 2 + options.reconnect_time_wait_seconds) * (
                len(options.servers) + 1
            )
            await asyncio.wait_for(
                client.connect(
                    servers=options.servers,
                    name=options.name,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=options.reconnect_time_wait_seconds,  # type: ignore[arg-type]
                    connect_timeout=options.connect_timeout_seconds,  # type: ignore[arg-type]
                    ping_interval=options.ping_interval_seconds,  # type: ignore[arg-type]
                    max_outstanding_pings=options.max_outstanding_pings,
                    drain_timeout=options.drain_timeout_seconds,  # type: ignore[arg-type]
                    error_cb=self._error,
                    disconnected_cb=self._state("disconnected", client),
                    reconnected_cb=self._state("reconnected", client),
                    closed_cb=self._state("closed", client),
                    **arguments,
                ),
                timeout=budget,
            )
        except BaseException:
            await self._abandon(client)
            raise
        finally:
            self._connecting = False
        # nats-py reads both options whenever a connection drops: from now on it reconnects forever.
        client.options["allow_reconnect"] = True
        client.options["max_reconnect_attempts"] = -1
        self._client = client

    async def _abandon(self, client: Client) -> None:
        """Close a client whose first connection failed, without waiting on a close that hangs
        (nats-py's does after a failed TLS verification); a cancellation still goes through."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), timeout=self._options.connect_timeout_seconds)

    def _cause(self, error: BaseException) -> BaseException:
        """The error that explains a failed attempt: nats-py raises NoServersError (or the attempt
        times out) after reporting the real causes to the error callback."""
        if isinstance(error, nats.errors.NoServersError | TimeoutError) and self._attempt_errors:
            return self._attempt_errors[-1]
        return error

    def _server(self) -> str:
        server = self._client.connected_url
        return f"{server.scheme}://{server.hostname}:{server.port}" if server is not None else "?"

    def _tls_state(self) -> str:
        if self._options.tls is None:
            return "off"
        return "mutual" if self._options.tls.cert_file else "on"

    def _state(self, state: str, client: Client) -> Callable[[], Awaitable[None]]:
        async def callback() -> None:
            if client is not self._client:
                return  # a failed attempt's client being closed: already reported as the attempt's cause
            log.info("nats %s", state)
            self._on_state(state)

        return callback

    async def _error(self, error: Exception) -> None:
        if self._connecting:
            self._attempt_errors.append(error)  # reported once, as the attempt's cause
            return
        log.warning("nats error: %s", describe(error, auth_method=self._options.auth.method))

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
