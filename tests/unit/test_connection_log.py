"""ConnectionLog: what a resumable connection receives from the fan-out stream, numbered the same way
live and in a replay from any checkpoint the log produced; and Checkpoint's wire form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge import connection_stream as records
from broker_bridge.subjects import ALL_SUBJECT, connection_subject, group_subject, user_subject
from gateway.hub.connection_log import Checkpoint, ConnectionLog

KEY = "conn1"
USER = "user1"
OWN = connection_subject(KEY)
GROUPS = ("a", "b")
# Where a new connection's log starts: nothing counted, nothing received before its start record.
NEW = Checkpoint(position=0, sent=0, groups=(), inbound=0, started=False)


def new_log(checkpoint: Checkpoint = NEW, *, user_id: str | None = USER) -> ConnectionLog:
    return ConnectionLog(key=KEY, user_id=user_id, checkpoint=checkpoint)


def take(log: ConnectionLog, subject: str, payload: bytes, position: int) -> int | None:
    """One stream message as the live path and the replay both handle it: its number if it is sent."""
    if subject == OWN:
        record = records.decode_record(payload)
        return log.count_sent(position, len(record.frame)) if log.apply(record, position) else None
    return log.count_sent(position, len(payload)) if log.admits(subject) else None


def record(kind: records.RecordKind, **fields: Any) -> records.StreamRecord:
    return records.decode_record(records.marker_record(kind, **fields))


def started(groups: tuple[str, ...] = ()) -> ConnectionLog:
    log = new_log()
    log.apply(record(records.RecordKind.START, groups=list(groups)), 1)
    return log


# -- what the connection receives ------------------------------------------------------------------


def test_nothing_is_admitted_before_the_start_record() -> None:
    log = new_log()
    assert not log.started
    assert not log.admits(ALL_SUBJECT)
    assert not log.admits(user_subject(USER))


def test_after_the_start_record_all_its_user_and_its_groups_are_admitted() -> None:
    log = started(("a",))
    assert log.started and log.groups == ("a",)
    assert log.admits(ALL_SUBJECT)
    assert log.admits(user_subject(USER))
    assert log.admits(group_subject("a"))
    assert not log.admits(user_subject("someone-else"))
    assert not log.admits(group_subject("b"))
    assert not log.admits(group_subject("ab"))
    assert not log.admits(connection_subject("other"))


def test_a_connection_without_a_user_gets_no_user_subject() -> None:
    log = new_log(user_id=None)
    log.apply(record(records.RecordKind.START), 1)
    assert log.admits(ALL_SUBJECT)
    assert not log.admits(user_subject(USER))
    assert user_subject(USER) not in log.subjects()


def test_a_replay_reads_every_group_because_groups_change_during_it() -> None:
    assert set(new_log().subjects()) == {ALL_SUBJECT, "realtime.group.>", OWN, user_subject(USER)}


def test_only_the_first_start_record_counts_and_names_that_are_not_strings_are_ignored() -> None:
    log = new_log()
    log.apply(record(records.RecordKind.START, groups=["a", 3, None]), 1)
    log.apply(record(records.RecordKind.START, groups=["b"]), 2)
    assert log.groups == ("a",)


def test_join_and_leave_change_the_groups_once() -> None:
    log = started()
    for position, (kind, group) in enumerate(
        [
            (records.RecordKind.JOIN, "a"),
            (records.RecordKind.JOIN, "b"),
            (records.RecordKind.JOIN, "a"),
            (records.RecordKind.LEAVE, "a"),
        ],
        start=2,
    ):
        assert log.apply(record(kind, group=group), position) is False
    assert log.groups == ("b",)
    log.apply(record(records.RecordKind.LEAVE, group="c"), 9)
    log.apply(record(records.RecordKind.JOIN, group=7), 10)
    assert log.groups == ("b",)


def test_message_records_are_sent_and_move_the_inbound_count_up_only() -> None:
    log = started()
    assert log.apply(records.decode_record(records.message_record(b"frame", inbound=3)), 2) is True
    assert log.apply(records.decode_record(records.processed_record(2)), 3) is False
    assert log.inbound == 3
    assert log.apply(records.decode_record(records.processed_record(4)), 4) is False
    assert log.apply(records.decode_record(records.message_record(b"frame")), 5) is True
    assert log.inbound == 4


@pytest.mark.parametrize("kind", [records.RecordKind.TAKEOVER, records.RecordKind.END])
def test_takeover_and_end_records_change_nothing(kind: records.RecordKind) -> None:
    log = started(("a",))
    assert log.apply(record(kind, epoch=3), 2) is False
    assert (log.groups, log.inbound, log.sent) == (("a",), 0, 0)


# -- counting and acknowledgements -------------------------------------------------------------------


def test_unacknowledged_bytes_follow_counts_and_acks() -> None:
    log = started()
    assert [log.count_sent(position, size) for position, size in [(2, 10), (3, 20), (5, 40)]] == [1, 2, 3]
    assert (log.unacknowledged, log.unacknowledged_bytes) == (3, 70)
    log.acknowledged(2)
    assert (log.unacknowledged, log.unacknowledged_bytes) == (1, 40)
    log.acknowledged(1)  # older: nothing changes
    assert (log.unacknowledged, log.unacknowledged_bytes) == (1, 40)
    log.acknowledged(99)  # more than was sent: everything
    assert (log.unacknowledged, log.unacknowledged_bytes) == (0, 0)
    assert log.count_sent(6, 5) == 4
    assert log.unacknowledged_bytes == 5


def test_a_log_from_a_checkpoint_numbers_on_from_it() -> None:
    log = new_log(Checkpoint(position=40, sent=12, groups=("a",), inbound=3))
    assert log.started and log.admits(group_subject("a"))
    assert log.count_sent(41, 1) == 13
    log.acknowledged(12)  # what the checkpoint had: nothing to drop
    assert log.unacknowledged == 1


# -- checkpoints ----------------------------------------------------------------------------------------


def test_a_checkpoint_stops_at_the_last_acknowledged_message() -> None:
    log = new_log()
    log.apply(record(records.RecordKind.START, groups=["a"]), 1)
    log.count_sent(2, 10)
    log.apply(records.decode_record(records.processed_record(1)), 3)
    log.count_sent(4, 10)
    log.apply(record(records.RecordKind.JOIN, group="b"), 5)
    log.apply(records.decode_record(records.processed_record(2)), 6)
    log.count_sent(7, 10)
    log.acknowledged(2)
    assert log.take_checkpoint(9) == Checkpoint(position=4, sent=2, groups=("a",), inbound=1, started=True)
    assert log.checkpoint.position == 4


def test_with_everything_acknowledged_the_checkpoint_moves_to_the_routed_position() -> None:
    log = started(("a",))
    log.count_sent(2, 10)
    log.apply(record(records.RecordKind.JOIN, group="b"), 3)
    log.acknowledged(1)
    assert log.take_checkpoint(8) == Checkpoint(position=8, sent=1, groups=("a", "b"), inbound=0)
    assert log.take_checkpoint(1).position == 8  # never back behind what it said before


def test_a_checkpoint_before_the_start_record_is_not_started() -> None:
    log = new_log(Checkpoint(position=10, sent=0, groups=(), inbound=0, started=False))
    checkpoint = log.take_checkpoint(11)  # the start record, at 12, is stored but not routed yet
    assert checkpoint == Checkpoint(position=11, sent=0, groups=(), inbound=0, started=False)
    log.apply(record(records.RecordKind.START, groups=["a"]), 12)
    assert log.take_checkpoint(12) == Checkpoint(position=12, sent=0, groups=("a",), inbound=0, started=True)


def test_a_checkpoint_never_goes_back_behind_one_it_moved_up() -> None:
    """Regression: with nothing unacknowledged a checkpoint moves up to the routed position; a later one
    (with a message unacknowledged) must not go back to the last acknowledged message, or a replay from
    it would read that stretch with the later groups and count a message the client never received."""
    stream = [
        (ALL_SUBJECT, b"first", 2),
        (group_subject("a"), b"before the join", 3),
        (OWN, records.marker_record(records.RecordKind.JOIN, group="a"), 4),
        (ALL_SUBJECT, b"after", 5),
    ]
    log = started()
    assert [take(log, *message) for message in stream[:3]] == [1, None, None]
    log.acknowledged(1)
    assert log.take_checkpoint(4) == Checkpoint(position=4, sent=1, groups=("a",), inbound=0)
    assert take(log, *stream[3]) == 2  # unacknowledged
    checkpoint = log.take_checkpoint(5)
    assert checkpoint == Checkpoint(position=4, sent=1, groups=("a",), inbound=0)
    replayed = new_log(checkpoint)
    assert [take(replayed, *message) for message in stream if message[2] > checkpoint.position] == [2]


# -- the core argument: a replay from any checkpoint numbers as the live log did -----------------------------

Step = tuple[str, int, str, bytes]  # ("message", position, subject, payload) | ("ack", upto, "", b"") | ...

# Operations on the stream, with a small argument (a group, a size, how far the client acknowledges).
# Repeats in the list weigh the draw toward what changes numbering: broadcasts, membership, Acks and
# checkpoints; a start record opens the list after a few messages the connection must not get.
OPERATION = st.tuples(
    st.sampled_from(
        [
            *("all", "mine", "group", "group"),
            *("join", "leave", "reply", "processed"),
            *("ack", "ack", "checkpoint", "checkpoint"),
            *("other_user", "send", "takeover", "elsewhere", "start"),
        ]
    ),
    st.integers(0, 5),
)
OPERATIONS = st.builds(
    lambda before, start, after: [*before, ("start", start), *after],
    st.lists(OPERATION, max_size=3),
    st.integers(0, 3),
    st.lists(OPERATION, max_size=60),
)


@dataclass
class Run:
    """What a log did with a list of steps."""

    numbers: dict[int, int] = field(default_factory=dict)
    """Stream position -> the number the message sent from there got."""
    checkpoints: list[tuple[int, Checkpoint]] = field(default_factory=list)
    """(step index, checkpoint) of every checkpoint taken."""


def run(log: ConnectionLog, steps: list[tuple[int, Step]]) -> Run:
    result = Run()
    for index, (kind, value, subject, payload) in steps:
        if kind == "message":
            number = take(log, subject, payload, value)
            if number is not None:
                result.numbers[value] = number
        elif kind == "ack":
            log.acknowledged(value)
        else:
            result.checkpoints.append((index, log.take_checkpoint(value)))
    return result


def live_steps(operations: list[tuple[str, int]]) -> list[tuple[int, Step]]:
    """Turn operations into stream messages (positions 1 on), the client's Acks and checkpoints; a live
    log decides the Acks' values (the client never acknowledges more than it was sent)."""
    log = new_log()
    steps: list[tuple[int, Step]] = []
    position = acked = 0
    for index, (operation, value) in enumerate(operations):
        group = GROUPS[value % len(GROUPS)]
        step: Step
        if operation == "ack":
            acked = min(log.sent, acked + value)
            step = ("ack", acked, "", b"")
        elif operation == "checkpoint":
            step = ("checkpoint", position, "", b"")
        else:
            position += 1
            subject, payload = {
                "all": (ALL_SUBJECT, b"x" * (value + 1)),
                "mine": (user_subject(USER), b"u" * (value + 1)),
                "other_user": (user_subject("other"), b"o"),
                "group": (group_subject(group), b"g" * (value + 1)),
                "start": (
                    OWN,
                    records.marker_record(
                        records.RecordKind.START, groups=[g for i, g in enumerate(GROUPS) if value >> i & 1]
                    ),
                ),
                "join": (OWN, records.marker_record(records.RecordKind.JOIN, group=group)),
                "leave": (OWN, records.marker_record(records.RecordKind.LEAVE, group=group)),
                "reply": (OWN, records.message_record(b"r" * (value + 1), inbound=log.inbound + 1)),
                "send": (OWN, records.message_record(b"s" * (value + 1))),
                "processed": (OWN, records.processed_record(log.inbound + value)),
                "takeover": (OWN, records.marker_record(records.RecordKind.TAKEOVER, epoch=value)),
                "elsewhere": (connection_subject("other"), records.message_record(b"e")),
            }[operation]
            step = ("message", position, subject, payload)
        steps.append((index, step))
        run(log, [(index, step)])
    return steps


