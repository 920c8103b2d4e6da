"""Long polling and Server-Sent Events over HTTP, on two replicas: every request on the connection's owner,
on the other replica (forwarded over the in-memory broker), or alternating, with the same answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import WSMsgType

from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.envelope import encode_event
from broker_bridge.subjects import replica_subject
from gateway.auth import Principal
from gateway.transport.connection_token import ConnectionTokenSigner, derive_secret
from gateway.transport.forwarding import decode_message, decode_reply, encode_caller, encode_message, encode_reply
from gateway.transport.http_connections import Caller
from gateway.transport.replies import Reply
from scripts.processes import wait_until_async
from tests.component.http_hub import (
    HUB,
    SECRET,
    USER_ID,
    ClientFactory,
    EventStream,
    PollingClient,
    Replica,
    access_token,
    bearer,
    invocation,
    negotiate,
    records,
    start_replicas,
)
from tests.support.fanout import metric_value
from tests.support.frames import JSON_HANDSHAKE, RS

ROUTES = {"owner": [0], "other": [1], "alternating": [1, 0]}


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


@pytest.fixture
async def replicas(aiohttp_client: ClientFactory, broker: InMemoryBroker) -> list[Replica]:
    return await start_replicas(aiohttp_client, broker, 2)


async def metric_reaches(replica: Replica, name: str, value: float, **labels: str) -> None:
    """Wait until ``replica`` reports ``value`` for the metric (a forwarded request has arrived, is held...)."""

    async def reached() -> bool:
        return await replica.metric(name, **labels) == value

    await wait_until_async(reached, timeout=5, what=f"{name} {labels} = {value} on {replica.name}")


def completion(invocation_id: str) -> Any:
    return lambda message: message.get("type") == 3 and message.get("invocationId") == invocation_id


def is_target(target: str) -> Any:
    return lambda message: message.get("target") == target


# -- long polling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
async def test_a_long_polling_session(replicas: list[Replica], broker: InMemoryBroker, route: str) -> None:
    token = await negotiate(replicas[0])
    client = PollingClient([replicas[i] for i in ROUTES[route]], token)

    first = await client.get()
    assert (first.status, await first.read()) == (200, b"")
    assert first.content_type == "application/octet-stream"
    assert first.headers["Cache-Control"] == "no-cache, no-store"
    assert first.headers["Pragma"] == "no-cache"
    assert first.headers["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"

    sent = await client.post(JSON_HANDSHAKE)
    assert (sent.status, await sent.read()) == (200, b"")
    greeting = await client.poll()
    assert greeting.startswith(b"{}" + RS)
    (established,) = records(greeting[3:])
    assert established["target"] == "ConnectionEstablished"
    assert established["arguments"][0]["userId"] == USER_ID

    await client.post(invocation("1", "SendTestMessage", "over long polling"))
    (answer,) = [m for m in await client.messages_until(completion("1")) if m.get("type") == 3]
    assert answer["result"]["echo"] == "over long polling"

    await broker.publish("realtime.all", encode_event("ReceiveMessage", {"n": 1}))
    (event,) = [m for m in await client.messages_until(is_target("ReceiveMessage"))]
    assert event["arguments"] == [{"n": 1}]

    deleted = await client.delete()
    assert (deleted.status, await deleted.read()) == (202, b"")
    assert (await client.get()).status == 404

    forwarded = await replicas[1].metric("realtime_forwarded_requests_total")
    served = await replicas[0].metric("realtime_forwarded_served_total")
    assert (forwarded > 0) == (route != "owner")
    assert served == forwarded


async def test_the_held_poll_ends_with_204_on_delete_through_the_other_replica(replicas: list[Replica]) -> None:
    token = await negotiate(replicas[0])
    owner, other = PollingClient([replicas[0]], token), PollingClient([replicas[1]], token)
    await owner.get()
    await owner.post(JSON_HANDSHAKE)
    await owner.poll()
    held = asyncio.ensure_future(other.get())  # forwarded, held by the owner
    await metric_reaches(replicas[0], "realtime_forwarded_served_total", 1, operation="poll")
    assert not held.done()
    assert (await other.delete()).status == 202
    async with asyncio.timeout(5):
        assert (await held).status == 204


# -- Server-Sent Events ---------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["owner", "other"])
async def test_a_server_sent_events_session(replicas: list[Replica], broker: InMemoryBroker, route: str) -> None:
    token = await negotiate(replicas[0])
    stream = await EventStream.open(replicas[ROUTES[route][0]], token)
    assert stream.response.status == 200
    assert stream.response.content_type == "text/event-stream"
    assert stream.response.headers["Cache-Control"] == "no-cache,no-store"
    assert stream.response.headers["Content-Encoding"] == "identity"
    assert await stream.opening() == b":\r\n"

    sender = PollingClient(replicas, token)  # the POSTs alternate between the replicas
    assert (await sender.post(JSON_HANDSHAKE)).status == 200
    greeting = await stream.event()
    assert greeting.startswith(b"{}" + RS)
    assert records(greeting[3:])[0]["target"] == "ConnectionEstablished"

    await sender.post(invocation("1", "GetConnectionCount"))
    (answer,) = [m for m in await stream.messages_until(completion("1")) if m.get("type") == 3]
    assert answer["result"]["connectionsOnReplica"] == 1

    for number in range(20):
        await broker.publish("realtime.all", encode_event("ReceiveMessage", number))
    received: list[int] = []
    async with asyncio.timeout(5):
        while len(received) < 20:
            received += [
                m["arguments"][0] for m in records(await stream.event()) if m.get("target") == "ReceiveMessage"
            ]
    assert received == list(range(20))

    # A second stream for a live connection, a poll, a DELETE: refused, on either replica.
    again = await EventStream.open(replicas[1 - ROUTES[route][0]], token)
    assert again.response.status == 409
    poll = await PollingClient([replicas[1]], token).get()
    assert (poll.status, await poll.text()) == (400, "Cannot change transports mid-connection")
    deleted = await PollingClient([replicas[1]], token).delete()
    assert (deleted.status, await deleted.text()) == (
        400,
        "Cannot terminate this connection using the DELETE endpoint.",
    )

    await sender.post(b'{"type":7}' + RS)  # what stop() sends: the stream ends, and the connection
    assert await stream.ended()
    assert (await sender.post(b'{"type":6}' + RS)).status == 404


async def test_server_sent_events_refuse_messagepack(replicas: list[Replica]) -> None:
    token = await negotiate(replicas[0])
    stream = await EventStream.open(replicas[1], token)
    await stream.opening()
    await PollingClient([replicas[1]], token).post(b'{"protocol":"messagepack","version":1}' + RS)
    assert records(await stream.event()) == [
        {
            "error": "Cannot use the 'messagepack' protocol on the current transport. "
            "The transport does not support 'Binary' transfer format."
        }
    ]
    assert await stream.ended()


async def test_the_owner_keeps_a_forwarded_stream_alive_with_pings(
    aiohttp_client: ClientFactory, broker: InMemoryBroker
) -> None:
    replicas = await start_replicas(
        aiohttp_client, broker, 2, keep_alive_interval_seconds=2.0, handshake_timeout_seconds=1.0
    )
    token = await negotiate(replicas[0])
    stream = await EventStream.open(replicas[1], token)
    await stream.opening()
    await PollingClient([replicas[1]], token).post(JSON_HANDSHAKE)
    await stream.event()
    # Silence from the owner ends a forwarded stream after 2 keep-alive intervals plus a tick (5 s);
    # the owner's Pings (on its once-a-second tick, 2-3 s apart) keep this one open past that.
    loop = asyncio.get_running_loop()
    opened = loop.time()
    while loop.time() - opened < 5.5:
        assert records(await stream.event(seconds=8)) == [{"type": 6}]


async def test_a_forwarded_stream_ends_when_its_owner_falls_silent(
    aiohttp_client: ClientFactory, broker: InMemoryBroker
) -> None:
    """An owner that accepted the stream and then died: no event, no end notice, nothing."""
    (replica,) = await start_replicas(
        aiohttp_client, broker, 1, keep_alive_interval_seconds=0.1, handshake_timeout_seconds=0.1
    )

    async def accept_and_vanish(payload: bytes) -> bytes:
        return encode_reply(Reply(200))

    await broker.serve(replica_subject("ghost", "http"), accept_and_vanish, max_in_flight=10, busy_reply=b"busy")
    signer = ConnectionTokenSigner(
        secret=derive_secret(SECRET.encode()), ttl_seconds=30, replica="ghost", clock=time.time
    )
    ghost_token = signer.issue(user_id=USER_ID, negotiate_version=1).connection_token
    stream = await EventStream.open(replica, ghost_token)
    assert stream.response.status == 200
    assert await stream.opening() == b":\r\n"
    assert await stream.ended(seconds=5)
    assert await replica.metric("realtime_forwarded_in_flight") == 0


async def test_the_owner_ends_a_forwarded_stream_whose_client_left(
    aiohttp_client: ClientFactory, broker: InMemoryBroker
) -> None:
    replicas = await start_replicas(aiohttp_client, broker, 2, keep_alive_interval_seconds=0.1)
    token = await negotiate(replicas[0])
    stream = await EventStream.open(replicas[1], token)
    await stream.opening()
    await PollingClient([replicas[1]], token).post(JSON_HANDSHAKE)
    await stream.event()
    assert await replicas[0].metric("realtime_connections", transport="serversentevents") == 1
    stream.response.close()  # the client goes; the next Ping finds it gone, and the owner ends the connection

    async def owner_ended_it() -> bool:
        return await replicas[0].metric("realtime_connections", transport="serversentevents") == 0

    await wait_until_async(owner_ended_it, timeout=5, what="the owner to end the connection")
    assert await replicas[1].metric("realtime_forwarded_in_flight") == 0


# -- failures and limits --------------------------------------------------------------------------


async def test_a_connection_whose_owner_is_gone_is_unknown(replicas: list[Replica]) -> None:
    signer = ConnectionTokenSigner(
        secret=derive_secret(SECRET.encode()), ttl_seconds=30, replica="gone", clock=time.time
    )
    token = signer.issue(user_id=USER_ID, negotiate_version=1).connection_token
    client = PollingClient([replicas[0]], token)
    for response in (await client.get(), await client.post(JSON_HANDSHAKE), await client.delete()):
        assert (response.status, await response.text()) == (404, "No Connection with that ID")
    stream = await EventStream.open(replicas[0], token)
    assert (stream.response.status, await stream.response.text()) == (404, "No Connection with that ID")
    assert await replicas[0].metric("realtime_forwarded_failures_total", reason="no_owner") == 4


async def test_a_token_of_another_user_is_unknown_on_every_replica(replicas: list[Replica]) -> None:
    token = await negotiate(replicas[0])
    mallory = access_token(sub="mallory")
    for replica in replicas:
        response = await PollingClient([replica], token, mallory).get()
        assert (response.status, await response.text()) == (404, "No Connection with that ID")


async def test_forwarding_beyond_the_limit_is_503(aiohttp_client: ClientFactory, broker: InMemoryBroker) -> None:
    replicas = await start_replicas(aiohttp_client, broker, 2, max_forwarded_requests=1)
    held_tokens = [await negotiate(replicas[0]) for _ in range(2)]
    clients = [PollingClient([replicas[1]], token) for token in held_tokens]
    for client in clients:
        await client.get()  # started
    held = asyncio.ensure_future(clients[0].get())  # the one forwarded request replica-b may have under way
    await metric_reaches(replicas[1], "realtime_forwarded_in_flight", 1)
    refused = await clients[1].get()
    assert (refused.status, refused.headers["Retry-After"]) == (503, "1")
    assert await replicas[1].metric("realtime_forwarded_failures_total", reason="over_limit") == 1
    await clients[1].delete()
    await PollingClient([replicas[0]], held_tokens[0]).delete()
    assert (await held).status == 204


async def test_an_owner_at_its_limit_answers_503(aiohttp_client: ClientFactory, broker: InMemoryBroker) -> None:
    (owner,) = await start_replicas(aiohttp_client, broker, 1, prefix="owner", max_forwarded_requests=1)
    others = await start_replicas(aiohttp_client, broker, 2)
    tokens = [await negotiate(owner) for _ in range(2)]
    for token in tokens:
        await PollingClient([owner], token).get()
    held = asyncio.ensure_future(PollingClient([others[1]], tokens[0]).get())
    await metric_reaches(owner, "realtime_forwarded_served_total", 1, operation="poll")
    refused = await PollingClient([others[1]], tokens[1]).get()
    assert (refused.status, await refused.text()) == (503, "The server owning this connection is busy.")
    assert await others[1].metric("realtime_forwarded_failures_total", reason="owner_busy") == 1
    await PollingClient([owner], tokens[0]).delete()
    assert (await held).status == 204


async def test_a_body_over_the_frame_limit_through_the_other_replica(
    aiohttp_client: ClientFactory, broker: InMemoryBroker
) -> None:
    replicas = await start_replicas(aiohttp_client, broker, 2, max_frame_bytes=40000)
    token = await negotiate(replicas[0])
    client = PollingClient([replicas[1]], token)
    await client.get()
    await client.post(JSON_HANDSHAKE)
    await client.poll()
    too_large = await client.post(b"x" * 40001)
    assert (too_large.status, await too_large.text()) == (413, "Request body too large")
    close = records(await client.poll())[-1]
    assert close == {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}


async def test_a_websocket_connection_refuses_the_http_transports(replicas: list[Replica]) -> None:
    token = await negotiate(replicas[0])
    ws = await replicas[1].client.ws_connect(f"{HUB}?id={token}", headers=bearer())
    await ws.send_bytes(JSON_HANDSHAKE)
    message = await ws.receive()
    assert message.type is WSMsgType.TEXT and message.data.startswith("{}\x1e")
    client = PollingClient([replicas[1]], token)  # the replica holding the WebSocket
    posted = await client.post(b'{"type":6}' + RS)
    assert (posted.status, await posted.text()) == (405, "POST requests are not allowed for WebSocket connections.")
    deleted = await client.delete()
    assert (deleted.status, await deleted.text()) == (
        400,
        "Cannot terminate this connection using the DELETE endpoint.",
    )
    polled = await client.get()
    assert (polled.status, await polled.text()) == (400, "Cannot change transports mid-connection")
    await ws.close()


# A WebSocket upgrade request, as a client sends it (RFC 6455's sample key).
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def test_a_long_polling_connection_refuses_a_websocket(replicas: list[Replica]) -> None:
    token = await negotiate(replicas[0])
    await PollingClient([replicas[0]], token).get()
    response = await replicas[0].client.get(
        f"{HUB}?id={token}",
        headers={**bearer(), **UPGRADE},
    )
    assert (response.status, await response.text()) == (400, "Cannot change transports mid-connection")
    other = await replicas[1].client.get(
        f"{HUB}?id={token}",
        headers={**bearer(), **UPGRADE},
    )
    assert other.status == 409  # claimed by the long-polling start


async def test_every_replica_serves_its_subjects_and_says_so(replicas: list[Replica]) -> None:
    for replica in replicas:
        ready = await replica.client.get("/readyz")
        assert (ready.status, await ready.text()) == (200, "ready")
        text = await (await replica.client.get("/metrics")).text()
        assert metric_value(text, "realtime_forwarded_in_flight") == 0


# -- back-pressure on a forwarded stream ----------------------------------------------------------


async def open_stream_for(broker: InMemoryBroker, owner: Replica, token: str, proxy: str) -> Reply:
    """Ask ``owner`` to stream ``token``'s events to ``proxy``, as a receiving replica does."""
    caller = Caller(Principal(USER_ID, "Alice", frozenset({"Admin"}), time.time() + 3600), "10.0.0.9")
    header = {"op": "stream", "token": token, "caller": encode_caller(caller), "proxy": proxy, "stream": "s1"}
    raw = await broker.request(replica_subject(owner.name, "http"), encode_message(header), timeout_seconds=5)
    return decode_reply(raw)


