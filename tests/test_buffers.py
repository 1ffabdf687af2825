"""The buffer rules of docs/performance.rst, checked on the stream's own counters.

What a connection holds is bounded by three sizes, each no larger than what
``trio.SSLStream`` holds in the same situation: a transport read
(``TRANSPORT_RECEIVE_SIZE``, trio's ``SocketStream`` default), one TLS record
of plaintext per ``receive_some()`` without ``max_bytes`` (``SSLObject.read``
returns one record, so trio never returns more), and one write chunk of
ciphertext for a ``send_all`` of any size (trio encrypts the whole call at
once). No timing and no RSS here: ``benchmarks/connections.py`` measures the
memory.
"""

from __future__ import annotations

import os
import ssl

import pytest
import trio
from streamtools import handshaken_socket_pair, receive_exactly

from trio_tlsretry._engine import DEFAULT_WRITE_CHUNK, TLSEngine
from trio_tlsretry._stream import DEFAULT_RECEIVE_SIZE, TRANSPORT_RECEIVE_SIZE
from trio_tlsretry.testing import TLSContexts

HOSTNAME = "example.org"
#: One TLS record's plaintext (RFC 8446 section 5.1, RFC 5246 section 6.2.1).
RECORD = 16384
#: Header, tag and content type of one TLS 1.3 record (AES-GCM).
RECORD_OVERHEAD = 5 + 16 + 1


@pytest.fixture(scope="module")
def contexts() -> TLSContexts:
    return TLSContexts(HOSTNAME, maximum_version=ssl.TLSVersion.TLSv1_3)


async def test_a_transport_read_is_no_larger_than_trios_socket_read() -> None:
    # trio.SSLStream reads its transport with SocketStream.receive_some() and
    # no size: that is the bound (on trio's public behaviour, not its source).
    a, b = trio.socket.socketpair()
    async with (
        trio.SocketStream(a) as sender,
        trio.SocketStream(b) as receiver,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(sender.send_all, bytes(1024 * 1024))
        await trio.testing.wait_all_tasks_blocked()
        trios_read = len(await receiver.receive_some())
        nursery.cancel_scope.cancel()
    assert trios_read == TRANSPORT_RECEIVE_SIZE


async def test_a_default_receive_is_no_larger_than_trio_sslstreams(
    contexts: TLSContexts,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    client = trio.SSLStream(left, contexts.client, server_hostname=HOSTNAME)
    server = trio.SSLStream(right, contexts.server, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, bytes(4 * RECORD))
        largest = max([len(await server.receive_some()) for _ in range(4)])
    assert DEFAULT_RECEIVE_SIZE == largest == RECORD
    assert DEFAULT_WRITE_CHUNK <= TRANSPORT_RECEIVE_SIZE


async def test_receive_some_without_max_bytes_returns_at_most_16_kib(contexts: TLSContexts) -> None:
    async with handshaken_socket_pair(contexts) as (client, server):
        message = os.urandom(4 * RECORD)
        await client.send_all(message)
        first = await server.receive_some()
        assert len(first) == DEFAULT_RECEIVE_SIZE
        # With max_bytes, the records already here come in one call.
        rest = await server.receive_some(len(message))
        assert len(rest) > RECORD
        assert (
            first + rest + await receive_exactly(server, len(message) - len(first) - len(rest))
            == message
        )


async def test_one_transport_read_takes_at_most_transport_receive_size(
    contexts: TLSContexts,
) -> None:
    async with handshaken_socket_pair(contexts) as (client, server), trio.open_nursery() as nursery:
        # More than the kernel holds at once: the rest waits in send_all.
        nursery.start_soon(client.send_all, os.urandom(1024 * 1024))
        await trio.testing.wait_all_tasks_blocked()
        assert len(await server.receive_some(1)) == 1
        stats = server.statistics()
        assert 0 < stats.incoming_ciphertext_bytes < TRANSPORT_RECEIVE_SIZE
        await receive_exactly(server, 1024 * 1024 - 1)


async def test_a_huge_send_all_buffers_one_chunk_of_ciphertext(contexts: TLSContexts) -> None:
    async with handshaken_socket_pair(contexts) as (client, server):
        size = 64 * DEFAULT_WRITE_CHUNK
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, bytes(size))
            await receive_exactly(server, size)
        records = -(-DEFAULT_WRITE_CHUNK // RECORD)
        bound = DEFAULT_WRITE_CHUNK + records * RECORD_OVERHEAD
        assert 0 < client.statistics().max_outgoing_ciphertext_bytes <= bound


def test_sent_ciphertext_is_not_kept_alive_by_the_queue(contexts: TLSContexts) -> None:
    engine = TLSEngine(contexts.client, server_side=False, server_hostname=HOSTNAME)
    assert not engine.do_handshake()  # the ClientHello is queued
    head = engine.outgoing_head()
    assert len(head) > 0
    engine.consume_outgoing(len(head))
    # An empty slice of the block would still hold all of it (memoryview.obj).
    assert len(engine.outgoing_head().obj) == 0
