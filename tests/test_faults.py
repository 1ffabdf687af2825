"""The transport fault wrappers of ``trio_tlsretry/testing/_faults.py`` on their
own: each wrapper over plain memory and exact-progress transports, its faults,
and a wrapper over a TLSStream. (TLSStream over these wrappers is tested in
``test_stream_under_faults.py``.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing
from streamtools import contexts_for, handshake, receive_exactly

from trio_tlsretry import ExactProgressStream
from trio_tlsretry.testing import (
    AbruptEOFStream,
    ChunkedStream,
    CorruptingStream,
    DelayedStream,
    FailingStream,
    FaultStream,
    InjectingStream,
    exact_progress_stream_pair,
    tls_memory_stream_pair,
)

# -------------------------------------------------------- wrapper basics

Wrap = Callable[[trio.abc.Stream], FaultStream]

# Every wrapper with its faults configured so far away that it is a
# pass-through: each must then be a correct stream in its own right.
NEUTRAL: dict[str, Wrap] = {
    "chunked": lambda s: ChunkedStream(s, receive_size=1000, send_size=700),
    "delayed": lambda s: DelayedStream(s, send_delay=0.5, receive_delay=0.25),
    "failing": lambda s: FailingStream(s, fail_after_sent=10**9, fail_after_received=10**9),
    "corrupting": lambda s: CorruptingStream(s, offset=10**9),
    "injecting": lambda s: InjectingStream(s, offset=10**9, data=b"!"),
    "eof": lambda s: AbruptEOFStream(s, eof_after=10**9),
}


@pytest.mark.parametrize("wrap", NEUTRAL.values(), ids=NEUTRAL.keys())
@pytest.mark.parametrize("transport", ["memory", "exact"])
async def test_neutral_wrapper_passes_trio_stream_checks(
    autojump_clock: trio.testing.MockClock, wrap: Wrap, transport: str
) -> None:
    async def maker() -> tuple[FaultStream, FaultStream]:
        if transport == "memory":
            left, right = trio.testing.memory_stream_pair()
            return wrap(left), wrap(right)
        a, b = exact_progress_stream_pair(4096)
        return wrap(a), wrap(b)

    async def clogged() -> tuple[FaultStream, FaultStream]:
        left, right = trio.testing.lockstep_stream_pair()
        return wrap(left), wrap(right)

    await trio.testing.check_half_closeable_stream(
        maker, clogged if transport == "memory" else None
    )


@pytest.mark.parametrize("wrap", NEUTRAL.values(), ids=NEUTRAL.keys())
def test_wrapper_keeps_exact_progress(wrap: Wrap) -> None:
    plain = wrap(trio.testing.memory_stream_pair()[0])
    exact = wrap(exact_progress_stream_pair()[0])
    assert not isinstance(plain, ExactProgressStream)
    assert not hasattr(plain, "send_some")
    assert isinstance(exact, ExactProgressStream)
    assert isinstance(exact, type(plain))
    assert type(exact).__name__ == type(plain).__name__


async def test_exact_wrapper_send_some_is_cancel_atomic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = exact_progress_stream_pair(capacity=4)
    wrapper = DelayedStream(left, send_delay=1.0)
    assert isinstance(wrapper, ExactProgressStream)
    with trio.move_on_after(0.5):
        await wrapper.send_some(b"abcdefgh")
    assert wrapper.bytes_sent == left.bytes_sent == 0
    assert await wrapper.send_some(b"abcdefgh") == 4
    assert wrapper.bytes_sent == 4
    assert await right.receive_some() == b"abcd"


async def test_send_eof_needs_a_half_closeable_transport(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send_channel, receive_channel = trio.testing.memory_stream_one_way_pair()
    stream = trio.StapledStream(send_channel, receive_channel)
    assert isinstance(ChunkedStream(stream), trio.abc.HalfCloseableStream)
    # StapledStream is half-closeable; a plain Stream is not.
    left, _ = exact_progress_stream_pair()

    class OnlyStream(trio.abc.Stream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            raise AssertionError

        async def wait_send_all_might_not_block(self) -> None:
            raise AssertionError

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            raise AssertionError

        async def aclose(self) -> None:
            await left.aclose()

    wrapper = DelayedStream(OnlyStream())
    with pytest.raises(TypeError, match="send_eof"):
        await wrapper.send_eof()


@pytest.mark.parametrize(
    "make",
    [
        lambda s: ChunkedStream(s, receive_size=0),
        lambda s: ChunkedStream(s, send_size=0),
        lambda s: DelayedStream(s, send_delay=-1),
        lambda s: FailingStream(s, fail_after_sent=-1),
        lambda s: CorruptingStream(s, offset=-1),
        lambda s: CorruptingStream(s, offset=0, xor=0),
        lambda s: CorruptingStream(s, offset=0, replacement=b""),
        lambda s: CorruptingStream(s, offset=0, side="both"),  # type: ignore[arg-type]
        lambda s: InjectingStream(s, offset=0, data=b""),
        lambda s: AbruptEOFStream(s, eof_after=-1),
    ],
)
def test_wrapper_arguments_are_checked(make: Wrap) -> None:
    with pytest.raises(ValueError):
        make(trio.testing.memory_stream_pair()[0])


# --------------------------------------------------------------- chunked


async def test_chunked_receive_returns_at_most_k_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    chunked = ChunkedStream(right, receive_size=3)
    await left.send_all(b"abcdefgh")
    pieces = [await chunked.receive_some(), await chunked.receive_some(2)]
    pieces.append(await chunked.receive_some(100))
    assert pieces == [b"abc", b"de", b"fgh"]
    assert chunked.bytes_received == 8


async def test_chunked_send_splits_into_exact_pieces(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = exact_progress_stream_pair()
    chunked = ChunkedStream(left, receive_size=None, send_size=3)
    assert isinstance(chunked, ExactProgressStream)
    assert await chunked.send_some(b"abcdefgh") == 3
    await chunked.send_all(b"defgh")
    assert await right.receive_some() == b"abcdefgh"
    assert chunked.bytes_sent == left.bytes_sent == 8


async def test_chunked_over_plaintext_finds_framing_bugs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The wrappers work on top of a TLSStream too: here a naive reader that
    # expects a whole line per receive_some is caught out.
    contexts = contexts_for()
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server
    )
    await handshake(client, server)
    reader = ChunkedStream(server, receive_size=4)
    await client.send_all(b"HELLO WORLD\n")
    assert await reader.receive_some() == b"HELL"
    assert await receive_exactly(reader, 8) == b"O WORLD\n"


# --------------------------------------------------------------- delayed


async def test_delay_uses_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    slow = DelayedStream(left, send_delay=2.0, receive_delay=3.0)
    start = trio.current_time()
    await slow.send_all(b"x")
    assert trio.current_time() - start == 2.0
    assert await right.receive_some() == b"x"
    await right.send_all(b"y")
    assert await slow.receive_some() == b"y"
    assert trio.current_time() - start == 5.0


async def test_cancelled_delayed_receive_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    slow = DelayedStream(right, receive_delay=10.0)
    await left.send_all(b"kept")
    with trio.move_on_after(5.0) as scope:
        await slow.receive_some()
    assert scope.cancelled_caught
    assert await slow.receive_some() == b"kept"


# --------------------------------------------------------------- failing


async def test_failing_after_sent_bytes(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    failing = FailingStream(left, fail_after_sent=5)
    with pytest.raises(trio.BrokenResourceError) as caught:
        await failing.send_all(b"abcdefgh")
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert failing.failed
    assert failing.bytes_sent == 5
    assert await right.receive_some() == b"abcde"
    with pytest.raises(trio.BrokenResourceError):
        await failing.send_all(b"more")
    # Breaking is a transport fault, not a close: aclose still works.
    await failing.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await failing.send_all(b"x")


async def test_failing_with_a_custom_error(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    failing = FailingStream(left, fail_after_sent=2, error=lambda: OSError(32, "broken pipe"))
    with pytest.raises(OSError, match="broken pipe"):
        await failing.send_all(b"abcd")
    assert await right.receive_some() == b"ab"


async def test_failing_after_received_bytes_reads_no_further(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    failing = FailingStream(right, fail_after_received=3)
    await left.send_all(b"abcdef")
    assert await failing.receive_some() == b"abc"
    with pytest.raises(trio.BrokenResourceError):
        await failing.receive_some()
    # The wrapped stream still holds what the failure hid.
    assert await right.receive_some() == b"def"


async def test_fail_now_wakes_a_waiting_receive(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    failing = FailingStream(right)
    async with trio.open_nursery() as nursery:

        async def wait_for_data() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await failing.receive_some()

        nursery.start_soon(wait_for_data)
        await trio.testing.wait_all_tasks_blocked()
        failing.fail_now()
    await left.send_all(b"late")
    assert await right.receive_some() == b"late"


# ------------------------------------------------------------ corrupting


async def test_corrupting_xor_on_receive_across_chunks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    corrupt = CorruptingStream(ChunkedStream(right, receive_size=2), offset=3, xor=0x20)
    await left.send_all(b"abcdefg")
    assert await receive_exactly(corrupt, 7) == b"abcDefg"


async def test_corrupting_replacement_on_send_across_pieces(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = exact_progress_stream_pair()
    corrupt = CorruptingStream(
        ChunkedStream(left, receive_size=None, send_size=2),
        offset=1,
        replacement=b"XYZ",
        side="send",
    )
    await corrupt.send_all(bytearray(b"abcdef"))
    assert await right.receive_some() == b"aXYZef"
    assert corrupt.bytes_sent == 6


async def test_corrupting_offset_can_be_moved_until_reached(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    corrupt = CorruptingStream(right, offset=10**9)
    await left.send_all(b"abc")
    assert await corrupt.receive_some() == b"abc"
    corrupt.offset = corrupt.bytes_received
    corrupt.xor = 1
    await left.send_all(b"abc")
    assert await corrupt.receive_some() == b"`bc"


# ------------------------------------------------------------- injecting


async def test_injecting_on_receive_respects_max_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    inject = InjectingStream(right, offset=2, data=b"XYZ")
    await left.send_all(b"abcdef")
    assert await inject.receive_some() == b"ab"
    assert await inject.receive_some(2) == b"XY"
    assert not inject.injected
    assert await inject.receive_some() == b"Z"
    assert inject.injected
    assert await inject.receive_some() == b"cdef"
    assert inject.bytes_received == 9


async def test_injecting_on_send(autojump_clock: trio.testing.MockClock) -> None:
    left, right = exact_progress_stream_pair(capacity=3)
    inject = InjectingStream(left, offset=4, data=b"<injected>", side="send")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(inject.send_all, b"abcdefgh")
        assert await receive_exactly(right, 18) == b"abcd<injected>efgh"
    assert inject.bytes_sent == 8


async def test_cancelled_injection_on_receive_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, right = trio.testing.memory_stream_pair()
    inject = InjectingStream(right, offset=0, data=b"XY")
    with trio.CancelScope() as scope:
        scope.cancel()
        await inject.receive_some()
    assert await inject.receive_some() == b"XY"


# ------------------------------------------------------------------- EOF


async def test_abrupt_eof_after_n_bytes(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    eof = AbruptEOFStream(right, eof_after=4)
    await left.send_all(b"abcdefgh")
    assert await eof.receive_some() == b"abcd"
    assert await eof.receive_some() == b""
    assert await eof.receive_some() == b""
    assert eof.at_eof
    assert await right.receive_some() == b"efgh"
    # The send side still works.
    await eof.send_all(b"reply")
    assert await left.receive_some() == b"reply"


async def test_trigger_eof_wakes_a_waiting_receive(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    eof = AbruptEOFStream(right)
    async with trio.open_nursery() as nursery:

        async def receive_eof() -> None:
            assert await eof.receive_some() == b""

        nursery.start_soon(receive_eof)
        await trio.testing.wait_all_tasks_blocked()
        eof.trigger_eof()
    await left.send_all(b"unread")
    assert await right.receive_some() == b"unread"
