"""``python -m gateway.devtoken``: print an access token for local development and key-rotation trials.

Signs with ``REALTIME_JWT_SECRET`` (or ``--secret``), HS256, the key the gateway verifies with; or with
``--private-key-file`` (a PEM private key: RS256 for RSA, ES256 for EC P-256), whose public key the
gateway has in its JWKS. ``--kid`` puts a key id in the token's header.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.auth import default_algorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def mint_token(
    *,
    roles: Sequence[str],
    subject: str,
    ttl_seconds: int,
    secret: str | None = None,
    private_key: PrivateKey | None = None,
    kid: str | None = None,
    name: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """A token signed with ``private_key`` (RS256/ES256 by its type) if given, else with ``secret`` (HS256)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "role": list(roles), "iat": now, "exp": now + ttl_seconds}
    if name:
        claims["name"] = name
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    headers = {"kid": kid} if kid else None
    if private_key is not None:
        algorithm = default_algorithm(private_key.public_key())
        return jwt.encode(claims, private_key, algorithm=algorithm, headers=headers)
    if secret is None:
        raise ValueError("a secret or a private key is required")
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def load_private_key(path: str) -> PrivateKey:
    """An unencrypted PEM private key that signs RS256 or ES256; ValueError for any other."""
    key = load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the private key must be RSA (RS256) or EC P-256 (ES256)")
    default_algorithm(key.public_key())  # raises for other curves
    return key


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.devtoken", description=__doc__)
    parser.add_argument("--role", action="append", default=None, help="role claim (repeatable; default Admin)")
    parser.add_argument("--sub", default=None, help="user id (default: a new UUID)")
    parser.add_argument("--name", default="dev-admin", help="display name")
    parser.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds")
    parser.add_argument("--secret", default=os.environ.get("REALTIME_JWT_SECRET"))
    parser.add_argument("--private-key-file", default=None, help="PEM private key to sign with instead of the secret")
    parser.add_argument("--kid", default=None, help="key id for the token header")
    parser.add_argument("--issuer", default=os.environ.get("REALTIME_JWT_ISSUER"))
    parser.add_argument("--audience", default=os.environ.get("REALTIME_JWT_AUDIENCE"))
    args = parser.parse_args(argv)
    private_key = None
    if args.private_key_file:
        try:
            private_key = load_private_key(args.private_key_file)
        except (OSError, ValueError, TypeError) as error:
            parser.error(f"--private-key-file: {error}")
    elif not args.secret:
        parser.error("set REALTIME_JWT_SECRET or pass --secret or --private-key-file")
    print(
        mint_token(
            secret=args.secret,
            private_key=private_key,
            kid=args.kid,
            roles=args.role or ["Admin"],
            subject=args.sub or str(uuid.uuid4()),
            ttl_seconds=args.ttl,
            name=args.name,
            issuer=args.issuer,
            audience=args.audience,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