def state_at(steps: list[tuple[int, Step]], position: int) -> tuple[bool, frozenset[str], int]:
    """Whether the connection had started, its groups and the client messages processed, after the
    stream up to ``position``: told from its records alone."""
    started, groups, inbound = False, set[str](), 0
    for _, (kind, at, subject, payload) in steps:
        if kind != "message" or at > position or subject != OWN:
            continue
        found = records.decode_record(payload)
        inbound = max(inbound, found.inbound)
        if found.kind is records.RecordKind.START and not started:
            started, groups = True, set(found.fields["groups"])
        elif found.kind is records.RecordKind.JOIN:
            groups.add(found.fields["group"])
        elif found.kind is records.RecordKind.LEAVE:
            groups.discard(found.fields["group"])
    return started, frozenset(groups), inbound


@settings(max_examples=400, deadline=None)
@given(OPERATIONS)
def test_a_replay_from_any_checkpoint_numbers_and_checkpoints_exactly_as_the_live_log(
    operations: list[tuple[str, int]],
) -> None:
    steps = live_steps(operations)
    live = run(new_log(), steps)
    previous = NEW
    for at, checkpoint in live.checkpoints:
        assert checkpoint.position >= previous.position and checkpoint.sent >= previous.sent
        previous = checkpoint
        # Everything up to the checkpoint's position that was sent is acknowledged, and counted in it;
        # its groups, processed count and start are those at its position.
        assert checkpoint.sent == sum(1 for position in live.numbers if position <= checkpoint.position)
        started, groups, inbound = state_at(steps, checkpoint.position)
        assert (checkpoint.started, frozenset(checkpoint.groups), checkpoint.inbound) == (started, groups, inbound)
        # A replica that takes the connection over replays the stream after the position, then goes on
        # with the same Acks and checkpoints.
        replay_steps = [
            (index, step)
            for index, step in steps
            if index < at and step[0] == "message" and step[1] > checkpoint.position
        ] + [(index, step) for index, step in steps if index > at]
        replayed = run(new_log(checkpoint), replay_steps)
        assert replayed.numbers == {p: n for p, n in live.numbers.items() if p > checkpoint.position}
        assert replayed.checkpoints == [(index, later) for index, later in live.checkpoints if index > at]


