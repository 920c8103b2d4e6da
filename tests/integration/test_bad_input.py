"""Bad input from raw WebSocket clients: each gets a clear error or Close, and nobody else is harmed."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgpack
import pytest

from scripts.processes import wait_until_async
from tests.support import expect
from tests.support.jsclient import run_js
from tests.support.logs import unexpected_tracebacks
from tests.support.processes import GatewayProcess
from tests.support.rawclient import RS, RawConnection, bearer, negotiate, open_connected, record
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MAX_MESSAGE_BYTES = 32768  # REALTIME_MAX_MESSAGE_BYTES default


@pytest.fixture(scope="module")
def bad_gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    """Default limits, except a 1 s handshake timeout so silent sockets are cut quickly, and connection
    caps above the junk storm's 300 sockets of one user from one address (test_limits tests the caps)."""
    return gateway_factory(
        REALTIME_HANDSHAKE_TIMEOUT_SECONDS="1",
        REALTIME_MAX_CONNECTIONS_PER_USER="1000",
        REALTIME_MAX_CONNECTIONS_PER_IP="1000",
        REALTIME_NEGOTIATE_BURST_PER_IP="1000",
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
async def connection(http: aiohttp.ClientSession, bad_gateway: GatewayProcess) -> AsyncIterator[RawConnection]:
    """An Admin's JSON connection to ``bad_gateway``: handshake done, ConnectionEstablished read."""
    connected, _ = await open_connected(http, bad_gateway, admin_token())
    async with connected:
        yield connected


# -- handshake -------------------------------------------------------------------------------------


async def test_missing_handshake_is_canceled_after_the_timeout(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess
) -> None:
    started = time.monotonic()
    async with await RawConnection.open(http, bad_gateway, admin_token()) as connection:
        reply = await connection.receive(within=5)
        waited = time.monotonic() - started
        assert reply == {"error": "Handshake was canceled."}
        assert 0.9 <= waited < 4, waited
        assert await connection.wait_closed(within=5) == []


@pytest.mark.parametrize(
    ("handshake", "error"),
    [
        ("{not json" + RS, "An unexpected error occurred during connection handshake."),
        ('{"protocol":"json"}' + RS, "An unexpected error occurred during connection handshake."),
        ('{"version":1}' + RS, "An unexpected error occurred during connection handshake."),
        ('["json",1]' + RS, "An unexpected error occurred during connection handshake."),
        ('{"protocol":"json","version":"1"}' + RS, "An unexpected error occurred during connection handshake."),
        ('{"protocol":"foo","version":1}' + RS, "The protocol 'foo' is not supported."),
        ('{"protocol":"json","version":3}' + RS, "The server does not support version 3 of the 'json' protocol."),
        (
            '{"protocol":"messagepack","version":3}' + RS,
            "The server does not support version 3 of the 'messagepack' protocol.",
        ),
        ('{"protocol":"json","version":1' + " " * MAX_MESSAGE_BYTES, "Handshake was canceled."),
    ],
    ids=[
        "malformed-json",
        "no-version",
        "no-protocol",
        "not-an-object",
        "version-string",
        "unknown-protocol",
        "json-v3",
        "messagepack-v3",
        "no-separator-past-limit",
    ],
)
async def test_bad_handshake_gets_an_error_reply_and_close(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess, handshake: str, error: str
) -> None:
    async with await RawConnection.open(http, bad_gateway, admin_token(), negotiated=False) as connection:
        assert await connection.handshake(handshake) == {"error": error}
        assert await connection.wait_closed(within=5) == []


@pytest.mark.parametrize("version", [0, 1, 2])
async def test_handshake_versions_zero_to_two_are_accepted(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess, version: int
) -> None:
    async with await RawConnection.open(http, bad_gateway, admin_token()) as connection:
        assert await connection.handshake(f'{{"protocol":"JSON","version":{version}}}' + RS) == {}
        completion = await connection.invoke("1", "SendTestMessage", "v")
        expect.assert_test_message(completion["result"], "v")


async def test_hub_message_before_the_handshake_fails_the_handshake(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess
) -> None:
    async with await RawConnection.open(http, bad_gateway, admin_token()) as connection:
        reply = await connection.handshake(record({"type": 6}))
        assert reply == {"error": "An unexpected error occurred during connection handshake."}
        assert await connection.wait_closed() == []


# -- hub messages after a good handshake -------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "{not json" + RS,
        '{"type":"1"}' + RS,
        '{"target":"SendTestMessage","arguments":["x"]}' + RS,  # no type
        '{"type":1,"invocationId":"1","arguments":[]}' + RS,  # no target
        '{"type":1,"invocationId":"1","target":"SendTestMessage"}' + RS,  # no arguments
        '{"type":3}' + RS,  # completion without id
        "[6]" + RS,
        "\xff\xfe" + RS,
    ],
    ids=["invalid-json", "type-string", "no-type", "no-target", "no-arguments", "completion-no-id", "array", "bytes"],
)
async def test_invalid_hub_message_closes_with_error(connection: RawConnection, bad: str) -> None:
    await connection.send_text(bad)
    assert await connection.wait_closed() == [expect.CLOSE_WITH_ERROR]


