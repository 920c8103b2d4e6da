"""Validly signed tokens whose claims have the wrong shape: 401 at negotiate and at the WebSocket upgrade,
logged in one line without a traceback, so nothing of them reaches the hub's connect hook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.auth import MAX_CLAIM_CHARS
from tests.support.processes import TEST_JWT_SECRET, GatewayProcess
from tests.support.rawclient import bearer, open_connected

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def signed(payload_json: str) -> str:
    """An HS256 token with the test secret around a raw JSON payload (to carry what PyJWT would not encode)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(payload_json.encode())}"
    signature = hmac.new(TEST_JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def admin_claims(**claims: Any) -> str:
    return json.dumps({"sub": "user-1", "role": ["Admin"], "exp": int(time.time()) + 600, **claims})


BAD_CLAIMS = {
    "sub over the limit": admin_claims(sub="u" * (MAX_CLAIM_CHARS + 1)),
    "sub a number": admin_claims(sub=12345),
    "sub an object": admin_claims(sub={"id": "x"}),
    "sub a lone surrogate": admin_claims(sub="\ud800"),
    "name over the limit": admin_claims(name="n" * (MAX_CLAIM_CHARS + 1)),
    "roles not strings": admin_claims(role=["Admin", 7]),
    "roles nested": admin_claims(role=["Admin", ["Admin"]]),
    "roles an object": admin_claims(role={"Admin": True}),
    "exp too large for a float": admin_claims(exp=10**400),
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.mark.parametrize("case", list(BAD_CLAIMS))
async def test_bad_claims_are_401_everywhere_without_a_traceback(
    http: aiohttp.ClientSession, gateway: GatewayProcess, case: str
) -> None:
    token = signed(BAD_CLAIMS[case])
    async with http.post(f"{gateway.hub_url}/negotiate?negotiateVersion=1", headers=bearer(token)) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(gateway.hub_url, headers=bearer(token))  # skipNegotiation: straight to the hub
    assert refused.value.status == 401
    log = gateway.log()
    assert "Traceback" not in log
    assert token not in log


async def test_a_sub_of_exactly_the_limit_connects(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    user_id = "é" * MAX_CLAIM_CHARS  # not a plain subject token: the hub encodes it into the user subject
    connection, established = await open_connected(http, gateway, signed(admin_claims(sub=user_id)))
    async with connection:
        assert established["arguments"][0]["userId"] == user_id
