"""Background tasks whose failures are seen: logged with their exception, never swallowed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


def start_background(name: str, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coroutine`` as a task named ``name``; if it ever fails, log the error with its traceback."""
    task = asyncio.create_task(coroutine, name=name)
    task.add_done_callback(_report_failure)
    return task


def _report_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("background task %s failed", task.get_name(), exc_info=error)


async def stop_background(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end; a failure it had is already logged by its callback."""
    task.cancel()
    await asyncio.wait({task})
