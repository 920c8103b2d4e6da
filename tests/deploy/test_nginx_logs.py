"""The local nginx (deploy/local/nginx.conf.template) never writes a query string to its access log: the hub's
WebSocket URL carries ``?access_token=<JWT>``. Checked in the template's text, and by running nginx with the
rendered template in front of a small upstream and reading the log (skipped where nginx is not installed)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from scripts.processes import ROOT, free_port, port_open

TEMPLATE = ROOT / "deploy" / "local" / "nginx.conf.template"
# nginx variables that hold the query string or a whole URL.
QUERY_VARIABLES = ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$is_args", "$http_referer")
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl-secret-part"


def log_formats(config: str) -> dict[str, str]:
    """``log_format name '...' '...';`` -> {name: the format text}."""
    formats = {}
    for match in re.finditer(r"log_format\s+(\S+)\s+((?:'[^']*'\s*)+);", config):
        formats[match.group(1)] = "".join(re.findall(r"'([^']*)'", match.group(2)))
    return formats


def test_every_access_log_uses_a_format_without_the_query_string() -> None:
    config = TEMPLATE.read_text()
    formats = log_formats(config)
    assert formats, "the template defines no log_format"
    for name, text in formats.items():
        assert "$uri" in text, name
        for variable in QUERY_VARIABLES:
            assert variable not in text + " ", f"log_format {name} logs {variable.strip()}"
    access_logs = re.findall(r"^\s*access_log\s+([^;]+);", config, re.MULTILINE)
    assert access_logs
    for directive in access_logs:
        parts = directive.split()
        assert parts[0] == "off" or (len(parts) >= 2 and parts[1] in formats), f"access_log {directive}"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def test_nginx_logs_the_path_without_the_token(tmp_path: Path, upstream: int) -> None:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (`make cluster-nginx` installs it)")
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / sub).mkdir(parents=True)
    port = free_port()
    values = {
        "user": "user root root;" if os.geteuid() == 0 else "",
        "dir": str(tmp_path),
        "lb_port": str(port),
        "upstream_servers": f"        server 127.0.0.1:{upstream};",
    }
    config = TEMPLATE.read_text()
    for key, value in values.items():
        config = config.replace("{{" + key + "}}", value)
    assert not re.search(r"\{\{\w+\}\}", config), "a placeholder this test does not fill in"
    (tmp_path / "nginx.conf").write_text(config)
    error_log = tmp_path / "error.log"
    nginx = await asyncio.create_subprocess_exec(
        binary, "-p", str(tmp_path), "-e", str(error_log), "-c", str(tmp_path / "nginx.conf")
    )
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not port_open(port):
            assert nginx.returncode is None, error_log.read_text()
            assert asyncio.get_running_loop().time() < deadline, "nginx did not start"
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/hubs/admin?id=abc&access_token={TOKEN}"
            async with http.get(url, headers={"Referer": f"http://127.0.0.1/?access_token={TOKEN}"}) as response:
                assert response.status == 200
    finally:
        nginx.terminate()
        await nginx.wait()
    access_log = (tmp_path / "access.log").read_text()
    assert '"GET /hubs/admin HTTP/1.1" 200' in access_log
    assert "access_token" not in access_log and "eyJ" not in access_log
