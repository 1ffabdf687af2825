"""TLSListener and handshake_or_drop (``trio_tlsretry/_listener.py``), over
loopback TCP and memory streams. The TCP helpers built on them are tested in
``test_tcp.py``.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from streamtools import contexts_for, handshake, port_of

from trio_tlsretry import DEFAULT_HANDSHAKE_TIMEOUT, NeedHandshakeError, StreamState, TLSStream
from trio_tlsretry._listener import TLSListener, handshake_or_drop
from trio_tlsretry._tcp import (
    open_tls_over_tcp_listeners,
    open_tls_over_tcp_stream,
)
from trio_tlsretry.testing import TLSContexts

HOST = "127.0.0.1"


@pytest.fixture
def contexts() -> TLSContexts:
    return contexts_for(hostname=HOST)


# -------------------------------------------------------------- listener


async def test_listener_accepts_without_handshaking(contexts: TLSContexts) -> None:
    listeners = await open_tls_over_tcp_listeners(0, contexts.server, host=HOST)
    assert len(listeners) == 1
    listener = listeners[0]
    assert listener.handshake_timeout == DEFAULT_HANDSHAKE_TIMEOUT
    async with listener:
        # A raw TCP client that never says anything is still accepted at once.
        silent = await trio.open_tcp_stream(HOST, port_of(listeners))
        async with silent:
            stream = await listener.accept()
            assert isinstance(stream, TLSStream)
            assert stream.server_side
            with pytest.raises(NeedHandshakeError):
                stream.version()
            # aclose would wait for the handshake (as trio.SSLStream's
            # does); a server drops a silent client forcefully.
            await trio.aclose_forcefully(stream)


async def test_listener_round_trip(contexts: TLSContexts) -> None:
    (listener,) = await open_tls_over_tcp_listeners(0, contexts.server, host=HOST)
    async with listener:
        client = await open_tls_over_tcp_stream(
            HOST, port_of([listener]), ssl_context=contexts.client
        )
        assert client.server_hostname == HOST
        server = await listener.accept()
        payload = bytes(range(256)) * 4096  # 1 MiB
        received = bytearray()

        async def read_all() -> None:
            while len(received) < len(payload):
                received.extend(await server.receive_some())

        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await client.send_all(payload)
        assert received == payload
        assert server.version() == client.version()


async def test_listener_close_stops_accepting(contexts: TLSContexts) -> None:
    (listener,) = await open_tls_over_tcp_listeners(0, contexts.server, host=HOST)
    await listener.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_listener_rejects_bad_arguments(contexts: TLSContexts) -> None:
    tcp = (await trio.open_tcp_listeners(0, host=HOST))[0]
    async with tcp:
        with pytest.raises(ValueError, match="server-side"):
            TLSListener(tcp, contexts.client)
        for bad in (0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="handshake_timeout"):
                TLSListener(tcp, contexts.server, handshake_timeout=bad)
        assert TLSListener(tcp, contexts.server, handshake_timeout=float("inf")).handshake_timeout


async def test_listener_https_compatible(contexts: TLSContexts) -> None:
    (listener,) = await open_tls_over_tcp_listeners(
        0, contexts.server, host=HOST, https_compatible=True
    )
    async with listener:
        client = await open_tls_over_tcp_stream(
            HOST, port_of([listener]), ssl_context=contexts.client, https_compatible=True
        )
        server = await listener.accept()
        await handshake(client, server)
        # The client reads what the server sent (its TLS 1.3 session tickets
        # go out with the handshake): a socket closed with unread data is
        # reset, not ended.
        await server.send_all(b"hello")
        assert await client.receive_some() == b"hello"
        # https_compatible: no close_notify is sent, and the transport EOF is
        # a clean EOF on the other side.
        await client.aclose()
        assert await server.receive_some() == b""
        await server.aclose()


# ----------------------------------------------------- handshake_or_drop


async def test_handshake_or_drop_times_out(
    contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    server = TLSStream(server_end, contexts.server, server_side=True)
    start = trio.current_time()
    assert not await handshake_or_drop(server, 3.0)
    assert trio.current_time() - start == pytest.approx(3.0)
    assert server.statistics().state is StreamState.CLOSED
    assert await client_end.receive_some() == b""


async def test_handshake_or_drop_failure_is_not_raised(contexts: TLSContexts) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    server = TLSStream(server_end, contexts.server, server_side=True)
    await client_end.send_all(b"GET / HTTP/1.0\r\n\r\n")
    assert not await handshake_or_drop(server, 3.0)
    assert server.statistics().state is StreamState.CLOSED


async def test_handshake_or_drop_success(contexts: TLSContexts) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    server = TLSStream(server_end, contexts.server, server_side=True)
    client = TLSStream(client_end, contexts.client, server_hostname=HOST)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        assert await handshake_or_drop(server, 3.0)
    assert server.version() == client.version()


async def test_handshake_or_drop_propagates_outer_cancel(
    contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    _client_end, server_end = trio.testing.memory_stream_pair()
    server = TLSStream(server_end, contexts.server, server_side=True)
    with trio.move_on_after(1.0) as scope:
        await handshake_or_drop(server, 3.0)
    assert scope.cancelled_caught
    assert server.statistics().state is StreamState.CLOSED
