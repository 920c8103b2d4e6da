"""Cluster presence as data: a replica's entry, the merge of entries, and the notification debounce.

Times are passed in (wall-clock seconds for ``since``, monotonic seconds for the debounce).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_bridge import catalog
from gateway.hub.presence_debounce import PresenceChange, PresenceDebouncer, notifications
from gateway.hub.presence_view import GroupTotals, LocalPresence, ReplicaEntry, merge

T0 = 1_760_000_000.0  # 2025-10-09T08:53:20Z


@dataclass(frozen=True)
class Conn:
    """A connection: a name and the groups it is in."""

    name: str
    groups: tuple[str, ...] = ("admins",)


def groups_of(connection: Conn) -> Sequence[str]:
    return connection.groups


def local(*connections: tuple[str, str | None, Conn, float]) -> LocalPresence[Conn]:
    presence: LocalPresence[Conn] = LocalPresence(groups_of=groups_of)
    for user_id, name, connection, now in connections:
        presence.add(user_id, name, connection, now)
    return presence


# -- a replica's own users ------------------------------------------------------------------------


def test_entry_counts_connections_per_user_and_group_and_keeps_the_first_since() -> None:
    presence = local(
        ("u1", "Ann", Conn("a", ("admins", "alerts")), T0),
        ("u1", "Ann", Conn("b"), T0 + 5),
        ("u2", "Bob", Conn("c"), T0 + 1),
    )
    entry = presence.entry(replica="r1", now=T0 + 9, max_users=10)
    assert (entry.replica, entry.updated_at, entry.connections, entry.users, entry.unlisted) == ("r1", T0 + 9, 3, 2, 0)
    assert entry.groups == {"admins": GroupTotals(2, 3), "alerts": GroupTotals(1, 1)}
    ann = next(user for user in entry.listed if user.user_id == "u1")
    assert (ann.name, ann.since, ann.connections, dict(ann.groups)) == ("Ann", T0, 2, {"admins": 2, "alerts": 1})


def test_a_user_leaves_with_their_last_connection_and_a_new_one_starts_a_new_since() -> None:
    first, second = Conn("a"), Conn("b")
    presence = local(("u1", "Ann", first, T0), ("u1", "Ann", second, T0 + 1))
    presence.remove("u1", first)
    assert presence.entry(replica="r", now=T0 + 2, max_users=10).listed[0].connections == 1
    presence.remove("u1", second)
    presence.remove("u1", second)  # harmless twice
    assert len(presence) == 0
    presence.add("u1", "Ann", first, T0 + 3)
    assert presence.entry(replica="r", now=T0 + 4, max_users=10).listed[0].since == T0 + 3


def test_any_of_a_users_connections_can_leave_first() -> None:
    a, b, c = Conn("a", ("admins",)), Conn("b", ("alerts",)), Conn("c", ("analytics",))
    presence = local(("u1", "Ann", a, T0), ("u1", "Ann", b, T0), ("u1", "Ann", c, T0), ("u1", "Ann", b, T0))
    presence.remove("u1", b)
    listed = presence.entry(replica="r", now=T0 + 1, max_users=10).listed[0]
    assert (listed.connections, dict(listed.groups)) == (2, {"admins": 1, "analytics": 1})
    presence.remove("u1", a)
    listed = presence.entry(replica="r", now=T0 + 2, max_users=10).listed[0]
    assert (listed.connections, dict(listed.groups)) == (1, {"analytics": 1})


def test_the_walk_is_kept_until_a_connection_comes_goes_or_changes_groups() -> None:
    """An entry walks every connection; a heartbeat with nothing changed re-stamps the last walk."""
    walks = 0

    def counted_groups_of(connection: Conn) -> Sequence[str]:
        nonlocal walks
        walks += 1
        return groups[connection.name]

    groups = {"a": ("admins",), "b": ("admins",)}
    presence: LocalPresence[Conn] = LocalPresence(groups_of=counted_groups_of)
    presence.add("u1", "Ann", Conn("a"), T0)
    first = presence.entry(replica="r", now=T0 + 1, max_users=10)
    again = presence.entry(replica="r", now=T0 + 2, max_users=10)
    assert walks == 1
    assert (again.updated_at, again.groups, again.listed) == (T0 + 2, first.groups, first.listed)

    groups["a"] = ("admins", "alerts")  # joined: stale until the owner says so
    presence.groups_changed()
    assert presence.entry(replica="r", now=T0 + 3, max_users=10).groups["alerts"] == GroupTotals(1, 1)
    assert walks == 2
    presence.add("u2", "Bob", Conn("b"), T0 + 4)
    assert presence.entry(replica="r", now=T0 + 5, max_users=10).users == 2
    presence.remove("u1", Conn("a"))
    assert presence.entry(replica="r", now=T0 + 6, max_users=10).groups == {"admins": GroupTotals(1, 1)}
    assert presence.entry(replica="r", now=T0 + 7, max_users=1).listed[0].user_id == "u2"  # another cap
    assert walks == 2 + 2 + 1 + 1


def test_at_the_cap_the_longest_connected_are_listed_and_the_rest_only_counted() -> None:
    presence = local(*((f"u{i}", None, Conn(f"c{i}"), T0 + i) for i in range(5)))
    presence.add("u3", None, Conn("c3-2"), T0 + 10)  # a second connection keeps u3's place
    presence.remove("u0", Conn("c0"))
    entry = presence.entry(replica="r", now=T0 + 20, max_users=2)
    assert [user.user_id for user in entry.listed] == ["u1", "u2"]
    assert (entry.users, entry.unlisted, entry.connections) == (4, 2, 5)
    assert entry.groups == {"admins": GroupTotals(4, 5)}


def test_entry_round_trips_and_bad_bytes_are_value_errors() -> None:
    entry = local(("u1", "Ann", Conn("a", ("admins", "analytics")), T0), ("u2", None, Conn("b", ()), T0)).entry(
        replica="r1", now=T0, max_users=10
    )
    assert ReplicaEntry.decode(entry.encode()) == entry
    for bad in (b"[]", b"{}", b'{"v": 2}', b"not json", b'{"v":1,"replica":"r","listed":[[1]]}'):
        with pytest.raises(ValueError, match=r"."):
            ReplicaEntry.decode(bad)


# -- the merge ------------------------------------------------------------------------------------


def test_merge_lists_a_user_of_two_replicas_once_with_summed_connections_and_the_earliest_since() -> None:
    a = local(("u1", "Ann", Conn("a1", ("admins", "alerts")), T0 + 3), ("u2", "Bob", Conn("a2"), T0)).entry(
        replica="a", now=T0 + 9, max_users=10
    )
    b = local(("u1", "Ann", Conn("b1"), T0 + 1)).entry(replica="b", now=T0 + 9, max_users=10)
    view = merge([a, b])
    assert (view.replicas, view.connections, view.complete) == (2, 3, True)
    assert view.online() == {"u1": "Ann", "u2": "Bob"}
    wire = view.to_wire(timestamp="2025-10-17T10:30:00.000Z")
    assert (wire["totalUsers"], wire["totalConnections"], wire["replicas"], wire["complete"]) == (2, 3, 2, True)
    assert list(wire["groups"]) == list(catalog.GROUPS)  # every hub group, in order, members or not
    admins = wire["groups"]["admins"]
    assert (admins["totalUsers"], admins["totalConnections"]) == (2, 3)
    assert admins["users"] == [  # connected longest first
        {"userId": "u2", "userName": "Bob", "connections": 1, "since": "2025-10-09T08:53:20.000Z"},
        {"userId": "u1", "userName": "Ann", "connections": 2, "since": "2025-10-09T08:53:21.000Z"},
    ]
    assert wire["groups"]["alerts"]["users"] == [
        {"userId": "u1", "userName": "Ann", "connections": 1, "since": "2025-10-09T08:53:21.000Z"}
    ]
    assert wire["groups"]["analytics"] == {"totalUsers": 0, "totalConnections": 0, "users": []}


def test_merge_counts_unlisted_users_in_the_totals_and_says_incomplete() -> None:
    a = local(*((f"u{i}", None, Conn(f"c{i}"), T0 + i) for i in range(3))).entry(replica="a", now=T0, max_users=1)
    view = merge([a])
    wire = view.to_wire(timestamp="t")
    assert (wire["totalUsers"], wire["totalConnections"], wire["complete"]) == (3, 3, False)
    assert wire["groups"]["admins"]["totalUsers"] == 3
    assert [user["userId"] for user in wire["groups"]["admins"]["users"]] == ["u0"]


def test_a_view_of_this_replica_alone_is_not_complete() -> None:
    assert merge([local().entry(replica="a", now=T0, max_users=1)], readable=False).complete is False


@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from("abcde"), st.sampled_from(catalog.GROUPS)), max_size=8),
        min_size=1,
        max_size=4,
    )
)
def test_merged_totals_are_the_sums_of_the_replicas(replicas: list[list[tuple[str, str]]]) -> None:
    entries = []
    for index, connections in enumerate(replicas):
        presence = local(
            *((user, None, Conn(f"{index}-{n}", (group,)), T0) for n, (user, group) in enumerate(connections))
        )
        entries.append(presence.entry(replica=str(index), now=T0, max_users=100))
    view = merge(entries)
    assert view.connections == sum(len(connections) for connections in replicas)
    assert set(view.online()) == {user for connections in replicas for user, _ in connections}
    for group, totals in view.groups.items():
        assert totals.users == len({user for connections in replicas for user, g in connections if g == group})


# -- the debounce ---------------------------------------------------------------------------------


def debouncer(max_users: int = 100) -> PresenceDebouncer:
    return PresenceDebouncer(debounce_seconds=5.0, max_users=max_users)


def test_online_is_due_once_the_view_showed_it_for_the_debounce() -> None:
    decide = debouncer()
    online = {"u1": "Ann"}
    assert decide.step(online=online, announced={}, now=100.0).changes == ()
    assert decide.step(online=online, announced={}, now=104.9).changes == ()
    decision = decide.step(online=online, announced={}, now=105.0)
    assert decision.changes == (PresenceChange("u1", "Ann", "online"),)
    assert decision.announced == {"u1": "Ann"}
    # stored: the view and the announced state agree, nothing is pending any more
    assert decide.step(online=online, announced=decision.announced, now=106.0).changes == ()
    assert decide.pending == 0


def test_offline_is_due_after_the_debounce_and_names_the_user() -> None:
    decide = debouncer()
    assert decide.step(online={}, announced={"u1": "Ann"}, now=0.0).changes == ()
    decision = decide.step(online={}, announced={"u1": "Ann"}, now=5.0)
    assert decision.changes == (PresenceChange("u1", "Ann", "offline"),)
    assert decision.announced == {}


def test_a_reconnect_within_the_debounce_sends_nothing() -> None:
    decide = debouncer()
    announced = {"u1": "Ann"}
    assert decide.step(online={}, announced=announced, now=0.0).changes == ()  # the last connection closed
    assert decide.step(online={"u1": "Ann"}, announced=announced, now=3.0).changes == ()  # back
    assert decide.step(online={}, announced=announced, now=4.0).changes == ()  # gone again: timed anew
    assert decide.step(online={}, announced=announced, now=8.9).changes == ()
    assert [c.action for c in decide.step(online={}, announced=announced, now=9.0).changes] == ["offline"]


def test_a_connection_shorter_than_the_debounce_is_never_announced() -> None:
    decide = debouncer()
    assert decide.step(online={"u1": None}, announced={}, now=0.0).changes == ()
    assert decide.step(online={}, announced={}, now=4.0).changes == ()
    assert decide.step(online={}, announced={}, now=60.0).changes == ()
    assert decide.pending == 0


def test_a_change_not_stored_stays_due_at_the_next_step() -> None:
    """The compare-and-set lost: the same change is due again (never lost, sent by whoever stores it)."""
    decide = debouncer()
    decide.step(online={"u1": None}, announced={}, now=0.0)
    first = decide.step(online={"u1": None}, announced={}, now=5.0)
    again = decide.step(online={"u1": None}, announced={}, now=6.0)
    assert first.changes == again.changes == (PresenceChange("u1", None, "online"),)
    # another replica stored and sent it: the announced state now agrees, nothing more is due
    assert decide.step(online={"u1": None}, announced={"u1": None}, now=7.0).changes == ()


def test_online_beyond_the_cap_is_left_out_and_counted() -> None:
    decide = debouncer(max_users=1)
    online = {"u1": None, "u2": None, "u3": None}
    decide.step(online=online, announced={}, now=0.0)
    decision = decide.step(online=online, announced={}, now=5.0)
    assert [change.user_id for change in decision.changes] == ["u1"]
    assert decision.left_out == 2
    assert decision.announced == {"u1": None}


def test_reset_restarts_the_timers() -> None:
    decide = debouncer()
    decide.step(online={"u1": None}, announced={}, now=0.0)
    decide.reset()
    assert decide.step(online={"u1": None}, announced={}, now=5.0).changes == ()
    assert decide.step(online={"u1": None}, announced={}, now=10.0).changes != ()


def test_the_notification_is_an_admin_notification_from_the_catalog() -> None:
    event = PresenceChange("u1", "Ann", "offline").event(timestamp="2025-10-17T10:30:00.000Z")
    assert (event.group, event.target) == ("admins", "AdminNotification")
    assert event.payload == {
        "type": "presence",
        "userId": "u1",
        "userName": "Ann",
        "action": "offline",
        "message": "User Ann is offline",
        "timestamp": "2025-10-17T10:30:00.000Z",
    }


T = "2025-10-17T10:30:00.000Z"


def test_up_to_the_limit_each_change_is_notified_and_beyond_it_one_summary_counts_them() -> None:
    changes = [PresenceChange(f"u{n}", None, "online" if n % 3 else "offline") for n in range(30)]
    each = notifications(changes[:20], limit=20, timestamp=T)
    assert [action for _, action in each] == [change.action for change in changes[:20]]
    assert [event.payload["userId"] for event, _ in each] == [f"u{n}" for n in range(20)]

    [(summary, action)] = notifications(changes, limit=20, timestamp=T)  # a reconnect storm: N admins x N users
    assert action == "summary"
    assert (summary.group, summary.target) == (catalog.ADMINS, catalog.ADMIN_NOTIFICATION)
    assert summary.payload == {
        "type": "presence-summary",
        "online": 20,
        "offline": 10,
        "message": "20 users came online, 10 went offline",
        "timestamp": T,
    }
