"""Connection tokens that any replica can verify: no session affinity, no shared memory.

A token is ``<connectionId>.<expiry hex>.<negotiate version>[s].<owner>.<mac>``: the MAC
(HMAC-SHA256, truncated to 128 bits) covers the other parts and the user id of the access token that
negotiated it, so a token leaked to another user is useless, and it starts no transport after the
connect window. ``owner`` names the replica that negotiated it: the long-polling and SSE requests of
the connection are served there, whichever replica receives them. ``s`` marks a connection that
negotiated stateful reconnect. Every character is URL-safe because the JS client appends the token to
the URL unencoded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# 16 random bytes, base64url without padding: 22 characters, as ASP.NET makes connection ids.
_ID_BYTES: Final = 16
_MAC_BYTES: Final = 16
_STATEFUL_FLAG: Final = "s"
_VERSION_FIELD: Final = re.compile(r"(\d+)(s?)")
# A replica key is one subject token and URL-safe (see :func:`broker_bridge.keyvalue.replica_key`).
_OWNER: Final = re.compile(r"[-_A-Za-z0-9]+")


class InvalidConnectionToken(Exception):
    """The ``id`` query value is unknown, forged, expired or was issued to another user."""


@dataclass(frozen=True, slots=True)
class NegotiatedConnection:
    """What negotiate hands out: the public id, the value for ``id=``, the negotiate version, the
    replica that owns the connection and whether it negotiated stateful reconnect."""

    connection_id: str
    connection_token: str
    negotiate_version: int
    owner: str
    stateful: bool = False

    @property
    def key(self) -> str:
        """The random id inside the token (for version 0 the public id is the whole token)."""
        return self.connection_token.split(".", 1)[0]


def new_connection_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(_ID_BYTES)).rstrip(b"=").decode()


def derive_secret(material: bytes) -> bytes:
    """A key for connection tokens derived from other key material (domain-separated)."""
    return hmac.new(material, b"realtime-admin connection token v1", hashlib.sha256).digest()


class ConnectionTokenSigner:
    """Issues tokens owned by this replica and checks tokens of any replica, with a shared key."""

    def __init__(self, *, secret: bytes, ttl_seconds: float, replica: str, clock: Callable[[], float]) -> None:
        if not _OWNER.fullmatch(replica):
            raise ValueError("replica must be a replica key ([-_A-Za-z0-9]+)")
        self._secret = secret
        self._ttl = ttl_seconds
        self._replica = replica
        self._clock = clock

    @property
    def replica(self) -> str:
        return self._replica

    def _mac(self, body: str, user_id: str | None) -> str:
        message = f"{body}|{user_id or ''}".encode(errors="surrogatepass")
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).rstrip(b"=").decode()

    def issue(self, *, user_id: str | None, negotiate_version: int, stateful: bool = False) -> NegotiatedConnection:
        connection_id = new_connection_id()
        version = f"{negotiate_version}{_STATEFUL_FLAG if stateful else ''}"
        body = f"{connection_id}.{int(self._clock() + self._ttl):x}.{version}.{self._replica}"
        token = f"{body}.{self._mac(body, user_id)}"
        # Version 0 clients (pysignalr, signalrcore) connect with ?id=<connectionId>, so there the
        # public id is the token itself, as in ASP.NET where token = id for version 0.
        public_id = connection_id if negotiate_version > 0 else token
        return NegotiatedConnection(public_id, token, negotiate_version, self._replica, stateful)

    def fresh(self, negotiated: NegotiatedConnection) -> bool:
        """Whether the token is still inside its connect window (it may start a transport)."""
        expiry_hex = negotiated.connection_token.split(".")[1]
        return self._clock() <= int(expiry_hex, 16)

    def verify(self, token: str, *, user_id: str | None, allow_expired: bool = False) -> NegotiatedConnection:
        """The connection a token names; ``allow_expired`` accepts a token past its connect window (a
        stateful connection resuming, whose life is kept in NATS, not in the token)."""
        parts = token.split(".")
        if len(parts) != 5:
            raise InvalidConnectionToken
        connection_id, expiry_hex, version_text, owner, mac = parts
        body = f"{connection_id}.{expiry_hex}.{version_text}.{owner}"
        if not hmac.compare_digest(mac.encode(), self._mac(body, user_id).encode()):
            raise InvalidConnectionToken
        version_match = _VERSION_FIELD.fullmatch(version_text)
        if version_match is None or not _OWNER.fullmatch(owner):
            raise InvalidConnectionToken
        try:
            expires_at = int(expiry_hex, 16)
        except ValueError:
            raise InvalidConnectionToken from None
        if self._clock() > expires_at and not allow_expired:
            raise InvalidConnectionToken
        version = int(version_match.group(1))
        public_id = connection_id if version > 0 else token
        return NegotiatedConnection(public_id, token, version, owner, bool(version_match.group(2)))
