"""Subject names for hub fan-out, built here and nowhere else.

* ``realtime.group.<group>`` - every connection in a hub group;
* ``realtime.user.<userId>`` - every connection of one user;
* ``realtime.all`` - every connection;
* ``realtime.conn.<key>`` - one resumable connection's own records (the replies and markers of
  :mod:`broker_bridge.connection_stream`), written and read by gateway replicas only;
* ``realtime.replica.<replica key>.<operation>`` - requests between replicas (:func:`replica_subject`):
  a replica that receives a long-polling or Server-Sent Events request for a connection another
  replica owns forwards it there;
* ``platform.snapshots`` - every platform snapshot the collector publishes, kept for a day by stream
  ``PLATFORM_SNAPSHOTS`` (:mod:`broker_bridge.snapshot_stream`) so any replica can answer for the
  figures' history; not a fan-out subject (no connection receives it).

* ``realtime.collector.rules.<list|reload>`` - requests from a gateway to the stats collectors (every
  replica answers; the first answer counts): list the alert rules, or read the rules file again.

With the fan-out stream on, JetStream stream ``REALTIME_FANOUT`` keeps the first four for a short while
(:data:`FANOUT_STREAM_SUBJECTS`), so a connection can be replayed on any replica; replica and collector
subjects start with none of their prefixes, so the stream never stores them.

A gateway replica subscribes to each group subject it has local members of, to ``realtime.all``, and
once to ``realtime.user.*`` for all its users (:func:`subscription_subject`): a subscription per user
would cost every connection a broker round trip and a few KiB, while messages to single users are few.

Group names must be a single NATS token of ``[A-Za-z0-9_-]``; names with wildcards
(``*``, ``>``), separators (``.``) or spaces are rejected. User ids made only of those characters
(UUIDs, numbers) are used as they are; any other id is written as ``~`` + base64url(UTF-8 id), so
an e-mail address cannot inject subject tokens.
"""

from __future__ import annotations

import base64
import re
from typing import Final

SUBJECT_ROOT: Final = "realtime"
ALL_SUBJECT: Final = f"{SUBJECT_ROOT}.all"
GROUP_PREFIX: Final = f"{SUBJECT_ROOT}.group."
USER_PREFIX: Final = f"{SUBJECT_ROOT}.user."
USER_WILDCARD: Final = USER_PREFIX + "*"
CONNECTION_PREFIX: Final = f"{SUBJECT_ROOT}.conn."
FANOUT_STREAM_SUBJECTS: Final = (GROUP_PREFIX + ">", USER_PREFIX + ">", ALL_SUBJECT, CONNECTION_PREFIX + ">")
REPLICA_PREFIX: Final = f"{SUBJECT_ROOT}.replica."
COLLECTOR_RULES_PREFIX: Final = f"{SUBJECT_ROOT}.collector.rules."
COLLECTOR_RULES_LIST: Final = COLLECTOR_RULES_PREFIX + "list"
COLLECTOR_RULES_RELOAD: Final = COLLECTOR_RULES_PREFIX + "reload"
# What a replica serves: ``http`` - short operations on connections it owns (send, DELETE, start an
# event stream); ``poll`` - long polls on them (held up to the poll timeout, so counted apart);
# ``events`` - Server-Sent Events pushed by an owner to the replica holding the client's response.
REPLICA_OPERATIONS: Final = frozenset({"http", "poll", "events"})
SNAPSHOTS_SUBJECT: Final = "platform.snapshots"
# Long enough for any sensible group name, short enough to keep subjects cheap to route.
MAX_NAME_LENGTH: Final = 128

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


class InvalidSubjectName(ValueError):
    """A group or user name that cannot be part of a subject; ``name`` is the offending value."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"invalid {kind} name")
        self.kind = kind
        self.name = name


def group_subject(group: str) -> str:
    if len(group) > MAX_NAME_LENGTH or not _TOKEN.fullmatch(group):
        raise InvalidSubjectName("group", group)
    return GROUP_PREFIX + group


def user_subject(user_id: str) -> str:
    if not user_id or len(user_id) > MAX_NAME_LENGTH:
        raise InvalidSubjectName("user", user_id)
    if _TOKEN.fullmatch(user_id):
        return USER_PREFIX + user_id
    return USER_PREFIX + "~" + base64.urlsafe_b64encode(user_id.encode()).rstrip(b"=").decode()


def connection_subject(key: str) -> str:
    """The records of one resumable connection; ``key`` is its connection id (base64url)."""
    if not key or len(key) > MAX_NAME_LENGTH or not _TOKEN.fullmatch(key):
        raise InvalidSubjectName("connection", key)
    return CONNECTION_PREFIX + key


def replica_subject(replica: str, operation: str) -> str:
    """``realtime.replica.<replica>.<operation>``; ``replica`` is a replica key (one subject token)."""
    if len(replica) > MAX_NAME_LENGTH or not _TOKEN.fullmatch(replica):
        raise InvalidSubjectName("replica", replica)
    if operation not in REPLICA_OPERATIONS:
        raise InvalidSubjectName("operation", operation)
    return f"{REPLICA_PREFIX}{replica}.{operation}"


def subscription_subject(subject: str) -> str:
    """The broker subscription that carries ``subject`` to a gateway replica."""
    return USER_WILDCARD if subject.startswith(USER_PREFIX) else subject


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: ``*`` stands for one token, a final ``>`` for one or more."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">":
            return index == len(wanted) - 1 and len(tokens) > index
        if index >= len(tokens) or part not in ("*", tokens[index]):
            return False
    return len(tokens) == len(wanted)
