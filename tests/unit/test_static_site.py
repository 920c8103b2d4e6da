"""The dashboard's files carry the security headers, and the built page needs nothing the policy forbids.

The browser tests (tests/browser) load the real build under this policy in Chromium and fail on any console
error, which is where a Content-Security-Policy violation shows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http.static_site import CONTENT_SECURITY_POLICY, DEFAULT_DASHBOARD_DIR, dashboard_routes

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def directives() -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for directive in CONTENT_SECURITY_POLICY.split(";"):
        name, *sources = directive.split()
        parsed[name] = sources
    return parsed


def test_the_policy_allows_this_origin_only_and_no_framing() -> None:
    policy = directives()
    assert policy["default-src"] == ["'none'"]
    for name in ("script-src", "style-src", "connect-src", "img-src"):
        assert policy[name] == ["'self'"], name  # no 'unsafe-inline', no 'unsafe-eval', no other host
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "assets" / "index-abc.js").write_text("console.log(1)")
    (tmp_path / "favicon.svg").write_text("<svg/>")
    return tmp_path


@pytest.mark.parametrize("path", ["/", "/assets/index-abc.js", "/favicon.svg"])
async def test_every_dashboard_file_carries_the_security_headers(
    aiohttp_client: ClientFactory, site: Path, path: str
) -> None:
    app = web.Application()
    app.add_routes(dashboard_routes(site))
    client = await aiohttp_client(app)
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


class InlineFinder(HTMLParser):
    """Collects what a script-src/style-src 'self' policy would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.blocked.append("an inline <script>")
        if tag == "style":
            self.blocked.append("a <style> element")
        self.blocked.extend(f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on"))
        for name, value in attrs:
            if name in ("src", "href") and value and value.startswith(("http:", "https:", "//", "data:")):
                self.blocked.append(f"{name}={value} on <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.blocked.append("a <script> with a body")


def test_the_built_page_has_nothing_inline() -> None:
    index = DEFAULT_DASHBOARD_DIR / "index.html"
    if not index.is_file():
        pytest.skip(f"the dashboard is not built ({index} missing; run `make dashboard`)")
    finder = InlineFinder()
    finder.feed(index.read_text())
    assert finder.blocked == []
