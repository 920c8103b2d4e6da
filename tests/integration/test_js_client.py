"""The official @microsoft/signalr client (Node), built exactly as the API document shows, against a real gateway."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import expect
from tests.support.jsclient import run_js
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token, make_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def fast_gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    """Keep-alive every second and a 3 s client timeout, so idling for 4 s proves both timers work."""
    return gateway_factory(REALTIME_KEEP_ALIVE_INTERVAL_SECONDS="1", REALTIME_CLIENT_TIMEOUT_SECONDS="3")


@pytest.mark.parametrize(
    ("protocol", "skip_negotiation"),
    [("json", False), ("msgpack", False), ("json", True), ("msgpack", True)],
    ids=["json", "msgpack", "json-skipNegotiation", "msgpack-skipNegotiation"],
)
async def test_full_session(gateway: GatewayProcess, protocol: str, skip_negotiation: bool) -> None:
    token = admin_token()
    result = await run_js("full", url=gateway.hub_url, token=token, protocol=protocol, skipNegotiation=skip_negotiation)

    expect.assert_full_session(result, token=token, negotiated=not skip_negotiation)


async def test_idle_past_two_keep_alive_intervals(fast_gateway: GatewayProcess) -> None:
    # The client gives up after 3 s without hearing from the server, and pings every second itself; idling
    # 4.5 s therefore only stays connected if the server's keep-alive pings arrive, and the server's 3 s
    # client timeout must be satisfied by the client's pings.
    result = await run_js(
        "idle", url=fast_gateway.hub_url, token=admin_token(), keepAliveMs=1000, serverTimeoutMs=3000, idleMs=4500
    )
    assert result.get("startError") is None, result
    assert result["idledMs"] >= 4500
    assert result["stateAfterIdle"] == "Connected", result
    assert result["reconnecting"] == [] and result["closed"] == [{"error": None}], result
    assert result["afterIdle"]["ok"], result
    expect.assert_test_message(result["afterIdle"]["value"], "after idle")
    assert result["stopError"] is None
    assert result["logs"] == []


async def test_silent_default_client_is_cut_by_the_client_timeout_and_reconnects(fast_gateway: GatewayProcess) -> None:
    """The seed's builder as is (15 s client keep-alive) on the fast gateway is cut by the 3 s client timeout.

    This is the control for the test above: it shows the client timeout really closes silent clients,
    with a Close that lets the JS client reconnect on its own.
    """
    result = await run_js("wait-close", url=fast_gateway.hub_url, token=admin_token(), until="reconnected", waitMs=8000)
    assert result["reached"], result
    assert result["reconnecting"][0]["error"] == "Server returned an error on close: Connection closed with an error."
    (reconnected,) = result["reconnected"]
    assert reconnected["connectionId"] != result["connectionId"]
    assert [message["connectionId"] for message in result["established"]][:2] == [
        result["connectionId"],
        reconnected["connectionId"],
    ]


def _alg_none_token() -> str:
    import base64
    import json
    import time

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sub": "mallory", "role": ["Admin"], "exp": int(time.time()) + 3600}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda: None, "401"),
        (lambda: make_token(roles=["User"]), "403"),
        (lambda: make_token(roles=None), "403"),
        (lambda: admin_token(ttl=-120), "401"),
        (lambda: admin_token(secret="another-secret-0123456789abcdefghijkl"), "401"),
        (_alg_none_token, "401"),
        (lambda: "not-a-jwt", "401"),
    ],
    ids=["no-token", "no-admin-role", "no-roles", "expired", "other-secret", "alg-none", "garbage"],
)
async def test_start_fails_without_a_valid_admin_token(
    gateway: GatewayProcess, make: Callable[[], str | None], status: str
) -> None:
    result = await run_js("auth", url=gateway.hub_url, token=make())
    assert result["started"] is False, result
    assert f"Status code '{status}'" in result["startError"], result["startError"]
    assert result["startError"].startswith("Failed to complete negotiation with the server")
    assert result["stateAfterFailure"] == "Disconnected"
    assert result["reconnecting"] == []  # a failed start never retries


async def test_start_fails_without_token_on_skip_negotiation(gateway: GatewayProcess) -> None:
    # Without negotiate the 401 comes from the WebSocket upgrade itself; the JS client reports any failed
    # upgrade with one generic text (the status code is checked with raw HTTP in test_auth.py).
    result = await run_js("auth", url=gateway.hub_url, token=None, skipNegotiation=True)
    assert result["started"] is False, result
    assert result["established"] == []
    assert result["startError"].startswith("WebSocket failed to connect."), result
