"""Testing an echo protocol over TLS with the trio_tlsretry fixtures."""

import trio

from trio_tlsretry import TLSStream


async def echo_handler(stream: trio.abc.Stream) -> None:
    async for data in stream:
        await stream.send_all(data)


async def test_echo(tls_stream_pair: tuple[TLSStream, TLSStream]) -> None:
    client, server = tls_stream_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_handler, server)
        await client.send_all(b"hello, TLS")
        assert await client.receive_some() == b"hello, TLS"
        await client.aclose()


# -- More examples from docs/testing.rst, included from here so they stay correct.

import ssl  # noqa: E402

import pytest  # noqa: E402
import trio.testing  # noqa: E402

from trio_tlsretry.testing import (  # noqa: E402
    AbruptEOFStream,
    ChunkedStream,
    TLSContexts,
    cancellation_sweep,
    tls_memory_stream_pair,
    tls_stream_pair_over,
)


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


async def test_echo_one_byte_at_a_time(tls_contexts: TLSContexts) -> None:
    left, right = trio.testing.memory_stream_pair()
    client, server = tls_stream_pair_over(
        ChunkedStream(left, receive_size=1),  # the client's network: 1 byte per read
        right,
        client_context=tls_contexts.client,
        server_context=tls_contexts.server,
    )
    message = b"x" * 5000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_handler, server)
        await client.send_all(message)
        assert await receive_exactly(client, len(message)) == message
        await client.aclose()


async def test_truncation_is_an_error(tls_contexts: TLSContexts) -> None:
    left, right = trio.testing.memory_stream_pair()
    cut = AbruptEOFStream(left)
    client, server = tls_stream_pair_over(
        cut, right, client_context=tls_contexts.client, server_context=tls_contexts.server
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_handler, server)
        await client.send_all(b"ping")
        assert await receive_exactly(client, 4) == b"ping"
        nursery.cancel_scope.cancel()  # stop the server: the client is what is tested
    cut.trigger_eof()  # the connection drops without close_notify
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.receive_some()
    assert isinstance(caught.value.__cause__, ssl.SSLEOFError)


async def test_send_all_survives_cancellation_anywhere(
    tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=tls_contexts.client,
        server_context=tls_contexts.server,
        exact_progress=True,  # a transport that reports exactly what it sent
        capacity=1000,
    )
    message = bytes(range(256)) * 100
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_handler, server)
        async with trio.open_nursery() as sender:
            # Cancel send_all at its checkpoint 0, 1, 2, ...: every attempt
            # retries with the same object and resumes where the last stopped.
            sender.start_soon(cancellation_sweep, lambda k: client.send_all(message))
            assert await receive_exactly(client, len(message)) == message
        await client.aclose()
