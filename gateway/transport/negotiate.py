"""``POST /hubs/admin/negotiate``: hands out a connection id and a signed connection token.

Version selection follows ASP.NET: no ``negotiateVersion`` means 0 (pysignalr, signalrcore), a
higher request is answered with 1, a non-integer or negative one gets a JSON ``error`` with HTTP
200. The configured transports are advertised in the spec's order (Server-Sent Events carries Text
only). ``useStatefulReconnect: true`` is answered only when the client asked for it and the server
offers it, as ASP.NET does (the JS client refuses it unasked).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from gateway.http.responses import json_response
from gateway.paths import NEGOTIATE_PATH
from gateway.transport.admission import Admission
from gateway.transport.connection_token import ConnectionTokenSigner

MAX_NEGOTIATE_VERSION: Final = 1
TRANSFER_FORMATS: Final = {
    "WebSockets": ["Text", "Binary"],
    "ServerSentEvents": ["Text"],
    "LongPolling": ["Text", "Binary"],
}
NO_CACHE: Final = {"Cache-Control": "no-cache, no-store"}


def query_value(request: web.Request, name: str) -> str | None:
    """Query parameters are matched case-insensitively, as ASP.NET does."""
    wanted = name.lower()
    for key, value in request.query.items():
        if key.lower() == wanted:
            return value
    return None


def query_flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter as ASP.NET reads it (``true`` in any case)."""
    return (query_value(request, name) or "").strip().lower() == "true"


def select_version(raw: str | None) -> int | str:
    """The version to answer with, or the error text for the client."""
    if raw is None:
        return 0
    try:
        requested = int(raw)
    except ValueError:
        return "The client requested a non-integer protocol version."
    if requested < 0:
        return f"The client requested version '{requested}', but the server does not support this version."
    return min(requested, MAX_NEGOTIATE_VERSION)


class NegotiateEndpoint:
    """Issues connection tokens any replica can verify (see :mod:`gateway.transport.connection_token`)."""

    def __init__(
        self,
        *,
        admission: Admission,
        signer: ConnectionTokenSigner,
        transports: Sequence[str],
        offer_stateful_reconnect: bool,
    ) -> None:
        self._admission = admission
        self._signer = signer
        self._available = tuple({"transport": name, "transferFormats": TRANSFER_FORMATS[name]} for name in transports)
        # The JS client resumes only over WebSockets.
        self._offer_stateful = offer_stateful_reconnect and "WebSockets" in transports

    def routes(self) -> list[web.RouteDef]:
        return [web.post(NEGOTIATE_PATH, self.negotiate)]

    async def negotiate(self, request: web.Request) -> web.Response:
        user_id = (await self._admission.principal(request)).user_id
        refusal = self._admission.refuse_negotiate(request, user_id)
        if refusal is not None:
            return refusal
        version = select_version(query_value(request, "negotiateVersion"))
        if isinstance(version, str):
            return json_response({"error": version}, headers=NO_CACHE)
        stateful = self._offer_stateful and query_flag(request, "useStatefulReconnect")
        negotiated = self._signer.issue(user_id=user_id, negotiate_version=version, stateful=stateful)
        body: dict[str, Any] = {}
        if stateful:
            body["useStatefulReconnect"] = True
        body["negotiateVersion"] = version
        body["connectionId"] = negotiated.connection_id
        if version > 0:
            body["connectionToken"] = negotiated.connection_token
        body["availableTransports"] = self._available
        return json_response(body, headers=NO_CACHE)
