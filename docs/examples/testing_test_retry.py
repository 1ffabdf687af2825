"""Cancel and retry a large send_all (docs/testing.rst); save as tests/test_retry.py."""

import trio
import trio.testing
from greeting import receive_line

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import cancellation_sweep

MESSAGE = bytes(range(256)) * 4096  # 1 MiB


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


async def test_cancelled_send_all_resumes(
    tls_exact_stream_pair: tuple[TLSStream, TLSStream],
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = tls_exact_stream_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)  # the server shakes hands, then reads nothing
        with trio.move_on_after(5) as scope:
            await client.send_all(MESSAGE)  # blocks: the transport buffers 16 KiB
        assert scope.cancelled_caught  # the timeout really cut the send short
        # Retry with the same object while the server reads: the peer gets
        # the message once, whole, with nothing repeated or lost.
        nursery.start_soon(client.send_all, MESSAGE)
        assert await receive_exactly(server, len(MESSAGE)) == MESSAGE


async def test_send_all_survives_cancellation_anywhere(
    tls_exact_stream_pair: tuple[TLSStream, TLSStream],
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = tls_exact_stream_pair
    client.transport_stream.capacity = 1000  # many small sends: many cancellation points
    message = bytes(range(256)) * 100 + b"\n"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    transport = client.transport_stream
    async with trio.open_nursery() as nursery:
        # Cancel send_all at every point where it can stop, retrying with the
        # same object each time; progress says how far the send has got.
        nursery.start_soon(
            lambda: cancellation_sweep(
                lambda k: client.send_all(message), progress=lambda: transport.bytes_sent
            )
        )
        assert await receive_line(server) == message
