"""The dashboard in a real browser: sign-in, live figures, alerts, subscriptions, reconnects.

One stack (nats-server, collector publishing every second, seeded traffic simulator, gateway
serving ``dashboard/dist``) and one signed-in page serve the module; the tests run in file order
and each leaves the page usable for the next. Screenshots go to ``test-artifacts/``; the 1280 px
one is also copied to ``docs/dashboard.png`` for the README.
"""

from __future__ import annotations

import math
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import (
    ARTIFACTS,
    EXPECTED_REJECTED,
    EXPECTED_WHILE_DOWN,
    MISSING,
    PAGE_TEST_MARKS,
    ROOT,
    ConsoleLog,
    Contexts,
    Stack,
    alert_item,
    expect_connected,
    post_alert,
    status,
)
from tests.support.expect import COUNT_FIGURES, MONEY_FIGURES
from tests.support.tokens import make_token

pytestmark = list(PAGE_TEST_MARKS)

if MISSING is None:
    from playwright.sync_api import BrowserContext, Page, expect

NARROW = {"width": 390, "height": 844}
READ_FIGURES = """() => {
  const values = {}, texts = {};
  for (const tile of document.querySelectorAll('[data-testid^="kpi-"]')) {
    const key = tile.dataset.testid.slice(4);
    values[key] = tile.dataset.value;
    texts[key] = tile.querySelector('.tile-value').textContent;
  }
  return {timestamp: document.querySelector('[data-testid="last-update"]').dataset.timestamp, values, texts};
}"""


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide(contexts: Contexts) -> Iterator[BrowserContext]:
    with contexts.open() as context:
        yield context


@pytest.fixture(scope="module")
def page(stack: Stack, wide: BrowserContext) -> Page:
    """The page signed in from ``#token=`` once, shared by the module's tests."""
    page = wide.new_page()
    page.goto(f"{stack.base_url}/#token={stack.token}")
    return page


# -- helpers ----------------------------------------------------------------------------------


def toggle(page: Page, group: str) -> Any:
    return page.get_by_test_id(f"toggle-{group}")


def set_subscription(page: Page, group: str, on: bool) -> None:
    switch = toggle(page, group)
    if switch.get_attribute("aria-checked") != str(on).lower():
        switch.focus()
        page.keyboard.press("Space")  # keyboard reachable, like a real switch
    expect(switch).to_have_attribute("aria-checked", str(on).lower())
    expect(page.get_by_test_id(f"sub-state-{group}")).to_contain_text("confirmed")


def last_update(page: Page) -> str:
    return str(page.get_by_test_id("last-update").get_attribute("data-timestamp"))


