"""The exact-progress in-memory pair (``trio_tlsretry/testing/_exact.py``) on its own."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_tlsretry import ExactProgressStream
from trio_tlsretry.testing import ExactProgressMemoryStream, exact_progress_stream_pair

#: Virtual seconds; under the autojump clock a wait that never ends gets there
#: in no real time.
DEADLINE = 100


async def clogged_pair() -> tuple[ExactProgressMemoryStream, ExactProgressMemoryStream]:
    """A pair whose sends block, both ways, until the other end receives (full buffers)."""
    a, b = exact_progress_stream_pair(1)
    await a.send_all(b"!")
    await b.send_all(b"!")
    return a, b


async def test_passes_trio_half_closeable_stream_checks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def pair() -> tuple[ExactProgressMemoryStream, ExactProgressMemoryStream]:
        return exact_progress_stream_pair(4096)

    with trio.fail_after(DEADLINE):
        await trio.testing.check_half_closeable_stream(pair, clogged_pair)


async def test_receive_some_of_a_non_integer_is_a_type_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, b = exact_progress_stream_pair()
    with trio.fail_after(DEADLINE), pytest.raises(TypeError):
        await b.receive_some(1.5)  # type: ignore[arg-type]


async def test_sending_nothing_on_a_closed_end_is_closed() -> None:
    a, _ = exact_progress_stream_pair()
    await a.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"")


async def test_a_second_wait_for_room_is_busy(autojump_clock: trio.testing.MockClock) -> None:
    a, _ = await clogged_pair()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.wait_send_all_might_not_block)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await a.wait_send_all_might_not_block()
            nursery.cancel_scope.cancel()


def test_each_end_is_an_exact_progress_half_closeable_stream() -> None:
    a, b = exact_progress_stream_pair(10)
    for end in (a, b):
        assert isinstance(end, ExactProgressStream)
        assert isinstance(end, trio.abc.HalfCloseableStream)
        assert end.capacity == 10
        assert end.bytes_sent == 0


async def test_send_some_takes_what_fits_and_counts_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = exact_progress_stream_pair(capacity=4)
    assert await a.send_some(b"abcdef") == 4
    assert a.bytes_sent == 4
    assert await b.receive_some(3) == b"abc"
    # One byte is still buffered, so three fit now.
    assert await a.send_some(memoryview(b"efgh")) == 3
    assert await b.receive_some() == b"defg"
    assert a.bytes_sent == 7


async def test_a_cancelled_send_some_sent_nothing(autojump_clock: trio.testing.MockClock) -> None:
    a, b = exact_progress_stream_pair(capacity=2)
    assert await a.send_some(b"ab") == 2
    with trio.move_on_after(1) as scope:
        await a.send_some(b"cd")  # the buffer is full: waits, then is cancelled
    assert scope.cancelled_caught
    assert a.bytes_sent == 2
    assert await b.receive_some() == b"ab"
    # Cancelled before it starts: nothing either, even with room.
    with trio.CancelScope() as scope:
        scope.cancel()
        await a.send_some(b"ef")
    assert a.bytes_sent == 2


async def test_raising_the_capacity_wakes_a_blocked_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = exact_progress_stream_pair(capacity=1)
    await a.send_all(b"x")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, b"yz")
        await trio.testing.wait_all_tasks_blocked()
        assert a.bytes_sent == 1
        a.capacity = 3
    assert a.bytes_sent == 3
    assert await b.receive_some() == b"xyz"


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_capacity_below_one_is_a_value_error(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        exact_progress_stream_pair(capacity)
    a, _ = exact_progress_stream_pair()
    with pytest.raises(ValueError, match="capacity"):
        a.capacity = capacity
    assert a.capacity == 64 * 1024


@pytest.mark.parametrize("max_bytes", [0, -5])
async def test_receive_some_below_one_byte_is_a_value_error(max_bytes: int) -> None:
    _, b = exact_progress_stream_pair()
    with pytest.raises(ValueError, match="max_bytes"):
        await b.receive_some(max_bytes)


async def test_sending_to_a_closed_end_is_broken(autojump_clock: trio.testing.MockClock) -> None:
    a, b = exact_progress_stream_pair(capacity=1)
    await a.send_all(b"x")
    async with trio.open_nursery() as nursery:

        async def blocked_send() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await a.send_all(b"y")

        nursery.start_soon(blocked_send)
        await trio.testing.wait_all_tasks_blocked()
        await b.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await a.send_some(b"z")
