"""Who receives what: the hub's one way to put a connection in groups and take it out again.

A plain connection joins through the fan-out router at once. A resumable one
(:mod:`gateway.hub.resumable`) changes membership by records in the fan-out stream, so its groups
are part of its replayable history.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.hub.fanout import FanoutRouter
from gateway.hub.resumable import ResumableConnections
from gateway.hub.session import HubSession


class Memberships:
    """Joins and leaves for every kind of connection."""

    def __init__(self, *, router: FanoutRouter, resumables: ResumableConnections | None) -> None:
        self._router = router
        self._resumables = resumables

    def _resumable(self, session: HubSession) -> bool:
        return self._resumables is not None and session.connection.stateful

    async def connect(self, session: HubSession, groups: Sequence[str]) -> None:
        """Reach ``session`` through "all", its user and ``groups``; raises BrokerUnavailable."""
        if self._resumables is not None and self._resumable(session):
            await self._resumables.start(session, groups)
            return
        await self._router.join_all(session)
        if session.user_id:
            await self._router.join_user(session.user_id, session)
        for group in groups:
            await self._router.join_group(group, session)

    async def join(self, session: HubSession, group: str) -> None:
        """Raises BrokerUnavailable (and changes nothing) when the join cannot be made."""
        state = session.resumable
        if self._resumables is not None and state is not None:
            await self._resumables.join(session, state, group)
        else:
            await self._router.join_group(group, session)

    async def leave(self, session: HubSession, group: str) -> None:
        state = session.resumable
        if self._resumables is not None and state is not None:
            await self._resumables.leave(session, state, group)
        else:
            await self._router.leave_group(group, session)

    async def disconnect(self, session: HubSession, groups: Sequence[str]) -> None:
        """The connection ended for good: out of everything."""
        state = session.resumable
        if self._resumables is not None and state is not None:
            await self._resumables.end(session, state)
            return
        for group in groups:
            await self._router.leave_group(group, session)
        if session.user_id:
            await self._router.leave_user(session.user_id, session)
        await self._router.leave_all(session)

    async def detach(self, session: HubSession) -> bool:
        """The transport dropped: keep a resumable connection for a resume; False for a plain one
        (which then ends)."""
        state = session.resumable
        if self._resumables is None or state is None:
            return False
        await self._resumables.detach(session, state)
        return True
