"""What TLSStream reports while it waits for the peer: ``pending()`` and a transport that ends.

Every operation waits for the peer in one loop (``TLSStream._drive``):
once the transport has ended, the operation fails with an EOF error instead of
waiting for ever (OpenSSL reports it as ``UNEXPECTED_EOF_WHILE_READING``).
"""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing
from streamtools import handshake

from trio_tlsretry import StreamState
from trio_tlsretry.testing import tls_memory_stream_pair


async def test_pending_counts_decrypted_bytes_not_yet_returned() -> None:
    client, server = tls_memory_stream_pair()
    assert client.pending() == 0
    await handshake(client, server)
    await server.send_all(b"x" * 100)
    assert await client.receive_some(10) == b"x" * 10
    # The rest of the record is decrypted and waiting: no transport read needed.
    assert client.pending() == 90
    assert await client.receive_some(1000) == b"x" * 90
    assert client.pending() == 0


async def test_unwrap_fails_when_the_transport_ends_before_the_peers_close_notify() -> None:
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    # The server's direction ends; what the client sends is still taken.
    await server.transport_stream.send_stream.aclose()
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as info:
        await client.unwrap()
    assert isinstance(info.value.__cause__, (ssl.SSLEOFError, ssl.SSLSyscallError))
    assert client.statistics().state is StreamState.BROKEN


async def test_the_handshake_fails_when_the_transport_has_ended() -> None:
    client, server = tls_memory_stream_pair()
    await server.transport_stream.send_stream.aclose()
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as info:
        await client.do_handshake()
    assert isinstance(info.value.__cause__, (ssl.SSLEOFError, ssl.SSLSyscallError))
