"""Server frame headers match RFC 6455 section 5.2 at every length boundary."""

from __future__ import annotations

import pytest

from gateway.transport.ws_frames import OPCODE_BINARY, OPCODE_TEXT, frame_header, websocket_frame


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_headers_at_length_boundaries(length: int, expected: bytes) -> None:
    assert frame_header(OPCODE_TEXT, length) == expected


def test_binary_opcode() -> None:
    assert frame_header(OPCODE_BINARY, 3) == b"\x82\x03"


def test_websocket_frame_is_header_then_payload() -> None:
    payload = b"x" * 300
    assert websocket_frame(OPCODE_TEXT, payload) == frame_header(OPCODE_TEXT, 300) + payload
