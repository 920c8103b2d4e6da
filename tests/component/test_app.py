"""The aiohttp app (build_app) through pytest-aiohttp's test client, with the in-memory broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.envelope import encode_event
from broker_bridge.interface import MessageCallback, Subscription
from gateway.app import build_app
from gateway.settings import GatewaySettings
from gateway.signalr import MESSAGEPACK_PROTOCOL, Invocation
from tests.support import expect

SECRET = "component-test-secret-0123456789abcdef"
USER_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
HUB = "/hubs/admin"
NEGOTIATE = f"{HUB}/negotiate"
RS = "\x1e"

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def token(*, roles: list[str] | None = None, sub: str = USER_ID, ttl: int = 3600) -> str:
    claims: dict[str, Any] = {"sub": sub, "exp": int(time.time()) + ttl, "name": "Alice"}
    claims["role"] = ["Admin"] if roles is None else roles
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bearer(value: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {value or token()}"}


class ObservableBroker(InMemoryBroker):
    """The in-memory broker, plus an event per subject set when a subscription to it ends."""

    def __init__(self) -> None:
        super().__init__()
        self.unsubscribed: dict[str, asyncio.Event] = {}

    async def subscribe(self, subject: str, callback: MessageCallback) -> Subscription:  # type: ignore[override]
        inner = await super().subscribe(subject, callback)
        event = self.unsubscribed.setdefault(subject, asyncio.Event())
        event.clear()
        return _ObservedSubscription(inner, event)


class _ObservedSubscription:
    def __init__(self, inner: Subscription, event: asyncio.Event) -> None:
        self._inner = inner
        self._event = event

    async def unsubscribe(self) -> None:
        await self._inner.unsubscribe()
        self._event.set()


@pytest.fixture
def broker() -> ObservableBroker:
    return ObservableBroker()


@pytest.fixture
async def client(aiohttp_client: ClientFactory, broker: InMemoryBroker) -> TestClient[Any, Any]:
    settings = GatewaySettings(jwt_secret=SECRET, shutdown_grace_seconds=1.0, replica_id="test-replica")
    return await aiohttp_client(build_app(settings, broker=broker))


class HubClient:
    """A minimal JSON-protocol SignalR client over the test client's WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._pending: list[dict[str, Any]] = []
        self._buffer = ""
        self.handshake_reply: dict[str, Any] | None = None

    async def handshake(self, protocol: str = "json") -> dict[str, Any]:
        await self.ws.send_str(f'{{"protocol":"{protocol}","version":1}}{RS}')
        async with asyncio.timeout(2):
            while self.handshake_reply is None:
                await self._read_frame()
        return self.handshake_reply

    async def _read_frame(self) -> None:
        message = await self.ws.receive()
        assert message.type is WSMsgType.TEXT, message
        self._buffer += message.data
        *records, self._buffer = self._buffer.split(RS)
        for record in records:
            value = orjson.loads(record)
            if self.handshake_reply is None:
                self.handshake_reply = value
            else:
                self._pending.append(value)

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(2):
            while not self._pending:
                await self._read_frame()
        return self._pending.pop(0)

    async def next_of_type(self, message_type: int) -> dict[str, Any]:
        while True:
            message = await self.next()
            if message["type"] == message_type:
                return message

    async def invoke(self, invocation_id: str, target: str, *arguments: Any) -> dict[str, Any]:
        payload = {"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(arguments)}
        await self.ws.send_bytes(orjson.dumps(payload) + RS.encode())
        completion = await self.next_of_type(3)
        assert completion["invocationId"] == invocation_id
        return completion


# -- negotiate ----------------------------------------------------------------------------------


async def test_negotiate_without_version_is_version_0(client: TestClient[Any, Any]) -> None:
    response = await client.post(NEGOTIATE, headers=bearer())
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-cache, no-store"
    body = await response.json()
    assert body["negotiateVersion"] == 0
    assert "connectionToken" not in body
    assert body["availableTransports"] == expect.DEFAULT_TRANSPORTS
    assert body["connectionId"].count(".") == 4  # version 0: the id is the signed token


@pytest.mark.parametrize(("requested", "answered"), [("1", 1), ("5", 1), ("0", 0)])
async def test_negotiate_versions(client: TestClient[Any, Any], requested: str, answered: int) -> None:
    response = await client.post(f"{NEGOTIATE}?negotiateVersion={requested}", headers=bearer())
    body = await response.json()
    assert body["negotiateVersion"] == answered
    if answered == 1:
        assert len(body["connectionId"]) == 22
        assert body["connectionToken"].startswith(body["connectionId"] + ".")


async def test_negotiate_version_parameter_is_case_insensitive(client: TestClient[Any, Any]) -> None:
    body = await (await client.post(f"{NEGOTIATE}?NEGOTIATEVERSION=1", headers=bearer())).json()
    assert body["negotiateVersion"] == 1


@pytest.mark.parametrize(
    ("requested", "error"),
    [
        ("abc", "The client requested a non-integer protocol version."),
        ("-1", "The client requested version '-1', but the server does not support this version."),
    ],
)
async def test_negotiate_bad_versions(client: TestClient[Any, Any], requested: str, error: str) -> None:
    response = await client.post(f"{NEGOTIATE}?negotiateVersion={requested}", headers=bearer())
    assert response.status == 200
    assert await response.json() == {"error": error}


# -- authentication -----------------------------------------------------------------------------


async def test_no_token_is_401_with_a_bearer_challenge(client: TestClient[Any, Any]) -> None:
    response = await client.post(NEGOTIATE)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await response.text() == ""


async def test_bad_token_is_401_with_a_reason_but_not_the_token(client: TestClient[Any, Any]) -> None:
    bad = jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "role": "Admin"}, "x" * 40, algorithm="HS256")
    response = await client.post(NEGOTIATE, headers=bearer(bad))
    assert response.status == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge == 'Bearer error="invalid_token", error_description="invalid token (InvalidSignatureError)"'
    assert bad not in challenge


