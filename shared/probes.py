"""The probe endpoints both processes serve: ``/healthz`` (alive), ``/readyz`` (ready), ``/metrics``.

``/healthz`` answers 200 as long as the process serves HTTP. ``/readyz`` answers 200 when every check
registered on the :class:`Readiness` holds, else 503 naming the checks that fail (``not ready: nats``).
``/metrics`` is the Prometheus text format of one registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HEALTHZ_PATH: Final = "/healthz"
READYZ_PATH: Final = "/readyz"
METRICS_PATH: Final = "/metrics"


class Readiness:
    """Named conditions that must all hold before the process takes traffic."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}

    def require(self, name: str, check: Callable[[], bool]) -> None:
        """Add a condition; ``name`` is what ``/readyz`` reports while it does not hold."""
        self._checks[name] = check

    def unmet(self) -> list[str]:
        return [name for name, check in self._checks.items() if not check()]

    @property
    def ready(self) -> bool:
        return not self.unmet()


def probe_routes(
    *, readiness: Readiness, registry: CollectorRegistry, before_scrape: Callable[[], None] | None = None
) -> list[web.RouteDef]:
    """The three probe routes; ``before_scrape`` refreshes gauges that are read rather than pushed."""

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        unmet = readiness.unmet()
        if not unmet:
            return web.Response(text="ready")
        return web.Response(status=503, text=f"not ready: {', '.join(unmet)}")

    async def metrics(request: web.Request) -> web.Response:
        if before_scrape is not None:
            before_scrape()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get(HEALTHZ_PATH, healthz), web.get(READYZ_PATH, readyz), web.get(METRICS_PATH, metrics)]


async def serve_probes(routes: list[web.RouteDef], *, host: str, port: int) -> web.AppRunner:
    """Serve ``routes`` on their own port (a process without another HTTP server); cleanup() stops it."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
