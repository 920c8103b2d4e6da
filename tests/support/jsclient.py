"""Runs ``tests/js/hub_client.mjs`` (the official ``@microsoft/signalr`` client under Node) from pytest.

The script prints one JSON object describing what the client saw; :func:`run_js` returns it. Node or
the pinned packages missing is a test failure with instructions, never a skip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from scripts.processes import ROOT

SCRIPT = ROOT / "tests" / "js" / "hub_client.mjs"
NODE_MODULES = ROOT / "tests" / "node_modules" / "@microsoft" / "signalr"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the interop tests need Node >= 18 (see README, `make test`)")
    if not Path(NODE_MODULES).is_dir():
        raise RuntimeError("tests/node_modules is missing: run `npm ci --prefix tests` (`make test` does)")
    return node


async def run_js(scenario: str, *, limit_seconds: float = 30.0, **options: Any) -> dict[str, Any]:
    """Run one scenario of the Node client; ``options`` become its JSON options (see the script header)."""
    options.setdefault("timeoutMs", int((limit_seconds - 2) * 1000))
    process = await asyncio.create_subprocess_exec(
        node_binary(),
        str(SCRIPT),
        scenario,
        json.dumps(options),
        cwd=SCRIPT.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), limit_seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"node scenario {scenario!r} did not finish within {limit_seconds}s") from None
    if process.returncode != 0 or not stdout.strip():
        raise AssertionError(
            f"node scenario {scenario!r} exited with {process.returncode}\n"
            f"stdout: {stdout!r}\nstderr: {stderr.decode()}"
        )
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    if "fatal" in result:
        raise AssertionError(f"node scenario {scenario!r} failed: {result['fatal']}\n{json.dumps(result, indent=1)}")
    return result
