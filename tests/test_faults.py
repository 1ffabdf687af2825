"""Tests of the public testing toolkit: pairs, fault wrappers, sweeps, plugin."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

import trio_tlsretry.testing as toolkit

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found]
from streamtools import handshake, receive_exactly

from trio_tlsretry import ExactProgressStream, TLSStream
from trio_tlsretry.testing import (
    AbruptEOFStream,
    ChunkedStream,
    CorruptingStream,
    DelayedStream,
    ExactProgressMemoryStream,
    FailingStream,
    FaultStream,
    InjectingStream,
    TLSContexts,
    cancel_at_checkpoint,
    cancellation_sweep,
    exact_progress_stream_pair,
    make_tls_contexts,
    tls_memory_stream_pair,
    tls_stream_pair_over,
)

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
StreamPair = tuple[trio.abc.Stream, trio.abc.Stream]


@pytest.fixture(scope="module")
def contexts() -> TLSContexts:
    return make_tls_contexts()


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: v.name)
def versioned_contexts(request: pytest.FixtureRequest) -> TLSContexts:
    version: ssl.TLSVersion = request.param
    return make_tls_contexts(maximum_version=version)


def leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``exc``."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def payload(size: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(size))


def tls_over(
    client_transport: trio.abc.Stream,
    server_transport: trio.abc.Stream,
    contexts: TLSContexts,
    *,
    https_compatible: bool = False,
) -> tuple[TLSStream, TLSStream]:
    client = TLSStream(
        client_transport,
        contexts.client,
        server_hostname=contexts.hostname,
        https_compatible=https_compatible,
    )
    server = TLSStream(
        server_transport, contexts.server, server_side=True, https_compatible=https_compatible
    )
    return client, server


# ------------------------------------------------------------------ pairs


async def test_tls_memory_stream_pair_defaults_talk_to_each_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = tls_memory_stream_pair()
    assert isinstance(client, TLSStream)
    assert isinstance(server, TLSStream)
    assert not client.server_side
    assert server.server_side
    assert client.server_hostname == "example.org"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"ping")
        assert await receive_exactly(server, 4) == b"ping"
    await server.send_all(b"pong")
    assert await receive_exactly(client, 4) == b"pong"
    names = dict(item[0] for item in client.getpeercert()["subject"])
    alt_names = client.getpeercert()["subjectAltName"]
    assert ("DNS", "example.org") in alt_names
    assert str(names.get("organizationName")).startswith("trustme")


@pytest.mark.parametrize(
    ("options", "transport_type"),
    [
        ({}, trio.StapledStream),
        ({"lockstep": True}, trio.StapledStream),
        ({"exact_progress": True, "capacity": 10}, ExactProgressMemoryStream),
    ],
    ids=["memory", "lockstep", "exact"],
)
async def test_tls_memory_stream_pair_transports(
    autojump_clock: trio.testing.MockClock,
    contexts: TLSContexts,
    options: dict[str, object],
    transport_type: type,
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        **options,  # type: ignore[arg-type]
    )
    assert isinstance(client.transport_stream, transport_type)
    assert isinstance(server.transport_stream, transport_type)
    data = payload(20_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, data)
        assert await receive_exactly(server, len(data)) == data
    if options.get("exact_progress"):
        assert isinstance(client.transport_stream, ExactProgressMemoryStream)
        assert client.transport_stream.capacity == 10


def test_tls_memory_stream_pair_rejects_two_transports() -> None:
    with pytest.raises(ValueError, match="not both"):
        tls_memory_stream_pair(lockstep=True, exact_progress=True)


async def test_make_tls_contexts_for_another_host(autojump_clock: trio.testing.MockClock) -> None:
    contexts = make_tls_contexts("service.test")
    assert contexts.hostname == "service.test"
    assert isinstance(contexts.ca, trustme.CA)
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        server_hostname="service.test",
    )
    await handshake(client, server)
    assert ("DNS", "service.test") in client.getpeercert()["subjectAltName"]


async def test_wrong_hostname_fails_verification(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        server_hostname="not-example.org",
    )
    with pytest.raises(BaseExceptionGroup) as caught:
        await handshake(client, server)
    # The client fails verification; the server sees the client's alert.
    causes = [exc.__cause__ for exc in leaves(caught.value)]
    assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes)


async def test_maximum_version_is_applied(
    autojump_clock: trio.testing.MockClock, versioned_contexts: TLSContexts
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=versioned_contexts.client, server_context=versioned_contexts.server
    )
    await handshake(client, server)
    expected = versioned_contexts.client.maximum_version.name.replace("v1_", "v1.")
    assert client.version() == server.version() == expected


async def test_tls_stream_pair_over_uses_given_transports(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    left, right = exact_progress_stream_pair(64)
    client, server = tls_stream_pair_over(
        left, right, client_context=contexts.client, server_context=contexts.server
    )
    assert client.transport_stream is left
    assert server.transport_stream is right
    await handshake(client, server)


# ------------------------------------------------------- wrapper basics

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


@pytest.mark.parametrize("transport", ["memory", "exact"])
async def test_tls_over_one_byte_chunks_is_byte_exact(
    autojump_clock: trio.testing.MockClock, versioned_contexts: TLSContexts, transport: str
) -> None:
    left: trio.abc.Stream
    right: trio.abc.Stream
    if transport == "memory":
        left, right = trio.testing.memory_stream_pair()
    else:
        left, right = exact_progress_stream_pair(capacity=100)
    client, server = tls_over(
        ChunkedStream(left, receive_size=1, send_size=7),
        ChunkedStream(right, receive_size=1, send_size=5),
        versioned_contexts,
    )
    up, down = payload(6_000), payload(5_000)[::-1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, up)
        nursery.start_soon(server.send_all, down)
        assert await receive_exactly(server, len(up)) == up
        assert await receive_exactly(client, len(down)) == down
    assert client.statistics().plaintext_bytes_received == len(down)


async def test_chunked_over_plaintext_finds_framing_bugs(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    # The wrappers work on top of a TLSStream too: here a naive reader that
    # expects a whole line per receive_some is caught out.
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


async def test_tls_send_cancelled_during_transport_delay_resumes(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    # A timeout that fires while the slow transport is between sends, over an
    # exact-progress transport, leaves the TLSStream usable; the retry with the
    # same object delivers every byte exactly once.
    left, right = exact_progress_stream_pair(capacity=1000)
    client, server = tls_over(DelayedStream(left, send_delay=1.0), right, contexts)
    await handshake(client, server)
    data = payload(200_000)
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(data):
            received.extend(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        attempts = 0
        while True:
            attempts += 1
            with trio.move_on_after(10.5):
                await client.send_all(data)
                break
    assert attempts > 5
    assert received == data
    assert client.statistics().state.name == "OPEN"


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


@pytest.mark.parametrize("fail_after", [0, 1, 100, 400])
async def test_tls_handshake_over_failing_transport(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts, fail_after: int
) -> None:
    left, right = trio.testing.memory_stream_pair()
    client, server = tls_over(FailingStream(left, fail_after_sent=fail_after), right, contexts)
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.do_handshake()
    transport_error = caught.value.__cause__
    assert isinstance(transport_error, trio.BrokenResourceError)
    assert isinstance(transport_error.__cause__, ConnectionResetError)
    # The stream stays broken.
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")
    del server


async def test_tls_receive_breaks_when_connection_resets(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    left, right = trio.testing.memory_stream_pair()
    failing = FailingStream(left)
    client, server = tls_over(failing, right, contexts)
    await handshake(client, server)
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await client.receive_some()

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        failing.fail_now()


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


@pytest.mark.parametrize("side", ["receive", "send"])
async def test_tls_detects_corrupted_record(
    autojump_clock: trio.testing.MockClock, versioned_contexts: TLSContexts, side: str
) -> None:
    left, right = trio.testing.memory_stream_pair()
    # Damage the server's transport: what it receives, or what it sends.
    corrupt = CorruptingStream(right, offset=10**9, side=side)  # type: ignore[arg-type]
    client, server = tls_over(left, corrupt, versioned_contexts)
    await handshake(client, server)
    # Let TLS 1.3 session tickets pass first, then hit application data.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"warm-up")
        assert await receive_exactly(server, 7) == b"warm-up"
    await server.send_all(b"warm-up")
    assert await receive_exactly(client, 7) == b"warm-up"
    corrupt.offset = (corrupt.bytes_received if side == "receive" else corrupt.bytes_sent) + 10
    victim, sender = (server, client) if side == "receive" else (client, server)
    await sender.send_all(b"attack at dawn")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await victim.receive_some()
    assert isinstance(caught.value.__cause__, ssl.SSLError)


@pytest.mark.parametrize("offset", [0, 5, 60, 300])
async def test_tls_handshake_detects_corruption(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts, offset: int
) -> None:
    left, right = trio.testing.memory_stream_pair()
    client, server = tls_over(CorruptingStream(left, offset=offset, xor=0x55), right, contexts)
    with pytest.raises(BaseException) as caught:
        await handshake(client, server)
    errors = leaves(caught.value)
    assert errors
    assert all(isinstance(exc, trio.BrokenResourceError) for exc in errors)
    # The side that reads the damage reports the TLS error.
    assert any(isinstance(exc.__cause__, ssl.SSLError) for exc in errors)


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


async def test_tls_detects_injected_bytes(
    autojump_clock: trio.testing.MockClock, versioned_contexts: TLSContexts
) -> None:
    left, right = trio.testing.memory_stream_pair()
    inject = InjectingStream(left, offset=10**9, data=b"\x17\x03\x03\x00\x05hello")
    client, server = tls_over(inject, right, versioned_contexts)
    await handshake(client, server)
    await server.send_all(b"first")
    assert await receive_exactly(client, 5) == b"first"
    inject.offset = inject.bytes_received
    await server.send_all(b"second")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await receive_exactly(client, 6)
    assert isinstance(caught.value.__cause__, ssl.SSLError)


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


@pytest.mark.parametrize("https_compatible", [False, True])
async def test_tls_eof_without_close_notify(
    autojump_clock: trio.testing.MockClock, versioned_contexts: TLSContexts, https_compatible: bool
) -> None:
    left, right = trio.testing.memory_stream_pair()
    eof = AbruptEOFStream(left)
    client, server = tls_over(eof, right, versioned_contexts, https_compatible=https_compatible)
    await handshake(client, server)
    await server.send_all(b"last words")
    assert await receive_exactly(client, 10) == b"last words"
    eof.trigger_eof()
    if https_compatible:
        assert await client.receive_some() == b""
        assert await client.receive_some() == b""
    else:
        with pytest.raises(trio.BrokenResourceError) as caught:
            await client.receive_some()
        assert isinstance(caught.value.__cause__, ssl.SSLEOFError)
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()


@pytest.mark.parametrize("https_compatible", [False, True])
async def test_tls_eof_in_mid_record(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts, https_compatible: bool
) -> None:
    # The connection ends inside a record. No plaintext of the partial record
    # may come out. OpenSSL reports this with the same SSLEOFError as an EOF
    # between records, so an https_compatible stream reports a plain EOF, as
    # trio.SSLStream does: HTTPS relies on its own framing to spot truncation.
    left, right = trio.testing.memory_stream_pair()
    eof = AbruptEOFStream(left)
    client, server = tls_over(eof, right, contexts, https_compatible=https_compatible)
    await handshake(client, server)
    await server.send_all(b"x")
    assert await client.receive_some() == b"x"
    eof.eof_after = eof.bytes_received + 10
    await server.send_all(b"this record is cut short")
    if https_compatible:
        assert await client.receive_some() == b""
    else:
        with pytest.raises(trio.BrokenResourceError) as caught:
            await client.receive_some()
        assert isinstance(caught.value.__cause__, ssl.SSLEOFError)
    assert client.statistics().plaintext_bytes_received == 1


# ----------------------------------------------------------------- sweeps


def checkpoints(count: int, log: list[int]) -> Callable[[], Awaitable[str]]:
    """An operation with ``count`` plain checkpoints that logs where it was cancelled."""

    async def operation() -> str:
        for index in range(count):
            try:
                await trio.lowlevel.checkpoint()
            except trio.Cancelled:
                log.append(index)
                raise
        return "done"

    return operation


class YieldCounter(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def count_yields(operation: Callable[[], Awaitable[object]]) -> int:
    counter = YieldCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        await operation()
    finally:
        trio.lowlevel.remove_instrument(counter)
    return counter.count


async def test_k0_cancels_at_the_first_checkpoint_without_yielding(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[str] = []

    async def operation() -> None:
        ran.append("started")
        await trio.lowlevel.checkpoint_if_cancelled()
        ran.append("passed the first checkpoint")

    outcome = await cancel_at_checkpoint(0, operation)
    assert not outcome.completed
    assert outcome.result is None
    # Code before the first checkpoint runs; the checkpoint itself raises.
    assert ran == ["started"]


async def test_k0_cancels_a_tls_receive_before_it_touches_anything(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server
    )
    outcome = await cancel_at_checkpoint(0, client.receive_some)
    assert not outcome.completed
    # Not even the ClientHello was produced.
    assert client.statistics().ciphertext_bytes_sent == 0
    assert client.statistics().outgoing_ciphertext_bytes == 0
    await handshake(client, server)


@pytest.mark.parametrize("count", [0, 1, 2, 5])
async def test_k_is_the_kth_yield_of_the_uncancelled_run(
    autojump_clock: trio.testing.MockClock, count: int
) -> None:
    log: list[int] = []
    operation = checkpoints(count, log)
    assert await count_yields(operation) == count
    for k in range(count + 3):
        log.clear()
        outcome = await cancel_at_checkpoint(k, operation)
        if k > count or (count == 0 and k == 0):
            # Never yielded k times (or nothing to cancel): not cancelled.
            assert outcome.completed
            assert outcome.result == "done"
            assert outcome.yields == count
        else:
            # k = 0: cancelled from the start, so the first checkpoint raises.
            # k >= 1: the task was suspended at yield k, i.e. in checkpoint
            # k - 1, when the scope was cancelled, and that checkpoint raised.
            assert not outcome.completed
            assert log == [max(k - 1, 0)]


async def test_cancellation_aborts_a_blocking_wait_at_yield_k(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Yield 1 is the wait itself: cancelling there aborts it, as a timeout
    # that expires while the task is blocked would.
    events: list[str] = []

    async def operation() -> None:
        try:
            await trio.sleep_forever()
        finally:
            events.append("aborted")

    outcome = await cancel_at_checkpoint(1, operation)
    assert not outcome.completed
    assert events == ["aborted"]
    assert trio.current_time() == 0


async def test_sweep_terminates_after_one_attempt_per_yield(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[int] = []
    seen: list[int] = []

    async def after_cancel(k: int) -> None:
        # Runs outside the cancelled scope: awaiting here is fine.
        await trio.lowlevel.checkpoint()
        seen.append(k)

    report = await cancellation_sweep(lambda k: checkpoints(4, log)(), after_cancel=after_cancel)
    assert report.cancelled == 5
    assert report.cancelled_at == seen == [0, 1, 2, 3, 4]
    assert report.final_yields == 4
    assert log == [0, 0, 1, 2, 3]


async def test_sweep_of_an_operation_without_checkpoints(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def instant() -> int:
        return 42

    report = await cancellation_sweep(lambda k: instant())
    assert report.cancelled == 0
    assert report.final_yields == 0


async def test_sweep_gives_up_after_limit(autojump_clock: trio.testing.MockClock) -> None:
    async def forever() -> None:
        while True:
            await trio.lowlevel.checkpoint()

    with pytest.raises(RuntimeError, match="after 7 checkpoints"):
        await cancellation_sweep(lambda k: forever(), limit=7)


async def test_sweep_passes_k_and_propagates_errors(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[int] = []

    async def attempt(k: int) -> None:
        seen.append(k)
        await trio.lowlevel.checkpoint()
        if k == 2:
            raise KeyError("boom")
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()

    with pytest.raises(KeyError, match="boom"):
        await cancellation_sweep(attempt)
    assert seen == [0, 1, 2]


async def test_absorbed_cancellation_counts_as_completed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stubborn() -> str:
        with trio.CancelScope(shield=True):
            await trio.sleep(1)
        return "finished anyway"

    outcome = await cancel_at_checkpoint(1, stubborn)
    assert outcome.completed
    assert outcome.result == "finished anyway"


async def test_only_the_calling_task_counts(autojump_clock: trio.testing.MockClock) -> None:
    async def busy_child() -> None:
        for _ in range(50):
            await trio.lowlevel.checkpoint()

    async def operation() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy_child)

    # The caller yields only while waiting for the nursery to finish.
    yields = await count_yields(operation)
    assert yields < 50
    report = await cancellation_sweep(lambda k: operation())
    assert report.final_yields == yields


async def test_an_outer_cancellation_is_not_swallowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.CancelScope() as outer:
        outer.cancel()
        await cancel_at_checkpoint(5, trio.sleep_forever)
        pytest.fail("the outer cancellation was swallowed")  # pragma: no cover
    assert outer.cancelled_caught


@pytest.mark.parametrize("k", [-1])
async def test_negative_k_is_rejected(autojump_clock: trio.testing.MockClock, k: int) -> None:
    with pytest.raises(ValueError):
        await cancel_at_checkpoint(k, trio.lowlevel.checkpoint)


async def test_sweep_tls_send_all_retry_delivers_exactly_once(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        exact_progress=True,
        capacity=2000,
    )
    await handshake(client, server)
    data = payload(30_000)
    received = bytearray()

    async def drain() -> None:
        while True:
            chunk = await server.receive_some()
            if not chunk:
                return
            received.extend(chunk)

    async def after_cancel(k: int) -> None:
        state = client.statistics().state
        assert state.name == "OPEN", f"stream {state.name} after cancel at {k}"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        # Every attempt retries the same object: the stream must resume.
        report = await cancellation_sweep(
            lambda k: client.send_all(data), after_cancel=after_cancel
        )
        await client.aclose()
    # Each retry resumes where the last attempt stopped, so a handful of
    # cancellations reach the end of the data.
    assert report.cancelled >= 3
    assert received == data


async def test_sweep_tls_handshake_resumes(
    autojump_clock: trio.testing.MockClock, versioned_contexts: TLSContexts
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=versioned_contexts.client,
        server_context=versioned_contexts.server,
        exact_progress=True,
        capacity=100,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        report = await cancellation_sweep(lambda k: client.do_handshake())
    assert report.cancelled > 2
    assert client.version() == server.version()


# ------------------------------------------------ public names and plugin


def test_public_names_are_exported() -> None:
    for name in toolkit.__all__:
        assert getattr(toolkit, name) is not None
    assert {
        "AbruptEOFStream",
        "ChunkedStream",
        "CorruptingStream",
        "DelayedStream",
        "FailingStream",
        "FaultStream",
        "InjectingStream",
        "ExactProgressMemoryStream",
        "exact_progress_stream_pair",
        "tls_memory_stream_pair",
        "cancellation_sweep",
    } <= set(toolkit.__all__)


def run_python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


BLOCK_TRUSTME = "import sys; sys.modules['trustme'] = None\n"


def test_importing_the_library_does_not_import_trustme() -> None:
    result = run_python(
        "import sys, trio_tlsretry\n"
        "assert 'trustme' not in sys.modules, 'trustme imported'\n"
        "assert 'trio_tlsretry.testing' not in sys.modules, 'testing imported'\n"
    )
    assert result.returncode == 0, result.stderr


def test_testing_without_trustme_says_what_to_install() -> None:
    result = run_python(BLOCK_TRUSTME + "import trio_tlsretry.testing\n")
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: trio_tlsretry.testing needs trustme")
    assert "pip install 'trio-tlsretry[testing]'" in last_line
    # One clean message: no chained "During handling..." traceback.
    assert "During handling" not in result.stderr
    # The library itself still imports.
    result = run_python(BLOCK_TRUSTME + "import trio_tlsretry\n")
    assert result.returncode == 0, result.stderr


def plugin_entry_point() -> str:
    (point,) = [ep for ep in entry_points(group="pytest11") if ep.name == "trio_tlsretry"]
    return point.value


def test_plugin_is_registered() -> None:
    assert plugin_entry_point().startswith("trio_tlsretry.")


def run_pytest(directory: Path, *, block_trustme: bool = False) -> subprocess.CompletedProcess[str]:
    (directory / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    return run_python(
        (BLOCK_TRUSTME if block_trustme else "")
        + "import sys, pytest\n"
        + "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:randomly']))\n",
        cwd=directory,
    )


FIXTURE_USER = """
    import ssl
    import trio
    import trustme
    from trio_tlsretry import TLSStream

    def test_contexts(tls_ca, tls_server_context, tls_client_context, tls_contexts):
        assert isinstance(tls_ca, trustme.CA)
        assert tls_contexts.ca is tls_ca
        assert tls_server_context is tls_contexts.server
        assert tls_client_context is tls_contexts.client
        assert isinstance(tls_server_context, ssl.SSLContext)

    async def test_pair(tls_stream_pair):
        client, server = tls_stream_pair
        assert isinstance(client, TLSStream) and isinstance(server, TLSStream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"hi")
            assert await server.receive_some() == b"hi"
"""


def test_plugin_fixtures_load_through_the_entry_point(tmp_path: Path) -> None:
    # A project with no conftest: the fixtures can only come from the
    # installed pytest11 entry point.
    (tmp_path / "test_user.py").write_text(textwrap.dedent(FIXTURE_USER))
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_plugin_entry_point_is_outside_the_testing_package() -> None:
    # trio_tlsretry.testing refuses to import without trustme; the plugin
    # must not, or every pytest run in the environment would fail.
    assert not plugin_entry_point().startswith("trio_tlsretry.testing.")


def test_plugin_does_not_break_unrelated_suites_without_trustme(tmp_path: Path) -> None:
    (tmp_path / "test_unrelated.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    result = run_pytest(tmp_path, block_trustme=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_plugin_fixtures_without_trustme_fail_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "def test_needs_tls(tls_stream_pair):\n    pass\n\ndef test_plain():\n    pass\n"
    )
    result = run_pytest(tmp_path, block_trustme=True)
    assert result.returncode == 1
    assert "1 passed" in result.stdout
    assert "pip install 'trio-tlsretry[testing]'" in result.stdout
