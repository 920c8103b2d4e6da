"""Long-polling and Server-Sent Events connections on their owner: the hub, the in-memory broker, fake clocks.

Each test drives the owner's operations (what a local request and a forwarded one both call) and checks
the answers ASP.NET gives: the first poll, held polls and what ends them, DELETE, the disconnect
timeout, the outbound and frame limits, and the transport a connection is bound to.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.envelope import encode_event
from gateway.auth import FixedKeys, KeySet, Principal, TokenVerifier, secret_key
from gateway.http.auth_middleware import Authenticator
from gateway.http.client_address import ClientAddress
from gateway.hub.registry import ConnectionRegistry
from gateway.metrics import GatewayMetrics
from gateway.signalr.connection import CloseReason, ConnectionLimits
from gateway.transport.admission import Admission
from gateway.transport.claims import ConnectionClaims
from gateway.transport.connection_token import ConnectionTokenSigner, NegotiatedConnection
from gateway.transport.http_connections import Caller, HttpConnections
from gateway.transport.long_polling import LongPolling
from gateway.transport.replies import Reply
from gateway.transport.server_sent_events import ServerSentEvents
from gateway.transport.services import TransportServices
from shared.rate_limit import Rate
from tests.component.http_hub import hub_host
from tests.support.frames import JSON_HANDSHAKE, RS

USER = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Owner:
    """One replica's hub and HTTP-transport connections, without HTTP."""

    def __init__(
        self,
        *,
        poll_timeout: float = 30.0,
        disconnect_timeout: float = 15.0,
        max_poll_bytes: int = 1 << 20,
        max_outbound_bytes: int = 1 << 20,
        max_frame_bytes: int = 65536,
        max_connections_per_user: int = 20,
    ) -> None:
        self.broker = InMemoryBroker()
        self.metrics = GatewayMetrics()
        self.registry = ConnectionRegistry()
        self.host = hub_host(self.broker, self.metrics, self.registry)
        self.wall = Clock(time.time())
        self.clock = Clock(1000.0)
        self.signer = ConnectionTokenSigner(secret=b"k" * 32, ttl_seconds=30, replica="owner", clock=self.wall)
        verifier = TokenVerifier(
            keys=FixedKeys(KeySet([secret_key("s" * 32)])), issuer=None, audience=None, leeway_seconds=0
        )
        admission = Admission(
            host=self.host,
            authenticator=Authenticator(verifier, required_roles=("Admin",), metrics=self.metrics),
            client_address=ClientAddress(()),
            max_connections_per_user=max_connections_per_user,
            max_connections_per_ip=200,
            negotiate_rate=Rate(0, 1),
            max_tracked_ips=100,
            metrics=self.metrics,
        )
        claims = ConnectionClaims(replica_id="owner", ttl_seconds=35, metrics=self.metrics)
        services = TransportServices(
            host=self.host, admission=admission, claims=claims, signer=self.signer, token_leeway_seconds=30
        )
        self.connections = HttpConnections(
            services=services,
            max_frame_bytes=max_frame_bytes,
            disconnect_timeout_seconds=disconnect_timeout,
            clock=self.clock,
        )
        limits = ConnectionLimits(max_outbound_bytes=max_outbound_bytes)
        self.long_polling = LongPolling(
            connections=self.connections,
            limits=limits,
            poll_timeout_seconds=poll_timeout,
            max_poll_bytes=max_poll_bytes,
            clock=self.clock,
        )
        self.events = ServerSentEvents(connections=self.connections, limits=limits, max_event_bytes=max_poll_bytes)
        self.caller = Caller(Principal(USER, "Alice", frozenset({"Admin"}), time.time() + 3600), "10.0.0.7")

    def negotiate(self) -> NegotiatedConnection:
        return self.signer.issue(user_id=USER, negotiate_version=1)

    async def start_polling(self) -> NegotiatedConnection:
        """Negotiate, first poll, handshake, and the poll that brings the handshake reply."""
        negotiated = self.negotiate()
        first = await self.long_polling.poll(negotiated, self.caller)
        assert (first.status, first.body) == (200, b"")
        assert (await self.connections.send(negotiated, JSON_HANDSHAKE)).status == 200
        reply = await self.long_polling.poll(negotiated, self.caller)
        assert reply.status == 200 and reply.body.startswith(b"{}" + RS), reply
        return negotiated

    async def broadcast(self, *arguments: Any) -> None:
        await self.broker.publish("realtime.all", encode_event("Tick", *arguments))

    def ticks(self, body: bytes) -> list[Any]:
        return [message["arguments"][0] for message in records(body) if message.get("target") == "Tick"]


