"""Handshake request parsing, reply encoding and protocol resolution (digest section 3)."""

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.signalr import (
    HANDSHAKE_OK,
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    HandshakeError,
    HandshakeReader,
    HandshakeRequest,
    Invocation,
    Ping,
    TransferFormat,
    encode_handshake_error,
    resolve_protocol,
)
from gateway.signalr.errors import SignalRError

TEXT_ONLY: tuple[TransferFormat, ...] = ("Text",)  # what SSE carries
UNEXPECTED = "An unexpected error occurred during connection handshake."


def test_reply_bytes() -> None:
    assert HANDSHAKE_OK == b"{}\x1e"
    assert encode_handshake_error("Handshake was canceled.") == b'{"error":"Handshake was canceled."}\x1e'
    assert encode_handshake_error('a "q"') == b'{"error":"a \\"q\\""}\x1e'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"protocol":"json","version":1}\x1e', HandshakeRequest("json", 1)),
        (b'{"protocol":"messagepack","version":2}\x1e', HandshakeRequest("messagepack", 2)),
        (b'{"protocol":"json","version":0}\x1e', HandshakeRequest("json", 0)),
        (b'{"version":1,"protocol":"JSON","extra":[1,{"a":null}]}\x1e', HandshakeRequest("JSON", 1)),
    ],
)
def test_parse_request(raw: bytes, expected: HandshakeRequest) -> None:
    reader = HandshakeReader(max_bytes=32768)
    assert reader.feed(raw) == expected
    assert reader.remainder == b""


def test_byte_by_byte() -> None:
    reader = HandshakeReader(max_bytes=32768)
    raw = b'{"protocol":"json","version":1}\x1e'
    for byte in raw[:-1]:
        assert reader.feed(bytes([byte])) is None
    assert reader.feed(raw[-1:]) == HandshakeRequest("json", 1)


def test_handshake_followed_by_messages_in_same_chunk() -> None:
    reader = HandshakeReader(max_bytes=32768)
    chunk = b'{"protocol":"json","version":1}\x1e{"type":6}\x1e{"type":1,"target":"Send","arguments":[42]}\x1e{"ty'
    request = reader.feed(chunk)
    assert request == HandshakeRequest("json", 1)
    hub = resolve_protocol(request).new_reader(max_message_bytes=None)
    assert hub.feed(reader.remainder) == [Ping(), Invocation("Send", (42,))]
    assert hub.feed(b'pe":6}\x1e') == [Ping()]


def test_messagepack_handshake_followed_by_binary_messages() -> None:
    reader = HandshakeReader(max_bytes=32768)
    request = reader.feed(b'{"protocol":"messagepack","version":1}\x1e\x02\x91\x06')
    assert request is not None
    hub = resolve_protocol(request)
    assert hub is MESSAGEPACK_PROTOCOL
    assert hub.new_reader(max_message_bytes=None).feed(reader.remainder) == [Ping()]


def test_feed_after_completion_is_a_bug() -> None:
    reader = HandshakeReader(max_bytes=100)
    assert reader.feed(b'{"protocol":"json","version":1}\x1e') is not None
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


def test_oversized_without_separator_is_canceled() -> None:
    reader = HandshakeReader(max_bytes=16)
    assert reader.feed(b'{"protocol":"js') is None
    with pytest.raises(HandshakeError) as info:
        reader.feed(b"on")
    assert info.value.client_message == "Handshake was canceled."


def test_oversized_complete_record_is_canceled() -> None:
    reader = HandshakeReader(max_bytes=20)
    with pytest.raises(HandshakeError) as info:
        reader.feed(b'{"protocol":"json","version":1}\x1e')
    assert info.value.client_message == "Handshake was canceled."


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'"json"',
        b"{}",
        b'{"protocol":"json"}',
        b'{"version":1}',
        b'{"protocol":1,"version":1}',
        b'{"protocol":"json","version":"1"}',
        b'{"protocol":"json","version":1.0}',
        b'{"protocol":"json","version":true}',
        b'{"protocol":null,"version":1}',
        b'{"protocol":"js\xffon","version":1}',
        b'{"protocol":"json","version":1',
    ],
)
def test_malformed_request(record: bytes) -> None:
    reader = HandshakeReader(max_bytes=32768)
    with pytest.raises(HandshakeError) as info:
        reader.feed(record + b"\x1e")
    assert info.value.client_message == UNEXPECTED
    assert info.value.detail


@pytest.mark.parametrize(
    ("name", "protocol"),
    [
        ("json", JSON_PROTOCOL),
        ("JSON", JSON_PROTOCOL),
        ("messagepack", MESSAGEPACK_PROTOCOL),
        ("MessagePack", MESSAGEPACK_PROTOCOL),
    ],
)
@pytest.mark.parametrize("version", [0, 1, 2])
def test_resolve(name: str, protocol: object, version: int) -> None:
    assert resolve_protocol(HandshakeRequest(name, version)) is protocol


def test_resolve_unknown_protocol() -> None:
    with pytest.raises(HandshakeError) as info:
        resolve_protocol(HandshakeRequest("Xml", 1))
    assert info.value.client_message == "The protocol 'Xml' is not supported."


@pytest.mark.parametrize("version", [3, 99, -1])
def test_resolve_unsupported_version(version: int) -> None:
    with pytest.raises(HandshakeError) as info:
        resolve_protocol(HandshakeRequest("json", version))
    assert info.value.client_message == f"The server does not support version {version} of the 'json' protocol."


def test_resolve_transfer_format_mismatch() -> None:
    with pytest.raises(HandshakeError) as info:
        resolve_protocol(HandshakeRequest("messagepack", 1), transfer_formats=TEXT_ONLY)
    assert info.value.client_message == (
        "Cannot use the 'messagepack' protocol on the current transport. "
        "The transport does not support 'Binary' transfer format."
    )
    assert resolve_protocol(HandshakeRequest("json", 1), transfer_formats=TEXT_ONLY) is JSON_PROTOCOL


def test_resolve_with_restricted_protocol_set() -> None:
    with pytest.raises(HandshakeError) as info:
        resolve_protocol(HandshakeRequest("messagepack", 1), protocols=(JSON_PROTOCOL,))
    assert info.value.client_message == "The protocol 'messagepack' is not supported."


@given(st.binary(max_size=80), st.integers(1, 64))
def test_fuzz_only_handshake_errors(data: bytes, max_bytes: int) -> None:
    reader = HandshakeReader(max_bytes=max_bytes)
    try:
        request = reader.feed(data)
    except SignalRError:
        return
    if request is not None:
        with contextlib.suppress(HandshakeError):
            resolve_protocol(request)


@given(st.text(max_size=30), st.integers(-(2**63), 2**63 - 1))
def test_roundtrip_generated_request(protocol: str, version: int) -> None:
    reader = HandshakeReader(max_bytes=10_000)
    raw = orjson.dumps({"protocol": protocol, "version": version}) + b"\x1e"
    assert reader.feed(raw) == HandshakeRequest(protocol, version)
