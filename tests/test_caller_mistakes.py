"""Caller mistakes get a clear exception of a documented type, and nothing is sent.

"Nothing sent" is checked on the transport itself: the TLSStream's transport
is a ``MemorySendStream`` + ``MemoryReceiveStream`` pair, and after the
mistake its send side holds no new bytes.
"""

from __future__ import annotations

import array
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from streamtools import contexts_for, handshake

from trio_tlsretry import NeedHandshakeError, StreamState, TLSStream
from trio_tlsretry.testing import make_tls_contexts, tls_memory_stream_pair

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
DEADLINE = 100  # virtual seconds under the autojump clock


def recording_transport() -> tuple[trio.StapledStream[Any, Any], trio.testing.MemorySendStream]:
    send = trio.testing.MemorySendStream()
    return trio.StapledStream(send, trio.testing.MemoryReceiveStream()), send


def sent(send: trio.testing.MemorySendStream) -> bytes:
    try:
        return bytes(send.get_data_nowait())
    except trio.WouldBlock:
        return b""


def fresh_client() -> tuple[TLSStream, trio.testing.MemorySendStream]:
    transport, send = recording_transport()
    client = TLSStream(transport, contexts_for().client, server_hostname="example.org")
    return client, send


async def handshake_failures(client: TLSStream, server: TLSStream) -> dict[str, BaseException]:
    """Handshake both ends; the BrokenResourceError of each side that failed (then closed)."""
    failures: dict[str, BaseException] = {}

    async def run(name: str, stream: TLSStream) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            failures[name] = exc
            await stream.aclose()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "client", client)
            nursery.start_soon(run, "server", server)
    return failures


async def connected(version: ssl.TLSVersion | None = None) -> tuple[TLSStream, TLSStream]:
    contexts = contexts_for(version)
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server
    )
    await handshake(client, server)
    return client, server


def wire_bytes(stream: TLSStream) -> int:
    return stream.statistics().ciphertext_bytes_sent


# ---------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize("max_bytes", [0, -1, -(2**70)])
async def test_receive_some_max_bytes_below_one(max_bytes: int) -> None:
    client, send = fresh_client()
    with pytest.raises(ValueError, match="max_bytes"):
        await client.receive_some(max_bytes)
    assert sent(send) == b""  # not even a ClientHello
    assert client.statistics().state is StreamState.OPEN


@pytest.mark.parametrize("max_bytes", [1.5, "10", b"10", [10]])
async def test_receive_some_max_bytes_not_an_integer(max_bytes: object) -> None:
    client, send = fresh_client()
    with pytest.raises(TypeError):
        await client.receive_some(max_bytes)  # type: ignore[arg-type]
    assert sent(send) == b""


@pytest.mark.parametrize(
    "data",
    ["text", "", 5, 0, None, [1, 2, 3], {b"a": 1}, object(), 1.0],
    ids=lambda d: type(d).__name__,
)
async def test_send_all_non_bytes_like(data: object) -> None:
    """str, int (``bytes(5)`` would be five NULs), None, lists: TypeError before any I/O."""
    client, send = fresh_client()
    with pytest.raises(TypeError):
        await client.send_all(data)  # type: ignore[arg-type]
    assert sent(send) == b""
    stats = client.statistics()
    assert stats.state is StreamState.OPEN
    assert stats.pinned_bytes == 0


async def test_send_all_str_after_the_handshake_sends_nothing() -> None:
    client, server = await connected()
    before = wire_bytes(client)
    with pytest.raises(TypeError, match="str"):
        await client.send_all("héllo")  # type: ignore[arg-type]
    assert wire_bytes(client) == before
    # The stream is still fine: the mistake cost nothing.
    await client.send_all(b"ok")
    assert await server.receive_some() == b"ok"


@pytest.mark.parametrize(
    "data, expected",
    [
        (bytearray(b"abc"), b"abc"),
        (memoryview(b"abcdef")[::2], b"ace"),  # non-contiguous: copied in order
        (array.array("B", [1, 2, 3]), b"\x01\x02\x03"),
        (b"", b""),
    ],
    ids=["bytearray", "strided-memoryview", "array", "empty"],
)
async def test_send_all_accepts_every_bytes_like(data: Any, expected: bytes) -> None:
    client, server = await connected()
    await client.send_all(data)
    await client.send_all(b"|")
    got = b""
    while not got.endswith(b"|"):
        got += await server.receive_some()
    assert got == expected + b"|"


