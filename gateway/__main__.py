"""``python -m gateway``: run the gateway until SIGTERM/SIGINT, then shut down in order."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.app import PathOnlyAccessLogger, create_gateway
from gateway.settings import load_settings
from shared.event_loop import choose_event_loop_or_exit
from shared.logging import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings(argv, os.environ)
    configure_logging(level=settings.log_level, json_format=settings.log_format == "json")
    event_loop = choose_event_loop_or_exit(settings.event_loop, prog="python -m gateway")
    log = logging.getLogger("gateway")
    log.info("gateway starting on %s:%d", settings.host, settings.port)
    log.info("event loop: %s", event_loop.description)
    web.run_app(
        create_gateway(settings),
        host=settings.host,
        port=settings.port,
        access_log_class=PathOnlyAccessLogger,
        shutdown_timeout=settings.shutdown_grace_seconds + 1,
        print=None,
        loop=event_loop.new_loop(),  # run_app runs it to the end and closes it
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
