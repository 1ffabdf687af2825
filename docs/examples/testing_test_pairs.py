"""Tests over in-memory TLS pairs (docs/testing.rst); save as tests/test_pairs.py."""

import trio
from greeting import greeting_handler, receive_line

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import ChunkedStream


async def test_greeting(tls_stream_pair: tuple[TLSStream, TLSStream]) -> None:
    client, server = tls_stream_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(greeting_handler, server)  # the server end, in its own task
        await client.send_all(b"HELLO\n")  # the handshake runs here, with the server
        assert await receive_line(client) == b"Hello from example.org\n"


async def test_greeting_one_byte_at_a_time(tls_stream_pair: tuple[TLSStream, TLSStream]) -> None:
    client, server = tls_stream_pair
    async with trio.open_nursery() as nursery:
        # On top of each TLSStream, ChunkedStream hands out the plaintext one
        # byte per receive_some: code that takes one receive for one line fails.
        nursery.start_soon(greeting_handler, ChunkedStream(server, receive_size=1))
        await client.send_all(b"HELLO\n")
        assert await receive_line(ChunkedStream(client, receive_size=1)) == (
            b"Hello from example.org\n"
        )
