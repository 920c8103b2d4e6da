"""The dashboard's views of state kept by the cluster (issue 17): the figures' stored history, who is
online, and alert states shared by every open dashboard.

One stack (nats-server, collector publishing every second, simulator, gateway serving
``dashboard/dist``) serves the module. Two administrators, Ada and Grace, each in their own browser
context: Ada's page opens once, after older snapshots were stored; Grace connects and leaves, then
acknowledges and silences alerts that Ada sees change. The tests run in file order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest

from broker_bridge.snapshot_stream import SNAPSHOTS_STREAM
from broker_bridge.subjects import SNAPSHOTS_SUBJECT
from shared.models import PlatformSnapshot, encode_snapshot_record
from shared.timeutil import iso_utc
from tests.browser.conftest import (
    MISSING,
    PAGE_TEST_MARKS,
    Contexts,
    Stack,
    alert_item,
    expect_connected,
    post_alert,
    run_beside_playwright,
)
from tests.support.tokens import make_token

pytestmark = list(PAGE_TEST_MARKS)

if MISSING is None:
    from playwright.sync_api import BrowserContext, Page, expect

ADA = "Ada Admin"
GRACE = "Grace Operator"
# Older snapshots stored before Ada's page opens: every 5 s from 20 to 5 minutes ago.
SEEDED_FROM_MINUTES = 20
SEEDED_POINTS = 180
SEEDED_EVERY_SECONDS = 5
# An online/offline notification comes once the change held for the gateway's debounce (5 s); the page
# asks GetPresence half a second later, and every 15 s anyway. Waiting longer only guards a slow machine.
PRESENCE_TIMEOUT_MS = 30_000
# When the page's hub connection opened and when the charts showed the stored history (performance.now()),
# recorded by the page's own DOM changes (an init script is not subject to the page's CSP).
RECORD_TIMINGS = """
window.__timings = {};
new MutationObserver(() => {
  const now = performance.now();
  const status = document.querySelector('[data-testid="connection-status"]');
  if (status && status.dataset.state === "connected" && window.__timings.connected === undefined) {
    window.__timings.connected = now;
  }
  const trends = document.getElementById("trends");
  if (trends && trends.dataset.history === "loaded" && window.__timings.history === undefined) {
    window.__timings.history = now;
  }
}).observe(document, { subtree: true, childList: true, attributes: true });
"""


# -- fixtures ---------------------------------------------------------------------------------


def seeded_records(now: datetime) -> list[tuple[datetime, bytes]]:
    start = now - timedelta(minutes=SEEDED_FROM_MINUTES)
    records = []
    for index in range(SEEDED_POINTS):
        moment = start + timedelta(seconds=index * SEEDED_EVERY_SECONDS)
        snapshot = PlatformSnapshot(
            total_users=40 + index // 10,
            active_users=10 + index % 7,
            websites_generated=index,
            images_generated=2 * index,
            failed_generations=index // 20,
            total_revenue=1000.0 + index,
            revenue_today=float(index),
        )
        records.append((moment, encode_snapshot_record(iso_utc(moment), snapshot)))
    return records


async def store_snapshots(nats_url: str, records: list[bytes]) -> None:
    """Append to the collector's snapshot stream, as the collector itself does."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        for record in records:
            await js.publish(SNAPSHOTS_SUBJECT, record, stream=SNAPSHOTS_STREAM)
    finally:
        await client.drain()


@pytest.fixture(scope="module")
def seeded_from(stack: Stack) -> datetime:
    """Older snapshots stored, and answered by the gateway's history, before any page opens."""
    records = seeded_records(datetime.now(UTC))
    run_beside_playwright(lambda: store_snapshots(stack.nats.url, [record for _, record in records]))
    first = records[0][0]
    deadline = time.monotonic() + 30
    while True:
        points = stack.api("GET", f"analytics/history?minutes={SEEDED_FROM_MINUTES + 5}")["points"]
        if points and datetime.fromisoformat(points[0]["timestamp"]) <= first + timedelta(seconds=1):
            return first
        assert time.monotonic() < deadline, "the gateway never answered the stored snapshots"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ada(stack: Stack, contexts: Contexts, seeded_from: datetime) -> Iterator[Page]:
    """Ada's page, opened once the older snapshots are stored, with its timings recorded."""
    with contexts.open() as context:
        context.add_init_script(RECORD_TIMINGS)
        page = context.new_page()
        page.goto(f"{stack.base_url}/#token={make_token(roles=['Admin'], name=ADA)}")
        yield page


@pytest.fixture(scope="module")
def grace_context(contexts: Contexts) -> Iterator[BrowserContext]:
    with contexts.open() as context:
        yield context


def open_as_grace(stack: Stack, context: BrowserContext) -> Page:
    page = context.new_page()
    page.goto(f"{stack.base_url}/#token={make_token(roles=['Admin'], name=GRACE)}")
    expect_connected(page)
    return page


@pytest.fixture(scope="module")
def grace(stack: Stack, grace_context: BrowserContext) -> Page:
    return open_as_grace(stack, grace_context)


# -- helpers ----------------------------------------------------------------------------------


def samples(page: Page) -> int:
    return int(page.locator("#chart-active-caption").locator("..").get_attribute("data-samples") or 0)


def present(page: Page, name: str, *, group: str = "admins") -> Any:
    return page.get_by_test_id(f"presence-group-{group}").get_by_test_id("presence-user").filter(has_text=name)


# -- tests ------------------------------------------------------------------------------------


