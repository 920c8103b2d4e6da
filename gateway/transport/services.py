"""What the hub endpoint and every transport share: admitting a connection and registering it with the hub.

Built once per replica (:func:`gateway.app.build_gateway`) and handed to the WebSocket transport, the HTTP
transports' connection table (:class:`gateway.transport.http_connections.HttpConnections`) and the hub
endpoint, so that every transport admits a connection under the same limits, claims and signed tokens, and
turns a negotiated connection into a :class:`HubSession` the same way (:meth:`TransportServices.session`).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth import Principal
from gateway.hub.host import HubHost
from gateway.hub.outbound import TransportLink
from gateway.hub.session import HubSession
from gateway.signalr.connection import ServerConnection
from gateway.transport.admission import Admission
from gateway.transport.claims import ConnectionClaims
from gateway.transport.connection_token import ConnectionTokenSigner, NegotiatedConnection


@dataclass(frozen=True, slots=True)
class TransportServices:
    """The hub host, admission, cross-replica claims and the connection-token signer every transport uses.

    ``token_leeway_seconds`` is how long past its access token's expiry a session stays open
    (the JWT leeway).
    """

    host: HubHost
    admission: Admission
    claims: ConnectionClaims
    signer: ConnectionTokenSigner
    token_leeway_seconds: float

    def session(
        self,
        negotiated: NegotiatedConnection,
        connection: ServerConnection,
        link: TransportLink,
        *,
        principal: Principal,
        client_ip: str,
        transport: str,
    ) -> HubSession:
        """The hub session of ``negotiated`` on ``connection``, written through ``link``; ``transport`` is its
        label (``realtime_connections{transport}``)."""
        return HubSession(
            connection=connection,
            connection_id=negotiated.connection_id,
            connection_token=negotiated.connection_token,
            principal=principal,
            client_ip=client_ip,
            transport=transport,
            link=link,
            token_leeway_seconds=self.token_leeway_seconds,
        )
