"""The sessions open on this replica, keyed by connection token."""

from __future__ import annotations

from collections.abc import Iterator

from gateway.hub.session import HubSession


class DuplicateConnection(Exception):
    """A second transport tried to take over a connection that is already open here."""


class ConnectionRegistry:
    def __init__(self) -> None:
        self._sessions: dict[str, HubSession] = {}

    def add(self, session: HubSession) -> None:
        if session.connection_token in self._sessions:
            raise DuplicateConnection
        self._sessions[session.connection_token] = session

    def remove(self, session: HubSession) -> None:
        if self._sessions.get(session.connection_token) is session:
            del self._sessions[session.connection_token]

    def __contains__(self, token: object) -> bool:
        return token in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def snapshot(self) -> list[HubSession]:
        """A copy, for once-a-second timers and shutdown (not for the fan-out hot path)."""
        return list(self._sessions.values())

    def __iter__(self) -> Iterator[HubSession]:
        return iter(self._sessions.values())