def records(body: bytes) -> list[dict[str, Any]]:
    assert body.endswith(RS), body
    return [orjson.loads(record) for record in body.split(RS)[:-1]]


@pytest.fixture
def owner() -> Owner:
    return Owner()


async def held(owner: Owner, negotiated: NegotiatedConnection) -> asyncio.Task[Reply]:
    """A poll that is waiting (it has started and found nothing to send)."""
    task = asyncio.ensure_future(owner.long_polling.poll(negotiated, owner.caller))
    entry = owner.connections.get(negotiated.connection_token)
    assert entry is not None
    for _ in range(10):  # a few loop turns: the poll starts, finds nothing, waits
        await asyncio.sleep(0)
    assert not task.done() and entry.idle_since is None
    return task


# -- long polling ---------------------------------------------------------------------------------


async def test_the_first_poll_starts_the_connection_and_returns_at_once(owner: Owner) -> None:
    negotiated = owner.negotiate()
    reply = await owner.long_polling.poll(negotiated, owner.caller)
    assert (reply.status, reply.body, reply.content_type) == (200, b"", "application/octet-stream")
    assert reply.headers["Cache-Control"] == "no-cache, no-store"
    assert negotiated.connection_token in owner.registry
    session = owner.connections.get(negotiated.connection_token)
    assert session is not None and session.session.transport == "longpolling"


