"""Browser tests: the built dashboard in Debian's Chromium, driven by Playwright's Python package,
against a real nats-server, stats collector, traffic simulator and gateway.

Skipped (with the reason) when ``/usr/bin/chromium``, the ``playwright`` package or the dashboard
build (``dashboard/dist/index.html``; ``make dashboard``) is missing. ``make test`` provides all three.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scripts.processes import ROOT, ChildProcess, NatsServer
from tests.support.collector import CollectorProcess
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token

CHROMIUM = Path(os.environ.get("REALTIME_CHROMIUM", "/usr/bin/chromium"))
DASHBOARD_DIST = ROOT / "dashboard" / "dist"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDE = {"width": 1280, "height": 900}
PUBLISH_INTERVAL = 1.0
# Repeatable demo traffic, without the latency spikes (their alerts would only add noise).
SIMULATOR_ARGS = ("--rate", "20", "--seed", "1", "--spike-every", "0")


def missing_prerequisite() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if not (DASHBOARD_DIST / "index.html").is_file():
        return f"the dashboard is not built ({DASHBOARD_DIST}/index.html missing; run `make dashboard`)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing (pip install -e '.[dev]')"
    return None


MISSING = missing_prerequisite()
# The marks of a module of page tests: marked ``browser``, skipped with the reason when something is
# missing, and failing on console errors the test did not expect.
PAGE_TEST_MARKS = (
    pytest.mark.browser,
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
    pytest.mark.usefixtures("no_console_errors"),
)
if MISSING is None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)


# -- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    nats: NatsServer
    collector: CollectorProcess
    simulator: ChildProcess
    gateway: GatewayProcess
    token: str
    gateways: list[GatewayProcess] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.gateway.base_url

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - our own localhost
            f"{self.base_url}/api/admin/realtime/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            result: dict[str, Any] = json.loads(response.read())
            return result

    def snapshot(self) -> dict[str, Any]:
        return self.api("GET", "platform-snapshot")

    def new_gateway(self, *, port: int | None = None) -> GatewayProcess:
        """A gateway serving the dashboard; on ``port`` when given (a restart on the same address)."""
        gateway = GatewayProcess(
            self.nats.url,
            env={"REALTIME_DASHBOARD_DIR": str(DASHBOARD_DIST), "REALTIME_SHUTDOWN_GRACE_SECONDS": "1"},
        )
        if port is not None:
            gateway.port = port
        gateway.start()
        self.gateways.append(gateway)
        return gateway


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    with NatsServer() as nats:
        collector = CollectorProcess(nats.url, env={"REALTIME_PUBLISH_INTERVAL_SECONDS": str(PUBLISH_INTERVAL)})
        simulator = ChildProcess(
            [sys.executable, "-m", "stats_collector.simulate", "--nats-url", nats.url, *SIMULATOR_ARGS],
            name="simulator",
            log_path=Path(tempfile.mkstemp(prefix="simulator-", suffix=".log")[1]),
        )
        built = Stack(nats=nats, collector=collector, simulator=simulator, gateway=None, token=admin_token())  # type: ignore[arg-type]
        try:
            collector.start(seconds=30, wait_ready=False)
            simulator.start()
            built.gateway = built.new_gateway()
            simulator.wait_until(
                lambda: built.snapshot()["data"]["totalUsers"] > 0, timeout=30, what="the collector to publish figures"
            )
            yield built
        finally:
            for gateway in built.gateways:
                gateway.stop()
            simulator.stop()
            collector.stop()


def run_beside_playwright(work: Callable[[], Coroutine[Any, Any, None]], *, timeout: float = 30) -> None:
    """Run ``work()`` to its end in a thread of its own (Playwright's sync API owns this thread's loop)."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work())
        except BaseException as error:  # handed to the test
            failures.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=timeout)
    assert not worker.is_alive(), f"still running after {timeout}s"
    if failures:
        raise failures[0]


# -- the browser ------------------------------------------------------------------------------


# Failures the browser itself logs while the gateway is down or a token is refused; allowed only
# inside ConsoleLog.expect_network_failures(), and only for the hub's own URLs.
EXPECTED_WHILE_DOWN = (
    re.compile(r"^Failed to load resource: net::ERR_CONNECTION_REFUSED$"),
    re.compile(r"^Failed to load resource: the server responded with a status of 503 "),
    re.compile(r"^WebSocket connection to 'ws://127\.0\.0\.1:\d+/hubs/admin\?id=[^']*' failed"),
)
EXPECTED_REJECTED = (re.compile(r"^Failed to load resource: the server responded with a status of 40[13] "),)


@dataclass
class ConsoleEntry:
    text: str
    url: str
    allowed: bool


class ConsoleLog:
    """Console errors and uncaught page errors of every page in a context."""

    def __init__(self) -> None:
        self.entries: list[ConsoleEntry] = []
        self._allowed: tuple[re.Pattern[str], ...] = ()

    def record(self, text: str, url: str) -> None:
        about_hub = "/hubs/admin" in url or "/hubs/admin" in text
        allowed = about_hub and any(pattern.search(text) for pattern in self._allowed)
        self.entries.append(ConsoleEntry(text=text, url=url, allowed=allowed))

    def allow(self, *patterns: re.Pattern[str]) -> None:
        self._allowed = patterns

    def unexpected(self) -> list[str]:
        return [f"{entry.text} ({entry.url})" for entry in self.entries if not entry.allowed]

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.record(message.text, message.location.get("url", ""))

    def attach(self, page: Any) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.record(f"uncaught: {error}", ""))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def no_console_errors(console: ConsoleLog) -> Iterator[None]:
    """The test ends without console errors other than the ones it expected (``usefixtures`` it)."""
    console.allow()
    yield
    unexpected = console.unexpected()
    console.entries.clear()
    console.allow()
    assert unexpected == [], f"console errors: {unexpected}"


class Contexts:
    """Opens browser contexts (English, UTC, 1280 px unless told) whose pages report to one console log."""

    def __init__(self, browser: Any, console: ConsoleLog) -> None:
        self.browser = browser
        self.console = console

    @contextmanager
    def open(self, viewport: dict[str, int] = WIDE) -> Iterator[Any]:
        """A new context, closed when the block ends."""
        context = self.browser.new_context(viewport=viewport, locale="en-US", timezone_id="UTC")
        context.on("page", self.console.attach)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def contexts(browser: Any, console: ConsoleLog) -> Contexts:
    return Contexts(browser, console)


# -- the page ---------------------------------------------------------------------------------


def status(page: Any) -> Any:
    return page.get_by_test_id("connection-status")


def expect_connected(page: Any, *, timeout: float = 15_000) -> None:
    from playwright.sync_api import expect

    expect(status(page)).to_have_attribute("data-state", "connected", timeout=timeout)


def post_alert(stack: Stack, **body: Any) -> str:
    """POST an alert with a unique message (returned)."""
    message = f"{body.pop('message', 'Test alert')} #{uuid.uuid4().hex[:6]}"
    stack.api("POST", "alert", {"message": message, **body})
    return message


def alert_item(page: Any, message: str) -> Any:
    return page.get_by_test_id("alert").filter(has_text=message)
