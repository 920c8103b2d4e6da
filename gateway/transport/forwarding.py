"""Long-polling and Server-Sent Events requests for connections another replica owns, over NATS request/reply.

The connection token names its owner (the replica that negotiated it). A replica that receives a
request for a connection it does not own sends it to the owner and answers the client with the
owner's reply (:class:`ForwardingClient`); the owner runs it on the local connection exactly as a
request that reached it directly (:class:`ForwardedOperations`). Each replica serves three subjects
(:func:`broker_bridge.subjects.replica_subject`):

* ``realtime.replica.<owner>.http`` - a POST (the body, at most ``max_frame_bytes``, travels with it),
  a DELETE, or the start of an event stream; answered at once (a POST: once the hub took the body);
* ``realtime.replica.<owner>.poll`` - a long poll, answered by the owner when output is ready or
  after one keep-alive interval at most (the poll timeout if shorter): an owner that died without a
  word leaves its requests unanswered, so a forwarded poll is kept short, and the client's next poll
  finds no responder. The receiving replica waits that long plus :data:`POLL_REPLY_MARGIN_SECONDS`;
* ``realtime.replica.<receiver>.events`` - the events of a forwarded stream: the receiving replica
  holds the client's response and the owner sends it each event as a request, waiting for the reply
  (sent once the event is written to the client) before the next, so a slow client slows its owner's
  writer down, whose output then piles up against the outbound limit. No reply within
  ``write_timeout_seconds``, or "gone", ends the connection. The owner's keep-alive Pings keep events
  coming; the receiving replica ends the response after two keep-alive intervals without one (or the
handshake timeout, before the handshake; plus a second of timer granularity).

A request carries the caller (user id, name, roles, token expiry, client address): the owner checks
the connection token against that user again and applies its own limits (admission, claims, frame
size, outbound bytes) as for a local request. Every replica has at most ``max_forwarded_requests``
forwarded operations under way as receiver (open forwarded streams included) and as many on each
subject as owner; over either: 503 with ``Retry-After``. Failures map to what the client can act on:
owner gone (no responder) -> 404, as ASP.NET answers for an unknown connection, so the JS client
reconnects and negotiates anew; owner too slow -> 504; NATS away -> 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from broker_bridge.interface import Broker, BrokerUnavailable, NoResponder, Subscription
from broker_bridge.subjects import InvalidSubjectName, replica_subject
from gateway.auth import Principal
from gateway.hub.host import TICK_INTERVAL_SECONDS
from gateway.metrics import GatewayMetrics
from gateway.transport.connection_token import ConnectionTokenSigner, InvalidConnectionToken, NegotiatedConnection
from gateway.transport.http_connections import Caller, HttpConnections
from gateway.transport.long_polling import LongPolling
from gateway.transport.replies import Reply, unknown_connection
from gateway.transport.server_sent_events import ServerSentEvents, open_stream
from shared import jsoncodec

log = logging.getLogger(__name__)

# The owner answers a forwarded poll when its hold is over at the latest; this covers the trip over NATS.
POLL_REPLY_MARGIN_SECONDS: Final = 2.0
# Telling the receiving replica that a stream is over is a courtesy: it ends the response anyway
# once events stop coming.
END_NOTICE_TIMEOUT_SECONDS: Final = 2.0
# The receiving replica ends a forwarded stream after this many keep-alive intervals without an event
# (plus one timer tick: the owner's Pings go out on its once-a-second tick, so 15-16 s apart).
SILENT_KEEP_ALIVES: Final = 2
# Seconds a client is told to wait when forwarding is at its limit.
BUSY_RETRY_AFTER: Final = "1"

BUSY: Final = b"busy"
DELIVERED: Final = b"ok"
GONE: Final = b"gone"
OWNER_BUSY: Final = "The server owning this connection is busy."
OWNER_TIMEOUT: Final = "The server owning this connection did not answer in time."
BROKER_AWAY: Final = "The servers cannot reach each other right now."
OVER_LIMIT: Final = "Too many requests are being forwarded."
OPERATIONS: Final = ("send", "poll", "delete", "stream")


class MalformedForward(ValueError):
    """A forwarded request, reply or event that does not decode (another replica's bug, or a stranger)."""


# -- the wire: a JSON header line, then the raw body ----------------------------------------------


def encode_message(header: dict[str, Any], body: bytes = b"") -> bytes:
    return jsoncodec.dumps(header) + b"\n" + body


def decode_message(payload: bytes) -> tuple[dict[str, Any], bytes]:
    head, separator, body = payload.partition(b"\n")
    if not separator:
        raise MalformedForward("no header line")
    try:
        header = jsoncodec.loads(head)
    except jsoncodec.JSONDecodeError:
        raise MalformedForward("header is not JSON") from None
    if not isinstance(header, dict):
        raise MalformedForward("header is not an object")
    return header, body


def encode_caller(caller: Caller) -> dict[str, Any]:
    principal = caller.principal
    return {
        "user": principal.user_id,
        "name": principal.name,
        "roles": sorted(principal.roles),
        "exp": principal.expires_at,
        "ip": caller.client_ip,
    }


def decode_caller(value: Any) -> Caller:
    if not isinstance(value, dict):
        raise MalformedForward("caller is not an object")
    user, name, roles, expires, ip = (value.get(key) for key in ("user", "name", "roles", "exp", "ip"))
    if not (
        isinstance(user, str | None)
        and isinstance(name, str | None)
        and isinstance(roles, list)
        and all(isinstance(role, str) for role in roles)
        and isinstance(expires, int | float)
        and isinstance(ip, str)
    ):
        raise MalformedForward("caller fields")
    return Caller(Principal(user, name, frozenset(roles), float(expires)), ip)


def encode_reply(reply: Reply) -> bytes:
    return encode_message(
        {"status": reply.status, "type": reply.content_type, "headers": dict(reply.headers)}, reply.body
    )


def decode_reply(payload: bytes) -> Reply:
    header, body = decode_message(payload)
    status, content_type, headers = header.get("status"), header.get("type"), header.get("headers")
    if not (
        isinstance(status, int)
        and isinstance(content_type, str)
        and isinstance(headers, dict)
        and all(isinstance(value, str) for value in headers.values())
    ):
        raise MalformedForward("reply fields")
    return Reply(status, body, content_type, headers)


def busy_reply(text: str) -> Reply:
    return Reply.text(503, text, headers={"Retry-After": BUSY_RETRY_AFTER})


# -- the receiving replica ------------------------------------------------------------------------


class _Relay:
    """The receiving replica's end of one forwarded event stream: the client's response."""

    __slots__ = ("_done", "_opened", "_response", "last_event")

    def __init__(self, now: float) -> None:
        self._response: web.StreamResponse | None = None
        self._opened = asyncio.Event()
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_event = now

    def open(self, response: web.StreamResponse) -> None:
        self._response = response
        self._opened.set()

    def finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    async def deliver(self, data: bytes, *, now: Callable[[], float], open_timeout: float) -> bytes:
        if self._response is None:  # the owner's first event overtook its reply to the stream request
            try:
                async with asyncio.timeout(open_timeout):
                    await self._opened.wait()
            except TimeoutError:
                return GONE
        if self._done.done() or self._response is None:
            return GONE
        try:
            await self._response.write(data)
        except (ConnectionError, RuntimeError) as error:
            log.debug("forwarded event stream write failed: %s", type(error).__name__)
            self.finish()
            return GONE
        self.last_event = now()
        return DELIVERED

    async def run(self, *, silence_limit: float, now: Callable[[], float]) -> None:
        """Until the owner says the stream is over, or sends nothing for ``silence_limit`` seconds."""
        while not self._done.done():
            remaining = self.last_event + silence_limit - now()
            if remaining <= 0:
                log.info("forwarded event stream: nothing from its owner for %.0f s; ending it", silence_limit)
                return
            await asyncio.wait({self._done}, timeout=remaining)


class ForwardingClient:
    """Sends requests for other replicas' connections to their owners; relays forwarded event streams."""

    def __init__(
        self,
        *,
        broker: Broker,
        replica: str,
        metrics: GatewayMetrics,
        max_in_flight: int,
        timeout_seconds: float,
        poll_timeout_seconds: float,
        keep_alive_interval_seconds: float,
        handshake_timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._broker = broker
        self._replica = replica
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._timeout = timeout_seconds
        self._poll_hold = min(poll_timeout_seconds, keep_alive_interval_seconds)
        # Before the handshake the owner sends nothing, for up to the handshake timeout.
        quiet = max(SILENT_KEEP_ALIVES * keep_alive_interval_seconds, handshake_timeout_seconds)
        self._silence_limit = quiet + TICK_INTERVAL_SECONDS
        self._clock = clock
        self._in_flight = 0
        self._relays: dict[str, _Relay] = {}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def send(self, negotiated: NegotiatedConnection, caller: Caller, body: bytes | None) -> Reply:
        """A POST; ``body`` None: larger than ``max_frame_bytes`` (the owner closes the connection)."""
        header = _request_header("send", negotiated, caller)
        header["tooLarge"] = body is None
        return await self._forward("send", negotiated.owner, "http", encode_message(header, body or b""), self._timeout)

    async def poll(self, negotiated: NegotiatedConnection, caller: Caller) -> Reply:
        header = _request_header("poll", negotiated, caller)
        header["hold"] = self._poll_hold
        seconds = self._poll_hold + POLL_REPLY_MARGIN_SECONDS
        return await self._forward("poll", negotiated.owner, "poll", encode_message(header), seconds)

    async def delete(self, negotiated: NegotiatedConnection, caller: Caller) -> Reply:
        payload = encode_message(_request_header("delete", negotiated, caller))
        return await self._forward("delete", negotiated.owner, "http", payload, self._timeout)

    async def stream(
        self, request: web.Request, negotiated: NegotiatedConnection, caller: Caller
    ) -> web.StreamResponse:
        """An event-stream GET: ask the owner to start the connection, then write the events it sends."""
        if not self._admit("stream"):
            return busy_reply(OVER_LIMIT).response()
        stream_id = secrets.token_urlsafe(12)
        relay = self._relays[stream_id] = _Relay(self._clock())
        try:
            header = _request_header("stream", negotiated, caller)
            header["proxy"] = self._replica
            header["stream"] = stream_id
            reply = await self._request("stream", negotiated.owner, "http", encode_message(header), self._timeout)
            if reply.status != 200:
                return reply.response()
            try:
                response = await open_stream(request)
            except ConnectionError:  # the owner is told "gone" at its first event
                return web.Response(status=204)
            relay.open(response)
            await relay.run(silence_limit=self._silence_limit, now=self._clock)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
            return response
        finally:
            relay.finish()
            del self._relays[stream_id]
            self._release()

    async def on_event(self, payload: bytes) -> bytes:
        """An event (or the end) of a stream this replica relays, sent by the connection's owner."""
        try:
            header, body = decode_message(payload)
        except MalformedForward as error:
            log.warning("dropping a malformed forwarded event: %s", error)
            return GONE
        relay = self._relays.get(header.get("stream"))  # type: ignore[arg-type]
        if relay is None:
            return GONE
        if header.get("end"):
            relay.finish()
            return DELIVERED
        return await relay.deliver(body, now=self._clock, open_timeout=self._timeout)

    def _admit(self, operation: str) -> bool:
        if self._in_flight >= self._max_in_flight:
            self._metrics.forwarded_failures.labels(operation=operation, reason="over_limit").inc()
            return False
        self._in_flight += 1
        self._metrics.forwarded_in_flight.inc()
        return True

    def _release(self) -> None:
        self._in_flight -= 1
        self._metrics.forwarded_in_flight.dec()

    async def _forward(self, operation: str, owner: str, kind: str, payload: bytes, seconds: float) -> Reply:
        if not self._admit(operation):
            return busy_reply(OVER_LIMIT)
        try:
            return await self._request(operation, owner, kind, payload, seconds)
        finally:
            self._release()

    async def _request(self, operation: str, owner: str, kind: str, payload: bytes, seconds: float) -> Reply:
        self._metrics.forwarded_requests.labels(operation=operation).inc()
        try:
            subject = replica_subject(owner, kind)
            raw = await self._broker.request(subject, payload, timeout_seconds=seconds)
        except (NoResponder, InvalidSubjectName):
            return self._failed(operation, "no_owner", unknown_connection())
        except TimeoutError:
            return self._failed(operation, "timeout", Reply.text(504, OWNER_TIMEOUT))
        except BrokerUnavailable:
            return self._failed(operation, "broker_unavailable", busy_reply(BROKER_AWAY))
        if raw == BUSY:
            return self._failed(operation, "owner_busy", busy_reply(OWNER_BUSY))
        try:
            return decode_reply(raw)
        except MalformedForward as error:
            log.warning("malformed reply from %s to a forwarded %s: %s", owner, operation, error)
            return self._failed(operation, "malformed", Reply.text(502, "Bad reply from the owning server"))

    def _failed(self, operation: str, reason: str, reply: Reply) -> Reply:
        self._metrics.forwarded_failures.labels(operation=operation, reason=reason).inc()
        return reply


def _request_header(operation: str, negotiated: NegotiatedConnection, caller: Caller) -> dict[str, Any]:
    return {"op": operation, "token": negotiated.connection_token, "caller": encode_caller(caller)}


# -- the owner ------------------------------------------------------------------------------------


class _RemoteEvents:
    """The owner's end of a forwarded event stream: each event is a request to the receiving replica."""

    __slots__ = ("_broker", "_stream", "_subject", "_timeout")

    def __init__(self, broker: Broker, subject: str, stream: str, timeout_seconds: float) -> None:
        self._broker = broker
        self._subject = subject
        self._stream = stream
        self._timeout = timeout_seconds

    async def write(self, event: bytes) -> bool:
        try:
            reply = await self._broker.request(
                self._subject, encode_message({"stream": self._stream}, event), timeout_seconds=self._timeout
            )
        except (NoResponder, TimeoutError, BrokerUnavailable) as error:
            log.debug("forwarded event not delivered: %s", type(error).__name__)
            return False
        return reply == DELIVERED

    async def close(self) -> None:
        with contextlib.suppress(NoResponder, TimeoutError, BrokerUnavailable):
            await self._broker.request(
                self._subject,
                encode_message({"stream": self._stream, "end": True}),
                timeout_seconds=END_NOTICE_TIMEOUT_SECONDS,
            )


class ForwardedOperations:
    """Runs requests forwarded by other replicas on the connections this replica owns."""

    def __init__(
        self,
        *,
        broker: Broker,
        signer: ConnectionTokenSigner,
        connections: HttpConnections,
        long_polling: LongPolling,
        events: ServerSentEvents,
        metrics: GatewayMetrics,
        write_timeout_seconds: float,
    ) -> None:
        self._broker = broker
        self._signer = signer
        self._connections = connections
        self._long_polling = long_polling
        self._events = events
        self._metrics = metrics
        self._write_timeout = write_timeout_seconds

    async def on_http(self, payload: bytes) -> bytes:
        return encode_reply(await self._run(payload, ("send", "delete", "stream")))

    async def on_poll(self, payload: bytes) -> bytes:
        return encode_reply(await self._run(payload, ("poll",)))

    async def _run(self, payload: bytes, expected: tuple[str, ...]) -> Reply:
        try:
            header, body = decode_message(payload)
            operation = header.get("op")
            if operation not in expected:
                raise MalformedForward(f"operation {operation!r} on this subject")
            caller = decode_caller(header.get("caller"))
            token = header.get("token")
            if not isinstance(token, str):
                raise MalformedForward("token")
        except MalformedForward as error:
            log.warning("refusing a malformed forwarded request: %s", error)
            return Reply.text(400, "Malformed forwarded request")
        self._metrics.forwarded_served.labels(operation=operation).inc()
        try:
            negotiated = self._signer.verify(token, user_id=caller.user_id, allow_expired=True)
        except InvalidConnectionToken:
            return unknown_connection()
        if negotiated.owner != self._signer.replica:
            return unknown_connection()
        match operation:
            case "send":
                return await self._connections.send(negotiated, None if header.get("tooLarge") else body)
            case "delete":
                return await self._long_polling.delete(negotiated)
            case "poll":
                hold = header.get("hold")
                hold_seconds = float(hold) if isinstance(hold, int | float) and hold > 0 else None
                return await self._long_polling.poll(negotiated, caller, hold_seconds=hold_seconds)
            case _:
                return await self._start_stream(header, negotiated, caller)

    async def _start_stream(self, header: dict[str, Any], negotiated: NegotiatedConnection, caller: Caller) -> Reply:
        proxy, stream = header.get("proxy"), header.get("stream")
        if not isinstance(proxy, str) or not isinstance(stream, str):
            return Reply.text(400, "Malformed forwarded request")
        try:
            subject = replica_subject(proxy, "events")
        except InvalidSubjectName:
            return Reply.text(400, "Malformed forwarded request")
        sink = _RemoteEvents(self._broker, subject, stream, self._write_timeout)
        return await self._events.start_forwarded(negotiated, caller, sink)


# -- serving --------------------------------------------------------------------------------------


class ReplicaService:
    """This replica's three subjects, served from start until the broker closes."""

    def __init__(
        self,
        *,
        broker: Broker,
        replica: str,
        client: ForwardingClient,
        operations: ForwardedOperations,
        max_in_flight: int,
    ) -> None:
        self._broker = broker
        self._replica = replica
        self._client = client
        self._operations = operations
        self._max_in_flight = max_in_flight
        self._subscriptions: list[Subscription] = []

    @property
    def serving(self) -> bool:
        return bool(self._subscriptions)

    async def serve(self) -> None:
        """Subscribe all three subjects (all or none: raises BrokerUnavailable and keeps none)."""
        if self._subscriptions:
            return
        handlers = {
            "http": self._operations.on_http,
            "poll": self._operations.on_poll,
            "events": self._client.on_event,
        }
        made: list[Subscription] = []
        try:
            for kind, handler in handlers.items():
                subject = replica_subject(self._replica, kind)
                made.append(
                    await self._broker.serve(subject, handler, max_in_flight=self._max_in_flight, busy_reply=BUSY)
                )
        except BrokerUnavailable:
            for subscription in made:
                await subscription.unsubscribe()
            raise
        self._subscriptions = made
        log.info("serving requests forwarded to replica %s", self._replica)

    async def withdraw(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.unsubscribe()
