"""Connection tokens that any replica can verify: no session affinity, no shared memory.

A token is ``<connectionId>.<expiry hex>.<negotiate version>.<mac>``: the MAC (HMAC-SHA256,
truncated to 128 bits) covers the other parts and the user id of the access token that
negotiated it, so a token leaked to another user is useless, and it expires after the connect
window. Every character is URL-safe because the JS client appends the token to the URL unencoded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# 16 random bytes, base64url without padding: 22 characters, as ASP.NET makes connection ids.
_ID_BYTES: Final = 16
_MAC_BYTES: Final = 16


class InvalidConnectionToken(Exception):
    """The ``id`` query value is unknown, forged, expired or was issued to another user."""


@dataclass(frozen=True, slots=True)
class NegotiatedConnection:
    """What negotiate hands out: the public id, the value for ``id=`` and the negotiate version."""

    connection_id: str
    connection_token: str
    negotiate_version: int

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
    """Issues and checks connection tokens with a key shared by all replicas."""

    def __init__(self, *, secret: bytes, ttl_seconds: float, clock: Callable[[], float]) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock

    def _mac(self, body: str, user_id: str | None) -> str:
        message = f"{body}|{user_id or ''}".encode(errors="surrogatepass")
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).rstrip(b"=").decode()

    def issue(self, *, user_id: str | None, negotiate_version: int) -> NegotiatedConnection:
        connection_id = new_connection_id()
        body = f"{connection_id}.{int(self._clock() + self._ttl):x}.{negotiate_version}"
        token = f"{body}.{self._mac(body, user_id)}"
        # Version 0 clients (pysignalr, signalrcore) connect with ?id=<connectionId>, so there the
        # public id is the token itself, as in ASP.NET where token = id for version 0.
        public_id = connection_id if negotiate_version > 0 else token
        return NegotiatedConnection(public_id, token, negotiate_version)

    def verify(self, token: str, *, user_id: str | None) -> NegotiatedConnection:
        parts = token.split(".")
        if len(parts) != 4:
            raise InvalidConnectionToken
        connection_id, expiry_hex, version_text, mac = parts
        body = f"{connection_id}.{expiry_hex}.{version_text}"
        if not hmac.compare_digest(mac.encode(), self._mac(body, user_id).encode()):
            raise InvalidConnectionToken
        try:
            expires_at = int(expiry_hex, 16)
            version = int(version_text)
        except ValueError:
            raise InvalidConnectionToken from None
        if self._clock() > expires_at:
            raise InvalidConnectionToken
        public_id = connection_id if version > 0 else token
        return NegotiatedConnection(public_id, token, version)
