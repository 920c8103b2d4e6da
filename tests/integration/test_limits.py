"""Gateway hardening with real processes: bounded input, slow consumers cut at once, connection and
rate limits, one socket per connection token across replicas, and errors the client can see.

One gateway runs with small limits and trusts 127.0.0.0/8 as a proxy, so each test picks its own
client address with ``X-Forwarded-For`` and the per-address limits of one test cannot touch another.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from scripts.processes import NatsServer
from tests.support.fanout import metric_value
from tests.support.logs import unexpected_tracebacks
from tests.support.processes import GatewayProcess
from tests.support.rawclient import JSON_HANDSHAKE, RS, RawConnection, bearer, negotiate, open_connected
from tests.support.tokens import admin_token, make_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MAX_OUTBOUND_BYTES = 65536
LIMITS = {
    "REALTIME_TRUSTED_PROXIES": "127.0.0.0/8",
    "REALTIME_MAX_CONNECTIONS_PER_USER": "2",
    "REALTIME_MAX_CONNECTIONS_PER_IP": "6",
    "REALTIME_NEGOTIATE_RATE_PER_IP": "0.2",
    "REALTIME_NEGOTIATE_BURST_PER_IP": "40",
    "REALTIME_INVOCATION_RATE_PER_CONNECTION": "0.5",
    "REALTIME_INVOCATION_BURST_PER_CONNECTION": "3",
    "REALTIME_REST_POST_RATE_PER_USER": "0.2",
    "REALTIME_REST_POST_BURST_PER_USER": "2",
    "REALTIME_MAX_OUTBOUND_BYTES": str(MAX_OUTBOUND_BYTES),
    "REALTIME_WRITE_TIMEOUT_SECONDS": "3",
}
_addresses = itertools.count(10)


def new_address() -> str:
    """A client address of its own (the gateway trusts the test's 127.0.0.1 as a proxy)."""
    return f"198.51.100.{next(_addresses)}"


def via(address: str, token: str) -> dict[str, str]:
    return {**bearer(token), "X-Forwarded-For": address}


@pytest.fixture(scope="module")
def limited(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    return gateway_factory(**LIMITS)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def metrics_of(http: aiohttp.ClientSession, gateway: GatewayProcess) -> str:
    async with http.get(f"{gateway.base_url}/metrics") as response:
        return await response.text()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def assert_problem_429(response: aiohttp.ClientResponse) -> dict[str, Any]:
    assert response.status == 429, await response.text()
    assert response.content_type == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    body: dict[str, Any] = await response.json()
    assert (body["status"], body["title"]) == (429, "Too Many Requests")
    return body


# -- bounded input ----------------------------------------------------------------------------------


async def test_a_4_mib_frame_closes_only_that_connection(http: aiohttp.ClientSession, limited: GatewayProcess) -> None:
    assert limited.child is not None
    bystander, _ = await open_connected(http, limited, admin_token())
    attacker, _ = await open_connected(http, limited, admin_token())
    before = rss_kib(limited.child.pid)
    frame = '{"type":1,"target":"SendTestMessage","arguments":[' + "[]," * (4 * 1024 * 1024 // 3) + "[]]}" + RS
    for _ in range(3):
        with contextlib.suppress(ConnectionError):  # the server may close before the client is done sending
            await attacker.send_text(frame)
        records = await attacker.wait_closed(within=5)
        assert records[-1] == {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}
        attacker, _ = await open_connected(http, limited, admin_token())
    assert (rss_kib(limited.child.pid) - before) < 5 * 1024, "an oversized frame is refused, not buffered"
    answer = await bystander.invoke("1", "SendTestMessage", "still here")
    assert answer["result"]["echo"] == "still here"
    closed = metric_value(
        await metrics_of(http, limited), "realtime_connections_closed_total", reason="frame_too_large"
    )
    assert closed >= 3
    await bystander.close()
    await attacker.close()


async def test_a_300_deep_hub_message_closes_with_an_error(
    http: aiohttp.ClientSession, limited: GatewayProcess
) -> None:
    connection, _ = await open_connected(http, limited, admin_token())
    deep = "[" * 300 + "]" * 300
    await connection.send_text(
        '{"type":1,"invocationId":"1","target":"SendTestMessage","arguments":[' + deep + "]}" + RS
    )
    records = await connection.wait_closed()
    assert records[-1] == {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}


async def test_a_300_deep_rest_body_is_a_400_naming_the_field(
    http: aiohttp.ClientSession, limited: GatewayProcess
) -> None:
    body = '{"message":"deep","data":{"x":' + "[" * 300 + "]" * 300 + "}}"
    headers = {**via(new_address(), admin_token()), "Content-Type": "application/json"}
    async with http.post(f"{limited.base_url}/api/admin/realtime/alert/warning", data=body, headers=headers) as answer:
        assert answer.status == 400
        problem = await answer.json()
    assert problem["errors"] == {"data": ["The data field is nested deeper than 32 levels."]}
    assert unexpected_tracebacks(limited.log()) == []


async def test_oversized_data_and_details_are_400(http: aiohttp.ClientSession, limited: GatewayProcess) -> None:
    headers = {**via(new_address(), admin_token()), "Content-Type": "application/json"}
    alert = {"message": "big", "data": {"blob": "x" * 9000}}
    async with http.post(f"{limited.base_url}/api/admin/realtime/alert/error", json=alert, headers=headers) as answer:
        assert answer.status == 400
        assert (await answer.json())["errors"] == {"data": ["The data field must be at most 8192 bytes as JSON."]}
    action = {"userId": str(uuid.uuid4()), "action": "x", "details": {"blob": "y" * 9000}}
    async with http.post(
        f"{limited.base_url}/api/admin/realtime/notify/user-action", json=action, headers=headers
    ) as answer:
        assert answer.status == 400
        assert "details" in (await answer.json())["errors"]


# -- slow consumers -------------------------------------------------------------------------------------


class NonReadingClient:
    """A WebSocket client with a tiny receive buffer that stops reading after ConnectionEstablished."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, gateway: GatewayProcess, token: str, connection_token: str) -> NonReadingClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(
            (
                f"GET /hubs/admin?id={connection_token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        status = await reader.readline()
        assert b" 101 " in status, status
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        client = cls(reader, writer)
        client.send_text(JSON_HANDSHAKE)
        client.send_text(
            json.dumps({"type": 1, "invocationId": "1", "target": "SubscribeToAlerts", "arguments": []}) + RS
        )
        await writer.drain()
        return client

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = b"\x01\x02\x03\x04"
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        length = len(payload)
        header = bytes([0x81, 0x80 | length]) if length < 126 else bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
        self.writer.write(header + mask + masked)

    def socket_closed(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing()


async def test_a_client_that_stops_reading_is_gone_within_a_second_of_the_cut(
    http: aiohttp.ClientSession, limited: GatewayProcess, nats_server: NatsServer
) -> None:
    token = admin_token()
    watcher, _ = await open_connected(http, limited, admin_token())
    count_before = (await watcher.invoke("1", "GetConnectionCount"))["result"]["connectionsOnReplica"]
    slow = await NonReadingClient.connect(limited, token, (await negotiate(http, limited, token))["connectionToken"])
    count_with = (await watcher.invoke("2", "GetConnectionCount"))["result"]["connectionsOnReplica"]
    assert count_with == count_before + 1
    metrics = await metrics_of(http, limited)
    cut_before = metric_value(metrics, "realtime_connections_closed_total", reason="slow_consumer")
    publisher = await nats.connect(nats_server.url)
    alert = json.dumps({"target": "SystemAlert", "arguments": [{"blob": "z" * 7000}]}).encode()
    cut_at = None
    # The kernel's socket buffers take a few MB before the gateway's own buffer grows at all.
    for _ in range(32 * 1024 * 1024 // 7000 // 20):
        for _ in range(20):
            await publisher.publish("realtime.group.alerts", alert)
        await publisher.flush()
        metrics = await metrics_of(http, limited)
        if metric_value(metrics, "realtime_connections_closed_total", reason="slow_consumer") > cut_before:
            cut_at = time.monotonic()
            break
    await publisher.close()
    assert cut_at is not None, "the non-reading client was never cut"
    count_after = (await watcher.invoke("3", "GetConnectionCount"))["result"]["connectionsOnReplica"]
    assert time.monotonic() - cut_at < 1.0
    assert count_after == count_before, "unregistered at once"
    async with asyncio.timeout(1.0):
        while not slow.socket_closed():
            try:
                await slow.reader.read(65536)  # only now: drain the kernel buffer to see the EOF
            except ConnectionError:
                break
    await watcher.close()


# -- connection and rate limits -----------------------------------------------------------------------


async def test_connections_per_user_are_capped_at_negotiate_and_at_the_upgrade(
    http: aiohttp.ClientSession, limited: GatewayProcess
) -> None:
    token = admin_token()
    first, _ = await open_connected(http, limited, token)
    second, _ = await open_connected(http, limited, token)
    async with http.post(f"{limited.hub_url}/negotiate?negotiateVersion=1", headers=bearer(token)) as answer:
        body = await assert_problem_429(answer)
    assert body["detail"] == "This user already has 2 connections open on this server."
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(limited.hub_url, headers=bearer(token))  # skipNegotiation
    assert refused.value.status == 429
    await first.close()
    async with asyncio.timeout(5):
        while True:  # the freed slot is reusable once the server has seen the close
            async with http.post(f"{limited.hub_url}/negotiate?negotiateVersion=1", headers=bearer(token)) as answer:
                if answer.status == 200:
                    break
            await asyncio.sleep(0.05)
    await second.close()
    refusals = metric_value(
        await metrics_of(http, limited), "realtime_limit_refusals_total", limit="connections_per_user"
    )
    assert refusals >= 2


async def test_connections_per_address_are_capped(http: aiohttp.ClientSession, limited: GatewayProcess) -> None:
    address = new_address()
    opened = []
    for _ in range(6):
        token = admin_token()
        async with http.post(f"{limited.hub_url}/negotiate?negotiateVersion=1", headers=via(address, token)) as answer:
            connection_token = (await answer.json())["connectionToken"]
        ws = await http.ws_connect(f"{limited.hub_url}?id={connection_token}", headers=via(address, token))
        opened.append(ws)
        await ws.send_str(JSON_HANDSHAKE)
        assert (await ws.receive()).data.startswith("{}")
    async with http.post(
        f"{limited.hub_url}/negotiate?negotiateVersion=1", headers=via(address, admin_token())
    ) as answer:
        body = await assert_problem_429(answer)
    assert body["detail"] == "This address already has 6 connections open on this server."
    # Another address is not affected.
    async with http.post(
        f"{limited.hub_url}/negotiate?negotiateVersion=1", headers=via(new_address(), admin_token())
    ) as answer:
        assert answer.status == 200
    for ws in opened:
        await ws.close()


async def test_negotiate_is_rate_limited_per_address(http: aiohttp.ClientSession, limited: GatewayProcess) -> None:
    address = new_address()
    statuses = []
    for _ in range(42):
        async with http.post(
            f"{limited.hub_url}/negotiate?negotiateVersion=1", headers=via(address, admin_token())
        ) as answer:
            statuses.append(answer.status)
            if answer.status == 429:
                await assert_problem_429(answer)
    assert statuses[:40] == [200] * 40 and statuses[40:] == [429, 429]


async def test_invocations_over_the_rate_get_a_completion_error_and_error_occurred(
    http: aiohttp.ClientSession, limited: GatewayProcess
) -> None:
    connection, _ = await open_connected(http, limited, admin_token())
    for invocation_id in ("1", "2"):
        assert (await connection.invoke(invocation_id, "SendTestMessage", "ok")).get("error") is None
    await connection.send({"type": 1, "invocationId": "x", "target": "SendTestMessage", "arguments": ["ok"]})
    await connection.send({"type": 1, "invocationId": "3", "target": "SendTestMessage", "arguments": ["over"]})
    assert (await connection.completion("x")).get("error") is None
    refused = await connection.completion("3")
    assert refused["error"] == "Rate limit exceeded."
    error = await connection.receive_non_ping()
    assert error is not None and error["target"] == "ErrorOccurred"
    assert error["arguments"][0]["type"] == "error" and error["arguments"][0]["message"] == "Rate limit exceeded."
    await asyncio.sleep(2.1)  # one token back at 0.5/s
    assert (await connection.invoke("4", "SendTestMessage", "again")).get("error") is None
    await connection.close()


async def test_a_failing_hub_method_also_raises_error_occurred(
    http: aiohttp.ClientSession, limited: GatewayProcess
) -> None:
    connection, _ = await open_connected(http, limited, admin_token())
    failed = await connection.invoke("1", "NoSuchMethod")
    text = "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist."
    assert failed["error"] == text
    error = await connection.receive_non_ping()
    assert error is not None and error["target"] == "ErrorOccurred"
    assert error["arguments"][0]["message"] == text
    await connection.close()


async def test_rest_posts_are_rate_limited_per_user(http: aiohttp.ClientSession, limited: GatewayProcess) -> None:
    token = admin_token()
    statuses = []
    for _ in range(3):
        async with http.post(
            f"{limited.base_url}/api/admin/realtime/alert",
            json={"type": "info", "message": "m"},
            headers=via(new_address(), token),
        ) as answer:
            statuses.append(answer.status)
            if answer.status == 429:
                await assert_problem_429(answer)
    assert statuses == [200, 200, 429]
    async with http.post(
        f"{limited.base_url}/api/admin/realtime/alert",
        json={"type": "info", "message": "m"},
        headers=bearer(admin_token()),
    ) as answer:
        assert answer.status == 200, "another user is not affected"


# -- one socket per connection token, across replicas ---------------------------------------------------


async def test_a_connection_token_opens_one_socket_on_any_replica(
    http: aiohttp.ClientSession, gateway_factory: Callable[..., GatewayProcess], limited: GatewayProcess
) -> None:
    other = gateway_factory(REALTIME_REPLICA_ID="claims-b")
    token = make_token(roles=["Admin"])
    connection_token = (await negotiate(http, limited, token))["connectionToken"]
    first = await RawConnection.open(http, limited, token, connection_token=connection_token)
    assert await first.handshake() == {}
    await first.close()
    for gateway in (limited, other):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{gateway.hub_url}?id={connection_token}", headers=bearer(token))
        assert refused.value.status == 409
