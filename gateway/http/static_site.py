"""Serves the built dashboard (``dashboard/dist``) at ``/``; the hub and API paths are unaffected.

``index.html`` is never cached (it names the current asset files); files under ``/assets/`` have
content hashes in their names, so browsers may keep them for a year.

Every file goes out with :data:`SECURITY_HEADERS`. The Content-Security-Policy allows scripts and
stylesheets from this origin only (the Vite build has no inline ``<script>`` or ``<style>``; React and
uPlot set styles through ``element.style``, which ``style-src`` does not govern), connections to this
origin only (negotiate, the REST API and the hub's WebSocket: CSP 3 makes ``'self'`` match ``ws:``/``wss:``
of the same host, as Chromium 71+, Firefox and Safari 16+ do), and no framing (``frame-ancestors
'none'``, against clickjacking). ``Referrer-Policy: no-referrer`` as the page's own meta tag says: the
page only talks to its own origin, so a Referer would tell nobody anything useful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

DEFAULT_DASHBOARD_DIR: Final = Path(__file__).resolve().parents[2] / "dashboard" / "dist"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
# Other top-level files (favicon, manifest): short enough that a deploy is picked up within the hour.
SHORT_LIVED: Final = "public, max-age=3600"
NO_CACHE: Final = "no-cache"
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _file(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it is a file inside ``root`` (no traversal), else None."""
    candidate = (root / relative).resolve()
    if candidate.is_file() and candidate.is_relative_to(root):
        return candidate
    return None


def dashboard_routes(directory: Path) -> list[web.RouteDef]:
    """The dashboard's routes if ``directory`` holds a build, else none."""
    root = directory.resolve()
    if not (root / "index.html").is_file():
        return []

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(root / "index.html", headers={**SECURITY_HEADERS, "Cache-Control": NO_CACHE})

    async def asset(request: web.Request) -> web.FileResponse:
        found = _file(root / "assets", request.match_info["path"])
        if found is None:
            raise web.HTTPNotFound()
        return web.FileResponse(found, headers={**SECURITY_HEADERS, "Cache-Control": IMMUTABLE})

    async def top_level(request: web.Request) -> web.FileResponse:
        found = _file(root, request.match_info["name"])
        if found is None or found.name == "index.html":
            raise web.HTTPNotFound()
        return web.FileResponse(found, headers={**SECURITY_HEADERS, "Cache-Control": SHORT_LIVED})

    return [
        web.get("/", index),
        web.get("/assets/{path:.+}", asset),
        web.get("/{name:[^/]+\\.[A-Za-z0-9]+}", top_level),
    ]
