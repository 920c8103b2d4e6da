"""Subjects of requests between replicas: one per replica and operation, apart from every fan-out subject."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_bridge.keyvalue import replica_key
from broker_bridge.subjects import (
    ALL_SUBJECT,
    GROUP_PREFIX,
    MAX_NAME_LENGTH,
    REPLICA_OPERATIONS,
    USER_PREFIX,
    InvalidSubjectName,
    replica_subject,
    subject_matches,
)

# Another change stores these in a JetStream stream; requests between replicas must never land there.
FANOUT_PREFIXES = (GROUP_PREFIX, USER_PREFIX, ALL_SUBJECT, "realtime.conn.")


@pytest.mark.parametrize("operation", sorted(REPLICA_OPERATIONS))
def test_a_subject_per_replica_and_operation(operation: str) -> None:
    assert replica_subject("gateway-7f9c_2", operation) == f"realtime.replica.gateway-7f9c_2.{operation}"


@given(st.text(min_size=1, max_size=60), st.sampled_from(sorted(REPLICA_OPERATIONS)))
def test_any_replica_key_gives_a_subject_outside_the_fanout_subjects(replica_id: str, operation: str) -> None:
    subject = replica_subject(replica_key(replica_id), operation)
    assert not subject.startswith(FANOUT_PREFIXES)
    assert len(subject.split(".")) == 4
    for pattern in ("realtime.group.>", "realtime.user.>", "realtime.all", "realtime.all.>", "realtime.conn.>"):
        assert not subject_matches(pattern, subject)


@pytest.mark.parametrize("replica", ["", "a.b", "*", ">", "two words", "é", "x" * (MAX_NAME_LENGTH + 1)])
def test_a_replica_that_is_not_one_token_is_rejected(replica: str) -> None:
    with pytest.raises(InvalidSubjectName) as caught:
        replica_subject(replica, "http")
    assert caught.value.kind == "replica"


@pytest.mark.parametrize("operation", ["", "send", "http.x", "*", ">"])
def test_an_unknown_operation_is_rejected(operation: str) -> None:
    with pytest.raises(InvalidSubjectName) as caught:
        replica_subject("gateway-1", operation)
    assert caught.value.kind == "operation"
