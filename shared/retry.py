"""Retrying a start-up step with backoff until it succeeds (stop it by cancelling the caller)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# The first retry comes quickly (a leader election or a restart takes about a second); later ones
# back off so a long outage costs a log line every few seconds, not a busy loop.
FIRST_DELAY_SECONDS: Final = 0.5
MAX_DELAY_SECONDS: Final = 5.0


async def retry_until_done(
    action: Callable[[], Awaitable[T]],
    *,
    what: str,
    retriable: tuple[type[BaseException], ...],
    first_delay: float = FIRST_DELAY_SECONDS,
    max_delay: float = MAX_DELAY_SECONDS,
) -> T:
    """Run ``action`` until it returns; after a ``retriable`` error log one line (no traceback) and
    wait, doubling the wait up to ``max_delay``. Other errors propagate."""
    delay = first_delay
    while True:
        try:
            return await action()
        except retriable as error:
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(error).__name__, error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
