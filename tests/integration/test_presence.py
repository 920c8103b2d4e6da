"""Cluster presence with real processes: a nats-server of this module, two (and for one test three)
``python -m gateway`` replicas, the official JS client.

Who is connected is read from the *other* replica (REST ``GET presence`` and the hub's
``GetPresence``); a SIGKILLed replica's users drop out with its KV entry's TTL; the online/offline
``AdminNotification`` reaches watchers on both replicas once each (sent once cluster-wide), and a
client whose socket is cut reconnects at once and sends nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from gateway.paths import PRESENCE_PATH
from scripts.processes import NatsServer, wait_until_async
from tests.support.expect import assert_recent_iso_z
from tests.support.fanout import ClientPool, FanoutClient, http
from tests.support.processes import GatewayProcess
from tests.support.round_robin_proxy import RoundRobinProxy
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The defaults (README): a replica's entry lives 4 s after its last write; changes are notified once
# they held 5 s. The issue asks for presence correct within 5 s of a change, and within 5 s plus the
# TTL of a SIGKILL.
TTL = 4.0
DEBOUNCE = 5.0
WITHIN = 5.0
# A notification is due DEBOUNCE after the change and sent at the next heartbeat (TTL / 3) after that.
NOTIFIED_WITHIN = 20.0
DOCUMENT_KEYS = {"timestamp", "replicas", "totalUsers", "totalConnections", "complete", "groups"}


@pytest.fixture(scope="module")
def gateway_nats(module_nats: NatsServer) -> NatsServer:
    """A server of this module: the presence bucket holds only this module's replicas."""
    return module_nats


@pytest.fixture(scope="module")
def replicas(gateway_factory: Callable[..., GatewayProcess]) -> tuple[GatewayProcess, GatewayProcess]:
    return gateway_factory(REALTIME_REPLICA_ID="presence-a"), gateway_factory(REALTIME_REPLICA_ID="presence-b")


@pytest.fixture
async def pool() -> Any:
    async with ClientPool() as clients:
        yield clients


async def presence(gateway: GatewayProcess) -> dict[str, Any]:
    answer = await http("GET", gateway.base_url, PRESENCE_PATH, token=admin_token())
    assert answer.status == 200, answer
    document: dict[str, Any] = answer.json
    return document