async def test_record_without_separator_growing_past_the_limit_closes_with_error(connection: RawConnection) -> None:
    await connection.send_text('{"type":1,"invocationId":"1","target":"SendTestMessage","arguments":["')
    sent = 0
    records: list[dict[str, Any]] = []
    while not connection.closed and sent <= 4 * MAX_MESSAGE_BYTES:
        await connection.send_text("a" * 4096)
        sent += 4096
        try:
            message = await connection.receive(within=0.05)
        except TimeoutError:
            continue
        if message is not None:
            records.append(message)
    records += await connection.wait_closed()
    assert [r for r in records if r.get("type") != 6] == [expect.CLOSE_WITH_ERROR]
    assert sent <= MAX_MESSAGE_BYTES + 8 * 4096, f"closed only after {sent} bytes"


async def test_message_size_limit_is_per_record(connection: RawConnection) -> None:
    # Just under the limit (framing included) works; so do several such records in one frame.
    envelope = len(record({"type": 1, "invocationId": "1", "target": "SendTestMessage", "arguments": [""]}))
    payload = "p" * (MAX_MESSAGE_BYTES - envelope)
    batch = [{"type": 1, "invocationId": str(i), "target": "SendTestMessage", "arguments": [payload]} for i in (1, 2)]
    assert all(len(record(message)) == MAX_MESSAGE_BYTES for message in batch)
    await connection.send(*batch)
    for invocation_id in ("1", "2"):
        completion = await connection.completion(invocation_id)
        assert completion["result"]["echo"] == payload
    # One byte more is too much.
    await connection.send({"type": 1, "invocationId": "3", "target": "SendTestMessage", "arguments": [payload + "p"]})
    assert [r for r in await connection.wait_closed() if r.get("type") != 6] == [expect.CLOSE_WITH_ERROR]


async def test_binary_frames_on_the_json_protocol_are_read_as_bytes(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess
) -> None:
    connection = await RawConnection.open(http, bad_gateway, admin_token())
    async with connection:
        await connection.send_bytes(b'{"protocol":"json","version":1}' + RS.encode())
        assert await connection.receive() == {}
        await connection.send_bytes(record({"type": 6}).encode())
        invocation = {"type": 1, "invocationId": "b1", "target": "SendTestMessage", "arguments": ["b\u00e9"]}
        await connection.send_bytes(record(invocation).encode())
        completion = await connection.completion("b1")
        expect.assert_test_message(completion["result"], "b\u00e9")
        # The server always answers the JSON protocol in text frames.
        assert set(connection.frame_types) == {aiohttp.WSMsgType.TEXT}


async def test_records_split_across_frames_and_batched_in_one_frame(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess
) -> None:
    connection = await RawConnection.open(http, bad_gateway, admin_token())
    async with connection:
        handshake_and_first = (
            '{"protocol":"json","version":1}'
            + RS
            + record({"type": 1, "invocationId": "1", "target": "SendTestMessage", "arguments": ["one"]})
        )
        await connection.send_text(handshake_and_first)  # the handshake and a message in one frame
        assert await connection.receive() == {}
        expect.assert_test_message((await connection.completion("1"))["result"], "one")
        second = record({"type": 1, "invocationId": "2", "target": "SendTestMessage", "arguments": ["two"]})
        for piece in (second[:5], second[5:20], second[20:]):
            await connection.send_text(piece)
        expect.assert_test_message((await connection.completion("2"))["result"], "two")


