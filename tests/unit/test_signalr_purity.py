"""The codec package must stay free of I/O: importing it pulls in no event loop, network or thread module."""

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("asyncio", "aiohttp", "nats", "socket", "threading")


def test_importing_gateway_signalr_loads_no_io_module() -> None:
    code = f"import sys, gateway.signalr\nprint(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == ""


def test_codec_modules_import_nothing_forbidden_by_name() -> None:
    sources = (PROJECT_ROOT / "gateway" / "signalr").glob("*.py")
    mine = {
        "__init__",
        "messages",
        "errors",
        "framing",
        "handshake",
        "json_protocol",
        "msgpack_protocol",
        "protocol",
    }
    for path in sources:
        if path.stem not in mine:
            continue
        text = path.read_text()
        for name in FORBIDDEN:
            assert f"import {name}" not in text, path
            assert f"from {name}" not in text, path