def admins(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {user["userId"]: user for user in document["groups"]["admins"]["users"]}


async def listed_within(gateway: GatewayProcess, user_id: str, *, present: bool, seconds: float) -> dict[str, Any]:
    """The presence document of ``gateway`` once ``user_id`` is (or is no longer) listed in ``admins``."""
    last: dict[str, Any] = {}

    async def probe() -> bool:
        nonlocal last
        last = await presence(gateway)
        return (user_id in admins(last)) == present

    async def describe() -> object:
        return last

    await wait_until_async(probe, timeout=seconds, what=f"{user_id} present={present}", describe=describe)
    return last


def about(user_id: str) -> Callable[[Any], bool]:
    return lambda notification: notification.get("type") == "presence" and notification.get("userId") == user_id


def notifications(watcher: FanoutClient, user_id: str) -> list[Any]:
    return [n for n in watcher.events("AdminNotification", since=0) if about(user_id)(n)]


async def test_a_user_on_one_replica_is_seen_from_the_other_and_gone_after_disconnecting(
    replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool
) -> None:
    a, b = replicas
    user_id = str(uuid.uuid4())
    vera = await pool.connect(a.hub_url, admin_token(sub=user_id, name="Vera"), label="vera")
    connected_at = time.monotonic()
    document = await listed_within(b, user_id, present=True, seconds=WITHIN)
    assert time.monotonic() - connected_at <= WITHIN
    assert set(document) == DOCUMENT_KEYS
    assert document["replicas"] == 2 and document["complete"] is True
    assert_recent_iso_z(document["timestamp"])
    listed = admins(document)[user_id]
    assert (listed["userName"], listed["connections"]) == ("Vera", 1)
    assert_recent_iso_z(listed["since"])
    assert document["totalConnections"] >= document["groups"]["admins"]["totalConnections"] >= 1

    # A second connection of the same user, on the other replica, through the hub method there.
    second = await pool.connect(b.hub_url, admin_token(sub=user_id, name="Vera"), label="vera-2")
    await second.invoke("SubscribeToAlerts")

    async def both_counted() -> dict[str, Any] | None:
        hub_view: dict[str, Any] = await second.invoke("GetPresence")
        user = admins(hub_view).get(user_id)
        alerts = {u["userId"]: u for u in hub_view["groups"]["alerts"]["users"]}
        return hub_view if user is not None and user["connections"] == 2 and user_id in alerts else None

    hub_view = await wait_until_async(both_counted, timeout=WITHIN, what="two connections of one user")
    assert set(hub_view) == DOCUMENT_KEYS
    assert admins(hub_view)[user_id]["since"] == listed["since"], "since is the first connection's"

    await vera.close()
    await second.close()
    closed_at = time.monotonic()
    await listed_within(a, user_id, present=False, seconds=WITHIN)
    assert time.monotonic() - closed_at <= WITHIN


async def test_a_killed_replicas_users_expire_and_go_offline_once(
    replicas: tuple[GatewayProcess, GatewayProcess], gateway_factory: Callable[..., GatewayProcess], pool: ClientPool
) -> None:
    a, b = replicas
    doomed = gateway_factory(REALTIME_REPLICA_ID="presence-c")
    watchers = await pool.connect_many((a.hub_url, admin_token(), "watcher-a"), (b.hub_url, admin_token(), "watcher-b"))
    user_id = str(uuid.uuid4())
    await pool.connect(doomed.hub_url, admin_token(sub=user_id, name="Walt"), label="walt")
    await listed_within(a, user_id, present=True, seconds=WITHIN)
    for watcher in watchers:
        await watcher.wait_event("AdminNotification", about(user_id), seconds=NOTIFIED_WITHIN, since=0)

    doomed.kill()
    killed_at = time.monotonic()
    document = await listed_within(a, user_id, present=False, seconds=WITHIN + TTL)
    assert time.monotonic() - killed_at <= WITHIN + TTL
    assert document["replicas"] == 2

    for watcher in watchers:
        await watcher.wait_event(
            "AdminNotification", lambda n: about(user_id)(n) and n["action"] == "offline", seconds=NOTIFIED_WITHIN
        )
    await asyncio.sleep(TTL)  # a second sender would have sent by now: the decider steps every TTL / 3
    for watcher in watchers:
        sent = notifications(watcher, user_id)
        assert [(n["action"], n["userName"]) for n in sent] == [("online", "Walt"), ("offline", "Walt")], sent


async def test_online_and_offline_are_notified_once_and_a_quick_reconnect_sends_nothing(
    replicas: tuple[GatewayProcess, GatewayProcess], pool: ClientPool
) -> None:
    a, b = replicas
    watchers = await pool.connect_many((a.hub_url, admin_token(), "watcher-a"), (b.hub_url, admin_token(), "watcher-b"))
    user_id = str(uuid.uuid4())
    async with RoundRobinProxy([a.base_url, b.base_url]) as proxy:
        vera = await pool.connect(proxy.url + "/hubs/admin", admin_token(sub=user_id, name="Vera"), label="vera")
        for watcher in watchers:
            online = await watcher.wait_event("AdminNotification", about(user_id), seconds=NOTIFIED_WITHIN, since=0)
            assert set(online) == {"type", "userId", "userName", "action", "message", "timestamp"}
            assert (online["action"], online["userName"], online["message"]) == (
                "online",
                "Vera",
                "User Vera is online",
            )
            assert_recent_iso_z(online["timestamp"])

        # Every socket through the balancer is cut, as a network failure would: the client reconnects
        # at once (its first retry delay is 0), on either replica.
        mark = len(vera.lines)
        await proxy.sever(0)
        await proxy.sever(1)
        await vera.wait_state("reconnected", since=mark, seconds=10)
        await listed_within(a, user_id, present=True, seconds=WITHIN)
        await asyncio.sleep(DEBOUNCE + TTL)  # past the debounce and a heartbeat: any flap would be sent by now
        for watcher in watchers:
            assert [n["action"] for n in notifications(watcher, user_id)] == ["online"], watcher.label

        await vera.close()
        for watcher in watchers:
            await watcher.wait_event(
                "AdminNotification", lambda n: about(user_id)(n) and n["action"] == "offline", seconds=NOTIFIED_WITHIN
            )
        await asyncio.sleep(TTL)
        for watcher in watchers:
            assert [n["action"] for n in notifications(watcher, user_id)] == ["online", "offline"], watcher.label
