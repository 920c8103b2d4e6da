"""Access-token verification: every key pinned to one algorithm, ``exp`` required, ASP.NET claim names.

Keys. A :class:`KeySet` holds :class:`VerificationKey` s (key material, the one algorithm it verifies,
an optional ``kid``) and comes from a :class:`KeySource`: :class:`FixedKeys` (an HS256 secret or a PEM
public key, read at start) or a JWKS file or URL that is refreshed (:mod:`gateway.jwks`).

Choosing the key for a token:

* the header names a ``kid``: the keys with that ``kid``; when none has it, the source is asked to
  refresh once (a refreshing source does so at most once per its minimum interval), then keys without
  a ``kid`` (a secret, a PEM key) are used; still nothing: 401 "key id (kid) is not known";
* no ``kid``: every key, so a single-key setup needs no ``kid`` and an issuer that sets none still works
  while a rotation has two keys;
* of those, only the keys whose algorithm is the header's ``alg`` are tried, each with
  ``algorithms=[its own]``. ``none``, an HMAC token against a public key, or an RS256 token against an
  ES256 key therefore never reach a signature check.

A key's algorithm fits its material (:func:`check_algorithm`): HS256/384/512 for secrets of at least
the hash size (RFC 7518 3.2), RS*/PS* for RSA keys of 2048 bits or more, ES256/384/512 for the matching
EC curve. Without an explicit one it is RS256 for RSA and ES256 for EC P-256 (:func:`default_algorithm`).

Claims. Tokens minted by an ASP.NET Core identity service work unchanged: roles come from ``role``,
``roles`` or the long ``.../identity/claims/role`` URI, the user id from ``sub``, ``nameid`` or
``.../identity/claims/nameidentifier``. Each of those is a string or a list of strings of 1 to
:data:`MAX_CLAIM_CHARS` characters; anything else (numbers, objects, nested lists, lone surrogates,
a non-numeric or infinite ``exp``) is a 401 with a short reason, never an exception further on.

Nothing here logs a token, a claim value or an exception trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import jwt
import jwt.types
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker_bridge.subjects import MAX_NAME_LENGTH
from shared.interning import SharedValues

ROLE_CLAIMS: Final = ("role", "roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
USER_ID_CLAIMS: Final = (
    "sub",
    "nameid",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
)
# The role that may change shared state (acknowledge and silence alerts, reload rules) and joins ``admins``.
ADMIN_ROLE: Final = "Admin"
NAME_CLAIMS: Final = ("name", "unique_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
# The user id becomes part of a NATS subject, whose names are bounded in broker_bridge.subjects;
# display names and roles get the same bound.
MAX_CLAIM_CHARS: Final = MAX_NAME_LENGTH

# RFC 7518 3.2: an HMAC key is at least as long as the hash output.
HMAC_MIN_KEY_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# NIST SP 800-57: RSA under 2048 bits is no longer acceptable for signatures.
MIN_RSA_KEY_BITS: Final = 2048
EC_CURVE_OF: Final = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
KeyMaterial = bytes | PublicKey


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


# -- keys --------------------------------------------------------------------------------------------


def default_algorithm(key: PublicKey) -> str:
    """RS256 for an RSA key, ES256 for an EC P-256 key; any other key must name its algorithm."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("the public key must be RSA (RS256) or EC P-256 (ES256)")


def check_algorithm(material: KeyMaterial, algorithm: str) -> None:
    """Raise ValueError unless ``algorithm`` is one this key material may verify."""
    if isinstance(material, bytes):
        minimum = HMAC_MIN_KEY_BYTES.get(algorithm)
        if minimum is None:
            raise ValueError(f"a secret key verifies HS256, HS384 or HS512, not {algorithm}")
        if len(material) < minimum:
            raise ValueError(f"{algorithm} needs a key of at least {minimum} bytes (RFC 7518 3.2)")
    elif isinstance(material, rsa.RSAPublicKey):
        if algorithm not in RSA_ALGORITHMS:
            raise ValueError(f"an RSA key verifies RS256-RS512 or PS256-PS512, not {algorithm}")
        if material.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(f"an RSA key needs at least {MIN_RSA_KEY_BITS} bits")
    elif isinstance(material, ec.EllipticCurvePublicKey):
        curve = EC_CURVE_OF.get(algorithm)
        if curve is None or not isinstance(material.curve, curve):
            raise ValueError(f"this EC key ({material.curve.name}) does not verify {algorithm}")
    else:
        raise ValueError("unsupported key type")


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """Key material, the one algorithm it verifies, and its ``kid`` (None: a key without an id)."""

    material: KeyMaterial
    algorithm: str
    kid: str | None = None

    def __post_init__(self) -> None:
        check_algorithm(self.material, self.algorithm)


