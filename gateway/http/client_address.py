"""Which address a request comes from, behind trusted proxies or not.

The peer address is the client unless the peer is a trusted proxy (``REALTIME_TRUSTED_PROXIES``).
Then ``X-Forwarded-For`` is read from the right: each proxy appends the address it received from, so
the first address that is not itself a trusted proxy is the client. A client cannot forge its address
by sending its own ``X-Forwarded-For``: it is to the left of what the trusted proxies appended.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from typing import Final

from aiohttp import hdrs, web

from gateway.http.request_parts import peer_host

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# What the limits count requests without a usable peer address under (unix sockets, tests).
UNKNOWN: Final = "unknown"


class ClientAddress:
    """Resolves the client IP of a request, as a normalised string: an interned one, since every
    connection keeps it for its per-IP limit and many may come from one address (a NAT, a proxy)."""

    def __init__(self, trusted_proxies: Sequence[IPNetwork]) -> None:
        self._trusted = tuple(trusted_proxies)

    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self._trusted)

    def of(self, request: web.BaseRequest) -> str:
        peer = _parse(peer_host(request))
        if peer is None:
            return UNKNOWN
        if not self._trusted or not self._is_trusted(peer):
            return sys.intern(str(peer))
        forwarded = ",".join(request.headers.getall(hdrs.X_FORWARDED_FOR, ()))
        client = peer
        for item in reversed(forwarded.split(",")):
            address = _parse(item.strip())
            if address is None:
                break  # garbage: stop at the last trusted hop rather than believe anything further left
            client = address
            if not self._is_trusted(address):
                break
        return sys.intern(str(client))


def _parse(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
