"""Authentication and authorisation at the HTTP level: negotiate, the WebSocket upgrade and the REST API."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest

from tests.support import expect
from tests.support.processes import TEST_JWT_SECRET, GatewayProcess
from tests.support.rawclient import RawConnection, bearer, negotiate, open_connected
from tests.support.tokens import admin_token, make_token

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(30),
    # The HS512 algorithm-confusion token reuses the 40-byte test secret on purpose.
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
NAMEID_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def signed(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")


def alg_none_token() -> str:
    claims = {"sub": "mallory", "role": ["Admin"], "exp": int(time.time()) + 3600}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: admin_token(ttl=-120),  # beyond the default 30 s leeway
    "other-secret": lambda: admin_token(secret="another-secret-0123456789abcdefghijkl"),
    "alg-none": alg_none_token,
    "hs512-same-secret": lambda: admin_token(algorithm="HS512"),  # algorithm pinned to HS256
    "no-exp": lambda: signed({"sub": "u1", "role": "Admin"}),
    "garbage": lambda: "not.a.jwt",
}


async def _negotiate_status(http: aiohttp.ClientSession, gateway: GatewayProcess, headers: dict[str, str]) -> int:
    async with http.post(f"{gateway.hub_url}/negotiate?negotiateVersion=1", headers=headers) as response:
        return response.status


async def _upgrade_status(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> int:
    try:
        ws = await http.ws_connect(url, headers=headers or {})
    except aiohttp.WSServerHandshakeError as error:
        return error.status
    await ws.close()
    return 101


async def test_negotiate_without_token_is_401_with_bearer_challenge(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    async with http.post(f"{gateway.hub_url}/negotiate?negotiateVersion=1") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert await response.text() == ""


@pytest.mark.parametrize("name", list(BAD_TOKENS))
async def test_negotiate_with_bad_token_is_401(http: aiohttp.ClientSession, gateway: GatewayProcess, name: str) -> None:
    token = BAD_TOKENS[name]()
    assert await _negotiate_status(http, gateway, bearer(token)) == 401
    assert await _upgrade_status(http, gateway.hub_url, bearer(token)) == 401
    assert token not in gateway.log()  # a token is never logged


async def test_negotiate_without_admin_role_is_403(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    token = make_token(roles=["User", "admin"])  # role names are case-sensitive
    assert await _negotiate_status(http, gateway, bearer(token)) == 403
    assert await _upgrade_status(http, gateway.hub_url, bearer(token)) == 403


async def test_malformed_authorization_header_is_401(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    assert await _negotiate_status(http, gateway, {"Authorization": f"Basic {admin_token()}"}) == 401
    assert await _negotiate_status(http, gateway, {"Authorization": "Bearer "}) == 401


async def test_negotiate_answers(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    token = admin_token()
    v1 = await negotiate(http, gateway, token, version=1)
    assert set(v1) == {"negotiateVersion", "connectionId", "connectionToken", "availableTransports"}
    assert v1["negotiateVersion"] == 1
    assert v1["availableTransports"] == expect.DEFAULT_TRANSPORTS
    assert v1["connectionId"] != v1["connectionToken"]
    v0 = await negotiate(http, gateway, token, version=None)  # pysignalr and signalrcore send no version
    assert v0["negotiateVersion"] == 0 and "connectionToken" not in v0
    assert (await negotiate(http, gateway, token, version=7))["negotiateVersion"] == 1
    async with http.post(f"{gateway.hub_url}/negotiate?negotiateVersion=x", headers=bearer(token)) as response:
        assert response.status == 200
        assert await response.json() == {"error": "The client requested a non-integer protocol version."}


async def test_websocket_upgrade_without_token_is_401(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    token = admin_token()
    connection_token = (await negotiate(http, gateway, token))["connectionToken"]
    assert await _upgrade_status(http, f"{gateway.hub_url}?id={connection_token}") == 401
    assert await _upgrade_status(http, gateway.hub_url) == 401  # skipNegotiation style


async def test_access_token_query_is_accepted_on_hub_paths(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    """Browsers cannot set headers on a WebSocket upgrade: the token may come as ``access_token``."""
    token = admin_token()
    async with http.post(f"{gateway.hub_url}/negotiate?negotiateVersion=1&access_token={token}") as response:
        assert response.status == 200
        connection_token = (await response.json())["connectionToken"]
    ws = await http.ws_connect(f"{gateway.hub_url}?id={connection_token}&access_token={token}")
    async with RawConnection(ws) as connection:
        assert await connection.handshake() == {}
        established = await connection.receive_non_ping()
        assert established is not None and established["target"] == "ConnectionEstablished"
        expect.assert_established(established["arguments"][0], user_id=expect.jwt_sub(token))
    assert token not in gateway.log()  # the access log leaves query strings out


async def test_access_token_query_is_rejected_off_hub_paths(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    token = admin_token()
    url = f"{gateway.base_url}/api/admin/realtime/status"
    async with http.get(f"{url}?access_token={token}") as response:
        assert response.status == 401
    async with http.get(url, headers=bearer(token)) as response:
        assert response.status == 200  # the same token in the Authorization header is accepted
    async with http.get(f"{gateway.base_url}/api/admin/realtime/health") as response:
        assert response.status == 200  # the health check is public
        body = await response.json()
        assert body["status"] == "healthy" and body["websocketEndpoint"] == "/hubs/admin"


async def test_aspnet_core_claim_names(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    """A token minted by ASP.NET Core Identity (long role/nameidentifier claim URIs, no ``sub``) works."""
    token = signed({ROLE_URI: ["User", "Admin"], NAMEID_URI: "user-42", "exp": int(time.time()) + 600})
    connection, established = await open_connected(http, gateway, token)
    async with connection:
        assert established["arguments"][0]["userId"] == "user-42"
        assert established["arguments"][0]["groups"] == ["admins"]


async def test_non_websocket_requests_get_the_aspnet_answers(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    headers = bearer(admin_token())
    async with http.get(f"{gateway.hub_url}/negotiate", headers=headers) as response:
        assert response.status == 405
    async with http.get(gateway.hub_url, headers=headers) as response:
        assert (response.status, await response.text()) == (400, "Connection ID required")
    async with http.get(f"{gateway.hub_url}?id=abc", headers=headers) as response:
        assert (response.status, await response.text()) == (404, "No Connection with that ID")
    async with http.get(f"{gateway.hub_url}?id=abc", headers={**headers, "Accept": "text/event-stream"}) as response:
        assert (response.status, await response.text()) == (404, "No Connection with that ID")
    async with http.get(gateway.hub_url, headers={**headers, "Accept": "text/event-stream"}) as response:
        assert (response.status, await response.text()) == (400, "Connection ID required")
    async with http.post(f"{gateway.hub_url}?id=abc", headers=headers, data=b"{}") as response:
        assert (response.status, await response.text()) == (404, "No Connection with that ID")
    async with http.delete(gateway.hub_url, headers=headers) as response:
        assert (response.status, await response.text()) == (400, "Connection ID required")


async def test_negotiate_version_query_is_case_insensitive(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    async with http.post(f"{gateway.hub_url}/negotiate?NegotiateVersion=1", headers=bearer(admin_token())) as response:
        assert (await response.json())["negotiateVersion"] == 1


async def test_refreshed_token_of_the_same_user_may_open_the_negotiated_connection(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    """The JS client asks its accessTokenFactory again for the WebSocket: a refreshed token must be accepted."""
    first = admin_token(sub="same-user", ttl=600)
    refreshed = admin_token(sub="same-user", ttl=3600)
    connection_token = (await negotiate(http, gateway, first))["connectionToken"]
    connection = await RawConnection.open(http, gateway, refreshed, connection_token=connection_token)
    async with connection:
        assert await connection.handshake() == {}
        established = await connection.receive_non_ping()
        assert established is not None and established["arguments"][0]["userId"] == "same-user"