async def test_a_held_poll_answers_as_soon_as_output_is_ready(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    poll = await held(owner, negotiated)
    await owner.broadcast(1)
    async with asyncio.timeout(2):
        reply = await poll
    assert reply.status == 200 and owner.ticks(reply.body) == [1]


async def test_a_newer_poll_ends_the_held_one_with_204(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    first = await held(owner, negotiated)
    second = asyncio.ensure_future(owner.long_polling.poll(negotiated, owner.caller))
    async with asyncio.timeout(2):
        assert (await first).status == 204
    await owner.broadcast(2)
    async with asyncio.timeout(2):
        reply = await second
    assert owner.ticks(reply.body) == [2]  # the output went to the newer poll, and only there


async def test_an_empty_200_at_the_poll_timeout() -> None:
    owner = Owner(poll_timeout=0.05)
    negotiated = await owner.start_polling()
    async with asyncio.timeout(5):
        reply = await owner.long_polling.poll(negotiated, owner.caller)
    assert (reply.status, reply.body) == (200, b"")
    assert negotiated.connection_token in owner.registry


async def test_delete_ends_the_connection_and_the_held_poll_gets_204(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    poll = await held(owner, negotiated)
    deleted = await owner.long_polling.delete(negotiated)
    assert deleted.status == 202
    async with asyncio.timeout(2):
        assert (await poll).status == 204
    assert negotiated.connection_token not in owner.registry
    assert (await owner.long_polling.poll(negotiated, owner.caller)).status == 404  # gone, and claimed: no restart
    assert (await owner.connections.send(negotiated, b"{}" + RS)).status == 404
    assert (await owner.long_polling.delete(negotiated)).status == 404


async def test_after_the_close_message_is_read_the_next_poll_gets_204(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    entry = owner.connections.get(negotiated.connection_token)
    assert entry is not None
    entry.session.close(CloseReason.SERVER_SHUTDOWN, allow_reconnect=True)
    reply = await owner.long_polling.poll(negotiated, owner.caller)
    assert records(reply.body) == [{"type": 7, "allowReconnect": True}]
    assert negotiated.connection_token in owner.registry  # until the client has been told
    assert (await owner.long_polling.poll(negotiated, owner.caller)).status == 204
    assert negotiated.connection_token not in owner.registry


async def test_a_connection_nobody_polls_is_ended_after_the_disconnect_timeout(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    owner.clock.now += 14.9
    await owner.connections.sweep()
    assert negotiated.connection_token in owner.registry
    owner.clock.now += 0.1
    await owner.connections.sweep()
    assert negotiated.connection_token not in owner.registry
    assert owner.metrics.connections_closed.labels(reason="transport_closed")._value.get() == 1
    assert (await owner.long_polling.poll(negotiated, owner.caller)).status == 404


async def test_a_held_poll_keeps_the_connection_however_long_it_waits(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    poll = await held(owner, negotiated)
    owner.clock.now += 3600
    await owner.connections.sweep()
    assert negotiated.connection_token in owner.registry
    # No keep-alive Ping and no client timeout on long polling: the client neither pings nor expects it.
    entry = owner.connections.get(negotiated.connection_token)
    assert entry is not None
    entry.session.tick(time.monotonic() + 3600)
    assert not entry.connection.should_close and entry.outbox.waiting == 0
    assert not poll.done()
    await owner.long_polling.delete(negotiated)
    await poll


async def test_a_poll_whose_client_left_ends_without_taking_output(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    gone = False
    poll = asyncio.ensure_future(owner.long_polling.poll(negotiated, owner.caller, client_gone=lambda: gone))
    await asyncio.sleep(0)
    gone = True
    await owner.connections.sweep()  # notices, and wakes it
    async with asyncio.timeout(2):
        assert (await poll).status == 204
    await owner.broadcast(3)
    reply = await owner.long_polling.poll(negotiated, owner.caller)
    assert owner.ticks(reply.body) == [3]  # kept for the next poll


async def test_broadcasts_arrive_in_order_in_whole_messages_of_at_most_max_poll_bytes() -> None:
    owner = Owner(max_poll_bytes=400)
    negotiated = await owner.start_polling()
    for number in range(50):
        await owner.broadcast(number)
    received: list[int] = []
    while len(received) < 50:
        reply = await owner.long_polling.poll(negotiated, owner.caller)
        assert reply.status == 200 and 0 < len(reply.body) <= 400
        received += owner.ticks(reply.body)  # records() checks it ends with a whole message
    assert received == list(range(50))


async def test_a_client_that_stops_polling_is_cut_as_a_slow_consumer() -> None:
    owner = Owner(max_outbound_bytes=2000)
    negotiated = await owner.start_polling()
    for number in range(100):
        await owner.broadcast(number)
    entry = owner.connections.get(negotiated.connection_token)
    assert entry is not None and entry.connection.close_reason is CloseReason.SLOW_CONSUMER
    assert (await owner.long_polling.poll(negotiated, owner.caller)).status == 204
    assert negotiated.connection_token not in owner.registry
    assert owner.metrics.connections_closed.labels(reason="slow_consumer")._value.get() == 1


async def test_a_body_over_the_frame_limit_gets_413_and_a_close_with_an_error() -> None:
    owner = Owner(max_frame_bytes=40000)
    negotiated = await owner.start_polling()
    reply = await owner.connections.send(negotiated, None)
    assert reply.status == 413
    poll = await owner.long_polling.poll(negotiated, owner.caller)
    assert records(poll.body)[-1] == {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}


async def test_ending_a_connection_releases_a_post_waiting_for_an_invocation_slot(owner: Owner) -> None:
    """One invocation at a time: the second waits for the first; a DELETE meanwhile must not leave its POST hanging."""
    negotiated = await owner.start_polling()
    blocked = asyncio.Event()

    async def slow_stats(*_: Any) -> Any:
        blocked.set()
        await asyncio.Event().wait()

    owner.host.hub._snapshots.latest = slow_stats  # type: ignore[method-assign]
    first = b'{"type":1,"invocationId":"1","target":"GetPlatformStats","arguments":[]}' + RS
    second = b'{"type":1,"invocationId":"2","target":"GetConnectionCount","arguments":[]}' + RS
    assert (await owner.connections.send(negotiated, first)).status == 200
    await blocked.wait()
    waiting = asyncio.ensure_future(owner.connections.send(negotiated, second))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    await owner.long_polling.delete(negotiated)
    async with asyncio.timeout(2):
        assert (await waiting).status == 404


@pytest.mark.parametrize("expired", [False, True])
async def test_only_a_token_within_the_connect_window_starts_a_connection(owner: Owner, expired: bool) -> None:
    negotiated = owner.negotiate()
    owner.wall.now += 31 if expired else 29
    reply = await owner.long_polling.poll(negotiated, owner.caller)
    assert reply.status == (404 if expired else 200)


async def test_a_started_connection_outlives_its_connect_window(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    owner.wall.now += 3600
    poll = await held(owner, negotiated)
    await owner.broadcast(4)
    assert owner.ticks((await poll).body) == [4]


async def test_connection_limits_apply_to_long_polling_starts() -> None:
    owner = Owner(max_connections_per_user=1)
    await owner.start_polling()
    reply = await owner.long_polling.poll(owner.negotiate(), owner.caller)
    assert reply.status == 429 and reply.headers["Retry-After"] == "10"
    assert owner.metrics.limit_refusals.labels(limit="connections_per_user")._value.get() == 1


# -- what a connection is bound to ----------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.closed = asyncio.Event()

    async def write(self, event: bytes) -> bool:
        self.events.append(event)
        return True

    async def close(self) -> None:
        self.closed.set()


async def test_an_event_stream_connection_refuses_polls_deletes_and_a_second_stream(owner: Owner) -> None:
    negotiated = owner.negotiate()
    assert (await owner.events.start_forwarded(negotiated, owner.caller, Sink())).status == 200
    entry = owner.connections.get(negotiated.connection_token)
    assert entry is not None and entry.session.transport == "serversentevents"
    second = await owner.events.start_forwarded(negotiated, owner.caller, Sink())
    assert (second.status, second.body) == (409, b"")
    poll = await owner.long_polling.poll(negotiated, owner.caller)
    assert (poll.status, poll.body) == (400, b"Cannot change transports mid-connection")
    delete = await owner.long_polling.delete(negotiated)
    assert (delete.status, delete.body) == (400, b"Cannot terminate this connection using the DELETE endpoint.")
    await owner.connections.end(entry)


async def test_a_long_polling_connection_refuses_an_event_stream(owner: Owner) -> None:
    negotiated = await owner.start_polling()
    reply = await owner.events.start_forwarded(negotiated, owner.caller, Sink())
    assert (reply.status, reply.body) == (400, b"Cannot change transports mid-connection")


async def test_messagepack_over_server_sent_events_is_refused_at_the_handshake(owner: Owner) -> None:
    negotiated = owner.negotiate()
    sink = Sink()
    await owner.events.start_forwarded(negotiated, owner.caller, sink)
    await owner.connections.send(negotiated, b'{"protocol":"messagepack","version":1}' + RS)
    async with asyncio.timeout(2):
        await sink.closed.wait()
    assert sink.events == [
        b"data: "
        + orjson.dumps(
            {
                "error": "Cannot use the 'messagepack' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            }
        )
        + RS
        + b"\r\n\r\n"
    ]
