"""The published contracts: ``/asyncapi.json``, ``/openapi.json`` and the page that renders both.

Both documents are generated on their first request from what the app really serves (the route table
of ``request.app``, the hub methods the host dispatches) and the payload catalog, then kept: the route
table is frozen once the app runs. They need the API's token and role (:data:`gateway.paths.CONTRACT_PATHS`):
they describe the admin API and the internal NATS subjects, which are nobody else's business on an
internet-facing Ingress; internal teams read them with a token (``make run`` prints one).

The page at :data:`gateway.paths.API_DOCS_PATH` is public static files of our own (no CDN, no inline
script, the dashboard's Content-Security-Policy): its script fetches both documents with a token from
its address (``#token=``, as ``make run`` prints it), the one the dashboard keeps in this tab's
``sessionStorage``, or one pasted into the page, and renders them as tables.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gateway.http.asyncapi import asyncapi_document
from gateway.http.openapi import openapi_document
from gateway.http.responses import json_response
from gateway.http.static_site import NO_CACHE, SECURITY_HEADERS
from gateway.hub.dispatcher import HubMethod
from gateway.paths import API_DOCS_PATH, ASYNCAPI_PATH, OPENAPI_PATH

PAGE_DIR: Final = Path(__file__).resolve().parent / "api_docs_page"
# The page's files, by the name they are served under (below API_DOCS_PATH) and their content type.
PAGE_FILES: Final = {
    "": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}


def package_version() -> str:
    try:
        return importlib.metadata.version("realtime-admin")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "0.0.0+checkout"


class ApiDocs:
    """Serves the generated documents and their page."""

    def __init__(self, *, hub_methods: Callable[[], Sequence[HubMethod[Any]]], version: str | None = None) -> None:
        self._hub_methods = hub_methods
        self._version = version or package_version()
        self._documents: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[web.RouteDef]:
        pages = [web.get(API_DOCS_PATH + suffix, self._page_file(*entry)) for suffix, entry in PAGE_FILES.items()]
        return [web.get(ASYNCAPI_PATH, self.asyncapi), web.get(OPENAPI_PATH, self.openapi), *pages]

    def asyncapi_of(self) -> dict[str, Any]:
        if ASYNCAPI_PATH not in self._documents:
            self._documents[ASYNCAPI_PATH] = asyncapi_document(self._hub_methods(), version=self._version)
        return self._documents[ASYNCAPI_PATH]

    def openapi_of(self, router: web.UrlDispatcher) -> dict[str, Any]:
        if OPENAPI_PATH not in self._documents:
            routes = [(route.method, route.resource.canonical) for route in router.routes() if route.resource]
            self._documents[OPENAPI_PATH] = openapi_document(routes, version=self._version)
        return self._documents[OPENAPI_PATH]

    async def asyncapi(self, request: web.Request) -> web.Response:
        return json_response(self.asyncapi_of(), headers={"Cache-Control": NO_CACHE})

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(self.openapi_of(request.app.router), headers={"Cache-Control": NO_CACHE})

    def _page_file(self, name: str, content_type: str) -> Callable[[web.Request], Any]:
        async def serve(request: web.Request) -> web.Response:
            body = (PAGE_DIR / name).read_bytes()
            headers = {**SECURITY_HEADERS, "Cache-Control": NO_CACHE}
            return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

        return serve