async def test_unknown_and_unexpected_message_types_are_ignored(connection: RawConnection) -> None:
    await connection.send(
        {"type": 99, "whatever": [1, 2]},
        {"type": 8, "sequenceId": 1},  # Ack without stateful reconnect
        {"type": 9, "sequenceId": 1},  # Sequence without stateful reconnect
        {"type": 2, "invocationId": "nope", "item": 1},  # StreamItem for an unknown stream
        {"type": 3, "invocationId": "nope", "result": 1},  # Completion for an unknown invocation
        {"type": 5, "invocationId": "nope"},  # CancelInvocation for an unknown id
        {"type": 1, "target": "NoSuchMethod", "arguments": []},  # non-blocking: no answer, not even an error
        {"type": 1, "target": "SendTestMessage", "arguments": ["fire and forget"]},  # non-blocking: no answer
    )
    completion = await connection.invoke("after", "SendTestMessage", "still here")
    expect.assert_test_message(completion["result"], "still here")
    assert not connection.closed


async def test_streaming_invocation_of_a_plain_method_gets_an_error(connection: RawConnection) -> None:
    await connection.send({"type": 4, "invocationId": "s1", "target": "GetPlatformStats", "arguments": []})
    completion = await connection.completion("s1")
    assert completion == {
        "type": 3,
        "invocationId": "s1",
        "error": "The client attempted to invoke the non-streaming 'GetPlatformStats' method with a streaming "
        "invocation.",
    }


async def test_invocations_in_one_frame_complete_in_order(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess
) -> None:
    """With the default limit of one parallel invocation, a batch is answered strictly in arrival order.

    The slow calls (subscriptions go to NATS) come first: run in parallel, the quick ones would overtake them.
    """
    connection, established = await open_connected(http, bad_gateway, admin_token())
    targets = [
        ("SubscribeToAnalytics", []),
        ("SendTestMessage", ["2"]),
        ("SubscribeToAlerts", []),
        ("GetConnectionCount", []),
        ("UnsubscribeFromAnalytics", []),
        ("SendTestMessage", ["6"]),
        ("NoSuchMethod", []),
        ("UnsubscribeFromAlerts", []),
        ("GetPlatformStats", []),
    ]
    async with connection:
        await connection.send(
            *(
                {"type": 1, "invocationId": str(i), "target": target, "arguments": arguments}
                for i, (target, arguments) in enumerate(targets)
            )
        )
        order: list[str] = []
        results: dict[str, dict[str, Any]] = {}
        errors: list[str] = []
        latest: list[str] = []
        while len(order) < len(targets):
            message = await connection.receive_non_ping()
            assert message is not None, "closed"
            if message["type"] == 1 and message["target"] == "ErrorOccurred":
                errors.append(message["arguments"][0]["message"])
                continue
            if message["type"] == 1 and message["target"] in ("AnalyticsUpdate", "UserCountUpdate"):
                assert order == [], "the latest figures come before the subscription's answer"
                latest.append(message["target"])
                continue
            assert message["type"] == 3, message
            order.append(message["invocationId"])
            results[message["invocationId"]] = message
        assert order == [str(i) for i in range(len(targets))]
        assert latest == ["AnalyticsUpdate", "UserCountUpdate"]
        assert results["6"]["error"] == expect.UNKNOWN_METHOD.format("NoSuchMethod")
        assert errors == [results["6"]["error"]], "the failure also reaches the ErrorOccurred handler"
        expect.assert_connection_count(results["3"]["result"], established["arguments"][0]["connectionId"])


# -- connection tokens -------------------------------------------------------------------------------


async def _upgrade(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, str]:
    try:
        ws = await http.ws_connect(url, headers=bearer(token))
    except aiohttp.WSServerHandshakeError as error:
        return error.status, error.message
    await ws.close()
    return 101, ""


