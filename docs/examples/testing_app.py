"""The code under test of docs/testing.rst: a greeting client and its server.

In your project this is your application module (here ``greeting.py``); the
test files of docs/testing.rst import it with ``from greeting import ...``.
"""

from __future__ import annotations

import ssl

import trio

import trio_tlsretry

#: How long fetch_greeting waits for the whole exchange, in seconds.
TIMEOUT = 30


async def fetch_greeting(host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> bytes:
    """Say HELLO to ``host`` over TLS and return its one-line greeting."""
    with trio.fail_after(TIMEOUT):
        stream = await trio_tlsretry.open_tls_over_tcp_stream(host, port, ssl_context=ssl_context)
        async with stream:
            await stream.send_all(b"HELLO\n")
            return await receive_line(stream)


async def greeting_handler(stream: trio.abc.Stream) -> None:
    """Answer one HELLO line with a greeting, then close."""
    async with stream:
        if await receive_line(stream) == b"HELLO\n":
            await stream.send_all(b"Hello from example.org\n")


async def receive_line(stream: trio.abc.ReceiveStream) -> bytes:
    """Bytes up to and including the first newline (the peer sends one line)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        data = await stream.receive_some()
        if not data:
            raise ConnectionError("the peer hung up mid-line")
        line += data
    return bytes(line)
