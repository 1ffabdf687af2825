"""TLS 1.2 renegotiation started by an independent (pyOpenSSL) server while
our client is inside a large send_all and data flows both ways."""

from __future__ import annotations

import hashlib
import os

import pytest
import trio
import trio.testing
import trustme
from pyopenssl_peer import PyOpenSSLPeer, client_context, server_context

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import exact_progress_stream_pair

SIZE = 6 * 1024 * 1024


def digest(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# Transports with back-pressure, so the renegotiation lands while send_all is
# still writing (over an unbounded memory pair send_all would finish first).
# trio.SSLStream hangs or breaks in this test over the socket pair; see
# benchmarks/cancellation_table.py for the side-by-side run.
@pytest.mark.parametrize("transport", ["lockstep", "exact", "socket"])
@pytest.mark.parametrize("renegotiations", [1, 3])
async def test_renegotiation_during_two_way_transfer(transport: str, renegotiations: int) -> None:
    ca = trustme.CA()
    upload = os.urandom(SIZE)
    download = os.urandom(SIZE)
    a: trio.abc.Stream
    b: trio.abc.Stream
    if transport == "lockstep":
        a, b = trio.testing.lockstep_stream_pair()
    elif transport == "exact":
        a, b = exact_progress_stream_pair(capacity=32 * 1024)
    else:
        sock_a, sock_b = trio.socket.socketpair()
        a, b = trio.SocketStream(sock_a), trio.SocketStream(sock_b)
    client = TLSStream(a, client_context(ca), server_hostname="example.org")
    peer = PyOpenSSLPeer(
        b,
        server_context(ca),
        to_send=download,
        expect=SIZE,
        renegotiate_after=SIZE // (renegotiations + 1),
        renegotiations=renegotiations,
    )
    got = bytearray()

    async def receive_all() -> None:
        while len(got) < SIZE:
            got.extend(await client.receive_some())

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.run)
            nursery.start_soon(receive_all)
            await client.send_all(upload)  # one call: the renegotiation lands inside it
    assert peer.total_renegotiations() == renegotiations
    assert len(peer.received) == SIZE and digest(peer.received) == digest(upload)
    assert len(got) == SIZE and digest(got) == digest(download)
    assert client.version() == "TLSv1.2"
    await trio.aclose_forcefully(client)  # the peer no longer reads
