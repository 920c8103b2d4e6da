"""One transport per negotiated connection, across every replica.

A connection token is valid for the connect window on any replica; without more, a client could open
several sockets with it one after another. The first transport to start a connection creates the
connection's key in a shared KV bucket (an atomic create); any later attempt, on any replica, finds it
and is refused with 409. Entries expire with the token, so the bucket stays small.
"""

from __future__ import annotations

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import KeyValueStore


class ClaimsUnavailable(Exception):
    """The shared bucket cannot be reached (not open yet, or NATS is down): start nothing."""


class ConnectionClaims:
    """Claims connection ids in a :class:`KeyValueStore` attached once it is open."""

    def __init__(self, *, replica_id: str, store: KeyValueStore | None = None) -> None:
        self._owner = replica_id.encode()
        self._store = store

    def attach(self, store: KeyValueStore) -> None:
        self._store = store

    async def claim(self, connection_id: str) -> bool:
        """True for the first claim of ``connection_id``, False for every later one (on any replica).

        Raises :class:`ClaimsUnavailable` when the bucket cannot answer.
        """
        if self._store is None:
            raise ClaimsUnavailable
        try:
            return await self._store.create(connection_id, self._owner)
        except BrokerUnavailable as error:
            raise ClaimsUnavailable from error
