"""Serves the built dashboard (``dashboard/dist``) at ``/``; the hub and API paths are unaffected.

``index.html`` is never cached (it names the current asset files); files under ``/assets/`` have
content hashes in their names, so browsers may keep them for a year.
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
        return web.FileResponse(root / "index.html", headers={"Cache-Control": NO_CACHE})

    async def asset(request: web.Request) -> web.FileResponse:
        found = _file(root / "assets", request.match_info["path"])
        if found is None:
            raise web.HTTPNotFound()
        return web.FileResponse(found, headers={"Cache-Control": IMMUTABLE})

    async def top_level(request: web.Request) -> web.FileResponse:
        found = _file(root, request.match_info["name"])
        if found is None or found.name == "index.html":
            raise web.HTTPNotFound()
        return web.FileResponse(found, headers={"Cache-Control": SHORT_LIVED})

    return [
        web.get("/", index),
        web.get("/assets/{path:.+}", asset),
        web.get("/{name:[^/]+\\.[A-Za-z0-9]+}", top_level),
    ]
