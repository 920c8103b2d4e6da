"""The gateway's layers import only downwards, and the protocol package stays free of I/O.

``gateway.signalr`` (the protocol) < ``gateway.hub`` < ``gateway.http`` < ``gateway.transport`` < the
composition root (``gateway.app``, ``gateway.__main__``). Checked on the import statements of every
module, and, for the protocol, also by importing it in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
IO_MODULES = ("asyncio", "aiohttp", "nats", "socket", "threading", "selectors", "uvloop")
# Each layer and the gateway modules it may import (besides its own).
ALLOWED: dict[str, tuple[str, ...]] = {
    "gateway.signalr": (),
    "gateway.hub": ("gateway.signalr", "gateway.auth", "gateway.metrics"),
    "gateway.http": ("gateway.signalr", "gateway.hub", "gateway.auth", "gateway.metrics", "gateway.paths"),
    "gateway.transport": (
        "gateway.signalr",
        "gateway.hub",
        "gateway.http",
        "gateway.auth",
        "gateway.metrics",
        "gateway.paths",
    ),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from gateway import paths`` imports gateway.paths; a name from a module keeps that module's prefix.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules_of(layer: str) -> list[Path]:
    paths = sorted((GATEWAY / layer.removeprefix("gateway.")).glob("*.py"))
    assert paths, f"{layer} has no modules"
    return paths


@pytest.mark.parametrize("layer", list(ALLOWED))
def test_layer_imports_only_layers_below(layer: str) -> None:
    allowed = (layer, *ALLOWED[layer])
    for path in modules_of(layer):
        for module in imported_modules(path):
            if module.startswith("gateway"):
                assert module.startswith(allowed), f"{path.relative_to(ROOT)} imports {module}"


def test_the_hub_never_sees_a_socket() -> None:
    for path in modules_of("gateway.hub"):
        for module in imported_modules(path):
            assert not module.startswith(("aiohttp", "gateway.transport")), f"{path.name} imports {module}"


def test_every_protocol_module_imports_no_io() -> None:
    for path in modules_of("gateway.signalr"):
        for module in imported_modules(path):
            assert module.split(".")[0] not in IO_MODULES, f"{path.name} imports {module}"


def test_importing_the_protocol_loads_no_io_module() -> None:
    modules = ", ".join(
        f"gateway.signalr.{path.stem}" for path in modules_of("gateway.signalr") if path.stem != "__init__"
    )
    code = f"import sys, {modules}\nprint(','.join(m for m in {IO_MODULES!r} if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == ""
