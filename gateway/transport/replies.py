"""Answers at the hub path as data: an operation on a connection ends in a :class:`Reply`, which the
replica that received the request writes, whether it ran the operation or forwarded it. The texts
are ASP.NET Core's (:mod:`gateway.transport.answers`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import hdrs, web

from gateway.transport.answers import UNKNOWN_CONNECTION

TEXT: Final = "text/plain"
OCTET_STREAM: Final = "application/octet-stream"
# What ASP.NET puts on polls, so no cache between the client and the server keeps one.
NO_CACHE: Final[dict[str, str]] = {
    "Cache-Control": "no-cache, no-store",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """Status, body and the headers that matter of one answer at the hub path."""

    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), TEXT, headers or {})

    @classmethod
    def of(cls, response: web.Response) -> Reply:
        """A response built elsewhere (an admission refusal), kept as data."""
        body = response.body
        kept = {str(name): value for name, value in response.headers.items() if name in _KEPT_HEADERS}
        return cls(response.status, body if isinstance(body, bytes) else b"", response.content_type, kept)

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type=self.content_type, headers=self.headers)


# Headers a refusal carries that must survive being forwarded (the rest aiohttp sets again).
_KEPT_HEADERS: Final = frozenset({hdrs.RETRY_AFTER, hdrs.CACHE_CONTROL, hdrs.PRAGMA, hdrs.EXPIRES})


def unknown_connection() -> Reply:
    return Reply.text(404, UNKNOWN_CONNECTION)


def poll_reply(status: int, body: bytes = b"") -> Reply:
    """A long poll's answer: 200 with data (or empty at the poll timeout), 204 when the poll is over."""
    return Reply(status, body, OCTET_STREAM if status == 200 else TEXT, NO_CACHE)
