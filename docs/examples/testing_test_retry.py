"""Cancel and retry a large send_all (docs/testing.rst); save as tests/test_retry.py."""

import trio
import trio.testing

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import cancellation_sweep

MESSAGE = bytes(range(256)) * 4096  # 1 MiB


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the peer sends until it closes."""
    data = bytearray()
    async for chunk in stream:
        data += chunk
    return bytes(data)


async def test_cancelled_send_all_resumes(
    tls_exact_stream_pair: tuple[TLSStream, TLSStream],
    autojump_clock: trio.testing.MockClock,
    hang_guard: None,
) -> None:
    client, server = tls_exact_stream_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)  # the server shakes hands, then reads nothing
        with trio.move_on_after(5) as scope:
            await client.send_all(MESSAGE)  # blocks: the transport buffers 16 KiB
        assert scope.cancelled_caught  # the timeout really cut the send short

    async def retry_and_close() -> None:
        await client.send_all(MESSAGE)  # the same object: resumes where it stopped
        await client.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(retry_and_close)
        # The peer gets the message once, whole: nothing repeated or lost.
        assert await receive_all(server) == MESSAGE


async def test_send_all_survives_cancellation_anywhere(
    tls_exact_stream_pair: tuple[TLSStream, TLSStream],
    autojump_clock: trio.testing.MockClock,
    hang_guard: None,
) -> None:
    client, server = tls_exact_stream_pair
    transport = client.transport_stream
    transport.capacity = 1000  # many small sends: many cancellation points
    message = bytes(range(256)) * 100
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)

    async def sweep_and_close() -> None:
        # Cancel send_all at every point where it can stop, retrying with the
        # same object each time; progress says how far the send has got.
        await cancellation_sweep(
            lambda k: client.send_all(message), progress=lambda: transport.bytes_sent
        )
        await client.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sweep_and_close)
        assert await receive_all(server) == message
