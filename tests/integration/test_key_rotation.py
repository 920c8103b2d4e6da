"""Key rotation against a real JWKS endpoint: a real gateway process and nats-server, and an aiohttp JWKS
server on a free port in this test, whose document, health and request count the test controls.

The gateway refreshes periodically only once an hour here, so every load after the first is one set off by
a token with an unknown ``kid`` (at most one per REALTIME_JWT_JWKS_REFRESH_MIN_SECONDS).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from scripts.processes import NatsServer
from tests.support.jwks import SigningKey, jwks
from tests.support.processes import GatewayProcess
from tests.support.rawclient import bearer, open_connected

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

REFRESH_MIN_SECONDS = 0.5
# Every wait is on a probe or an answer, bounded by this.
WAIT_SECONDS = 20.0


class JwksServer:
    """The identity provider's JWKS endpoint: what it lists, whether it fails, how often it was asked."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.failing = False
        self.requests = 0
        self._asked = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/.well-known/jwks.json"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        async with self._asked:
            self.requests += 1
            self._asked.notify_all()
        if self.failing:
            return web.Response(status=503, text="identity provider down")
        return web.json_response(self.document)

    def publish(self, *keys: SigningKey) -> None:
        self.document = jwks(*keys)


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def start_gateway(nats_server: NatsServer) -> AsyncIterator[Callable[[JwksServer], Any]]:
    started: list[GatewayProcess] = []

    async def start(jwks: JwksServer) -> GatewayProcess:
        gateway = GatewayProcess(
            nats_server.url,
            env={
                "REALTIME_JWT_SECRET": "",  # the fixture's default key source; this gateway has the JWKS URL only
                "REALTIME_JWT_JWKS_URL": jwks.url,
                "REALTIME_JWT_JWKS_REFRESH_MIN_SECONDS": str(REFRESH_MIN_SECONDS),
                "REALTIME_JWT_JWKS_REFRESH_INTERVAL_SECONDS": "3600",
                "REALTIME_CONNECTION_TOKEN_SECRET": "rotation-test-connection-secret-0123456789",
            },
        )
        started.append(gateway)
        # Waits for /healthz with blocking polls: in a thread, so this loop keeps serving the JWKS.
        await asyncio.to_thread(gateway.start, wait_ready=False)
        return gateway

    yield start
    for gateway in started:
        await asyncio.to_thread(gateway.stop)


async def status(http: aiohttp.ClientSession, gateway: GatewayProcess, token: str) -> int:
    async with http.post(f"{gateway.hub_url}/negotiate?negotiateVersion=1", headers=bearer(token)) as response:
        return response.status


async def readyz(http: aiohttp.ClientSession, gateway: GatewayProcess) -> tuple[int, str]:
    async with http.get(f"{gateway.base_url}/readyz") as response:
        return response.status, await response.text()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Probe with ``check`` (real requests) every 50 ms until it is true; fail after WAIT_SECONDS."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not {what} within {WAIT_SECONDS} s")
        await asyncio.sleep(0.05)


async def refresh_set_off_by(http: aiohttp.ClientSession, gateway: GatewayProcess, jwks: JwksServer, token: str) -> int:
    """Send ``token`` (with a kid the gateway does not know) until the gateway loads the JWKS for it; the
    status of the last try, which came after that load."""
    before = jwks.requests
    last = 0

    async def loaded() -> bool:
        nonlocal last
        last = await status(http, gateway, token)
        return jwks.requests > before

    await eventually(loaded, "a JWKS load set off by an unknown kid")
    return last


async def failures_counted(http: aiohttp.ClientSession, gateway: GatewayProcess, reason: str) -> float:
    async with http.get(f"{gateway.base_url}/metrics") as response:
        text = await response.text()
    match = re.search(rf'^realtime_jwks_fetch_failures_total\{{reason="{reason}"\}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_keys_rotate_without_a_restart(
    http: aiohttp.ClientSession, jwks_server: JwksServer, start_gateway: Callable[[JwksServer], Any]
) -> None:
    key_a, key_b, key_c = SigningKey.rsa("2025-a"), SigningKey.ec("2025-b"), SigningKey.rsa("2025-c")

    # Not ready before the JWKS was loaded once.
    jwks_server.failing = True
    gateway: GatewayProcess = await start_gateway(jwks_server)

    async def only_jwks_missing() -> bool:
        return jwks_server.requests >= 1 and await readyz(http, gateway) == (503, "not ready: jwks")

    await eventually(only_jwks_missing, "NATS and KV ready, the JWKS asked for and not loaded")
    assert await status(http, gateway, key_a.token()) == 401

    # The identity provider answers with key A: ready, and A's tokens work.
    jwks_server.publish(key_a)
    jwks_server.failing = False

    async def ready() -> bool:
        return (await readyz(http, gateway))[0] == 200

    await eventually(ready, "/readyz once the JWKS loaded")
    assert await status(http, gateway, key_a.token()) == 200
    assert await status(http, gateway, key_a.token(with_kid=False)) == 200  # one key: no kid needed

    # Step 1 of a rotation: B is published next to A. A token signed with B (a kid the gateway has not seen)
    # makes it load the JWKS again, without a restart; A keeps working.
    jwks_server.publish(key_a, key_b)
    assert await refresh_set_off_by(http, gateway, jwks_server, key_b.token()) == 200
    assert await status(http, gateway, key_a.token()) == 200
    connection, established = await open_connected(http, gateway, key_b.token(sub="rotated-user"))
    async with connection:
        assert established["arguments"][0]["userId"] == "rotated-user"

    # Step 3: A is withdrawn. Until the gateway loads the JWKS again, A's tokens still pass (which is why
    # A is withdrawn only after the longest token lifetime); after the next load they get 401.
    jwks_server.publish(key_b)
    assert await status(http, gateway, key_a.token()) == 200
    assert await refresh_set_off_by(http, gateway, jwks_server, key_c.token()) == 401  # C: unknown after the load
    assert await status(http, gateway, key_a.token()) == 401
    assert await status(http, gateway, key_b.token()) == 200

    # Unknown kids cannot make the gateway hammer the identity provider: at most one load per minimum interval.
    loop = asyncio.get_running_loop()
    before, started = jwks_server.requests, loop.time()
    for _ in range(20):
        assert await status(http, gateway, key_c.token()) == 401
    loads = jwks_server.requests - before
    assert loads <= 1 + int((loop.time() - started) / REFRESH_MIN_SECONDS) and loads < 20

    # The identity provider fails: the last good set stays (B works, A does not), the gateway stays ready,
    # and the failure is counted and logged in one line without a traceback.
    jwks_server.failing = True
    assert await refresh_set_off_by(http, gateway, jwks_server, key_c.token()) == 401
    assert await status(http, gateway, key_b.token()) == 200
    assert await status(http, gateway, key_a.token()) == 401
    assert (await readyz(http, gateway))[0] == 200
    assert await failures_counted(http, gateway, "status") >= 1
    log = gateway.log()
    assert "loading the JWT keys failed: HTTP 503; keeping the last good set ('2025-b':ES256)" in log
    assert "Traceback" not in log
    assert "eyJ" not in log  # how every JWT begins: no token reached the log