async def test_unknown_forged_or_foreign_connection_token_is_404(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess
) -> None:
    token = admin_token()
    mine = (await negotiate(http, bad_gateway, token))["connectionToken"]
    theirs = (await negotiate(http, bad_gateway, admin_token()))["connectionToken"]
    public_id = (await negotiate(http, bad_gateway, token))["connectionId"]
    forged = mine[:-2] + ("AA" if not mine.endswith("AA") else "BB")
    for connection_token in ("nope", forged, theirs, public_id, mine + "x"):
        async with http.get(
            f"{bad_gateway.hub_url}?id={connection_token}",
            headers={
                **bearer(token),
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        ) as response:
            assert response.status == 404, connection_token
            assert await response.text() == "No Connection with that ID"
    assert (await _upgrade(http, f"{bad_gateway.hub_url}?id={mine}", token))[0] == 101


async def test_second_websocket_for_the_same_connection_is_409(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess
) -> None:
    token = admin_token()
    connection_token = (await negotiate(http, bad_gateway, token))["connectionToken"]
    first = await RawConnection.open(http, bad_gateway, token, connection_token=connection_token)
    async with first:
        assert await first.handshake() == {}
        status, _ = await _upgrade(http, f"{bad_gateway.hub_url}?id={connection_token}", token)
        assert status == 409
        completion = await first.invoke("1", "SendTestMessage", "first is unharmed")
        expect.assert_test_message(completion["result"], "first is unharmed")


# -- a crowd of junk connections -------------------------------------------------------------------------


JUNK_KINDS = ("garbage-ws", "half-handshake", "instant-close", "bad-protocol", "tcp-garbage", "tcp-half-upgrade")


async def _junk(kind: str, http: aiohttp.ClientSession, gateway: GatewayProcess, token: str) -> str:
    """One misbehaving client; returns what it observed (for the tally)."""
    if kind.startswith("tcp-"):
        _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        if kind == "tcp-garbage":
            writer.write(os.urandom(512))
        else:
            writer.write(
                f"GET /hubs/admin HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nAuthorization: Bearer {token}"
                "\r\n".encode()
            )
        await writer.drain()
        writer.close()
        return kind
    ws = await http.ws_connect(gateway.hub_url, headers=bearer(token), timeout=aiohttp.ClientWSTimeout(10))
    try:
        if kind == "instant-close":
            return kind
        if kind == "garbage-ws":
            await ws.send_bytes(os.urandom(300).replace(RS.encode(), b"") + RS.encode())
        elif kind == "half-handshake":
            await ws.send_str('{"protocol":"js')
        elif kind == "bad-protocol":
            await ws.send_str('{"protocol":"foo","version":1}' + RS)
        message = await ws.receive(timeout=10)
        if message.type is aiohttp.WSMsgType.TEXT:
            return f"{kind}: {message.data.rstrip(RS)}"
        return f"{kind}: {message.type.name}"
    finally:
        await ws.close()


async def test_a_crowd_of_junk_connections_harms_nobody(
    http: aiohttp.ClientSession, bad_gateway: GatewayProcess
) -> None:
    token = admin_token()
    healthy, established = await open_connected(http, bad_gateway, token)
    connection_id = established["arguments"][0]["connectionId"]
    storm_done = asyncio.Event()
    answered: list[float] = []

    async def keep_invoking() -> None:
        number = 0
        while not storm_done.is_set():
            number += 1
            started = time.monotonic()
            completion = await healthy.invoke(str(number), "SendTestMessage", f"n{number}", within=10)
            expect.assert_test_message(completion["result"], f"n{number}")
            answered.append(time.monotonic() - started)
            await asyncio.sleep(0.2)  # a dashboard's pace, well inside the invocation rate limit

    async def storm() -> list[str | BaseException]:
        try:
            return await asyncio.gather(
                *(_junk(JUNK_KINDS[i % len(JUNK_KINDS)], http, bad_gateway, token) for i in range(300)),
                return_exceptions=True,
            )
        finally:
            storm_done.set()

    async with healthy:
        invoker = asyncio.create_task(keep_invoking())
        outcomes, js = await asyncio.gather(storm(), run_js("full", url=bad_gateway.hub_url, token=admin_token()))
        await asyncio.wait_for(invoker, 15)

        tally = Counter(o if isinstance(o, str) else type(o).__name__ for o in outcomes)
        assert tally["half-handshake: " + '{"error":"Handshake was canceled."}'] == 50, tally
        assert tally["bad-protocol: " + '{"error":"The protocol \'foo\' is not supported."}'] == 50, tally
        assert tally["instant-close"] == 50 and tally["tcp-garbage"] == 50 and tally["tcp-half-upgrade"] == 50, tally
        assert sum(n for outcome, n in tally.items() if outcome.startswith("garbage-ws: ")) == 50, tally

        assert answered, "the healthy client got no answer during the storm"
        assert max(answered) < 5, answered
        assert js.get("startError") is None and js["closed"] == [{"error": None}], js
        assert all(call["ok"] for name, calls in js["calls"].items() if name[0].isupper() for call in calls), js

        # Every junk connection is gone again; only the healthy one is left.
        count: dict[str, Any] = {}

        async def only_the_healthy_one_left() -> bool:
            count.update((await healthy.invoke("count", "GetConnectionCount"))["result"])
            return bool(count["connectionsOnReplica"] == 1)

        async def last_count() -> str:
            return f"GetConnectionCount {count}"

        await wait_until_async(
            only_the_healthy_one_left, timeout=10, what="the junk connections to go", interval=0.2, describe=last_count
        )
        expect.assert_connection_count(count, connection_id)

    assert bad_gateway.is_running()
    async with http.get(f"{bad_gateway.base_url}/healthz") as response:
        assert response.status == 200
    assert unexpected_tracebacks(bad_gateway.log()) == []


# -- more protocol edges -----------------------------------------------------------------------------------


async def test_client_close_message_ends_the_connection_quietly(connection: RawConnection) -> None:
    # Messages after the Close in the same frame are not processed.
    await connection.send(
        {"type": 7}, {"type": 1, "invocationId": "x", "target": "SendTestMessage", "arguments": ["late"]}
    )
    assert [r for r in await connection.wait_closed() if r.get("type") != 6] == []


async def test_upload_stream_ids_on_a_plain_method_get_an_error(connection: RawConnection) -> None:
    await connection.send(
        {"type": 1, "invocationId": "u", "target": "SendTestMessage", "arguments": ["x"], "streamIds": ["0"]},
        {"type": 2, "invocationId": "0", "item": 1},
        {"type": 3, "invocationId": "0"},
    )
    completion = await connection.completion("u")
    assert completion["error"] == (
        "An unexpected error occurred invoking 'SendTestMessage' on the server. "
        "HubException: Client sent 1 stream(s), Hub method expects 0."
    )
    expect.assert_test_message((await connection.invoke("v", "SendTestMessage", "ok"))["result"], "ok")


def _varint_frames(data: bytes) -> list[Any]:
    messages: list[Any] = []
    offset = 0
    while offset < len(data):
        length = shift = 0
        while True:
            byte = data[offset]
            offset += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        messages.append(msgpack.unpackb(data[offset : offset + length], raw=False, timestamp=3))
        offset += length
    return messages


def _framed(message: list[Any]) -> bytes:
    body = msgpack.packb(message)
    assert len(body) < 0x80
    return bytes([len(body)]) + body


async def test_messagepack_raw_session_and_bad_input(http: aiohttp.ClientSession, bad_gateway: GatewayProcess) -> None:
    token = admin_token()
    connection = await RawConnection.open(http, bad_gateway, token)
    ws = connection.ws
    async with connection:
        await ws.send_str('{"protocol":"messagepack","version":1}' + RS)  # as the JS client does: text
        first = await ws.receive(timeout=5)
        # After a Binary-protocol handshake even the `{}` reply travels in a binary frame.
        assert first.type is aiohttp.WSMsgType.BINARY, first
        assert first.data.startswith(b"{}" + RS.encode())
        received = _varint_frames(first.data[3:])
        while not any(m[0] == 1 and m[3] == "ConnectionEstablished" for m in received):
            received += _varint_frames((await ws.receive(timeout=5)).data)
        established = next(m for m in received if m[0] == 1)
        assert len(established) == 6 and established[1] == {} and established[2] is None  # 6 elements, no id
        expect.assert_established(established[4][0], user_id=expect.jwt_sub(token))

        await ws.send_bytes(_framed([1, {}, "7", "SendTestMessage", ["mp"]]))  # 5 elements, as JS sends
        while True:
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.BINARY
            completions = [m for m in _varint_frames(message.data) if m[0] == 3]
            if completions:
                break
        (completion,) = completions
        assert completion[:4] == [3, {}, "7", 3]
        expect.assert_test_message(completion[4], "mp")

        await ws.send_bytes(b"\x04\xc1\xc1\xc1\xc1")  # 0xc1 is never valid MessagePack
        closing = []
        while True:
            message = await ws.receive(timeout=5)
            if message.type is not aiohttp.WSMsgType.BINARY:
                break
            closing += [m for m in _varint_frames(message.data) if m[0] != 6]
        assert closing == [[7, "Connection closed with an error.", True]]
