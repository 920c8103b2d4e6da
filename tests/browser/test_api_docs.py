"""The contracts page (/docs/api) in Chromium: it renders both generated documents as tables, under the
gateway's Content-Security-Policy, with a pasted token or the dashboard's token of the same tab.

Needs Chromium and Playwright only (not the dashboard build): a gateway on its own nats-server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scripts.processes import NatsServer
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, ConsoleLog
from tests.support.processes import gateways_on
from tests.support.tokens import admin_token


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing (pip install -e '.[dev]')"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]
RENDERED_SECONDS = 10_000  # ms, Playwright's unit


@pytest.fixture(scope="module")
def docs_url() -> Iterator[str]:
    with NatsServer() as nats, gateways_on(nats.url) as start:
        yield start().base_url + "/docs/api"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def assert_rendered(page: Any) -> None:
    page.wait_for_selector("#methods h3", timeout=RENDERED_SECONDS)
    text = page.inner_text("main")
    for expected in (
        "AnalyticsUpdate",  # a client event
        "GetConnectionCount()",  # a hub method
        "SendTestMessage(payload)",
        "realtime.group.{group}",  # a NATS subject
        "platform.events.payment.succeeded",
        "POST /api/admin/realtime/alert/performance",  # a REST route
        "totalUsers",  # a payload field
        "AlertStateChanged",  # an event of the alert state
        "GET /api/admin/realtime/analytics/history",
        "Query:",  # its minutes parameter
        "loadedAt",  # a field of the collector's rules (GET alert-rules)
    ):
        assert expected in text, expected
    assert page.locator("table").count() > 20
    assert page.locator("#toc a").count() == 4


def test_the_page_renders_both_documents_with_a_pasted_token(chromium: Any, docs_url: str) -> None:
    context = chromium.new_context()
    console = ConsoleLog()
    page = context.new_page()
    console.attach(page)
    page.goto(docs_url)
    page.wait_for_selector("#token-form:not([hidden])", timeout=RENDERED_SECONDS)  # 401 without a token
    page.fill("#token", admin_token())
    page.click("#token-form button")
    assert_rendered(page)
    assert page.is_hidden("#token-form")
    # The two 401s before the token are the only console errors: no CSP violation, no script error (the
    # favicon is the dashboard build's, absent here).
    unexpected = [text for text in console.unexpected() if "status of 401" not in text and "favicon" not in text]
    assert unexpected == []
    context.close()


def test_the_page_uses_the_dashboards_token_of_the_same_tab(chromium: Any, docs_url: str) -> None:
    context = chromium.new_context()
    page = context.new_page()
    page.goto(docs_url)
    page.evaluate("token => sessionStorage.setItem('realtime-admin.token', token)", admin_token())
    page.reload()
    assert_rendered(page)
    context.close()


def test_the_page_takes_a_token_from_the_address_and_removes_it(chromium: Any, docs_url: str) -> None:
    # As `make run` prints it: /docs/api#token=...
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{docs_url}#token={admin_token()}")
    assert_rendered(page)
    assert "token" not in page.url
    context.close()
