"""Record framing: 0x1E text records and VarInt length-prefixed binary records."""

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.signalr.errors import MessageTooLargeError, ProtocolError, SignalRError
from gateway.signalr.framing import (
    RECORD_SEPARATOR,
    BinaryRecordReader,
    TextRecordReader,
    encode_varint,
)

# --- text records ----------------------------------------------------------------------------------------


def test_text_single_record() -> None:
    reader = TextRecordReader(max_record_bytes=None)
    assert reader.feed(b'{"type":6}\x1e') == [b'{"type":6}']
    assert reader.buffered_bytes == 0


def test_text_several_records_in_one_feed_and_partial_tail() -> None:
    reader = TextRecordReader(max_record_bytes=None)
    assert reader.feed(b"a\x1ebb\x1eccc") == [b"a", b"bb"]
    assert reader.buffered_bytes == 3
    assert reader.feed(b"c\x1e") == [b"cccc"]
    assert reader.buffered_bytes == 0


def test_text_byte_by_byte() -> None:
    reader = TextRecordReader(max_record_bytes=None)
    out: list[bytes] = []
    for byte in b"one\x1etwo\x1e":
        out += reader.feed(bytes([byte]))
    assert out == [b"one", b"two"]


def test_text_empty_record_and_empty_feed() -> None:
    reader = TextRecordReader(max_record_bytes=None)
    assert reader.feed(b"") == []
    assert reader.feed(b"\x1e") == [b""]


def test_text_limit_counts_separator() -> None:
    reader = TextRecordReader(max_record_bytes=4)
    assert reader.feed(b"abc\x1e") == [b"abc"]
    with pytest.raises(MessageTooLargeError) as info:
        reader.feed(b"abcd\x1e")
    assert info.value.size == 5
    assert info.value.limit == 4
    assert "4B" in info.value.reason


def test_text_limit_hit_by_partial_record_without_waiting_for_separator() -> None:
    reader = TextRecordReader(max_record_bytes=10)
    assert reader.feed(b"123456789") == []
    with pytest.raises(MessageTooLargeError) as info:
        reader.feed(b"0")
    assert info.value.size is None
    assert isinstance(info.value, ProtocolError)


def test_text_limit_applies_per_record_not_per_chunk() -> None:
    reader = TextRecordReader(max_record_bytes=4)
    assert reader.feed(b"abc\x1eabc\x1eabc\x1eab") == [b"abc", b"abc", b"abc"]


def test_text_large_record_fed_one_byte_at_a_time_is_linear() -> None:
    size = 200_000
    reader = TextRecordReader(max_record_bytes=None)
    started = time.perf_counter()
    for _ in range(size):
        assert reader.feed(b"x") == []
    assert reader.feed(RECORD_SEPARATOR) == [b"x" * size]
    assert time.perf_counter() - started < 5


def test_text_rejects_bad_limit() -> None:
    with pytest.raises(ValueError):
        TextRecordReader(max_record_bytes=0)


@given(st.lists(st.binary().map(lambda b: b.replace(b"\x1e", b"")), max_size=8), st.data())
def test_text_arbitrary_chunking(records: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(r + RECORD_SEPARATOR for r in records)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = TextRecordReader(max_record_bytes=None)
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += reader.feed(stream[start:end])
    assert out == records
    assert reader.buffered_bytes == 0


# --- VarInt ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (0x35, b"\x35"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (5248, b"\x80\x29"),
        (2**31 - 1, b"\xff\xff\xff\xff\x07"),
    ],
)
def test_varint_vectors(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    reader = BinaryRecordReader(max_record_bytes=None)
    assert reader.feed(encoded) == ([b""] if value == 0 else [])
    assert reader.buffered_bytes == (0 if value == 0 else len(encoded))


@pytest.mark.parametrize("value", [-1, 2**31])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)


@given(st.integers(0, 2**31 - 1))
def test_varint_roundtrip_via_reader_prefix(value: int) -> None:
    encoded = encode_varint(value)
    assert 1 <= len(encoded) <= 5
    reader = BinaryRecordReader(max_record_bytes=None)
    reader.feed(encoded)
    if value:
        # Prefix consumed but body pending: everything stays buffered.
        assert reader.buffered_bytes == len(encoded)


# --- binary records --------------------------------------------------------------------------------------


def test_binary_records_split_and_joined() -> None:
    reader = BinaryRecordReader(max_record_bytes=None)
    stream = b"\x02\x91\x06" + b"\x03\x92\x08\x03"
    assert reader.feed(stream) == [b"\x91\x06", b"\x92\x08\x03"]


def test_binary_byte_by_byte_with_multibyte_prefix() -> None:
    body = bytes(range(256)) * 2
    framed = encode_varint(len(body)) + body
    assert framed[:2] == b"\x80\x04"
    reader = BinaryRecordReader(max_record_bytes=None)
    out: list[bytes] = []
    for byte in framed:
        out += reader.feed(bytes([byte]))
    assert out == [body]
    assert reader.buffered_bytes == 0


@pytest.mark.parametrize(
    "prefix",
    [
        b"\xff\xff\xff\xff\x08",  # 5th byte > 7: over 2 GB
        b"\xff\xff\xff\xff\x7f",
        b"\x80\x80\x80\x80\x80",  # a sixth byte would follow
        b"\x80\x80\x80\x80\x80\x00",
    ],
)
def test_binary_bad_varint(prefix: bytes) -> None:
    reader = BinaryRecordReader(max_record_bytes=None)
    with pytest.raises(ProtocolError):
        reader.feed(prefix)


def test_binary_bad_varint_detected_across_feeds() -> None:
    reader = BinaryRecordReader(max_record_bytes=None)
    for byte in b"\xff\xff\xff\xff":
        assert reader.feed(bytes([byte])) == []
    with pytest.raises(ProtocolError):
        reader.feed(b"\x10")


def test_binary_declared_length_over_limit_rejected_before_body() -> None:
    reader = BinaryRecordReader(max_record_bytes=100)
    with pytest.raises(MessageTooLargeError) as info:
        reader.feed(encode_varint(1000))
    assert info.value.size == 1002
    assert info.value.limit == 100


def test_binary_limit_counts_prefix() -> None:
    reader = BinaryRecordReader(max_record_bytes=4)
    assert reader.feed(b"\x03abc") == [b"abc"]
    with pytest.raises(MessageTooLargeError):
        reader.feed(b"\x04abcd")


def test_binary_large_record_fed_one_byte_at_a_time_is_linear() -> None:
    size = 200_000
    reader = BinaryRecordReader(max_record_bytes=None)
    started = time.perf_counter()
    assert reader.feed(encode_varint(size)) == []
    for _ in range(size - 1):
        assert reader.feed(b"x") == []
    assert reader.feed(b"x") == [b"x" * size]
    assert time.perf_counter() - started < 5


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_binary_arbitrary_chunking(records: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_varint(len(r)) + r for r in records)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = BinaryRecordReader(max_record_bytes=None)
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += reader.feed(stream[start:end])
    assert out == records


@given(st.lists(st.binary(max_size=40), max_size=5), st.sampled_from([None, 1, 16, 64]))
def test_readers_fuzz_only_raise_signalr_errors(chunks: list[bytes], limit: int | None) -> None:
    for reader in (TextRecordReader(max_record_bytes=limit), BinaryRecordReader(max_record_bytes=limit)):
        try:
            for chunk in chunks:
                reader.feed(chunk)
        except SignalRError:
            pass
