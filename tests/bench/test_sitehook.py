"""bench/sitehook: GC timing (and, for old revisions, uvloop) in a process started as users start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.procs import SITE_HOOK


def run_python(code: str, env: dict[str, str], cwd: Path) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SITE_HOOK), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return completed.stdout.strip()


def test_gc_pauses_are_written_at_exit_when_asked_for(tmp_path: Path) -> None:
    stats = tmp_path / "gc.json"
    run_python("import gc; gc.collect()", {"BENCH_GC_STATS": str(stats)}, tmp_path)
    figures = json.loads(stats.read_text())
    assert figures["collections"][2] >= 1 and figures["max_pause_ms"] > 0


def test_nothing_is_installed_without_the_variables(tmp_path: Path) -> None:
    code = "import asyncio, gc; print(len(gc.callbacks), type(asyncio.new_event_loop()).__module__)"
    env = {"BENCH_GC_STATS": "", "BENCH_UVLOOP_POLICY": ""}
    assert run_python(code, env, tmp_path) == "0 asyncio.unix_events"


def test_the_uvloop_policy_is_for_revisions_without_an_event_loop_setting(tmp_path: Path) -> None:
    code = "import asyncio; print(type(asyncio.new_event_loop()).__module__)"
    assert run_python(code, {"BENCH_UVLOOP_POLICY": "1"}, tmp_path) == "uvloop"