def secret_key(secret: str) -> VerificationKey:
    """The HS256 key of a shared secret (its UTF-8 bytes)."""
    return VerificationKey(secret.encode(), "HS256")


def pem_public_key(path: str | Path) -> VerificationKey:
    """The RSA (RS256) or EC P-256 (ES256) public key in a PEM file; ValueError for any other."""
    key = load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("the public key must be RSA (RS256) or EC P-256 (ES256)")
    return VerificationKey(key, default_algorithm(key))


class KeySet:
    """An unchanging set of verification keys, looked up by ``kid`` and algorithm."""

    __slots__ = ("_by_kid", "_keys", "_unnamed")

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        self._keys = tuple(keys)
        self._by_kid: dict[str, tuple[VerificationKey, ...]] = {}
        for key in self._keys:
            if key.kid is not None:
                self._by_kid[key.kid] = (*self._by_kid.get(key.kid, ()), key)
        self._unnamed = tuple(key for key in self._keys if key.kid is None)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[VerificationKey]:
        return iter(self._keys)

    def knows(self, kid: str) -> bool:
        return kid in self._by_kid

    @property
    def has_unnamed_keys(self) -> bool:
        return bool(self._unnamed)

    def candidates(self, kid: str | None, algorithm: object) -> tuple[VerificationKey, ...]:
        """The keys to try for a token with this header ``kid`` and ``alg`` (see the module docstring)."""
        pool = self._keys if kid is None else self._by_kid.get(kid, self._unnamed)
        return tuple(key for key in pool if key.algorithm == algorithm)

    def describe(self) -> str:
        """``'kid':alg`` of every key, for a log line (kids are public, and quoted; no key material)."""
        return ", ".join(f"{key.kid!r}:{key.algorithm}" for key in self._keys) or "no keys"


class KeySource(Protocol):
    """Where the verifier gets its keys."""

    def current(self) -> KeySet:
        """The keys in use now."""
        ...

    async def refresh_for_unknown_kid(self) -> KeySet:
        """Reload if the source allows it now (rate-limited), and return the keys then in use."""
        ...


class FixedKeys:
    """Keys read once at start (a secret, a PEM key): never refreshed."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    def current(self) -> KeySet:
        return self._keys

    async def refresh_for_unknown_kid(self) -> KeySet:
        return self._keys


# -- claims ------------------------------------------------------------------------------------------


def _is_claim_text(value: object) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLAIM_CHARS:
        return False
    try:
        value.encode()  # JSON may carry lone surrogates, which no subject or frame can encode
    except UnicodeEncodeError:
        return False
    return True


def _claim_strings(claims: Mapping[str, Any], names: tuple[str, ...], what: str) -> list[str]:
    """Every value of the claims ``names`` (each a string or a list of strings), in order."""
    found: list[str] = []
    for name in names:
        if name not in claims:
            continue
        value = claims[name]
        items = value if isinstance(value, list) else [value]
        if not all(_is_claim_text(item) for item in items):
            raise AuthenticationError(f"token {what} claim is not a string of 1 to {MAX_CLAIM_CHARS} characters")
        found.extend(items)
    return found


def _expiry(claims: Mapping[str, Any]) -> float:
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise AuthenticationError("token exp is not a number")
    try:
        expires_at = float(exp)
    except OverflowError:
        raise AuthenticationError("token exp is out of range") from None
    if not math.isfinite(expires_at):
        raise AuthenticationError("token exp is out of range")
    return expires_at


def principal_from_claims(
    claims: Mapping[str, Any], shared_roles: Callable[[frozenset[str]], frozenset[str]] | None = None
) -> Principal:
    """The principal of verified claims; AuthenticationError when a claim has an unusable shape.
    ``shared_roles`` may swap the role set for an equal one already held (a
    :class:`~shared.interning.SharedValues`: a connection holds its principal for its whole life, and
    the few combinations a deployment has would otherwise be copied into each, about 270 bytes)."""
    user_ids = _claim_strings(claims, USER_ID_CLAIMS, "user id")
    names = _claim_strings(claims, NAME_CLAIMS, "name")
    roles = frozenset(_claim_strings(claims, ROLE_CLAIMS, "role"))
    return Principal(
        user_id=user_ids[0] if user_ids else None,
        name=names[0] if names else None,
        roles=roles if shared_roles is None else shared_roles(roles),
        expires_at=_expiry(claims),
    )


# -- verification ------------------------------------------------------------------------------------


def _reason(error: jwt.PyJWTError) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "token algorithm not allowed"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token lacks the {error.claim!r} claim"
    return f"invalid token ({type(error).__name__})"  # includes InvalidKeyError, not an InvalidTokenError


def _key_id_and_algorithm(token: str) -> tuple[str | None, object]:
    """The unverified header's ``kid`` (PyJWT checks it is a string) and ``alg``."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise AuthenticationError(_reason(error)) from None
    return header.get("kid"), header.get("alg")


