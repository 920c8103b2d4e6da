"""Transports in Chromium, through a round-robin proxy in front of three gateway replicas.

* The dashboard in a browser whose WebSockets are blocked (the proxy refuses every upgrade, as some
  corporate proxies do) falls back to Server-Sent Events on its own, and works; with event streams
  blocked too, to long polling.
* The official client (its browser build) limited to Server-Sent Events or long polling: every hub
  method, 500 broadcasts in order once each, stop().

The replicas and the proxy are this module's own; the stack's NATS, collector and simulator feed them.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator

import nats
import pytest

from scripts.processes import wait_until
from tests.browser.conftest import DASHBOARD_DIST, ConsoleLog, Stack, missing_prerequisite, run_beside_playwright
from tests.support.fanout import metric_value
from tests.support.processes import GatewayProcess
from tests.support.round_robin_proxy import RoundRobinProxy, ThreadedProxy
from tests.support.tokens import admin_token

_missing = missing_prerequisite()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing is not None, reason=_missing or "")]

if _missing is None:
    from playwright.sync_api import Browser, Page, expect

    expect.set_options(timeout=15_000)

SIGNALR_BROWSER_BUILD = "tests/node_modules/@microsoft/signalr/dist/browser/signalr.js"
BROADCASTS = 500
LABELS = {"WebSockets": "websockets", "ServerSentEvents": "serversentevents", "LongPolling": "longpolling"}
# What Chromium logs when the proxy refuses an upgrade or an event stream; nothing else may appear.
BLOCKED = (
    re.compile(r"^WebSocket connection to 'ws://127\.0\.0\.1:\d+/hubs/admin\?id=[^']*' failed"),
    re.compile(r"^Failed to load resource: the server responded with a status of 403 "),
    re.compile(r"^EventSource's response has a MIME type \("),
)


# A long-polling client that vanished (its page closed) is ended after this, instead of 15 s.
DISCONNECT_TIMEOUT = "2"


@pytest.fixture(scope="module")
def replicas(stack: Stack) -> list[GatewayProcess]:
    started = []
    for _ in range(3):
        gateway = GatewayProcess(
            stack.nats.url,
            env={
                "REALTIME_DASHBOARD_DIR": str(DASHBOARD_DIST),
                "REALTIME_DISCONNECT_TIMEOUT_SECONDS": DISCONNECT_TIMEOUT,
            },
        )
        stack.gateways.append(gateway)  # stopped with the stack
        gateway.start()
        started.append(gateway)
    return started


def connections(replicas: list[GatewayProcess], transport: str) -> float:
    total = 0.0
    for gateway in replicas:
        with urllib.request.urlopen(f"{gateway.base_url}/metrics", timeout=5) as response:  # noqa: S310 - localhost
            total += metric_value(response.read().decode(), "realtime_connections", transport=LABELS[transport])
    return total


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


def open_dashboard(browser: Browser, console: ConsoleLog, url: str, token: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
    context.on("page", console.attach)
    page = context.new_page()
    page.goto(f"{url}/#token={token}")
    return page


def expect_working_dashboard(page: Page, stack: Stack) -> None:
    status = page.get_by_test_id("connection-status")
    expect(status).to_have_attribute("data-state", "connected")
    # Hub methods: the page confirms its subscriptions, and a test message makes the round trip.
    expect(page.get_by_test_id("sub-state-alerts")).to_contain_text("confirmed")
    page.get_by_test_id("send-test").click()
    expect(page.get_by_test_id("test-result")).to_have_text(re.compile(r"^Round trip [\d.,]+ ms"))
    # A broadcast reaches it (published on the stack's own gateway, fanned out by NATS).
    message = f"Over the fallback #{uuid.uuid4().hex[:6]}"
    stack.api("POST", "alert", {"type": "info", "message": message})
    expect(page.get_by_test_id("alert").filter(has_text=message)).to_be_visible()


@pytest.mark.parametrize(
    ("blocked", "expected"),
    [
        ({"block_websockets": True}, "ServerSentEvents"),
        ({"block_websockets": True, "block_event_streams": True}, "LongPolling"),
    ],
    ids=["websockets-blocked", "websockets-and-event-streams-blocked"],
)
def test_the_dashboard_falls_back_on_its_own(
    stack: Stack,
    replicas: list[GatewayProcess],
    browser: Browser,
    console: ConsoleLog,
    blocked: dict[str, bool],
    expected: str,
) -> None:
    with RoundRobinProxy.running([gateway.base_url for gateway in replicas], **blocked) as proxy:
        console.allow(*BLOCKED)
        page = open_dashboard(browser, console, proxy.url, stack.token)
        try:
            expect_working_dashboard(page, stack)
            assert connections(replicas, expected) == 1
            assert connections(replicas, "WebSockets") == 0
            assert any(entry.allowed for entry in console.entries), "the browser saw the refusal"
            assert console.unexpected() == []
        finally:
            page.context.close()
    # The page is gone without a word: its owner notices (a closed stream, or no poll for 2 s).
    wait_until(lambda: connections(replicas, expected) == 0, timeout=15, what="the closed page's connection to end")


# -- the official client in the page -------------------------------------------------------------

SCENARIO = """async ({ transport, token }) => {
  const result = { calls: {}, received: [], states: [] };
  const connection = new signalR.HubConnectionBuilder()
    .withUrl("/hubs/admin", { accessTokenFactory: () => token, transport: signalR.HttpTransportType[transport] })
    .configureLogging(signalR.LogLevel.Warning)
    .build();
  // The stack's collector may raise alerts of its own into the same group: count only this test's.
  connection.on("SystemAlert", (alert) => { if (alert.message === "browser") result.received.push(alert.data.seq); });
  connection.on("ConnectionEstablished", () => {});
  connection.onclose((error) => result.states.push(["close", error ? String(error) : null]));
  window.__hub = { connection, result };
  await connection.start();
  result.transport = connection.connection.transport.constructor.name;
  for (const method of ["SubscribeToUserActivity", "UnsubscribeFromUserActivity", "GetPlatformStats",
                        "GetConnectionCount", "SubscribeToAlerts"]) {
    result.calls[method] = await connection.invoke(method);
  }
  result.calls.SendTestMessage = await connection.invoke("SendTestMessage", "from Chromium");
  try {
    await connection.invoke("NoSuchMethod");
  } catch (error) {
    result.calls.NoSuchMethod = String(error.message);
  }
  return result;
}"""


def publish_in_a_thread(url: str, count: int) -> None:
    """``count`` SystemAlerts numbered 0.. to the alerts group (Playwright's sync API owns this thread's loop)."""

    async def publish() -> None:
        client = await nats.connect(url)
        for seq in range(count):
            alert = {"type": "info", "message": "browser", "severity": "low", "timestamp": "2025-01-01T00:00:00Z"}
            payload = {"target": "SystemAlert", "arguments": [{**alert, "data": {"seq": seq}}]}
            await client.publish("realtime.group.alerts", json.dumps(payload).encode())
        await client.flush()
        await client.close()

    run_beside_playwright(publish)


@pytest.fixture(scope="module")
def balanced(replicas: list[GatewayProcess]) -> Iterator[ThreadedProxy]:
    with RoundRobinProxy.running([gateway.base_url for gateway in replicas]) as proxy:
        yield proxy


@pytest.mark.parametrize("transport", ["ServerSentEvents", "LongPolling"])
def test_the_official_client_in_chromium_over_one_transport(
    stack: Stack, replicas: list[GatewayProcess], balanced: ThreadedProxy, browser: Browser, transport: str
) -> None:
    context = browser.new_context(bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(f"{balanced.url}/")  # the sign-in page: same origin as the hub, no connection of its own
        page.add_script_tag(path=SIGNALR_BROWSER_BUILD)
        result = page.evaluate(SCENARIO, {"transport": transport, "token": admin_token()})
        assert result["transport"] == f"{transport}Transport"
        calls = result["calls"]
        assert calls["SubscribeToAlerts"]["subscribed"] is True
        assert calls["UnsubscribeFromUserActivity"]["subscribed"] is False
        assert calls["GetConnectionCount"]["connectionsOnReplica"] >= 1
        assert calls["SendTestMessage"]["echo"] == "from Chromium"
        assert calls["NoSuchMethod"].endswith("HubException: Method does not exist.")
        assert "totalUsers" in calls["GetPlatformStats"]
        assert connections(replicas, transport) == 1

        publish_in_a_thread(stack.nats.url, BROADCASTS)
        page.wait_for_function(f"window.__hub.result.received.length >= {BROADCASTS}", timeout=60_000)
        page.wait_for_timeout(300)  # anything extra would land now
        received = page.evaluate("window.__hub.result.received")
        assert received == list(range(BROADCASTS))  # in order, none missing, none twice

        page.evaluate("window.__hub.connection.stop()")
        assert page.evaluate("window.__hub.result.states") == [["close", None]]
        assert balanced.requests and all(count > 0 for count in balanced.requests)
    finally:
        context.close()
