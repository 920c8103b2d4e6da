"""What the hub reads of a request, read so that it is not cached in the request.

aiohttp keeps every property of a request it has computed (``path``, ``query``, ``remote``...) in a
dict of the request, and a WebSocket's request lives as long as its connection. aiohttp fills four
entries of that dict itself; three more make it grow to its next size, about 90 bytes per idle
connection. The same values are read here from the request's URL (which keeps what it parsed in its
own object) and from the transport.
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy


def path_of(request: web.BaseRequest) -> str:
    """``request.path``."""
    return request.rel_url.path


def query_of(request: web.BaseRequest) -> MultiDictProxy[str]:
    """``request.query``."""
    return request.rel_url.query


def peer_host(request: web.BaseRequest) -> str | None:
    """``request.remote``: the socket peer's address (None without a transport or a peer address)."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peername, list | tuple):
        return str(peername[0])
    return str(peername) if peername else None
