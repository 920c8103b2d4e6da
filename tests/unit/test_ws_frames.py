"""Server frame headers match RFC 6455 section 5.2 at every length boundary."""

from __future__ import annotations

import pytest

from gateway.ws_frames import OPCODE_BINARY, OPCODE_TEXT, FrameHeaders, frame_header


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


def test_cache_returns_the_same_header_and_stays_bounded() -> None:
    headers = FrameHeaders()
    first = headers.get(OPCODE_TEXT, 300)
    assert headers.get(OPCODE_TEXT, 300) is first
    for length in range(10_000):
        assert headers.get(OPCODE_TEXT, length) == frame_header(OPCODE_TEXT, length)
    assert len(headers._cache) <= 4096
