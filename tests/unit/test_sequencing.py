"""ReceivedSequence: stateful reconnect's numbering of what the peer sends (protocol digest §6)."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signalr import messages as msg
from gateway.signalr.errors import ProtocolError
from gateway.signalr.sequencing import ReceivedSequence, is_trackable

GREATER_THAN_RECEIVED = "Sequence ID greater than amount of messages we've received."


def numbers(sequence: ReceivedSequence, count: int) -> list[int | None]:
    return [sequence.number() for _ in range(count)]


# -- numbering -----------------------------------------------------------------------------------


def test_numbers_start_at_one_and_go_up_by_one() -> None:
    sequence = ReceivedSequence()
    assert (sequence.latest_processed, sequence.next_expected) == (0, 1)
    assert numbers(sequence, 3) == [1, 2, 3]
    assert (sequence.latest_processed, sequence.next_expected) == (3, 4)


def test_numbering_goes_on_after_what_was_processed_before() -> None:
    sequence = ReceivedSequence(latest_processed=7)
    assert sequence.next_expected == 8
    assert numbers(sequence, 2) == [8, 9]


@pytest.mark.parametrize(
    ("message", "trackable"),
    [
        (msg.Invocation("t", ()), True),
        (msg.StreamItem("1", None), True),
        (msg.Completion.void("1"), True),
        (msg.StreamInvocation("1", "t", ()), True),
        (msg.CancelInvocation("1"), True),
        (msg.Ping(), False),
        (msg.Close(), False),
        (msg.Ack(1), False),
        (msg.Sequence(1), False),
    ],
)
def test_only_types_1_to_5_are_numbered(message: msg.HubMessage, trackable: bool) -> None:
    assert is_trackable(message) is trackable


# -- restart_at: the peer's Sequence ---------------------------------------------------------------


def test_a_sequence_at_the_next_number_changes_nothing() -> None:
    sequence = ReceivedSequence()
    numbers(sequence, 2)
    sequence.restart_at(3)
    assert numbers(sequence, 1) == [3]


def test_repeats_after_a_sequence_are_dropped_until_a_new_message() -> None:
    sequence = ReceivedSequence()
    numbers(sequence, 5)
    sequence.restart_at(3)  # the peer resends 3, 4, 5, then sends 6
    assert numbers(sequence, 4) == [None, None, None, 6]
    assert sequence.latest_processed == 6


def test_a_sequence_from_one_drops_every_repeat() -> None:
    sequence = ReceivedSequence()
    numbers(sequence, 3)
    sequence.restart_at(1)
    assert numbers(sequence, 4) == [None, None, None, 4]


def test_a_sequence_greater_than_expected_is_the_js_clients_error_and_changes_nothing() -> None:
    sequence = ReceivedSequence()
    numbers(sequence, 2)
    with pytest.raises(ProtocolError) as raised:
        sequence.restart_at(4)  # message 3 would be skipped
    assert raised.value.reason == GREATER_THAN_RECEIVED
    assert (sequence.latest_processed, sequence.next_expected) == (2, 3)


@pytest.mark.parametrize("sequence_id", [0, -1])
def test_a_sequence_below_one_is_refused(sequence_id: int) -> None:
    sequence = ReceivedSequence()
    with pytest.raises(ProtocolError, match="at least 1"):
        sequence.restart_at(sequence_id)
    assert sequence.next_expected == 1


# -- resume_after: a resumed connection learns what was processed before ------------------------------


def test_resume_after_moves_the_numbering_past_what_was_processed() -> None:
    sequence = ReceivedSequence(latest_processed=2)  # the checkpoint's count
    sequence.resume_after(5)  # the replay found records up to 5
    assert (sequence.latest_processed, sequence.next_expected) == (5, 6)
    sequence.restart_at(3)  # the client resends from 3
    assert numbers(sequence, 4) == [None, None, None, 6]


def test_resume_after_never_goes_back() -> None:
    sequence = ReceivedSequence(latest_processed=5)
    sequence.resume_after(3)
    assert (sequence.latest_processed, sequence.next_expected) == (5, 6)


def test_after_resume_a_sequence_up_to_the_next_new_number_is_accepted() -> None:
    sequence = ReceivedSequence(latest_processed=0)
    sequence.resume_after(4)
    sequence.restart_at(5)  # the client had everything acknowledged: total sent + 1
    assert numbers(sequence, 1) == [5]
    with pytest.raises(ProtocolError):
        sequence.restart_at(7)


# -- the property: sends, losses and resumes never deliver twice nor skip ----------------------------

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 4)),
        st.tuples(st.just("deliver"), st.integers(0, 6)),
        st.tuples(st.just("ack"), st.integers(0, 6)),
        st.tuples(st.just("drop"), st.integers(0, 10)),
    ),
    max_size=60,
)


class Sender:
    """The peer (the JS client's MessageBuffer): numbers what it sends, keeps it until acknowledged and
    resends it after a reconnect, behind a Sequence."""

    def __init__(self) -> None:
        self.total = 0
        self.unacked: deque[int] = deque()

    def send(self) -> int:
        self.total += 1
        self.unacked.append(self.total)
        return self.total

    def acknowledged(self, upto: int) -> None:
        while self.unacked and self.unacked[0] <= upto:
            self.unacked.popleft()

    def sequence_id(self) -> int:
        return self.unacked[0] if self.unacked else self.total + 1


class Receiver:
    """The server: a new ServerConnection (so a new ReceivedSequence) per socket, built from what the
    stream says was processed (a possibly older checkpoint, then the replay's count)."""

    def __init__(self) -> None:
        self.sequence = ReceivedSequence()
        self.processed: list[int] = []

    def receive(self, message_id: int) -> None:
        number = self.sequence.number()
        if number is None:
            assert message_id <= self.sequence.latest_processed, "a new message was taken for a repeat"
            return
        assert number == message_id, f"message {message_id} numbered {number}"
        self.processed.append(message_id)

    def resumed(self, checkpoint_lag: int, sequence_id: int) -> None:
        processed = self.sequence.latest_processed
        self.sequence = ReceivedSequence(latest_processed=max(0, processed - checkpoint_lag))
        self.sequence.resume_after(processed)
        self.sequence.restart_at(sequence_id)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_any_interleaving_of_sends_losses_and_resumes_delivers_each_message_once_in_order(
    operations: list[tuple[str, Any]],
) -> None:
    sender, receiver = Sender(), Receiver()
    in_flight: deque[int] = deque()  # sent on the current socket, not yet read by the server
    acks_in_flight: deque[int] = deque()  # the server's Acks on the current socket
    for operation, count in operations:
        match operation:
            case "send":
                in_flight.extend(sender.send() for _ in range(count))
            case "deliver":
                for _ in range(min(count, len(in_flight))):
                    receiver.receive(in_flight.popleft())
                acks_in_flight.append(receiver.sequence.latest_processed)
            case "ack":
                for _ in range(min(count, len(acks_in_flight))):
                    sender.acknowledged(acks_in_flight.popleft())
            case "drop":  # the socket dies with whatever was on it; the client resumes on a new one
                in_flight.clear()
                acks_in_flight.clear()
                receiver.resumed(count, sender.sequence_id())
                in_flight.extend(sender.unacked)
        assert receiver.processed == list(range(1, len(receiver.processed) + 1))
    receiver.resumed(0, sender.sequence_id())
    for message_id in sender.unacked:
        receiver.receive(message_id)
    assert receiver.processed == list(range(1, sender.total + 1))
