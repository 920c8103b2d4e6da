"""Signing keys with a ``kid`` for tests: their public JWK, a JWKS of several, and tokens they sign."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass(frozen=True)
class SigningKey:
    """A private key as an identity provider holds it: its ``kid`` and the one algorithm it signs with."""

    kid: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    algorithm: str

    @classmethod
    def rsa(cls, kid: str, algorithm: str = "RS256") -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm)

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    def jwk(self, **fields: Any) -> dict[str, Any]:
        """The public JWK with ``kid``, ``alg`` and ``use``; ``fields`` override or add (None removes)."""
        public = self.private.public_key()
        base = (
            RSAAlgorithm.to_jwk(public, as_dict=True)
            if isinstance(public, rsa.RSAPublicKey)
            else ECAlgorithm.to_jwk(public, as_dict=True)
        )
        merged = {**base, "kid": self.kid, "alg": self.algorithm, "use": "sig", **fields}
        return {name: value for name, value in merged.items() if value is not None}

    def token(self, *, ttl: int = 3600, with_kid: bool = True, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"sub": str(uuid.uuid4()), "role": ["Admin"], "iat": now, "exp": now + ttl}
        payload.update(claims)
        headers = {"kid": self.kid} if with_kid else None
        return jwt.encode(payload, self.private, algorithm=self.algorithm, headers=headers)


def jwks(*keys: SigningKey) -> dict[str, Any]:
    """A JWKS document listing the public keys of ``keys``."""
    return {"keys": [key.jwk() for key in keys]}