# -- Checkpoint on the wire ------------------------------------------------------------------------------


@given(
    position=st.integers(0, 2**53),
    sent=st.integers(0, 2**53),
    groups=st.lists(st.text(max_size=8), max_size=4),
    inbound=st.integers(0, 2**53),
    started=st.booleans(),
)
def test_a_checkpoint_round_trips(position: int, sent: int, groups: list[str], inbound: int, started: bool) -> None:
    checkpoint = Checkpoint(position=position, sent=sent, groups=tuple(groups), inbound=inbound, started=started)
    assert Checkpoint.from_wire(checkpoint.to_wire()) == checkpoint


def test_an_older_checkpoint_without_started_is_started() -> None:
    wire = {"position": 1, "sent": 2, "groups": ["a"], "inbound": 3}
    assert Checkpoint.from_wire(wire) == Checkpoint(position=1, sent=2, groups=("a",), inbound=3, started=True)


GOOD = {"position": 1, "sent": 2, "groups": ["a"], "inbound": 3, "started": True}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "must be an object"),
        ([1, 2], "must be an object"),
        ({**GOOD, "position": -1}, "position must be an integer"),
        ({**GOOD, "sent": True}, "sent must be an integer"),
        ({**GOOD, "inbound": 1.0}, "inbound must be an integer"),
        ({**GOOD, "inbound": "3"}, "inbound must be an integer"),
        ({k: v for k, v in GOOD.items() if k != "position"}, "position must be an integer"),
        ({**GOOD, "groups": "a"}, "groups must be a list"),
        ({**GOOD, "groups": ["a", 1]}, "groups must be a list"),
        ({k: v for k, v in GOOD.items() if k != "groups"}, "groups must be a list"),
        ({**GOOD, "started": 1}, "started must be true or false"),
        ({**GOOD, "started": None}, "started must be true or false"),
    ],
)
def test_checkpoints_not_written_by_to_wire_are_refused(value: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Checkpoint.from_wire(value)
