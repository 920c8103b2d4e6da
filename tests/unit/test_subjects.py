"""Subject names: one NATS token per group or user, wildcards and separators rejected or encoded."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_bridge.subjects import (
    ALL_SUBJECT,
    MAX_NAME_LENGTH,
    USER_WILDCARD,
    InvalidSubjectName,
    group_subject,
    subject_matches,
    subscription_subject,
    user_subject,
)


def test_all_subject() -> None:
    assert ALL_SUBJECT == "realtime.all"


@pytest.mark.parametrize("group", ["alerts", "user-activity", "Team_42", "a", "x" * MAX_NAME_LENGTH])
def test_valid_group(group: str) -> None:
    assert group_subject(group) == f"realtime.group.{group}"


@pytest.mark.parametrize(
    "group",
    ["", "a.b", "*", "alerts.*", ">", "a>", "two words", " lead", "tab\t", "é", "x" * (MAX_NAME_LENGTH + 1)],
)
def test_invalid_group_is_rejected(group: str) -> None:
    with pytest.raises(InvalidSubjectName) as caught:
        group_subject(group)
    assert caught.value.kind == "group"
    assert caught.value.name == group
    assert str(caught.value) == "invalid group name"


@pytest.mark.parametrize("user_id", ["123e4567-e89b-12d3-a456-426614174000", "42", "user_1"])
def test_token_user_ids_are_kept(user_id: str) -> None:
    assert user_subject(user_id) == f"realtime.user.{user_id}"


def test_email_user_id_is_encoded() -> None:
    subject = user_subject("alice@example.com")
    token = subject.removeprefix("realtime.user.")
    assert token == "~YWxpY2VAZXhhbXBsZS5jb20"
    assert "." not in token
    assert base64.urlsafe_b64decode(token[1:] + "==").decode() == "alice@example.com"


@pytest.mark.parametrize("user_id", ["", "x" * (MAX_NAME_LENGTH + 1)])
def test_invalid_user_id_is_rejected(user_id: str) -> None:
    with pytest.raises(InvalidSubjectName) as caught:
        user_subject(user_id)
    assert caught.value.kind == "user"


@given(st.text(min_size=1, max_size=MAX_NAME_LENGTH))
def test_any_user_id_is_one_safe_token(user_id: str) -> None:
    subject = user_subject(user_id)
    assert subject.startswith("realtime.user.")
    token = subject.removeprefix("realtime.user.")
    assert token
    assert not set(token) & {".", "*", ">", " ", "\t", "\r", "\n"}


@given(st.text(min_size=1, max_size=MAX_NAME_LENGTH), st.text(min_size=1, max_size=MAX_NAME_LENGTH))
def test_distinct_user_ids_get_distinct_subjects(first: str, second: str) -> None:
    if first != second:
        assert user_subject(first) != user_subject(second)


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("realtime.all", "realtime.all", True),
        ("realtime.all", "realtime.all.more", False),
        ("realtime.user.*", "realtime.user.alice", True),
        ("realtime.user.*", "realtime.user", False),
        ("realtime.user.*", "realtime.user.alice.x", False),
        ("realtime.*.alice", "realtime.user.alice", True),
        ("realtime.>", "realtime.group.alerts", True),
        ("realtime.>", "realtime", False),
        ("realtime.group.alerts", "realtime.group.admins", False),
    ],
)
def test_subject_matching_follows_nats(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


@given(st.text(min_size=1, max_size=40))
def test_every_user_subject_is_carried_by_the_user_wildcard(user_id: str) -> None:
    subject = user_subject(user_id)
    assert subscription_subject(subject) == USER_WILDCARD
    assert subject_matches(USER_WILDCARD, subject)


def test_group_and_all_subjects_are_their_own_subscription() -> None:
    assert subscription_subject(ALL_SUBJECT) == ALL_SUBJECT
    assert subscription_subject(group_subject("alerts")) == "realtime.group.alerts"
