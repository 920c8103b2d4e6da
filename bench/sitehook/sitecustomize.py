"""The harness's hooks into a measured gateway that it starts exactly as users do (``python -m gateway``).

Python imports ``sitecustomize`` at start-up from the first ``sys.path`` entry that has one; the harness
puts this directory on ``PYTHONPATH`` of the measured gateway only. Nothing here touches the gateway's
code path; each hook is off unless its variable is set:

- ``BENCH_GC_STATS=<file>``: time every garbage collection (``bench/gcwatch.py``); written at exit and
  on SIGUSR2.
- ``BENCH_UVLOOP_POLICY=1``: only for a ``--baseline-rev`` checkout that predates ``REALTIME_EVENT_LOOP``:
  uvloop's event-loop policy, so that revision's ``run_app`` makes a uvloop loop, as today's gateway does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _install() -> None:
    gc_stats = os.environ.get("BENCH_GC_STATS")
    if gc_stats:
        # gcwatch is imported by file location, not as bench.gcwatch: a baseline checkout is first on sys.path.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        try:
            import gcwatch
        finally:
            sys.path.pop(0)
        gcwatch.install(gc_stats)
    if os.environ.get("BENCH_UVLOOP_POLICY") == "1":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


_install()
