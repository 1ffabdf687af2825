"""TLSStream behaviours users rely on: handshake, duplex, close, EOF, errors."""

from __future__ import annotations

import gc
import os
import ssl
import weakref

import pytest
import trio
import trio.testing
from streamtools import contexts_for, handshake, handshaken_socket_pair, receive_exactly

from trio_tlsretry import NeedHandshakeError, StreamState, TLSStream
from trio_tlsretry._engine import DEFAULT_WRITE_CHUNK
from trio_tlsretry.testing import make_tls_contexts, tls_memory_stream_pair

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


async def test_handshake_happens_on_first_use() -> None:
    client, server = tls_memory_stream_pair()
    with pytest.raises(NeedHandshakeError):
        client.cipher()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"ping")
        assert await server.receive_some() == b"ping"
    assert client.version() == server.version()
    assert client.getpeercert()["subjectAltName"] == (("DNS", "example.org"),)
    assert server.server_side and not client.server_side
    assert client.server_hostname == "example.org"
    assert client.selected_alpn_protocol() is None


async def test_hostname_is_checked() -> None:
    contexts = make_tls_contexts("example.org")
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server, server_hostname="other.org"
    )

    async def server_side() -> None:
        with pytest.raises(trio.BrokenResourceError):  # it gets the client's alert
            await server.do_handshake()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.do_handshake()
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert client.statistics().plaintext_bytes_sent == 0


async def test_concurrent_sends_and_receives_are_busy() -> None:
    client, server = tls_memory_stream_pair(lockstep=True)
    await handshake(client, server)
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"a" * 100_000)
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(b"b")
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            await client.receive_some()


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
async def test_full_duplex_over_lockstep(version: ssl.TLSVersion) -> None:
    contexts = make_tls_contexts(maximum_version=version)
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server, lockstep=True
    )
    size = 3 * DEFAULT_WRITE_CHUNK + 17
    up, down = bytes(range(256)) * (size // 256), b"\xee" * size
    got: dict[str, bytes] = {}

    async def server_side() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, down)
            got["server"] = await receive_exactly(server, len(up))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        nursery.start_soon(client.send_all, up)
        got["client"] = await receive_exactly(client, len(down))
    assert got == {"server": up, "client": down}


@pytest.mark.parametrize("sender", ["client", "server"])
async def test_tls13_session_tickets_do_not_deadlock_one_way_traffic(sender: str) -> None:
    # python-trio/trio#819: a TLS 1.3 server that only receives must not
    # block on sending its session tickets to a client that only sends,
    # over a transport where every send waits for the peer to read.
    contexts = make_tls_contexts(maximum_version=ssl.TLSVersion.TLSv1_3)
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server, lockstep=True
    )
    writer, reader = (client, server) if sender == "client" else (server, client)
    data = b"q" * 300_000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.send_all, data)
        assert await receive_exactly(reader, len(data)) == data


async def test_bytearray_mutated_after_send_all_started_is_not_seen() -> None:
    client, server = tls_memory_stream_pair(exact_progress=True, capacity=1000)
    original = bytes(range(256)) * 2000
    buffer = bytearray(original)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, buffer)
        # send_all is now blocked in its implicit handshake: scribble over
        # the caller's buffer, then keep scribbling while data flows.
        await trio.testing.wait_all_tasks_blocked()
        for i in range(0, len(buffer), 997):
            buffer[i] ^= 0xFF
        received = bytearray()
        while len(received) < len(original):
            received += await server.receive_some(5000)
            buffer[len(received) % len(buffer)] ^= 0xFF
        assert received == original
    assert bytes(buffer) != original