def test_charts_fill_from_the_stored_history_within_a_second(ada: Page, seeded_from: datetime) -> None:
    expect_connected(ada)
    trends = ada.locator("#trends")
    expect(trends).to_have_attribute("data-history", "loaded")
    timings = ada.evaluate("window.__timings")
    filled_after_ms = timings["history"] - timings["connected"]
    # The page asks GetAnalyticsHistory first thing once connected; the answer fills the charts.
    assert filled_after_ms < 1000, f"charts filled {filled_after_ms:.0f} ms after connecting ({timings})"
    # They begin at the oldest stored snapshot, long before the page opened: no waiting for live updates.
    first = datetime.fromtimestamp(int(trends.get_attribute("data-first-sample") or 0) / 1000, UTC)
    assert abs(first - seeded_from) < timedelta(seconds=1), (first, seeded_from)
    assert samples(ada) >= SEEDED_POINTS
    expect(ada.get_by_role("heading", name="Last 30 minutes")).to_be_visible()
    expect(ada.get_by_test_id("history-source")).to_contain_text("stored snapshots")
    expect(ada.get_by_test_id("history-source")).not_to_contain_text("since it opened")

    # Live updates are appended after the stored points.
    before = samples(ada)
    expect(ada.locator("#chart-active-caption").locator("..")).not_to_have_attribute("data-samples", str(before))

    # Another range asks the history again.
    ada.get_by_role("radio", name="Last 6 hours").check()
    expect(ada.get_by_role("heading", name="Last 6 hours")).to_be_visible()
    expect(trends).to_have_attribute("data-history", "loaded")
    assert samples(ada) >= SEEDED_POINTS
    ada.get_by_role("radio", name="Last 30 minutes").check()
    expect(ada.get_by_role("heading", name="Last 30 minutes")).to_be_visible()
    expect(trends).to_have_attribute("data-history", "loaded")


def test_presence_follows_a_second_browser_connecting_and_leaving(stack: Stack, ada: Page, contexts: Contexts) -> None:
    expect_connected(ada)
    expect(present(ada, ADA)).to_be_visible()
    expect(present(ada, GRACE)).to_have_count(0)

    with contexts.open() as context:
        grace = open_as_grace(stack, context)
        expect(present(ada, GRACE)).to_be_visible(timeout=PRESENCE_TIMEOUT_MS)
        expect(present(ada, GRACE)).to_contain_text("1 connection")
        expect(ada.get_by_test_id("admin-feed")).to_contain_text(f"{GRACE} is online")
        expect(present(grace, ADA)).to_be_visible()
    expect(present(ada, GRACE)).to_have_count(0, timeout=PRESENCE_TIMEOUT_MS)
    expect(ada.get_by_test_id("admin-feed")).to_contain_text(f"{GRACE} is offline")
    expect(present(ada, ADA)).to_be_visible()


def test_an_alert_acknowledged_in_one_browser_changes_in_the_other(
    stack: Stack, ada: Page, grace: Page, grace_context: BrowserContext
) -> None:
    expect_connected(ada)
    message = post_alert(stack, type="warning", severity="medium", message="Queue backlog above 10k")
    for page in (ada, grace):
        expect(alert_item(page, message)).to_have_attribute("data-status", "active")

    alert_item(grace, message).get_by_role("button", name=f"Acknowledge alert: {message}").click()
    at_ada = alert_item(ada, message)
    expect(at_ada).to_have_attribute("data-status", "acknowledged")
    expect(at_ada.get_by_test_id("alert-state")).to_contain_text(f"Acknowledged by {GRACE}")
    expect(at_ada.get_by_role("button", name=f"Acknowledge alert: {message}")).to_have_count(0)

    # A dashboard opened later shows the state kept by the cluster.
    later = grace_context.new_page()
    try:
        later.goto(f"{stack.base_url}/#token={make_token(roles=['Admin'], name=GRACE)}")
        expect_connected(later)
        expect(alert_item(later, message)).to_have_attribute("data-status", "acknowledged")
        expect(alert_item(later, message).get_by_test_id("alert-state")).to_contain_text(f"Acknowledged by {GRACE}")
    finally:
        later.close()


def test_a_silence_shows_in_every_browser_until_lifted(stack: Stack, ada: Page, grace: Page) -> None:
    expect_connected(ada)
    message = post_alert(stack, type="info", message="Cache warmed")
    expect(alert_item(grace, message)).to_have_attribute("data-status", "active")

    ada.get_by_label("Silence for", exact=True).select_option(label="15 minutes")
    alert_item(ada, message).get_by_role("button", name=f"Silence info for 15 minutes: {message}").click()
    silence = grace.get_by_test_id("silence").filter(has_text="info")
    expect(silence).to_contain_text(f"silenced by {ADA}")
    expect(alert_item(grace, message)).to_have_attribute("data-status", "silenced")
    expect(alert_item(grace, message).get_by_test_id("alert-state")).to_contain_text(f"silenced by {ADA}")

    grace.get_by_role("button", name="Lift the silence of info").click()
    expect(ada.get_by_test_id("silence")).to_have_count(0)
    expect(alert_item(ada, message)).to_have_attribute("data-status", "active")


def test_a_dismissed_alert_stays_dismissed_when_the_states_are_loaded_again(stack: Stack, ada: Page) -> None:
    expect_connected(ada)
    dismissed = post_alert(stack, type="warning", message="Disk 80% on node-2")
    ada.get_by_role("button", name=f"Dismiss alert: {dismissed}").click()
    expect(alert_item(ada, dismissed)).to_have_count(0)

    # Alerts off: an alert raised meanwhile is not sent to this page; turning them on loads the states.
    switch = ada.get_by_test_id("toggle-alerts")
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "false")
    missed = post_alert(stack, type="info", message="Raised while alerts were off")
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "true")
    expect(alert_item(ada, missed)).to_have_attribute("data-status", "active")
    expect(alert_item(ada, dismissed)).to_have_count(0)
