"""The bytes of the HTTP transports: Server-Sent Events framing, and what replicas send each other."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth import Principal
from gateway.transport.forwarding import (
    MalformedForward,
    decode_caller,
    decode_message,
    decode_reply,
    encode_caller,
    encode_message,
    encode_reply,
)
from gateway.transport.http_connections import Caller
from gateway.transport.replies import NO_CACHE, Reply, poll_reply
from gateway.transport.server_sent_events import chunked_event, event, is_event_stream_request

# -- Server-Sent Events ---------------------------------------------------------------------------


def test_an_event_is_data_lines_and_a_blank_line() -> None:
    # The spec's example: one JSON record per line, CRLF endings.
    assert event(b'{"type":6}\x1e') == b'data: {"type":6}\x1e\r\n\r\n'


def test_each_line_of_a_payload_is_its_own_data_line() -> None:
    assert event(b"a\nb\r\nc") == b"data: a\r\ndata: b\r\ndata: c\r\n\r\n"


@given(st.binary(max_size=200).filter(lambda payload: b"\r" not in payload))
def test_eventsource_rejoins_the_lines_to_the_payload(payload: bytes) -> None:
    """What a browser's EventSource hands to the client: the data lines joined with \\n (a lone \\r
    ends a line for EventSource too; hub messages never hold a raw CR or LF)."""
    body = event(payload)
    assert body.endswith(b"\r\n\r\n")
    lines = body[: -len(b"\r\n\r\n")].split(b"\r\n")
    assert all(line.startswith(b"data: ") for line in lines)
    assert b"\n".join(line.removeprefix(b"data: ") for line in lines) == payload


@given(st.binary(max_size=300))
def test_a_chunked_event_is_one_http_chunk(payload: bytes) -> None:
    chunk = chunked_event(payload)
    size, _, rest = chunk.partition(b"\r\n")
    assert int(size, 16) == len(event(payload))
    assert rest == event(payload) + b"\r\n"


@pytest.mark.parametrize(
    ("accept", "stream"),
    [
        ("text/event-stream", True),
        ("Text/Event-Stream; charset=utf-8", True),
        ("application/json, text/event-stream;q=0.9", True),
        ("*/*", False),
        ("text/plain", False),
        (None, False),
    ],
)
def test_the_accept_header_tells_an_event_stream_from_a_poll(accept: str | None, stream: bool) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    assert is_event_stream_request(make_mocked_request("GET", "/hubs/admin?id=x", headers=headers)) is stream


def test_polls_are_never_cached() -> None:
    reply = poll_reply(200, b"{}\x1e")
    assert reply.content_type == "application/octet-stream"
    assert reply.headers == NO_CACHE
    assert NO_CACHE == {
        "Cache-Control": "no-cache, no-store",
        "Pragma": "no-cache",
        "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
    }
    assert poll_reply(204).content_type == "text/plain"


# -- between replicas -----------------------------------------------------------------------------

callers = st.builds(
    Caller,
    st.builds(
        Principal,
        st.one_of(st.none(), st.text(max_size=40)),
        st.one_of(st.none(), st.text(max_size=40)),
        st.frozensets(st.text(max_size=12), max_size=4),
        st.floats(min_value=0, max_value=4e9, allow_nan=False),
    ),
    st.text(max_size=45),
)


@given(callers)
def test_a_caller_survives_the_trip(caller: Caller) -> None:
    header, _ = decode_message(encode_message({"caller": encode_caller(caller)}))
    assert decode_caller(header["caller"]) == caller


@given(st.integers(100, 599), st.binary(max_size=500), st.sampled_from(["text/plain", "application/octet-stream"]))
def test_a_reply_survives_the_trip_byte_for_byte(status: int, body: bytes, content_type: str) -> None:
    reply = Reply(status, body, content_type, {"Retry-After": "1"})
    assert decode_reply(encode_reply(reply)) == reply


@given(st.binary(max_size=500))
def test_a_body_with_newlines_and_any_bytes_is_kept(body: bytes) -> None:
    assert decode_message(encode_message({"op": "send"}, body)) == ({"op": "send"}, body)


@pytest.mark.parametrize(
    "payload",
    [b"", b"no header line", b"[1,2]\nbody", b"{not json\n", b'"text"\n'],
    ids=["empty", "no-newline", "array", "bad-json", "string"],
)
def test_a_malformed_message_is_refused(payload: bytes) -> None:
    with pytest.raises(MalformedForward):
        decode_message(payload)


@pytest.mark.parametrize(
    "caller",
    [
        None,
        [],
        {"user": 1, "name": None, "roles": [], "exp": 1.0, "ip": "x"},
        {"user": None, "name": None, "roles": "Admin", "exp": 1.0, "ip": "x"},
        {"user": None, "name": None, "roles": [1], "exp": 1.0, "ip": "x"},
        {"user": None, "name": None, "roles": [], "exp": "soon", "ip": "x"},
        {"user": None, "name": None, "roles": [], "exp": 1.0},
    ],
)
def test_a_malformed_caller_is_refused(caller: object) -> None:
    with pytest.raises(MalformedForward):
        decode_caller(caller)


@pytest.mark.parametrize(
    "header",
    [b"{}", b'{"status":"200","type":"text/plain","headers":{}}', b'{"status":200,"type":"t","headers":{"a":1}}'],
)
def test_a_malformed_reply_is_refused(header: bytes) -> None:
    with pytest.raises(MalformedForward):
        decode_reply(header + b"\n")
