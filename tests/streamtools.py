"""Small helpers shared by the test modules (imported as ``streamtools``)."""

from __future__ import annotations

import trio

from trio_tlsretry import TLSStream


async def handshake(*streams: TLSStream) -> None:
    """Run the handshakes of ``streams`` concurrently (both ends of a pair)."""
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(stream.do_handshake)


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """Exactly ``size`` bytes, never reading past them; fails on an early EOF."""
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        assert chunk, f"EOF after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


async def receive_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything until the peer's EOF (``b""``)."""
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    return bytes(received)
