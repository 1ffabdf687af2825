"""Tests over the fake TCP network (docs/testing.rst); save as tests/test_network.py."""

import pytest
import trio
import trio.testing
from greeting import TIMEOUT, fetch_greeting, greeting_handler

import trio_tlsretry
from trio_tlsretry.testing import FakeTCPNetwork, TLSContexts


async def test_fetch_greeting(
    fake_tcp_network: FakeTCPNetwork,
    tls_contexts: TLSContexts,
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake_tcp_network.add_host("example.org", "192.0.2.10")
    fake_tcp_network.latency = 0.040  # 40 ms each way
    async with trio.open_nursery() as nursery:
        await nursery.start(
            trio_tlsretry.serve_tls_over_tcp, greeting_handler, 443, tls_contexts.server
        )
        started = trio.current_time()
        greeting = await fetch_greeting("example.org", 443, tls_contexts.client)
        assert greeting == b"Hello from example.org\n"
        # TCP connect, the TLS 1.3 handshake, the request: three round trips.
        assert trio.current_time() - started == pytest.approx(3 * 2 * 0.040)
        nursery.cancel_scope.cancel()
    (connection,) = fake_tcp_network.connections
    assert b"HELLO" not in connection.client_sent  # encrypted on the wire


async def test_fetch_greeting_times_out(
    fake_tcp_network: FakeTCPNetwork,
    tls_contexts: TLSContexts,
    autojump_clock: trio.testing.MockClock,
    hang_guard: None,  # if fetch_greeting lost its timeout, fail instead of hanging
) -> None:
    fake_tcp_network.add_host("example.org", "192.0.2.10")

    async def silent_handler(stream: trio_tlsretry.TLSStream[trio.SocketStream]) -> None:
        await trio.sleep_forever()  # accepts, shakes hands, never answers

    async with trio.open_nursery() as nursery:
        await nursery.start(
            trio_tlsretry.serve_tls_over_tcp, silent_handler, 443, tls_contexts.server
        )
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await fetch_greeting("example.org", 443, tls_contexts.client)
        assert trio.current_time() - started == TIMEOUT  # 30 s of virtual time, at once
        nursery.cancel_scope.cancel()
