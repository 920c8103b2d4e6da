"""Access-token verification: PyJWT with one pinned algorithm, ``exp`` required, ASP.NET claim names.

Tokens minted by an ASP.NET Core identity service work unchanged: roles come from ``role``,
``roles`` or the long ``.../identity/claims/role`` URI, the user id from ``sub``, ``nameid`` or
``.../identity/claims/nameidentifier``. Nothing here logs a token or an exception trace.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
import jwt.types
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

ROLE_CLAIMS: Final = ("role", "roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
USER_ID_CLAIMS: Final = (
    "sub",
    "nameid",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
)
NAME_CLAIMS: Final = ("name", "unique_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")


class AuthenticationError(Exception):
    """The token is missing or not acceptable; ``reason`` is short and safe to log (no token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: user id (may be None), display name, roles and when the token expires."""

    user_id: str | None
    name: str | None
    roles: frozenset[str]
    expires_at: float

    def has_any_role(self, roles: Collection[str]) -> bool:
        return not self.roles.isdisjoint(roles)


def _claim_strings(claims: Mapping[str, Any], names: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for name in names:
        value = claims.get(name)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            found.extend(item for item in value if isinstance(item, str))
    return found


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    user_ids = _claim_strings(claims, USER_ID_CLAIMS)
    names = _claim_strings(claims, NAME_CLAIMS)
    return Principal(
        user_id=user_ids[0] if user_ids else None,
        name=names[0] if names else None,
        roles=frozenset(_claim_strings(claims, ROLE_CLAIMS)),
        expires_at=float(claims["exp"]),
    )


class TokenVerifier:
    """Verifies bearer tokens with exactly one algorithm, so ``none`` and key confusion cannot pass."""

    def __init__(
        self,
        *,
        key: str | bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        algorithm: str,
        issuer: str | None,
        audience: str | None,
        leeway_seconds: float,
    ) -> None:
        self._key = key
        self._algorithms = [algorithm]
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._options: jwt.types.Options = {
            "require": ["exp"] + (["iss"] if issuer else []) + (["aud"] if audience else []),
            "verify_aud": audience is not None,
        }

    @property
    def algorithm(self) -> str:
        return self._algorithms[0]

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired") from None
        except jwt.InvalidAlgorithmError:
            raise AuthenticationError("token algorithm not allowed") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthenticationError(f"token lacks the {error.claim!r} claim") from None
        except jwt.PyJWTError as error:  # includes InvalidKeyError, which is not an InvalidTokenError
            raise AuthenticationError(f"invalid token ({type(error).__name__})") from None
        if not isinstance(claims.get("exp"), int | float):
            raise AuthenticationError("token exp is not a number")
        return principal_from_claims(claims)


def verifier_from_key_material(
    *,
    secret: str | None,
    public_key_file: str | None,
    issuer: str | None,
    audience: str | None,
    leeway_seconds: float,
) -> TokenVerifier:
    """HS256 with a shared secret, or RS256/ES256 chosen by the type of the PEM public key."""
    if secret is not None:
        return TokenVerifier(
            key=secret.encode(),
            algorithm="HS256",
            issuer=issuer,
            audience=audience,
            leeway_seconds=leeway_seconds,
        )
    if public_key_file is None:
        raise ValueError("either a secret or a public key file is required")
    key = load_pem_public_key(Path(public_key_file).read_bytes())
    if isinstance(key, rsa.RSAPublicKey):
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        algorithm = "ES256"
    else:
        raise ValueError("the public key must be RSA (RS256) or EC P-256 (ES256)")
    return TokenVerifier(key=key, algorithm=algorithm, issuer=issuer, audience=audience, leeway_seconds=leeway_seconds)
