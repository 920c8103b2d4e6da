"""Which collector replica is active: a lease in NATS KV (bucket ``COLLECTOR_LEASE``, key ``active``).

The bucket's ``max_age`` is the lease's time to live. The active replica renews the key well within that
time with a compare-and-set on the revision it holds; a standby tries to create the key, which succeeds
only once the key is gone: released on a clean stop, or aged out ``ttl`` seconds after the active
replica's last renewal when it died. A renewal that finds another revision, or that could not reach
NATS for a whole ``ttl``, means the lease is lost: that replica stops acting as active at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import KeyValueStore
from stats_collector.jetstream import LEASE_BUCKET

log = logging.getLogger(__name__)

__all__ = ["LEASE_BUCKET", "LEASE_KEY", "LeaderLease"]

LEASE_KEY: Final = "active"


class LeaderLease:
    """The lease as seen by one replica (``holder`` names it in the value, for operators)."""

    def __init__(
        self,
        store: KeyValueStore,
        *,
        holder: str,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._holder = holder.encode()
        self._ttl = ttl_seconds
        self._clock = clock
        self._revision: int | None = None
        self._renewed_at = 0.0

    @property
    def held(self) -> bool:
        """Whether this replica holds the lease (it may have lapsed since: see :meth:`keep`)."""
        return self._revision is not None

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this replica now holds it."""
        if self._revision is not None:
            return True
        try:
            revision = await self._store.compare_and_set(LEASE_KEY, self._holder, 0)
        except BrokerUnavailable:
            return False
        if revision is None:
            return False
        self._revision, self._renewed_at = revision, self._clock()
        return True

    async def keep(self) -> bool:
        """Renew a held lease; False (and no longer held) when it was lost."""
        if self._revision is None:
            return False
        try:
            revision = await self._store.compare_and_set(LEASE_KEY, self._holder, self._revision)
        except BrokerUnavailable:
            if self._clock() - self._renewed_at < self._ttl:
                return True  # NATS is away, but no standby can have taken over yet
            log.warning("could not renew the active lease for %.0f s; standing down", self._ttl)
            self._revision = None
            return False
        if revision is None:
            log.warning("the active lease was taken by another replica; standing down")
            self._revision = None
            return False
        self._revision, self._renewed_at = revision, self._clock()
        return True

    async def release(self) -> None:
        """Give the lease up (a standby takes over at its next try instead of after the ttl)."""
        if self._revision is None:
            return
        self._revision = None
        try:
            await self._store.delete(LEASE_KEY)
        except BrokerUnavailable:
            log.warning("could not release the active lease; it ages out in %.0f s", self._ttl)