async def test_non_bearer_authorization_is_401(client: TestClient[Any, Any]) -> None:
    response = await client.post(NEGOTIATE, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status == 401
    assert "Authorization header is not a bearer token" in response.headers["WWW-Authenticate"]


async def test_token_without_the_role_is_403(client: TestClient[Any, Any]) -> None:
    response = await client.post(NEGOTIATE, headers=bearer(token(roles=["Viewer"])))
    assert response.status == 403
    assert "WWW-Authenticate" not in response.headers


async def test_access_token_query_is_accepted_on_hub_paths(client: TestClient[Any, Any]) -> None:
    response = await client.post(f"{NEGOTIATE}?negotiateVersion=1&access_token={token()}")
    assert response.status == 200
    assert (await response.json())["negotiateVersion"] == 1


async def test_auth_failures_are_counted(client: TestClient[Any, Any]) -> None:
    await client.post(NEGOTIATE)
    await client.post(NEGOTIATE, headers=bearer(token(roles=[])))
    metrics = await (await client.get("/metrics")).text()
    assert 'realtime_auth_failures_total{status="401"} 1.0' in metrics
    assert 'realtime_auth_failures_total{status="403"} 1.0' in metrics


async def test_shared_role_sets_are_exported(client: TestClient[Any, Any]) -> None:
    await client.post(NEGOTIATE, headers=bearer(token(roles=["Admin"])))
    await client.post(NEGOTIATE, headers=bearer(token(roles=["Admin"])))  # the same set: held once
    metrics = await (await client.get("/metrics")).text()
    assert 'realtime_shared_values{table="role_sets"} 1.0' in metrics
    assert 'realtime_shared_values_unshared_total{table="role_sets"} 0.0' in metrics
    assert 'realtime_shared_values{table="group_sets"} 0.0' in metrics


# -- the hub endpoint without WebSockets ----------------------------------------------------------


async def test_get_without_upgrade_and_id_is_400(client: TestClient[Any, Any]) -> None:
    response = await client.get("/hubs/admin", headers=bearer())
    assert response.status == 400
    assert await response.text() == "Connection ID required"


async def test_unknown_ids_of_long_polling_and_sse_are_404(client: TestClient[Any, Any]) -> None:
    polling = await client.get("/hubs/admin?id=abc", headers=bearer())
    assert (polling.status, await polling.text()) == (404, "No Connection with that ID")
    sse = await client.get("/hubs/admin?id=abc", headers={**bearer(), "Accept": "text/event-stream"})
    assert (sse.status, await sse.text()) == (404, "No Connection with that ID")


async def test_transports_not_enabled_get_the_aspnet_answer(aiohttp_client: ClientFactory) -> None:
    settings = GatewaySettings(jwt_secret=SECRET, replica_id="ws-only", transports=("WebSockets",))
    client = await aiohttp_client(build_app(settings, broker=InMemoryBroker()))
    polling = await client.get("/hubs/admin?id=abc", headers=bearer())
    assert (polling.status, await polling.text()) == (
        404,
        "LongPolling transport not supported by this end point type",
    )
    sse = await client.get("/hubs/admin?id=abc", headers={**bearer(), "Accept": "text/event-stream"})
    assert (sse.status, await sse.text()) == (404, "ServerSentEvents transport not supported by this end point type")
    negotiated = await (await client.post(f"{NEGOTIATE}?negotiateVersion=1", headers=bearer())).json()
    assert [entry["transport"] for entry in negotiated["availableTransports"]] == ["WebSockets"]


# -- CORS --------------------------------------------------------------------------------------


DASHBOARD_ORIGIN = "https://dashboard.example"


async def test_cors_reaches_every_response_of_an_allowed_origin(aiohttp_client: ClientFactory) -> None:
    settings = GatewaySettings(jwt_secret=SECRET, replica_id="cors", cors_origins=(DASHBOARD_ORIGIN,))
    client = await aiohttp_client(build_app(settings, broker=InMemoryBroker()))
    allowed = {"Origin": DASHBOARD_ORIGIN}

    preflight = await client.options(
        NEGOTIATE, headers={**allowed, "Access-Control-Request-Method": "POST"}
    )  # carries no token
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Access-Control-Allow-Origin"] == DASHBOARD_ORIGIN

    refused = await client.post(f"{NEGOTIATE}?negotiateVersion=1", headers=allowed)  # no token: 401, still readable
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == DASHBOARD_ORIGIN

    negotiated = await client.post(f"{NEGOTIATE}?negotiateVersion=1", headers={**allowed, **bearer()})
    assert negotiated.headers["Access-Control-Allow-Credentials"] == "true"
    token = (await negotiated.json())["connectionToken"]
    # An event stream sends its headers before its handler returns: they must carry CORS too.
    events = await client.get(f"/hubs/admin?id={token}", headers={**allowed, **bearer(), "Accept": "text/event-stream"})
    assert events.status == 200
    assert events.headers["Access-Control-Allow-Origin"] == DASHBOARD_ORIGIN
    assert events.headers["Vary"] == "Origin"
    events.close()

    other = await client.post(f"{NEGOTIATE}?negotiateVersion=1", headers={"Origin": "https://evil.example", **bearer()})
    assert other.status == 200
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", HUB, {}),
        ("GET", HUB, {"Connection": "Upgrade", "Upgrade": "websocket"}),
        ("GET", f"{HUB}?id=x", {"Accept": "text/event-stream"}),
        ("POST", f"{HUB}?id=x", {}),
        ("DELETE", f"{HUB}?id=x", {}),
        ("POST", NEGOTIATE, {}),
    ],
)
async def test_every_hub_handler_needs_a_token_and_a_role(
    client: TestClient[Any, Any], method: str, path: str, headers: dict[str, str]
) -> None:
    """The hub's handlers authenticate themselves (the middleware covers the REST API)."""
    response = await client.request(method, path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    response = await client.request(method, path, headers={**headers, **bearer(token(roles=["Viewer"]))})
    assert response.status == 403


async def test_an_unknown_path_under_the_hub_prefix_is_404(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/hubs/other", headers=bearer(token()))).status == 404
    assert (await client.get("/hubs/other")).status == 404


# -- health -------------------------------------------------------------------------------------


async def test_health_endpoints(client: TestClient[Any, Any], broker: InMemoryBroker) -> None:
    assert (await client.get("/healthz")).status == 200
    assert await (await client.get("/healthz")).text() == "ok"
    ready = await client.get("/readyz")
    assert (ready.status, await ready.text()) == (200, "ready")
    health = await client.get("/api/admin/realtime/health")
    assert health.status == 200
    body = await health.json()
    assert {key: body[key] for key in ("status", "service", "websocketEndpoint")} == {
        "status": "healthy",
        "service": "real-time",
        "websocketEndpoint": "/hubs/admin",
    }
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    assert "realtime_nats_connected 1.0" in await metrics.text()

    broker.connected = False
    not_ready = await client.get("/readyz")
    assert (not_ready.status, await not_ready.text()) == (503, "not ready: nats")
    degraded = await client.get("/api/admin/realtime/health")
    assert degraded.status == 503
    assert (await degraded.json())["status"] == "degraded"


# -- WebSocket sessions -------------------------------------------------------------------------


async def negotiate_v1(client: TestClient[Any, Any], access_token: str | None = None) -> dict[str, Any]:
    response = await client.post(f"{NEGOTIATE}?negotiateVersion=1", headers=bearer(access_token))
    assert response.status == 200
    return dict(await response.json())


async def test_full_websocket_session(client: TestClient[Any, Any], broker: ObservableBroker) -> None:
    negotiated = await negotiate_v1(client)
    ws = await client.ws_connect(f"/hubs/admin?id={negotiated['connectionToken']}", headers=bearer())
    hub = HubClient(ws)
    try:
        assert await hub.handshake() == {}
        greeting = await hub.next()
        assert greeting["target"] == "ConnectionEstablished"
        assert greeting["arguments"][0]["connectionId"] == negotiated["connectionId"]
        assert greeting["arguments"][0]["userId"] == USER_ID
        assert greeting["arguments"][0]["groups"] == ["admins"]

        subscribed = await hub.invoke("1", "SubscribeToAlerts")
        assert subscribed["result"]["group"] == "alerts"
        assert subscribed["result"]["subscribed"] is True

        alert = {"type": "error", "severity": "high", "message": "disk almost full"}
        await broker.publish("realtime.group.alerts", encode_event("SystemAlert", alert))
        assert await hub.next() == {"type": 1, "target": "SystemAlert", "arguments": [alert]}

        unsubscribed = await hub.invoke("2", "UnsubscribeFromAlerts")
        assert unsubscribed["result"]["subscribed"] is False
        assert broker.subscriber_count("realtime.group.alerts") == 0

        await broker.publish("realtime.group.alerts", encode_event("SystemAlert", {"message": "not for you"}))
        await broker.publish("realtime.all", encode_event("AdminNotification", "marker"))
        assert await hub.next() == {"type": 1, "target": "AdminNotification", "arguments": ["marker"]}
    finally:
        await ws.close()
    async with asyncio.timeout(2):
        await broker.unsubscribed["realtime.all"].wait()
        await broker.unsubscribed["realtime.user.*"].wait()  # one subscription carries every user subject
    assert broker.subscriber_count("realtime.all") == 0
    assert broker.subscriber_count("realtime.user.*") == 0


async def test_user_subject_reaches_only_that_user(client: TestClient[Any, Any], broker: InMemoryBroker) -> None:
    ws = await client.ws_connect("/hubs/admin", headers=bearer())
    hub = HubClient(ws)
    try:
        await hub.handshake()
        await hub.next()  # ConnectionEstablished
        await broker.publish("realtime.user.someone-else", encode_event("ReceiveMessage", "not for you"))
        await broker.publish(f"realtime.user.{USER_ID}", encode_event("ReceiveMessage", "just you"))
        assert await hub.next() == {"type": 1, "target": "ReceiveMessage", "arguments": ["just you"]}
    finally:
        await ws.close()


async def test_messagepack_session_uses_binary_frames(client: TestClient[Any, Any], broker: InMemoryBroker) -> None:
    ws = await client.ws_connect("/hubs/admin", headers=bearer())
    try:
        await ws.send_str('{"protocol":"messagepack","version":1}\x1e')
        reply = await ws.receive(timeout=2)
        data: bytes = reply.data if reply.type is WSMsgType.BINARY else reply.data.encode()
        assert data.startswith(b"{}\x1e")
        frames = data[3:]
        reader = MESSAGEPACK_PROTOCOL.new_reader(max_message_bytes=None)
        messages = reader.feed(frames)
        while not messages:
            nxt = await ws.receive(timeout=2)
            assert nxt.type is WSMsgType.BINARY
            messages = reader.feed(nxt.data)
        assert isinstance(messages[0], Invocation)
        assert messages[0].target == "ConnectionEstablished"

        await broker.publish("realtime.all", encode_event("AdminNotification", {"n": 1}))
        frame = await ws.receive(timeout=2)
        assert frame.type is WSMsgType.BINARY
        assert frame.data == MESSAGEPACK_PROTOCOL.encode(Invocation("AdminNotification", ({"n": 1},)))
    finally:
        await ws.close()


async def test_forged_connection_id_is_404(client: TestClient[Any, Any]) -> None:
    negotiated = await negotiate_v1(client)
    forged = negotiated["connectionToken"][:-2] + ("AA" if not negotiated["connectionToken"].endswith("AA") else "BB")
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect(f"/hubs/admin?id={forged}", headers=bearer())
    assert caught.value.status == 404


async def test_connection_token_of_another_user_is_404(client: TestClient[Any, Any]) -> None:
    negotiated = await negotiate_v1(client)
    other = token(sub="someone-else")
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect(f"/hubs/admin?id={negotiated['connectionToken']}", headers=bearer(other))
    assert caught.value.status == 404


async def test_non_ascii_connection_id_is_404(client: TestClient[Any, Any]) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/hubs/admin?id=%C3%A9.%C3%BC.1.%C3%B6", headers=bearer())
    assert caught.value.status == 404


async def test_second_websocket_for_one_connection_is_409(client: TestClient[Any, Any]) -> None:
    negotiated = await negotiate_v1(client)
    url = f"/hubs/admin?id={negotiated['connectionToken']}"
    first = await client.ws_connect(url, headers=bearer())
    try:
        await HubClient(first).handshake()
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await client.ws_connect(url, headers=bearer())
        assert caught.value.status == 409
    finally:
        await first.close()


async def test_bad_handshake_gets_the_error_reply(client: TestClient[Any, Any]) -> None:
    ws = await client.ws_connect("/hubs/admin", headers=bearer())
    try:
        await ws.send_str('{"protocol":"xml","version":1}\x1e')
        reply = await ws.receive(timeout=2)
        assert reply.type is WSMsgType.TEXT
        assert reply.data == '{"error":"The protocol \'xml\' is not supported."}\x1e'
        closing = await ws.receive(timeout=2)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    finally:
        await ws.close()
