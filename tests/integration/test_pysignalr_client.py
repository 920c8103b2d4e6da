"""pysignalr 1.3.3 (negotiate version 0, token only in headers) against a real gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from pysignalr.client import SignalRClient
from pysignalr.exceptions import AuthorizationError, ConnectionError
from pysignalr.messages import CompletionMessage
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

from tests.support import expect
from tests.support.processes import GatewayProcess
from tests.support.rawclient import bearer
from tests.support.tokens import admin_token, make_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

T = TypeVar("T")


@dataclass
class Session:
    client: SignalRClient
    task: asyncio.Task[None]
    established: asyncio.Queue[list[Any]] = field(default_factory=asyncio.Queue)
    errors: list[CompletionMessage] = field(default_factory=list)

    async def wait(self, awaitable: Awaitable[T], within: float = 5.0) -> T:
        """Await ``awaitable`` unless the client's run loop dies first (then re-raise its error)."""
        waiter = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait({waiter, self.task}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return waiter.result()
        waiter.cancel()
        if self.task in done:
            raise AssertionError(f"pysignalr stopped: {self.task.exception()!r}")
        raise TimeoutError(f"nothing within {within}s")

    async def invoke(self, method: str, *arguments: Any) -> CompletionMessage:
        answer: asyncio.Future[CompletionMessage] = asyncio.get_running_loop().create_future()

        async def on_completion(message: Any) -> None:
            answer.set_result(message)

        await self.client.send(method, list(arguments), on_completion)
        return await self.wait(answer)


@contextlib.asynccontextmanager
async def connected(gateway: GatewayProcess, token: str, protocol: Any = None) -> AsyncIterator[Session]:
    client = SignalRClient(gateway.hub_url, protocol=protocol or JSONProtocol(), headers=bearer(token), retry_count=1)
    opened = asyncio.Event()
    session = Session(client, asyncio.create_task(client.run()))

    async def on_open() -> None:
        opened.set()

    async def on_established(arguments: list[Any]) -> None:
        session.established.put_nowait(arguments)

    async def on_error(message: CompletionMessage) -> None:
        session.errors.append(message)

    client.on_open(on_open)
    client.on("ConnectionEstablished", on_established)
    client.on_error(on_error)
    try:
        await session.wait(opened.wait(), within=10)
        yield session
    finally:
        session.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await session.task


@pytest.mark.parametrize("protocol", [JSONProtocol, MessagepackProtocol], ids=["json", "messagepack"])
async def test_pysignalr_session(gateway: GatewayProcess, protocol: type[Any]) -> None:
    token = admin_token()
    async with connected(gateway, token, protocol()) as session:
        (established,) = await session.wait(session.established.get())
        expect.assert_established(established, user_id=expect.jwt_sub(token))
        connection_id = established["connectionId"]

        for group, name in (("UserActivity", "user-activity"), ("Analytics", "analytics"), ("Alerts", "alerts")):
            subscribed = await session.invoke(f"SubscribeTo{group}")
            assert subscribed.error is None
            expect.assert_subscription(subscribed.result, name, subscribed=True)
            unsubscribed = await session.invoke(f"UnsubscribeFrom{group}")
            assert unsubscribed.error is None
            expect.assert_subscription(unsubscribed.result, name, subscribed=False)
        expect.assert_platform_stats((await session.invoke("GetPlatformStats")).result)
        expect.assert_connection_count((await session.invoke("GetConnectionCount")).result, connection_id)
        expect.assert_test_message((await session.invoke("SendTestMessage", "Test payload")).result, "Test payload")

        unknown = await session.invoke("NoSuchMethod")
        assert unknown.result is None
        assert unknown.error == expect.UNKNOWN_METHOD.format("NoSuchMethod")
        wrong = await session.invoke("SendTestMessage")
        assert wrong.error == expect.BAD_ARGUMENTS.format("SendTestMessage")
        assert [message.error for message in session.errors] == [unknown.error, wrong.error]

        # Still connected and answering after the errors.
        expect.assert_test_message((await session.invoke("SendTestMessage", "again")).result, "again")
        assert not session.task.done()


async def test_pysignalr_without_token_is_unauthorized(gateway: GatewayProcess) -> None:
    client = SignalRClient(gateway.hub_url, retry_count=1)
    with pytest.raises(AuthorizationError):
        await asyncio.wait_for(client.run(), 10)


async def test_pysignalr_without_admin_role_is_forbidden(gateway: GatewayProcess) -> None:
    client = SignalRClient(gateway.hub_url, headers=bearer(make_token(roles=["User"])), retry_count=1)
    with pytest.raises(ConnectionError) as raised:
        await asyncio.wait_for(client.run(), 10)
    assert raised.value.status == 403
