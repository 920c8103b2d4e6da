"""The sessions open on this replica, keyed by connection token."""

from __future__ import annotations

from collections.abc import Iterator

from gateway.hub.session import HubSession


class DuplicateConnection(Exception):
    """A second transport tried to take over a connection that is already open here."""


class ConnectionRegistry:
    """Open sessions by token, with how many each user and each client IP has open."""

    def __init__(self) -> None:
        self._sessions: dict[str, HubSession] = {}
        self._per_user: dict[str, int] = {}
        self._per_ip: dict[str, int] = {}

    def add(self, session: HubSession) -> None:
        if session.connection_token in self._sessions:
            raise DuplicateConnection
        self._sessions[session.connection_token] = session
        _count(self._per_user, session.user_id or "", +1)
        _count(self._per_ip, session.client_ip, +1)

    def remove(self, session: HubSession) -> None:
        if self._sessions.get(session.connection_token) is session:
            del self._sessions[session.connection_token]
            _count(self._per_user, session.user_id or "", -1)
            _count(self._per_ip, session.client_ip, -1)

    def open_for_user(self, user_id: str | None) -> int:
        return self._per_user.get(user_id or "", 0)

    def open_for_ip(self, client_ip: str) -> int:
        return self._per_ip.get(client_ip, 0)

    def get(self, token: str) -> HubSession | None:
        return self._sessions.get(token)

    def __contains__(self, token: object) -> bool:
        return token in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def snapshot(self) -> list[HubSession]:
        """A copy, for once-a-second timers and shutdown (not for the fan-out hot path)."""
        return list(self._sessions.values())

    def __iter__(self) -> Iterator[HubSession]:
        return iter(self._sessions.values())


def _count(counts: dict[str, int], key: str, change: int) -> None:
    value = counts.get(key, 0) + change
    if value:
        counts[key] = value
    else:  # so the maps hold only keys with open sessions
        del counts[key]
