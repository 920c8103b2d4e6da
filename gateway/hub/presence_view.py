"""Who is connected, as data: this replica's users, the KV entry each replica writes, and their merge.

Pure: no I/O and no clock of its own (times come in as arguments). :mod:`gateway.hub.cluster_presence`
writes one :class:`ReplicaEntry` per replica to NATS KV and reads them back; ``GetPresence`` and
``GET /api/admin/realtime/presence`` answer :meth:`PresenceView.to_wire` of their :func:`merge`.

An entry lists at most ``max_users`` users, those connected longest first (so the list does not churn
while users come and go at the cap); the others are counted in the entry's totals only (``unlisted``),
and the merged view then says ``complete: false``. Connections without a user id are not presence.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

from broker_bridge import catalog
from shared import jsoncodec
from shared.timeutil import iso_utc

# The entry format's version: a reader skips entries of another version (a rolling upgrade shows the
# replicas it can read; none is mistaken for another shape).
ENTRY_VERSION: Final = 1

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ListedUser:
    """One user as one replica (or the merged view) sees them."""

    user_id: str
    name: str | None
    since: float
    """Wall-clock seconds of the user's first connection that is still open."""
    connections: int
    groups: Mapping[str, int]
    """Group -> how many of the user's connections are in it."""


@dataclass(frozen=True, slots=True)
class GroupTotals:
    users: int
    connections: int