class TokenVerifier:
    """Verifies bearer tokens with the keys of a :class:`KeySource`, each key with its own algorithm only."""

    def __init__(
        self,
        *,
        keys: KeySource,
        issuer: str | None,
        audience: str | None,
        leeway_seconds: float,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self.role_sets: SharedValues[frozenset[str]] = SharedValues()
        """The principals' role sets, one instance each."""
        self._options: jwt.types.Options = {
            "require": ["exp"] + (["iss"] if issuer else []) + (["aud"] if audience else []),
            "verify_aud": audience is not None,
        }

    async def verify(self, token: str) -> Principal:
        """The principal of ``token``; AuthenticationError with a safe reason when it is not acceptable."""
        principal = self.verify_with_current_keys(token)
        if principal is not None:
            return principal
        return await self.verify_after_key_refresh(token)

    def verify_with_current_keys(self, token: str) -> Principal | None:
        """:meth:`verify` without waiting: None when the token names a key id not known yet (then only
        :meth:`verify_after_key_refresh` can decide)."""
        kid, algorithm = _key_id_and_algorithm(token)
        keys = self._keys.current()
        if kid is not None and not keys.knows(kid):
            return None
        return self._principal(token, keys, kid, algorithm)

    async def verify_after_key_refresh(self, token: str) -> Principal:
        """:meth:`verify` for a token whose key id was not known: refresh the keys, then decide."""
        kid, algorithm = _key_id_and_algorithm(token)
        return self._principal(token, await self._keys.refresh_for_unknown_kid(), kid, algorithm)

    def _principal(self, token: str, keys: KeySet, kid: str | None, algorithm: object) -> Principal:
        candidates = keys.candidates(kid, algorithm)
        if not candidates:
            if kid is not None and not keys.knows(kid) and not keys.has_unnamed_keys:
                raise AuthenticationError("token key id (kid) is not known")
            raise AuthenticationError("token algorithm not allowed")
        return principal_from_claims(self._decode(token, candidates), self.role_sets)

    def _decode(self, token: str, candidates: tuple[VerificationKey, ...]) -> dict[str, Any]:
        """The claims, checked with the first candidate whose signature matches."""
        for key in candidates:
            try:
                return self._decode_with(token, key)
            except jwt.InvalidSignatureError:
                continue  # another key of the same algorithm may have signed it
            except jwt.PyJWTError as error:
                raise AuthenticationError(_reason(error)) from None
        raise AuthenticationError("invalid token (InvalidSignatureError)")

    def _decode_with(self, token: str, key: VerificationKey) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.material,
            algorithms=[key.algorithm],
            issuer=self._issuer,
            audience=self._audience,
            leeway=self._leeway,
            options=self._options,
        )
        return claims