def wait_for_new_update(page: Page, after: str, *, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        current = last_update(page)
        if current and current != after:
            return current
        page.wait_for_timeout(100)
    raise AssertionError(f"no figures newer than {after!r} within {seconds}s")


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


# -- tests ------------------------------------------------------------------------------------


def test_sign_in_from_the_fragment_and_figures_match_the_snapshot(stack: Stack, page: Page) -> None:
    expect_connected(page)
    # The token left the address bar and lives in sessionStorage only.
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('realtime-admin.token')") == stack.token
    assert page.evaluate("JSON.stringify(localStorage)") == "{}"
    for group in ("analytics", "alerts"):
        expect(toggle(page, group)).to_have_attribute("aria-checked", "true")
    expect(toggle(page, "user-activity")).to_have_attribute("aria-checked", "false")

    # The figures move every second: compare the page with the snapshot of the same timestamp.
    deadline = time.monotonic() + 20
    while True:
        shown = page.evaluate(READ_FIGURES)
        snapshot = stack.snapshot()
        if shown["timestamp"] and shown["timestamp"] == snapshot["timestamp"]:
            break
        assert time.monotonic() < deadline, f"page {shown['timestamp']} never matched snapshot {snapshot['timestamp']}"
        page.wait_for_timeout(150)
    data = snapshot["data"]
    assert data["totalUsers"] > 0
    for key in COUNT_FIGURES:
        assert int(shown["values"][key]) == data[key], key
        assert shown["texts"][key] == f"{data[key]:,}", key
    for key in MONEY_FIGURES:
        assert math.isclose(float(shown["values"][key]), data[key], abs_tol=1e-9), key
        assert shown["texts"][key] == f"${data[key]:,.2f}", key
    # And they keep moving.
    wait_for_new_update(page, shown["timestamp"])


def test_alerts_notifications_and_activity_arrive(stack: Stack, page: Page) -> None:
    expect_connected(page)
    critical = post_alert(stack, type="error", severity="critical", message="Disk almost full on node-7")
    item = alert_item(page, critical)
    expect(item).to_be_visible()
    expect(item).to_have_attribute("data-type", "error")
    expect(item).to_contain_text("critical")
    expect(page.get_by_test_id("toast").filter(has_text=critical)).to_be_visible()

    info = post_alert(stack, type="info", message="Nightly backup finished")
    expect(alert_item(page, info)).to_be_visible()
    # Newest first.
    assert page.get_by_test_id("alert").first.inner_text().find(info) >= 0

    # Filter by type, then dismiss.
    page.get_by_label("Type", exact=True).select_option("error")
    expect(alert_item(page, info)).to_have_count(0)
    expect(alert_item(page, critical)).to_be_visible()
    page.get_by_label("Type", exact=True).select_option("all")
    page.get_by_role("button", name=f"Dismiss alert: {info}").click()
    expect(alert_item(page, info)).to_have_count(0)

    stack.api("POST", "alert/warning", {"message": "API latency above 800 ms"})
    stack.api("POST", "notify/system-event", {"eventType": "deploy", "description": "Gateway 1.4.2 rolled out"})
    stack.api(
        "POST", "notify/role-assignment", {"userId": str(uuid.uuid4()), "roleName": "Moderator", "action": "assigned"}
    )
    feed = page.get_by_test_id("admin-feed")
    expect(feed).to_contain_text("Gateway 1.4.2 rolled out")
    expect(feed).to_contain_text("Role 'Moderator' assigned")

    set_subscription(page, "user-activity", True)
    stack.api("POST", "notify/user-action", {"userId": str(uuid.uuid4()), "action": "published-website"})
    expect(page.get_by_test_id("activity-feed")).to_contain_text("published-website")

    page.get_by_test_id("toast").filter(has_text=critical).get_by_role("button", name="Close notification").click()
    expect(page.get_by_test_id("toast")).to_have_count(0)


def test_connection_panel_and_test_message(stack: Stack, page: Page) -> None:
    expect_connected(page)
    expect(page.get_by_test_id("connection-id")).to_have_text(re.compile(r"^[A-Za-z0-9_\-]{10,}$"))
    expect(page.get_by_test_id("connections-total")).to_contain_text("on 1 replica")
    page.get_by_test_id("send-test").click()
    expect(page.get_by_test_id("test-result")).to_have_text(re.compile(r"^Round trip [\d.,]+ ms"))
    # Landmarks for assistive technology.
    for role in ("banner", "navigation", "main"):
        expect(page.get_by_role(role)).to_have_count(1)


def test_turning_analytics_off_stops_the_updates(stack: Stack, page: Page) -> None:
    expect_connected(page)
    set_subscription(page, "analytics", False)
    page.wait_for_timeout(500)  # an update already on the wire may still land
    frozen = last_update(page)
    page.wait_for_timeout(3.5 * 1000)  # more than three publish intervals
    assert last_update(page) == frozen
    assert stack.snapshot()["timestamp"] > frozen, "the collector kept publishing meanwhile"
    expect(page.get_by_test_id("last-update")).to_contain_text("live updates off")

    set_subscription(page, "analytics", True)
    wait_for_new_update(page, frozen)


def test_reconnects_after_a_gateway_restart_and_restores_subscriptions(
    stack: Stack, page: Page, console: ConsoleLog
) -> None:
    expect_connected(page)
    set_subscription(page, "analytics", False)
    set_subscription(page, "alerts", True)
    port = stack.gateway.port

    console.allow(*EXPECTED_WHILE_DOWN)
    stack.gateway.stop()
    expect(status(page)).to_have_attribute("data-state", "reconnecting")
    expect(status(page)).to_contain_text(re.compile(r"attempt 2 of 4"))
    expect(page.get_by_test_id("retry-countdown")).to_contain_text("next try in")
    expect(toggle(page, "alerts")).to_have_attribute("aria-checked", "false")  # the old server's state is gone
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "reconnecting.png", full_page=False)

    stack.gateway = stack.new_gateway(port=port)
    expect_connected(page, timeout=45_000)
    console.allow()
    assert any(entry.allowed for entry in console.entries), "the browser's network errors were captured"

    # The user's choices came back: alerts on, analytics still off, both confirmed by the new server.
    expect(toggle(page, "alerts")).to_have_attribute("aria-checked", "true")
    expect(page.get_by_test_id("sub-state-alerts")).to_contain_text("confirmed")
    expect(toggle(page, "analytics")).to_have_attribute("aria-checked", "false")
    expect(toggle(page, "user-activity")).to_have_attribute("aria-checked", "true")
    after = post_alert(stack, type="warning", message="Alert after the restart")
    expect(alert_item(page, after)).to_be_visible()

    # The figures were refreshed with GetPlatformStats, and no analytics updates follow.
    expect(page.get_by_test_id("last-update")).to_contain_text("GetPlatformStats")
    refreshed = last_update(page)
    page.wait_for_timeout(2500)
    assert last_update(page) == refreshed
    set_subscription(page, "analytics", True)
    wait_for_new_update(page, refreshed)