async def test_bytearray_mutated_during_send_all_is_sent_as_it_was() -> None:
    contexts = contexts_for()
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server, lockstep=True
    )
    data = bytearray(b"A" * 50_000)
    got = bytearray()

    async def reader() -> None:
        while len(got) < len(data):
            got.extend(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(client.send_all, data)
        await trio.testing.wait_all_tasks_blocked()
        data[:] = b"B" * 50_000  # mid-handshake / mid-send
    assert bytes(got) == b"A" * 50_000


# ---------------------------------------------------------------------------
# Bad construction.


def test_missing_server_hostname_with_check_hostname() -> None:
    transport, send = recording_transport()
    context = contexts_for().client
    assert context.check_hostname
    with pytest.raises(ValueError, match="server_hostname"):
        TLSStream(transport, context)
    assert sent(send) == b""


async def test_missing_server_hostname_never_skips_host_name_checks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A certificate for another host must not be accepted, whatever the arguments."""
    other_host = make_tls_contexts("attacker.example")
    client_context = ssl.create_default_context()
    other_host.ca.configure_trust(client_context)
    assert client_context.check_hostname
    a, b = trio.testing.memory_stream_pair()
    try:
        client = TLSStream(a, client_context)  # no server_hostname
    except ValueError:
        return  # refused up front: fine
    server = TLSStream(b, other_host.server, server_side=True)
    failures = await handshake_failures(client, server)
    assert "client" in failures, "the handshake succeeded without host-name verification"
    assert isinstance(failures["client"].__cause__, ssl.SSLCertVerificationError)


@pytest.mark.parametrize("hostname", ["", ".example.org"])
def test_invalid_server_hostname(hostname: str) -> None:
    transport, send = recording_transport()
    with pytest.raises(ValueError):
        TLSStream(transport, contexts_for().client, server_hostname=hostname)
    assert sent(send) == b""


def test_non_ascii_bytes_server_hostname() -> None:
    transport, _ = recording_transport()
    with pytest.raises(UnicodeDecodeError):  # a ValueError subclass
        TLSStream(transport, contexts_for().client, server_hostname="exämple.org".encode())


def test_client_context_used_for_a_server() -> None:
    transport, send = recording_transport()
    with pytest.raises(ValueError, match="PROTOCOL_TLS_CLIENT"):
        TLSStream(transport, contexts_for().client, server_side=True)
    assert sent(send) == b""


def test_server_context_used_for_a_client() -> None:
    transport, send = recording_transport()
    with pytest.raises(ValueError, match="PROTOCOL_TLS_SERVER"):
        TLSStream(transport, contexts_for().server, server_hostname="example.org")
    assert sent(send) == b""


async def test_server_context_without_a_certificate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Not detectable up front: the handshake fails on both sides, with an SSLError cause."""
    bare = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client, server = tls_memory_stream_pair(
        client_context=contexts_for().client, server_context=bare
    )
    results = await handshake_failures(client, server)
    assert isinstance(results["server"].__cause__, ssl.SSLError)
    assert isinstance(results["client"].__cause__, ssl.SSLError)


# ---------------------------------------------------------------------------
# Using a stream at the wrong time.


def operations(stream: TLSStream) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "send_all": lambda: stream.send_all(b"secret"),
        "receive_some": stream.receive_some,
        "do_handshake": stream.do_handshake,
        "wait_send_all_might_not_block": stream.wait_send_all_might_not_block,
        "send_eof": stream.send_eof,
        "unwrap": stream.unwrap,
    }


OPERATIONS = [
    "send_all",
    "receive_some",
    "do_handshake",
    "wait_send_all_might_not_block",
    "send_eof",
    "unwrap",
]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("handshake_first", [True, False])
async def test_operations_after_aclose(operation: str, handshake_first: bool) -> None:
    if handshake_first:
        client, _ = await connected()
        await client.aclose()
    else:
        # aclose would run the handshake first (as trio.SSLStream's does),
        # and nobody answers here: close it the way a timeout would.
        client, _ = fresh_client()
        await trio.aclose_forcefully(client)
    before = wire_bytes(client)
    with pytest.raises(trio.ClosedResourceError):
        await operations(client)[operation]()
    assert wire_bytes(client) == before
    assert client.statistics().state is StreamState.CLOSED
    await client.aclose()  # closing twice is fine


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_operations_after_unwrap(
    operation: str, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await connected(TLS13)
    unwrapped: dict[str, trio.abc.Stream] = {}

    async def unwrap(name: str, stream: TLSStream) -> None:
        unwrapped[name], _ = await stream.unwrap()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(unwrap, "client", client)
            nursery.start_soon(unwrap, "server", server)
    before = wire_bytes(client)
    with pytest.raises(trio.ClosedResourceError):
        await operations(client)[operation]()
    assert wire_bytes(client) == before
    # The transport is the caller's again and still works.
    await unwrapped["client"].send_all(b"plain")
    assert await unwrapped["server"].receive_some() == b"plain"


@pytest.mark.parametrize(
    "method",
    [
        "getpeercert",
        "cipher",
        "shared_ciphers",
        "compression",
        "version",
        "selected_alpn_protocol",
        "selected_npn_protocol",
        "get_channel_binding",
    ],
)
def test_details_before_the_handshake(method: str) -> None:
    client, send = fresh_client()
    with pytest.raises(NeedHandshakeError):
        getattr(client, method)()
    with pytest.raises(NeedHandshakeError):
        _ = client.session_reused
    assert sent(send) == b""


async def test_send_all_after_send_eof() -> None:
    client, server = await connected(TLS13)
    await client.send_eof()
    before = wire_bytes(client)
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"late")
    assert wire_bytes(client) == before
    assert await server.receive_some() == b""
    await server.send_all(b"half-open")
    assert await client.receive_some() == b"half-open"


async def test_concurrent_send_all_is_busy() -> None:
    contexts = contexts_for()
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server, lockstep=True
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"first")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await client.send_all(b"second")
        with pytest.raises(trio.BusyResourceError):
            await client.wait_send_all_might_not_block()
        assert await server.receive_some() == b"first"
    assert client.statistics().state is StreamState.OPEN


async def test_concurrent_receive_some_is_busy() -> None:
    client, server = await connected()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await client.receive_some()
        await server.send_all(b"x")
    assert client.statistics().state is StreamState.OPEN
