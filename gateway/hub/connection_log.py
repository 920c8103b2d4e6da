"""What one resumable connection receives from the fan-out stream, decided the same way live and in a
replay, so a replica that replays from a checkpoint numbers every message as the first one did.

From its ``start`` record on, a connection receives: every message of ``realtime.all`` and of its user's
subject; every message of a group it is in (membership changes only at ``join`` / ``leave`` records);
and the ``message`` records of its own subject. The client numbers those messages from 1 as they
arrive; :class:`ConnectionLog` counts them, remembers the stream position of each one not yet
acknowledged, and yields the :class:`Checkpoint` to resume from: a position, the count sent up to
there, the groups and the client messages processed by then. Pure: no I/O, no clock.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, TypeVar

from broker_bridge.connection_stream import RecordKind, StreamRecord
from broker_bridge.subjects import ALL_SUBJECT, GROUP_PREFIX, connection_subject, user_subject

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A point to resume from: replay the stream after ``position``, numbering from ``sent + 1``.

    ``started``: the connection's ``start`` record lies at or before ``position`` (before it, the
    connection receives nothing)."""

    position: int
    sent: int
    groups: tuple[str, ...]
    inbound: int
    started: bool = True

    def to_wire(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "sent": self.sent,
            "groups": list(self.groups),
            "inbound": self.inbound,
            "started": self.started,
        }

    @classmethod
    def from_wire(cls, value: Any) -> Checkpoint:
        """Raises ValueError on anything :meth:`to_wire` does not write."""
        if not isinstance(value, dict):
            raise ValueError("checkpoint must be an object")
        position, sent, inbound = (_count(value, name) for name in ("position", "sent", "inbound"))
        groups = value.get("groups")
        if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
            raise ValueError("checkpoint groups must be a list of names")
        started = value.get("started", True)
        if not isinstance(started, bool):
            raise ValueError("checkpoint started must be true or false")
        return cls(position=position, sent=sent, groups=tuple(groups), inbound=inbound, started=started)


