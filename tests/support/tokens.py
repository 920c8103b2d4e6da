"""Access tokens for tests, signed with the integration-test secret."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from tests.support.processes import TEST_JWT_SECRET


def make_token(
    *,
    roles: list[str] | None = None,
    sub: str | None = None,
    ttl: int = 3600,
    secret: str = TEST_JWT_SECRET,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub or str(uuid.uuid4()), "iat": now, "exp": now + ttl}
    if roles is not None:
        payload["role"] = roles
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)


def admin_token(**kwargs: Any) -> str:
    return make_token(roles=["Admin"], **kwargs)
