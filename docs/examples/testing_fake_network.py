"""Testing a TLS client without sockets: the fake TCP network (docs/testing.rst).

``fetch_motd`` is the code under test, as it would be in your project: it
dials example.org:443. The test runs it against a server in the same test,
over :class:`trio_tlsretry.testing.FakeTCPNetwork`, with a throw-away
certificate for example.org. Run it with pytest and pytest-trio
(``trio_mode = true``); the fixtures come from trio_tlsretry's pytest plugin.
"""

from __future__ import annotations

import ssl

import pytest
import trio

import trio_tlsretry
from trio_tlsretry.testing import FakeTCPNetwork, TLSContexts


async def fetch_motd(ssl_context: ssl.SSLContext | None = None) -> bytes:
    """Ask example.org for its message of the day."""
    stream = await trio_tlsretry.open_tls_over_tcp_stream(
        "example.org", 443, ssl_context=ssl_context
    )
    async with stream:
        await stream.send_all(b"MOTD\n")
        reply = bytearray()
        while not reply.endswith(b"\n"):
            data = await stream.receive_some()
            if not data:
                raise ConnectionError("the server hung up mid-reply")
            reply += data
        return bytes(reply)


# -- The test


async def test_fetch_motd(
    fake_tcp_network: FakeTCPNetwork,
    tls_contexts: TLSContexts,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The network: example.org, 40 ms away.
    fake_tcp_network.add_host("example.org", "192.0.2.10", "2001:db8::10")
    fake_tcp_network.latency = 0.040

    async def motd_server(stream: trio_tlsretry.TLSStream[trio.SocketStream]) -> None:
        async with stream:
            assert await stream.receive_some() == b"MOTD\n"
            await stream.send_all(b"Have a nice day\n")

    async with trio.open_nursery() as nursery:
        await nursery.start(trio_tlsretry.serve_tls_over_tcp, motd_server, 443, tls_contexts.server)
        started = trio.current_time()
        assert await fetch_motd(tls_contexts.client) == b"Have a nice day\n"
        # TCP connect, the TLS 1.3 handshake, the request: three round trips
        # of the (mock) clock.
        assert trio.current_time() - started == pytest.approx(3 * 2 * 0.040)
        nursery.cancel_scope.cancel()

    # What went over the wire: one connection, to the first address, and
    # no plaintext in it.
    (connection,) = fake_tcp_network.connections
    assert connection.server_address[0] == "192.0.2.10"
    assert b"MOTD" not in connection.client_sent
