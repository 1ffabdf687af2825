"""What ``TLSStreamStatistics.pinned_bytes`` and its neighbours mean
(``trio_tlsretry/_stats.py``): the documented meaning, pinned by tests.

``pinned_bytes`` counts whole write chunks: it is ``len(message)`` until all
the ciphertext of the first 64 KiB chunk has reached the transport, then one
chunk less each time the next chunk is out in full. It is *not* a byte count
of what the transport holds: ``0 < pinned_bytes < len(message)`` is false
while the transport holds part of the first chunk.
"""

from __future__ import annotations

import trio
import trio.testing

from trio_tlsretry import TLSStream, TLSStreamStatistics
from trio_tlsretry._engine import DEFAULT_WRITE_CHUNK
from trio_tlsretry.testing import TLSContexts, tls_memory_stream_pair

CHUNK = DEFAULT_WRITE_CHUNK
MESSAGE = bytes(range(256)) * (4 * 1024)  # 1 MiB


def test_the_documented_chunk_is_the_engines() -> None:
    # The docstrings of TLSStreamStatistics say "64 KiB".
    assert CHUNK == 64 * 1024
    assert "64 KiB" in (TLSStreamStatistics.__doc__ or "")


def pair(contexts: TLSContexts, capacity: int) -> tuple[TLSStream, TLSStream]:
    return tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        exact_progress=True,
        capacity=capacity,
    )


async def handshake(client: TLSStream, server: TLSStream) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)


async def cancelled_send(client: TLSStream) -> None:
    """``send_all(MESSAGE)`` until nothing moves for a (virtual) second."""
    with trio.move_on_after(1) as scope:
        await client.send_all(MESSAGE)
    assert scope.cancelled_caught


async def test_part_of_the_first_chunk_sent_is_still_the_whole_message(
    autojump_clock: trio.testing.MockClock, tls_contexts: TLSContexts
) -> None:
    client, server = pair(tls_contexts, capacity=16 * 1024)
    await handshake(client, server)
    before = client.statistics().ciphertext_bytes_sent
    await cancelled_send(client)
    stats = client.statistics()
    # The transport holds 16 KiB of ciphertext, but no chunk is out in full:
    # a test asserting 0 < pinned_bytes < len(MESSAGE) here would fail.
    assert stats.ciphertext_bytes_sent - before == 16 * 1024
    assert stats.pinned_bytes == len(MESSAGE)
    # Encrypted, a chunk ahead of the transport.
    assert stats.plaintext_bytes_sent == CHUNK


async def test_one_chunk_out_in_full_is_one_chunk_less(
    autojump_clock: trio.testing.MockClock, tls_contexts: TLSContexts
) -> None:
    # Room for the first chunk's ciphertext (64 KiB plus a few record
    # headers and tags) and a little more, not for the second chunk.
    client, server = pair(tls_contexts, capacity=CHUNK + 2000)
    await handshake(client, server)
    await cancelled_send(client)
    stats = client.statistics()
    assert stats.pinned_bytes == len(MESSAGE) - CHUNK
    assert stats.plaintext_bytes_sent == 2 * CHUNK
    # The retry finishes the message and unpins it.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, MESSAGE)
        assert await receive_exactly(server, len(MESSAGE)) == MESSAGE
    assert client.statistics().pinned_bytes == 0


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = await stream.receive_some(size - len(data))
        assert piece
        data += piece
    return bytes(data)


async def test_the_bounds_hold_at_every_moment_whatever_the_task_order(
    autojump_clock: trio.testing.MockClock, tls_contexts: TLSContexts
) -> None:
    # The receiver reads in pieces of several sizes, so the moments at which
    # the sender's counters are read fall differently in each round.
    for read_size in (1000, 7_777, 16_384, 50_000):
        client, server = pair(tls_contexts, capacity=16 * 1024)
        await handshake(client, server)
        base = client.statistics()
        snapshots: list[tuple[int, TLSStreamStatistics]] = []
        received = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, MESSAGE)
            while received < len(MESSAGE):
                received += len(await server.receive_some(read_size))
                snapshots.append((received, client.statistics()))
        # Once send_all has returned, nothing is pinned.
        assert client.statistics().pinned_bytes == 0
        values = set()
        for received_so_far, stats in snapshots:
            if stats.pinned_bytes == 0:
                continue  # finished (nothing pinned any more)
            values.add(stats.pinned_bytes)
            out_in_full = len(MESSAGE) - stats.pinned_bytes
            # Whole chunks only.
            assert out_in_full % CHUNK == 0
            # At least that much plaintext has reached the transport...
            assert stats.ciphertext_bytes_sent - base.ciphertext_bytes_sent >= out_in_full
            # ... and at most one chunk more: the peer cannot have more.
            assert received_so_far <= out_in_full + CHUNK
            # The engine is at most one chunk ahead of the transport.
            assert stats.plaintext_bytes_sent - base.plaintext_bytes_sent - out_in_full in (
                0,
                CHUNK,
            )
        # Every chunk boundary was seen: the value steps down one chunk at a time.
        assert sorted(values, reverse=True) == list(range(len(MESSAGE), 0, -CHUNK))[: len(values)]
        await client.aclose()
        await server.aclose()


async def test_a_message_is_pinned_from_the_start_of_its_send_all(
    autojump_clock: trio.testing.MockClock, tls_contexts: TLSContexts
) -> None:
    client, server = pair(tls_contexts, capacity=16 * 1024)
    assert client.statistics().pinned_bytes == 0
    # Cancelled during the implicit handshake (the server is not running):
    # the message is already pinned, whole.
    with trio.move_on_after(1) as scope:
        await client.send_all(MESSAGE)
    assert scope.cancelled_caught
    assert client.statistics().pinned_bytes == len(MESSAGE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, MESSAGE)
        assert await receive_exactly(server, len(MESSAGE)) == MESSAGE
    assert client.statistics().pinned_bytes == 0
