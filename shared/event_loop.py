"""Which event loop a process runs on: uvloop where it is installed, else asyncio's own.

The ``event_loop`` setting (``--event-loop``, ``REALTIME_EVENT_LOOP``) is ``auto``, ``uvloop`` or
``asyncio``. :func:`choose_event_loop` turns it into an :class:`EventLoopChoice` (a name, a version
and a loop factory for ``asyncio.Runner`` or ``aiohttp.web.run_app``); asking for uvloop where it
cannot be imported is :class:`EventLoopUnavailable`, which :func:`choose_event_loop_or_exit` turns
into one line on stderr and exit status 2. :func:`running_event_loop` names the loop that actually
runs, for the start-up log line and the ``*_event_loop_info`` metrics.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import platform
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

EVENT_LOOP_SETTINGS: Final = ("auto", "uvloop", "asyncio")
# Exit status of a usage error (argparse uses the same).
USAGE_ERROR_STATUS: Final = 2

LoopName = Literal["uvloop", "asyncio"]
T = TypeVar("T")


class EventLoopUnavailable(Exception):
    """uvloop was asked for (``requested``) but cannot be imported (``reason``)."""

    def __init__(self, requested: str, reason: str) -> None:
        super().__init__(f"event loop {requested!r} is not available: {reason}")
        self.requested = requested
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EventLoopChoice:
    """The loop a process will run on and how to make it."""

    name: LoopName
    version: str
    new_loop: Callable[[], asyncio.AbstractEventLoop]

    @property
    def description(self) -> str:
        return f"{self.name} {self.version}"


def _asyncio_choice() -> EventLoopChoice:
    return EventLoopChoice("asyncio", platform.python_version(), asyncio.new_event_loop)


def choose_event_loop(requested: str) -> EventLoopChoice:
    """``auto``: uvloop when importable, else asyncio; ``uvloop``: uvloop or :class:`EventLoopUnavailable`."""
    if requested == "asyncio":
        return _asyncio_choice()
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as error:
        if requested == "auto":
            return _asyncio_choice()
        raise EventLoopUnavailable(requested, f"{error} (install uvloop, or set REALTIME_EVENT_LOOP=asyncio)") from None
    return EventLoopChoice("uvloop", str(uvloop.__version__), uvloop.new_event_loop)


def choose_event_loop_or_exit(requested: str, *, prog: str) -> EventLoopChoice:
    """:func:`choose_event_loop`, or one line on stderr and exit status 2 (no traceback)."""
    try:
        return choose_event_loop(requested)
    except EventLoopUnavailable as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR_STATUS) from None


def run_on_event_loop(
    requested: str, main: Callable[[], Coroutine[Any, Any, T]], *, prog: str, log: logging.Logger | None = None
) -> T:
    """Run ``main()`` to the end on the chosen loop (``asyncio.run`` with a loop factory); ``log`` says which."""
    choice = choose_event_loop_or_exit(requested, prog=prog)
    if log is not None:
        log.info("event loop: %s", choice.description)
    with asyncio.Runner(loop_factory=choice.new_loop) as runner:
        return runner.run(main())


def running_event_loop() -> tuple[LoopName, str]:
    """The kind and version of the loop running now (uvloop's ``Loop`` class lives in ``uvloop``)."""
    module = type(asyncio.get_running_loop()).__module__
    if module.split(".")[0] == "uvloop":
        return "uvloop", str(getattr(sys.modules["uvloop"], "__version__", "unknown"))
    return "asyncio", platform.python_version()
