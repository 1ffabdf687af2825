"""Tests over in-memory TLS pairs (docs/testing.rst); save as tests/test_pairs.py."""

import trio
import trio.testing
from greeting import greeting_handler, receive_line

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import ChunkedStream, TLSContexts, tls_stream_pair_over


async def test_greeting(tls_stream_pair: tuple[TLSStream, TLSStream]) -> None:
    client, server = tls_stream_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(greeting_handler, server)  # the server end, in its own task
        await client.send_all(b"HELLO\n")  # the handshake runs here, with the server
        assert await receive_line(client) == b"Hello from example.org\n"


async def test_greeting_one_byte_at_a_time(tls_contexts: TLSContexts) -> None:
    left, right = trio.testing.memory_stream_pair()
    client, server = tls_stream_pair_over(
        ChunkedStream(left, receive_size=1),  # the client's network: 1 byte per read
        right,
        client_context=tls_contexts.client,
        server_context=tls_contexts.server,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(greeting_handler, server)
        await client.send_all(b"HELLO\n")
        assert await receive_line(client) == b"Hello from example.org\n"