class ConnectionLog:
    """One connection's numbering of the stream, from a checkpoint on."""

    def __init__(self, *, key: str, user_id: str | None, checkpoint: Checkpoint) -> None:
        self.key = key
        self.groups: tuple[str, ...] = checkpoint.groups
        self.sent = checkpoint.sent
        """Trackable messages sent to the client so far (the last one's number)."""
        self.inbound = checkpoint.inbound
        """Client messages whose handling is recorded in the stream, up to this number."""
        self.started = checkpoint.started
        """Whether the ``start`` record has been applied (before it the connection receives nothing)."""
        self._started_at: int | None = None
        self._own_subject = connection_subject(key)
        self._user_subject = user_subject(user_id) if user_id else None
        self._checkpoint = checkpoint
        # Stream positions and sizes of the messages sent and not yet acknowledged, numbers acked + 1 on.
        self._unacked = array("q")
        self._unacked_sizes = array("q")
        self.unacknowledged_bytes = 0
        """The size of the messages sent and not yet acknowledged."""
        self._acked = checkpoint.sent
        self._acked_position = checkpoint.position
        # (position, value) of every change since the checkpoint, to tell a checkpoint's groups and
        # processed count at an acknowledged message's position.
        self._group_changes: list[tuple[int, tuple[str, ...]]] = []
        self._inbound_changes: list[tuple[int, int]] = []

    @property
    def checkpoint(self) -> Checkpoint:
        """The last checkpoint taken (or the one the log started from)."""
        return self._checkpoint

    def subjects(self) -> tuple[str, ...]:
        """Every subject a replay must read: its groups may change during the replay."""
        subjects = [ALL_SUBJECT, GROUP_PREFIX + ">", self._own_subject]
        if self._user_subject is not None:
            subjects.append(self._user_subject)
        return tuple(subjects)

    # -- what the connection receives ----------------------------------------------------------

    def admits(self, subject: str) -> bool:
        """Whether a broadcast on ``subject`` is for this connection now."""
        if not self.started:
            return False
        if subject == ALL_SUBJECT or subject == self._user_subject:
            return True
        return subject.startswith(GROUP_PREFIX) and subject[len(GROUP_PREFIX) :] in self.groups

    def count_sent(self, position: int, size: int) -> int:
        """A trackable message of ``size`` bytes at stream ``position`` goes to the client: its number."""
        self.sent += 1
        self._unacked.append(position)
        self._unacked_sizes.append(size)
        self.unacknowledged_bytes += size
        return self.sent

    def apply(self, record: StreamRecord, position: int) -> bool:
        """Take one of the connection's own records; True when it is a message to send (then count it
        with :meth:`count_sent`)."""
        match record.kind:
            case RecordKind.MESSAGE | RecordKind.PROCESSED:
                if record.inbound > self.inbound:
                    self.inbound = record.inbound
                    self._inbound_changes.append((position, record.inbound))
                return record.kind is RecordKind.MESSAGE
            case RecordKind.START:
                if not self.started:
                    self.started = True
                    self._started_at = position
                    groups = record.fields.get("groups", [])
                    self._set_groups(tuple(g for g in groups if isinstance(g, str)), position)
            case RecordKind.JOIN:
                group = record.fields.get("group")
                if isinstance(group, str) and group not in self.groups:
                    self._set_groups((*self.groups, group), position)
            case RecordKind.LEAVE:
                group = record.fields.get("group")
                if group in self.groups:
                    self._set_groups(tuple(g for g in self.groups if g != group), position)
            case RecordKind.TAKEOVER | RecordKind.END:
                pass
        return False

    def _set_groups(self, groups: tuple[str, ...], position: int) -> None:
        self.groups = groups
        self._group_changes.append((position, groups))

    # -- acknowledgements and checkpoints ----------------------------------------------------

    def acknowledged(self, upto: int) -> None:
        """The client processed every message up to number ``upto``."""
        upto = min(upto, self.sent)
        if upto <= self._acked:
            return
        drop = upto - self._acked
        self._acked_position = self._unacked[drop - 1]
        self.unacknowledged_bytes -= sum(self._unacked_sizes[:drop])
        del self._unacked[:drop]
        del self._unacked_sizes[:drop]
        self._acked = upto

    @property
    def unacknowledged(self) -> int:
        return len(self._unacked)

    def take_checkpoint(self, stream_position: int) -> Checkpoint:
        """The newest point to resume from; ``stream_position`` is how far the stream has been routed
        (everything up to it that was for this connection has been counted)."""
        # With nothing unacknowledged, nothing for this connection lies between the last acknowledged
        # message and how far the stream has been routed: the checkpoint may move up to there.
        position = self._acked_position if self._unacked else max(stream_position, self._acked_position)
        # Later checkpoints start from here: the changes before it are forgotten below, so going back to
        # the last acknowledged message would pair that older position with this one's groups.
        self._acked_position = position
        checkpoint = Checkpoint(
            position=position,
            sent=self._acked,
            groups=_value_at(self._group_changes, position, self._checkpoint.groups),
            inbound=_value_at(self._inbound_changes, position, self._checkpoint.inbound),
            started=self._checkpoint.started or (self._started_at is not None and self._started_at <= position),
        )
        self._checkpoint = checkpoint
        self._group_changes = [change for change in self._group_changes if change[0] > position]
        self._inbound_changes = [change for change in self._inbound_changes if change[0] > position]
        return checkpoint


def _count(value: dict[str, Any], name: str) -> int:
    number = value.get(name)
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ValueError(f"checkpoint {name} must be an integer >= 0")
    return number


def _value_at(changes: list[tuple[int, T]], position: int, initial: T) -> T:
    value = initial
    for changed_at, changed_to in changes:
        if changed_at > position:
            break
        value = changed_to
    return value