@dataclass(frozen=True, slots=True)
class ReplicaEntry:
    """What one replica writes to KV: its totals over every connection, and its listed users."""

    replica: str
    updated_at: float
    connections: int
    users: int
    groups: Mapping[str, GroupTotals]
    listed: tuple[ListedUser, ...]

    @property
    def unlisted(self) -> int:
        return self.users - len(self.listed)

    def encode(self) -> bytes:
        return jsoncodec.dumps(
            {
                "v": ENTRY_VERSION,
                "replica": self.replica,
                "updatedAt": self.updated_at,
                "connections": self.connections,
                "users": self.users,
                "groups": {name: [totals.users, totals.connections] for name, totals in self.groups.items()},
                "listed": [[u.user_id, u.name, u.since, u.connections, dict(u.groups)] for u in self.listed],
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> ReplicaEntry:
        """Raises ValueError for anything but an entry of :data:`ENTRY_VERSION`."""
        try:
            raw = jsoncodec.loads(data)
            if raw["v"] != ENTRY_VERSION:
                raise ValueError(f"entry version {raw['v']!r}")
            listed = tuple(
                ListedUser(
                    user_id=str(user_id),
                    name=None if name is None else str(name),
                    since=float(since),
                    connections=int(connections),
                    groups={str(group): int(count) for group, count in groups.items()},
                )
                for user_id, name, since, connections, groups in raw["listed"]
            )
            return cls(
                replica=str(raw["replica"]),
                updated_at=float(raw["updatedAt"]),
                connections=int(raw["connections"]),
                users=int(raw["users"]),
                groups={str(name): GroupTotals(int(u), int(c)) for name, (u, c) in raw["groups"].items()},
                listed=listed,
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a presence entry ({type(error).__name__}: {error})") from None


@dataclass(slots=True)
class _LocalUser(Generic[C]):
    name: str | None
    since: float
    held: C | tuple[C, ...] = ()
    """The user's open connections: the connection itself while it is the only one (most users have
    one; a one-item tuple would cost 48 bytes more), else a tuple of them, not a set: a user has a
    handful at most (``REALTIME_MAX_CONNECTIONS_PER_USER``). A connection is never a tuple."""

    @property
    def connections(self) -> tuple[C, ...]:
        held = self.held
        return held if isinstance(held, tuple) else (held,)

    def hold(self, connections: tuple[C, ...]) -> None:
        self.held = connections[0] if len(connections) == 1 else connections


class LocalPresence(Generic[C]):
    """This replica's users: user id -> name, since, and their open connections (whose groups are read
    with ``groups_of`` when an entry is made).

    Making an entry walks every connection, so its totals and listing are kept until something changes:
    a connection added or removed here, or :meth:`groups_changed` (the owner's to call when a
    connection joins or leaves a group). A replica whose users stay put re-writes its entry every
    heartbeat without walking them again."""

    def __init__(self, *, groups_of: Callable[[C], Sequence[str]]) -> None:
        self._groups_of = groups_of
        self._users: dict[str, _LocalUser[C]] = {}
        self._connections = 0
        # (max_users, group totals, listed users) as of the last change, or None once something changed.
        self._summary: tuple[int, dict[str, GroupTotals], tuple[ListedUser, ...]] | None = None

    def __len__(self) -> int:
        return len(self._users)

    def add(self, user_id: str, name: str | None, connection: C, now: float) -> None:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _LocalUser(name, now)
        if connection not in user.connections:
            user.hold((*user.connections, connection))
            self._connections += 1
            self._summary = None

    def remove(self, user_id: str, connection: C) -> None:
        """Forget ``connection`` (harmless when it is not here)."""
        user = self._users.get(user_id)
        if user is None or connection not in user.connections:
            return
        connections = user.connections
        index = connections.index(connection)
        user.hold(connections[:index] + connections[index + 1 :])
        self._connections -= 1
        self._summary = None
        if not user.connections:
            del self._users[user_id]

    def groups_changed(self) -> None:
        """A connection's groups changed: the next entry counts them afresh."""
        self._summary = None

    def entry(self, *, replica: str, now: float, max_users: int) -> ReplicaEntry:
        """The entry to write: totals over every connection, the ``max_users`` longest connected listed."""
        summary = self._summary
        if summary is None or summary[0] != max_users:
            summary = self._summary = self._summarise(max_users)
        _, groups, listed = summary
        return ReplicaEntry(
            replica=replica,
            updated_at=now,
            connections=self._connections,
            users=len(self._users),
            groups=groups,
            listed=listed,
        )

    def _summarise(self, max_users: int) -> tuple[int, dict[str, GroupTotals], tuple[ListedUser, ...]]:
        """Walk every connection: group totals, and the ``max_users`` longest connected (users are kept
        in the order they came, so those are the first ones: no sorting). Listed users with equal group
        counts share one mapping (read-only, as every listed user's is): the listing is kept until the
        next change, and most users are in the same few groups."""
        group_users: dict[str, int] = {}
        group_connections: dict[str, int] = {}
        listed: list[ListedUser] = []
        shared_groups: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}
        for user_id, user in self._users.items():
            groups: dict[str, int] = {}
            for connection in user.connections:
                for group in self._groups_of(connection):
                    groups[group] = groups.get(group, 0) + 1
            for group, count in groups.items():
                group_users[group] = group_users.get(group, 0) + 1
                group_connections[group] = group_connections.get(group, 0) + count
            if len(listed) < max_users:
                groups = shared_groups.setdefault(tuple(groups.items()), groups)
                listed.append(ListedUser(user_id, user.name, user.since, len(user.connections), groups))
        totals = {name: GroupTotals(group_users[name], group_connections[name]) for name in group_users}
        return max_users, totals, tuple(listed)


def _seniority(user: ListedUser) -> tuple[float, str]:
    return user.since, user.user_id


@dataclass(frozen=True, slots=True)
class PresenceView:
    """The merge of every live replica's entry."""

    replicas: int
    users: Mapping[str, ListedUser]
    """Every listed user once: connections and groups summed, ``since`` the earliest, over replicas."""
    connections: int
    unlisted: int
    """Users counted by some replica but listed by none (over its cap); they are in the totals."""
    groups: Mapping[str, GroupTotals]
    readable: bool = True
    """False when KV could not be read: the view is this replica's alone."""

    @property
    def complete(self) -> bool:
        return self.readable and self.unlisted == 0

    def online(self) -> dict[str, str | None]:
        """Listed user id -> name: who the presence notifications are about."""
        return {user_id: user.name for user_id, user in self.users.items()}

    def to_wire(self, *, timestamp: str) -> dict[str, Any]:
        """The GetPresence / ``GET presence`` document (README "Cluster presence")."""
        names = [*catalog.GROUPS, *sorted(set(self.groups) - set(catalog.GROUPS))]
        members: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for user in sorted(self.users.values(), key=_seniority):
            since = iso_utc(datetime.fromtimestamp(user.since, UTC))
            for group, count in user.groups.items():
                members.setdefault(group, []).append(
                    {"userId": user.user_id, "userName": user.name, "connections": count, "since": since}
                )
        groups: dict[str, Any] = {}
        for name in members:
            totals = self.groups.get(name, GroupTotals(0, 0))
            groups[name] = {"totalUsers": totals.users, "totalConnections": totals.connections, "users": members[name]}
        return {
            "timestamp": timestamp,
            "replicas": self.replicas,
            "totalUsers": len(self.users) + self.unlisted,
            "totalConnections": self.connections,
            "complete": self.complete,
            "groups": groups,
        }


def merge(entries: Iterable[ReplicaEntry], *, readable: bool = True) -> PresenceView:
    """One view of every replica's entry: a user on several replicas is listed once.

    A group's ``users`` counts each listed user once plus each replica's unlisted members of it (a
    user unlisted on two replicas counts twice: exact whenever nothing is unlisted).
    """
    users: dict[str, ListedUser] = {}
    connections = replicas = unlisted = 0
    unlisted_by_group: dict[str, int] = {}
    group_connections: dict[str, int] = {}
    for entry in entries:
        replicas += 1
        connections += entry.connections
        unlisted += entry.unlisted
        listed_in_group: dict[str, int] = {}
        for user in entry.listed:
            for group in user.groups:
                listed_in_group[group] = listed_in_group.get(group, 0) + 1
            known = users.get(user.user_id)
            users[user.user_id] = user if known is None else _combined(known, user)
        for group, totals in entry.groups.items():
            group_connections[group] = group_connections.get(group, 0) + totals.connections
            unlisted_by_group[group] = unlisted_by_group.get(group, 0) + totals.users - listed_in_group.get(group, 0)
    listed_per_group: dict[str, int] = {}
    for user in users.values():
        for group in user.groups:
            listed_per_group[group] = listed_per_group.get(group, 0) + 1
    groups = {
        group: GroupTotals(listed_per_group.get(group, 0) + unlisted_by_group[group], group_connections[group])
        for group in group_connections
    }
    return PresenceView(
        replicas=replicas,
        users=users,
        connections=connections,
        unlisted=unlisted,
        groups=groups,
        readable=readable,
    )


def _combined(a: ListedUser, b: ListedUser) -> ListedUser:
    groups = dict(a.groups)
    for group, count in b.groups.items():
        groups[group] = groups.get(group, 0) + count
    return ListedUser(a.user_id, a.name or b.name, min(a.since, b.since), a.connections + b.connections, groups)
