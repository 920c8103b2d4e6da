"""The Outbox: output of the HTTP transports waits there as whole messages, in order, within the outbound limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.hub.outbound import SharedMessage
from gateway.signalr import JSON_PROTOCOL, Invocation, Ping
from gateway.signalr.connection import CloseReason, ConnectionLimits, ServerConnection
from gateway.transport.outbox import Outbox
from gateway.transport.server_sent_events import chunked_event
from tests.support.frames import HANDSHAKE_OK, JSON_HANDSHAKE


def open_outbox(*, max_outbound_bytes: int = 1 << 20) -> tuple[ServerConnection, Outbox]:
    connection = ServerConnection(
        limits=ConnectionLimits(max_outbound_bytes=max_outbound_bytes), now=time.monotonic(), transfer_formats=("Text",)
    )
    connection.receive_data(JSON_HANDSHAKE, time.monotonic())
    assert connection.data_to_send(time.monotonic()) == HANDSHAKE_OK
    return connection, Outbox(connection)


def message(number: int) -> SharedMessage:
    return SharedMessage(JSON_PROTOCOL.encode(Invocation(target="Tick", arguments=(number,))))


def decode(data: bytes) -> list[object]:
    reader = JSON_PROTOCOL.new_reader(max_message_bytes=None, max_depth=None)
    reader.append(data)
    found = []
    while (item := reader.next_message()) is not None:
        found.append(item)
    return found


def test_broadcasts_and_queued_messages_keep_their_order() -> None:
    connection, outbox = open_outbox()
    outbox.write_shared(message(1), time.monotonic())
    connection.send(Invocation(target="Tick", arguments=(2,)))
    outbox.output_queued()  # what HubSession does after queueing
    outbox.write_shared(message(3), time.monotonic())
    assert [m.arguments for m in decode(outbox.take(1 << 20))] == [(1,), (2,), (3,)]  # type: ignore[attr-defined]
    assert outbox.waiting == 0


def test_take_returns_whole_messages_up_to_the_limit() -> None:
    _, outbox = open_outbox()
    sizes = []
    for number in range(10):
        outbox.write_shared(message(number), time.monotonic())
        sizes.append(len(message(number).payload))
    limit = sum(sizes[:3]) + 5
    first = outbox.take(limit)
    assert len(first) == sum(sizes[:3])
    assert [m.arguments for m in decode(first)] == [(0,), (1,), (2,)]  # type: ignore[attr-defined]
    rest = outbox.take(1 << 20)
    assert [m.arguments for m in decode(rest)] == [(n,) for n in range(3, 10)]  # type: ignore[attr-defined]


def test_one_message_larger_than_the_limit_goes_alone() -> None:
    _, outbox = open_outbox()
    outbox.write_shared(message(1), time.monotonic())
    outbox.write_shared(message(2), time.monotonic())
    assert decode(outbox.take(3)) == decode(message(1).payload)
    assert decode(outbox.take(3)) == decode(message(2).payload)
    assert outbox.take(3) == b""


def test_what_waits_counts_against_the_outbound_limit() -> None:
    size = len(message(0).payload)
    connection, outbox = open_outbox(max_outbound_bytes=3 * size)
    for number in range(3):
        outbox.write_shared(message(number), time.monotonic())
    assert outbox.buffered() == 3 * size
    assert not connection.should_close
    outbox.write_shared(message(3), time.monotonic())  # nobody took anything: a slow consumer
    assert connection.close_reason is CloseReason.SLOW_CONSUMER
    assert connection.must_abort
    assert outbox.waiting == 0  # dropped: it would never be read
    assert outbox.take(1 << 20) == b""


def test_what_is_in_flight_counts_too() -> None:
    size = len(message(0).payload)
    connection, outbox = open_outbox(max_outbound_bytes=2 * size)
    outbox.write_shared(message(0), time.monotonic())
    outbox.in_flight = len(outbox.take(1 << 20))
    outbox.write_shared(message(1), time.monotonic())
    assert not connection.should_close
    outbox.write_shared(message(2), time.monotonic())
    assert connection.close_reason is CloseReason.SLOW_CONSUMER


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def abort(self) -> None:
        self.aborted = True
        self.closing = True


def test_an_attached_stream_gets_broadcasts_straight_while_nothing_waits() -> None:
    connection, outbox = open_outbox()
    transport = FakeTransport()
    outbox.attach(transport, chunked_event)
    shared = message(1)
    assert outbox.write_shared(shared, time.monotonic()) is True
    assert bytes(transport.written) == chunked_event(shared.payload)
    assert shared.framed(chunked_event) is shared.framed(chunked_event)  # framed once for every recipient
    assert outbox.buffered() == 7  # the socket's unsent bytes

    # Something waiting: a broadcast queues behind it, whatever the socket.
    connection.send(Ping())
    outbox.output_queued()
    assert outbox.write_shared(message(2), time.monotonic()) is False
    assert len(transport.written) == len(chunked_event(shared.payload))
    assert [type(m).__name__ for m in decode(outbox.take(1 << 20))] == ["Ping", "Invocation"]


def test_a_cut_aborts_the_attached_socket() -> None:
    connection, outbox = open_outbox(max_outbound_bytes=10)
    transport = FakeTransport()
    outbox.attach(transport, chunked_event)
    outbox.detach()
    outbox.attach(transport, chunked_event)
    outbox.write_shared(message(1), time.monotonic())
    assert connection.must_abort
    assert transport.aborted


async def test_a_waiter_returns_on_output_and_on_wake() -> None:
    _, outbox = open_outbox()
    waiting = asyncio.ensure_future(outbox.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    outbox.write_shared(message(1), time.monotonic())
    async with asyncio.timeout(1):
        await waiting
    # A wake before anyone waits is kept for the next waiter.
    outbox.wake()
    async with asyncio.timeout(1):
        await outbox.wait()


async def test_a_superseded_waiter_does_not_take_the_next_ones_wakeup() -> None:
    """A poll replaced by a newer one is still unwinding when the newer one waits; output must reach the newer."""
    _, outbox = open_outbox()
    old = asyncio.ensure_future(outbox.wait())
    await asyncio.sleep(0)

    async def newer_poll() -> None:
        outbox.wake()  # wakes the old one to replace it, and waits in the same step, before it unwinds
        await outbox.wait()

    new = asyncio.ensure_future(newer_poll())
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        await old
    await asyncio.sleep(0)
    assert not new.done()
    outbox.write_shared(message(1), time.monotonic())
    async with asyncio.timeout(1):
        await new


@pytest.mark.parametrize("limit", [1, 50, 1 << 20])
def test_nothing_waiting_takes_nothing(limit: int) -> None:
    _, outbox = open_outbox()
    assert outbox.take(limit) == b""


class DuckTransport:
    """A transport of another event loop (uvloop's do not derive from asyncio.Transport)."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        raise AssertionError("not expected")


def test_any_event_loops_transport_takes_the_fast_path() -> None:
    _, outbox = open_outbox()
    transport = DuckTransport()
    outbox.attach(transport, chunked_event)  # type: ignore[arg-type]
    shared = message(1)
    assert outbox.write_shared(shared, time.monotonic()) is True
    assert bytes(transport.written) == chunked_event(shared.payload)
    assert outbox.waiting == 0