def test_screenshot_of_the_signed_in_dashboard(page: Page) -> None:
    """At 1280 px, once the charts hold some history (saved for the README as docs/dashboard.png)."""
    expect_connected(page)
    expect(page.locator("#chart-active-caption").locator("..")).to_have_attribute(
        "data-samples", re.compile(r"^(1[5-9]|[2-9]\d|\d{3,})$"), timeout=30_000
    )
    page.evaluate("document.activeElement instanceof HTMLElement && document.activeElement.blur()")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "dashboard-1280.png")
    screenshot(page, "dashboard-1280-viewport.png", full_page=False)
    shutil.copyfile(ARTIFACTS / "dashboard-1280-viewport.png", ROOT / "docs" / "dashboard.png")


def test_gives_up_after_the_last_retry_and_reconnects_on_request(stack: Stack, page: Page, console: ConsoleLog) -> None:
    expect_connected(page)
    set_subscription(page, "alerts", True)
    port = stack.gateway.port

    console.allow(*EXPECTED_WHILE_DOWN)
    stack.gateway.stop()
    expect(status(page)).to_have_attribute("data-state", "reconnecting")
    # The seed's delays (0, 2, 10 and 30 s) run out after about 42 s; then the page stops trying.
    expect(status(page)).to_have_attribute("data-state", "disconnected", timeout=75_000)
    reconnect = status(page).get_by_role("button", name="Reconnect")
    expect(reconnect).to_be_visible()

    stack.gateway = stack.new_gateway(port=port)
    reconnect.click()
    expect_connected(page)
    console.allow()
    expect(reconnect).to_be_hidden()
    # Reconnecting by hand restores the user's subscriptions like an automatic reconnect does.
    expect(toggle(page, "alerts")).to_have_attribute("aria-checked", "true")
    expect(page.get_by_test_id("sub-state-alerts")).to_contain_text("confirmed")
    after = post_alert(stack, type="warning", message="Alert after reconnecting by hand")
    expect(alert_item(page, after)).to_be_visible()


def test_readable_at_390_px(stack: Stack, contexts: Contexts) -> None:
    with contexts.open(NARROW) as context:
        narrow = context.new_page()
        narrow.goto(f"{stack.base_url}/#token={stack.token}")
        expect_connected(narrow)
        expect(narrow.get_by_test_id("kpi-totalUsers")).not_to_have_attribute("data-value", "")
        narrow.wait_for_timeout(1500)  # a few chart points
        assert narrow.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        screenshot(narrow, "dashboard-390.png")


def test_bad_tokens_return_to_sign_in_with_a_message(stack: Stack, contexts: Contexts, console: ConsoleLog) -> None:
    with contexts.open() as context:
        signin = context.new_page()
        message = signin.get_by_test_id("signin-message")

        # Signed with another key: the server refuses it (401) and the page says so.
        console.allow(*EXPECTED_REJECTED)
        forged = make_token(roles=["Admin"], secret="another-secret-0123456789abcdef-xyz")
        signin.goto(f"{stack.base_url}/#token={forged}")
        expect(message).to_contain_text("rejected the access token")
        assert "token" not in signin.url
        assert signin.evaluate("sessionStorage.getItem('realtime-admin.token')") is None
        screenshot(signin, "signin-error.png", full_page=False)
        assert any(entry.allowed for entry in console.entries), "the refused negotiate was captured"

        # Expired: caught in the page before connecting.
        expired = make_token(roles=["Admin"], ttl=-60)
        signin.goto(f"{stack.base_url}/#token={expired}")
        expect(message).to_contain_text("expired")

        # Valid but not an administrator: 403.
        user = make_token(roles=["User"])
        field = signin.get_by_label("Access token")
        field.fill(user)
        signin.get_by_role("button", name="Sign in").click()
        expect(message).to_contain_text("lacks the Admin role")

        # Not a token at all, then a good one pasted in.
        field.fill("not-a-token")
        signin.get_by_role("button", name="Sign in").click()
        expect(message).to_contain_text("not an access token")
        field.fill(stack.token)
        signin.get_by_role("button", name="Sign in").click()
        expect_connected(signin)
