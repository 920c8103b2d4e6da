"""Logging set-up: one line per record, text or JSON, and no secrets.

Access logs drop the query string (it may hold ``access_token``) and never print headers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from shared import jsoncodec
from shared.timeutil import iso_utc

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; ``extra=`` fields become keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": iso_utc(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return jsoncodec.dumps(entry).decode()


class ScrubRequestErrors(logging.Filter):
    """aiohttp logs unparsable requests with a traceback and the raw bytes, which may include an
    ``Authorization`` header; keep only the error's type (other errors keep their traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error_type = record.exc_info[0] if record.exc_info else None
        if error_type is not None and error_type.__module__ == "aiohttp.http_exceptions":
            record.msg, record.args = "rejected a malformed request: %s", (error_type.__name__,)
            record.exc_info, record.exc_text = None, None
        return True


def configure_logging(*, level: str, json_format: bool) -> None:
    logging.getLogger("aiohttp.server").addFilter(ScrubRequestErrors())
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
