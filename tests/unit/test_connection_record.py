"""What NATS KV keeps of a resumable connection (gateway.hub.resumable.ConnectionRecord)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.hub.connection_log import Checkpoint
from gateway.hub.resumable import ConnectionRecord
from tests.support.signalr_codec import JSON_VALUES

CHECKPOINTS = st.builds(
    Checkpoint,
    position=st.integers(0, 2**53),
    sent=st.integers(0, 2**53),
    groups=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    inbound=st.integers(0, 2**53),
    started=st.booleans(),
)
RECORDS = st.builds(
    ConnectionRecord,
    user_id=st.none() | st.text(max_size=12),
    protocol=st.sampled_from(["json", "messagepack"]),
    owner=st.text(max_size=12),
    epoch=st.integers(0, 2**53),
    attached=st.booleans(),
    detached_at=st.none() | st.floats(0, 2e9) | st.integers(0, 2**31),
    checkpoint=CHECKPOINTS,
)


@given(RECORDS)
def test_a_record_round_trips(record: ConnectionRecord) -> None:
    assert ConnectionRecord.decode(record.encode()) == record


def good() -> dict[str, Any]:
    return {
        "user": "u1",
        "protocol": "json",
        "owner": "a",
        "epoch": 1,
        "attached": True,
        "detachedAt": None,
        "checkpoint": Checkpoint(position=1, sent=0, groups=(), inbound=0).to_wire(),
    }


def test_the_wire_form_names_its_fields() -> None:
    assert ConnectionRecord.decode(orjson.dumps(good())) == ConnectionRecord(
        user_id="u1",
        protocol="json",
        owner="a",
        epoch=1,
        attached=True,
        detached_at=None,
        checkpoint=Checkpoint(position=1, sent=0, groups=(), inbound=0),
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"user": 5}, "bad user, protocol or owner"),
        ({"protocol": None}, "bad user, protocol or owner"),
        ({"owner": ["a"]}, "bad user, protocol or owner"),
        ({"epoch": True}, "bad epoch or state"),
        ({"epoch": "1"}, "bad epoch or state"),
        ({"attached": 1}, "bad epoch or state"),
        ({"detachedAt": "yesterday"}, "bad detach time"),
        ({"checkpoint": None}, "checkpoint must be an object"),
        ({"checkpoint": {"position": 1}}, "checkpoint sent must be an integer"),
    ],
)
def test_fields_it_does_not_write_are_refused(change: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        ConnectionRecord.decode(orjson.dumps({**good(), **change}))


@pytest.mark.parametrize(
    ("raw", "why"), [(b"", "not JSON"), (b"{", "not JSON"), (b"[]", "not an object"), (b"null", "not an object")]
)
def test_what_is_not_a_json_object_is_refused(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        ConnectionRecord.decode(raw)


CHECKPOINT_FIELDS = ("position", "sent", "groups", "inbound", "started")
RECORD_FIELDS = ("user", "protocol", "owner", "epoch", "attached", "detachedAt")
# Objects with the record's field names (the checkpoint's too) holding any JSON values.
ODD_RECORDS = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(RECORD_FIELDS, JSON_VALUES),
        "checkpoint": st.fixed_dictionaries({}, optional=dict.fromkeys(CHECKPOINT_FIELDS, JSON_VALUES)) | JSON_VALUES,
    },
)


@given(st.binary(max_size=80) | ODD_RECORDS.map(orjson.dumps))
def test_anything_else_decodes_or_raises_value_error(raw: bytes) -> None:
    try:
        record = ConnectionRecord.decode(raw)
    except ValueError:
        return
    assert ConnectionRecord.decode(record.encode()) == record
