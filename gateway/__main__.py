"""``python -m gateway``: run the gateway until SIGTERM/SIGINT, then shut down in order."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.app import PathOnlyAccessLogger, create_gateway
from gateway.settings import load_settings
from shared.logging import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings(argv, os.environ)
    configure_logging(level=settings.log_level, json_format=settings.log_format == "json")
    logging.getLogger("gateway").info("gateway starting on %s:%d", settings.host, settings.port)
    web.run_app(
        create_gateway(settings),
        host=settings.host,
        port=settings.port,
        access_log_class=PathOnlyAccessLogger,
        shutdown_timeout=settings.shutdown_grace_seconds + 1,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
