"""The client IP: the peer, or behind trusted proxies the first untrusted X-Forwarded-For hop from the right."""

from __future__ import annotations

import ipaddress
from unittest import mock

from aiohttp.test_utils import make_mocked_request

from gateway.http.client_address import UNKNOWN, ClientAddress

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def of(resolver: ClientAddress, peer: str | None, forwarded: str | None = None) -> str:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    # The transport reports the peer address through get_extra_info, as a real one does.
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 1234) if name == "peername" and peer else default
    )
    return resolver.of(make_mocked_request("GET", "/", headers=headers, transport=transport))


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() -> None:
    assert of(ClientAddress(()), "203.0.113.5", "198.51.100.1") == "203.0.113.5"


def test_an_untrusted_peer_cannot_forward() -> None:
    assert of(ClientAddress(PROXIES), "203.0.113.5", "198.51.100.1") == "203.0.113.5"


def test_a_trusted_proxy_names_the_client() -> None:
    assert of(ClientAddress(PROXIES), "10.1.2.3", "198.51.100.1") == "198.51.100.1"


def test_the_rightmost_untrusted_hop_wins_over_a_forged_left_part() -> None:
    chain = "1.1.1.1, 198.51.100.7, 10.0.0.9"  # client forged 1.1.1.1; proxies appended the rest
    assert of(ClientAddress(PROXIES), "10.1.2.3", chain) == "198.51.100.7"


def test_garbage_stops_at_the_last_trusted_hop() -> None:
    assert of(ClientAddress(PROXIES), "10.1.2.3", "not-an-ip, 10.0.0.9") == "10.0.0.9"


def test_ipv4_mapped_ipv6_is_normalised_and_unknown_peers_are_counted_together() -> None:
    assert of(ClientAddress(()), "::ffff:203.0.113.9") == "203.0.113.9"
    assert of(ClientAddress(()), None) == UNKNOWN