async def a_proxy_that_never_acknowledges(broker: InMemoryBroker, name: str) -> list[bytes]:
    received: list[bytes] = []

    async def stall(payload: bytes) -> bytes:
        received.append(payload)
        await asyncio.Event().wait()
        return b"ok"

    await broker.serve(replica_subject(name, "events"), stall, max_in_flight=10, busy_reply=b"busy")
    return received


async def test_an_event_not_acknowledged_within_the_write_timeout_ends_the_connection(
    aiohttp_client: ClientFactory, broker: InMemoryBroker
) -> None:
    (owner,) = await start_replicas(aiohttp_client, broker, 1, write_timeout_seconds=0.3)
    received = await a_proxy_that_never_acknowledges(broker, "slowpoke")
    token = await negotiate(owner)
    assert (await open_stream_for(broker, owner, token, "slowpoke")).status == 200
    await PollingClient([owner], token).post(JSON_HANDSHAKE)

    async def ended() -> bool:
        return await owner.metric("realtime_connections_closed_total") == 1

    await wait_until_async(ended, timeout=5, what="the owner to end the stalled stream")
    # One event at a time: nothing more while it was unacknowledged; then the end notice.
    assert [decode_message(payload)[0] for payload in received] == [{"stream": "s1"}, {"stream": "s1", "end": True}]
    assert await owner.metric("realtime_connections", transport="serversentevents") == 0


async def test_output_piling_up_behind_an_unacknowledged_event_is_cut_as_a_slow_consumer(
    aiohttp_client: ClientFactory, broker: InMemoryBroker
) -> None:
    (owner,) = await start_replicas(aiohttp_client, broker, 1, write_timeout_seconds=1.0, max_outbound_bytes=4000)
    received = await a_proxy_that_never_acknowledges(broker, "slowpoke")
    token = await negotiate(owner)
    assert (await open_stream_for(broker, owner, token, "slowpoke")).status == 200
    await PollingClient([owner], token).post(JSON_HANDSHAKE)
    for number in range(100):
        await broker.publish("realtime.all", encode_event("ReceiveMessage", "x" * 100, number))

    async def cut() -> bool:
        return await owner.metric("realtime_connections_closed_total", reason="slow_consumer") == 1

    await wait_until_async(cut, timeout=5, what="the owner to cut the connection as slow")
    assert [decode_message(payload)[0] for payload in received] == [{"stream": "s1"}, {"stream": "s1", "end": True}]