async def test_one_64_mib_send_all_buffers_a_bounded_amount_of_ciphertext() -> None:
    client, server = tls_memory_stream_pair()
    size = 64 * 1024 * 1024
    data = b"\x5a" * size
    received = 0

    async def drain() -> None:
        nonlocal received
        while received < size:
            received += len(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await client.send_all(data)
    stats = client.statistics()
    assert received == size and stats.plaintext_bytes_sent == size
    # The engine holds at most one chunk's ciphertext: records of <= 16 KiB
    # plaintext, each with 22 bytes of TLS 1.3 header, type and tag.
    bound = DEFAULT_WRITE_CHUNK + 22 * (DEFAULT_WRITE_CHUNK // 16384 + 1) + 1024
    assert stats.max_outgoing_ciphertext_bytes <= bound
    assert stats.pinned_bytes == 0 and stats.outgoing_ciphertext_bytes == 0


async def test_aclose_sends_close_notify_and_peer_sees_eof() -> None:
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    await client.send_all(b"bye")
    await client.aclose()
    assert client.statistics().state is StreamState.CLOSED
    assert await server.receive_some() == b"bye"
    assert await server.receive_some() == b""
    assert await server.receive_some() == b""
    await server.aclose()


async def test_every_call_after_aclose_raises_closed() -> None:
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await client.do_handshake()
    with pytest.raises(trio.ClosedResourceError):
        await client.wait_send_all_might_not_block()
    with pytest.raises(trio.ClosedResourceError):
        await client.unwrap()


async def test_transport_eof_without_close_notify_is_broken() -> None:
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    await client.transport_stream.aclose()
    with pytest.raises(trio.BrokenResourceError) as info:
        await server.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert server.statistics().state is StreamState.BROKEN
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()


async def test_https_compatible_treats_bare_eof_as_eof_and_skips_close_notify() -> None:
    contexts = make_tls_contexts()
    a, b = trio.testing.memory_stream_pair()
    client = TLSStream(a, contexts.client, server_hostname="example.org", https_compatible=True)
    server = TLSStream(b, contexts.server, server_side=True, https_compatible=True)
    await handshake(client, server)
    sent_before_close = client.statistics().ciphertext_bytes_sent
    await client.aclose()
    assert client.statistics().ciphertext_bytes_sent == sent_before_close
    assert await server.receive_some() == b""


async def test_tls_errors_surface_as_broken_with_cause() -> None:
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    # A record whose header says "application data" but whose body is noise.
    await client.transport_stream.send_all(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    with pytest.raises(trio.BrokenResourceError) as info:
        await server.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)


async def test_unwrap_returns_transport_and_trailing_bytes() -> None:
    client, server = tls_memory_stream_pair()
    client_transport = client.transport_stream
    await handshake(client, server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, b"before")
        assert await client.receive_some() == b"before"
    results: dict[str, tuple[trio.abc.Stream, bytes | bytearray]] = {}

    async def unwrap(name: str, stream: TLSStream) -> None:
        results[name] = await stream.unwrap()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(unwrap, "client", client)
        nursery.start_soon(unwrap, "server", server)
    assert results["client"][0] is client_transport
    # Handed back, not kept: trio.SSLStream sets it to None too.
    assert client.transport_stream is None
    await results["server"][0].send_all(b"plain")
    assert await results["client"][0].receive_some() == b"plain"
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")


async def test_statistics_is_a_frozen_snapshot() -> None:
    client, server = tls_memory_stream_pair()
    before = client.statistics()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"12345")
        assert await server.receive_some() == b"12345"
    after = client.statistics()
    assert before.plaintext_bytes_sent == 0 and after.plaintext_bytes_sent == 5
    assert server.statistics().plaintext_bytes_received == 5
    with pytest.raises(AttributeError):
        after.pinned_bytes = 3  # type: ignore[misc]


async def test_streams_can_be_weakly_referenced_like_trio_sslstream() -> None:
    # A drop-in replacement: code that keeps live trio.SSLStreams in a
    # WeakSet (servers, connection pools) must work with TLSStream too.
    client, server = tls_memory_stream_pair()
    live = weakref.WeakSet([client, server])
    assert len(live) == 2
    ref = weakref.ref(client)
    await handshake(client, server)
    await client.aclose()
    await server.aclose()
    del client, server
    gc.collect()
    assert ref() is None and not live


async def test_do_handshake_again_is_only_a_checkpoint() -> None:
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    sent = client.statistics().ciphertext_bytes_sent
    with trio.testing.assert_checkpoints():
        await client.do_handshake()
    assert client.statistics().ciphertext_bytes_sent == sent


async def test_an_empty_send_all_writes_nothing_to_a_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # h11 (hypercorn) ends every HTTP/1.1 response with send_all(b""): no
    # empty write system call, only a checkpoint.
    async with handshaken_socket_pair(contexts_for(ssl.TLSVersion.TLSv1_3)) as (client, _):
        fd = client.transport_stream.socket.fileno()
        writes: list[int] = []
        real_write = os.write

        def counting_write(to: int, data: bytes) -> int:
            if to == fd:
                writes.append(len(data))
            return real_write(to, data)

        monkeypatch.setattr(os, "write", counting_write)
        await client.send_all(b"x")
        assert len(writes) == 1  # the counter sees the socket's writes
        with trio.testing.assert_checkpoints():
            await client.send_all(b"")
        assert len(writes) == 1
