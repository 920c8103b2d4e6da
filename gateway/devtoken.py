"""``python -m gateway.devtoken``: print an HS256 access token for local development.

Uses ``REALTIME_JWT_SECRET`` (or ``--secret``), the same key the gateway verifies with.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence

import jwt


def mint_token(
    *,
    secret: str,
    roles: Sequence[str],
    subject: str,
    ttl_seconds: int,
    name: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "role": list(roles), "iat": now, "exp": now + ttl_seconds}
    if name:
        claims["name"] = name
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.devtoken", description=__doc__)
    parser.add_argument("--role", action="append", default=None, help="role claim (repeatable; default Admin)")
    parser.add_argument("--sub", default=None, help="user id (default: a new UUID)")
    parser.add_argument("--name", default="dev-admin", help="display name")
    parser.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds")
    parser.add_argument("--secret", default=os.environ.get("REALTIME_JWT_SECRET"))
    parser.add_argument("--issuer", default=os.environ.get("REALTIME_JWT_ISSUER"))
    parser.add_argument("--audience", default=os.environ.get("REALTIME_JWT_AUDIENCE"))
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("set REALTIME_JWT_SECRET or pass --secret")
    print(
        mint_token(
            secret=args.secret,
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
