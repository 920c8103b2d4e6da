"""Stateful reconnect's numbering of the messages a peer receives (the hub protocol's Ack / Sequence).

Each side numbers the *trackable* messages it sends (Invocation, StreamItem, Completion,
StreamInvocation, CancelInvocation) from 1; the numbers never go on the wire except in Ack ("I have
processed everything up to N") and Sequence ("the next message I send is number N", sent first on a
resumed connection). :class:`ReceivedSequence` is the receiving side: it numbers what arrives, drops
what was already processed before a reconnect, and follows the peer's Sequence.
"""

from __future__ import annotations

from typing import Final

from gateway.signalr.errors import ProtocolError
from gateway.signalr.messages import (
    CancelInvocation,
    Completion,
    HubMessage,
    Invocation,
    StreamInvocation,
    StreamItem,
)

TRACKABLE: Final = (Invocation, StreamItem, Completion, StreamInvocation, CancelInvocation)


def is_trackable(message: HubMessage) -> bool:
    return isinstance(message, TRACKABLE)


class ReceivedSequence:
    """The numbers of the trackable messages received from the peer."""

    __slots__ = ("latest_processed", "next_expected")

    def __init__(self, *, latest_processed: int = 0) -> None:
        self.latest_processed = latest_processed
        """The highest number handed on for processing (everything up to it was)."""
        self.next_expected = latest_processed + 1
        """The number the next trackable message will get."""

    def number(self) -> int | None:
        """Number the next trackable message: its number, or None when it is a repeat to drop."""
        number = self.next_expected
        self.next_expected += 1
        if number <= self.latest_processed:
            return None
        self.latest_processed = number
        return number

    def resume_after(self, latest_processed: int) -> None:
        """Everything up to ``latest_processed`` was handled before (learnt once the connection's
        history has been replayed)."""
        self.latest_processed = max(self.latest_processed, latest_processed)
        self.next_expected = self.latest_processed + 1

    def restart_at(self, sequence_id: int) -> None:
        """The peer's Sequence: its next message has number ``sequence_id`` (repeats may follow)."""
        if sequence_id > self.next_expected:
            # The JS client's text for the same violation.
            raise ProtocolError("Sequence ID greater than amount of messages we've received.")
        if sequence_id < 1:
            raise ProtocolError("'sequenceId' must be at least 1")
        self.next_expected = sequence_id
