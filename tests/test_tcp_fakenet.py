"""TLSStream and the TLS-over-TCP helpers over the fake TCP network.

No real time and, but for one test of which sockets count as real, no real
socket: the tests run over ``trio_tlsretry.testing.FakeTCPNetwork`` under
``MockClock(autojump_threshold=0)``. The loopback tests elsewhere
(test_listener.py, test_busy_poll.py, the ``socket`` sweeps of
test_cancellation.py) prove the real-socket fast path; these prove the path
for any other socket (a ``SocketStream`` whose socket comes from a custom
factory is driven through its own ``send``/``recv``) and test what needs a
network: names, refusals, latency, resets, many clients.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import test_cancellation as contract
import trio
import trio.testing
from streamtools import handshake, load_docs_example, receive_exactly

import trio_tlsretry
from trio_tlsretry import TLSStream
from trio_tlsretry.testing import (
    ChunkedStream,
    DelayedStream,
    FakeTCPNetwork,
    TLSContexts,
    cancellation_sweep,
    make_tls_contexts,
    tls_stream_pair_over,
)

EXAMPLE_V4 = "192.0.2.10"
EXAMPLE_V6 = "2001:db8::10"
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
version_param = pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)

Stream = TLSStream[trio.SocketStream]


def fake_socket_streams(send_buffer: int = 4096) -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected pair of SocketStreams over fake sockets (small buffers: many partial sends)."""
    a, b = FakeTCPNetwork(send_buffer=send_buffer).socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


@pytest.fixture
def network(fake_tcp_network: FakeTCPNetwork) -> FakeTCPNetwork:
    """The plugin's installed network, with example.org on both families (IPv6 first)."""
    fake_tcp_network.add_host("example.org", EXAMPLE_V6, EXAMPLE_V4)
    return fake_tcp_network


async def echo_upper(stream: Stream) -> None:
    """Answer each piece of data in upper case until the client closes."""
    async with stream:
        try:
            async for data in stream:
                await stream.send_all(bytes(data).upper())
        except trio.BrokenResourceError:
            pass  # a client that vanished mid-exchange


async def exchange(
    host: str, contexts: TLSContexts, message: bytes = b"hello", **kwargs: float
) -> bytes:
    """Connect through open_tls_over_tcp_stream, send ``message``, return the reply."""
    stream = await trio_tlsretry.open_tls_over_tcp_stream(
        host, 443, ssl_context=contexts.client, **kwargs
    )
    async with stream:
        await stream.send_all(message)
        return await receive_exactly(stream, len(message))


async def start_server(
    nursery: trio.Nursery,
    contexts: TLSContexts,
    handler: Callable[[Stream], Awaitable[object]] = echo_upper,
    **kwargs: object,
) -> list[trio_tlsretry.TLSListener[trio.SocketStream]]:
    listeners: list[trio_tlsretry.TLSListener[trio.SocketStream]] = await nursery.start(
        lambda task_status: trio_tlsretry.serve_tls_over_tcp(
            handler, 443, contexts.server, task_status=task_status, **kwargs
        )
    )
    return listeners


# ------------------------------------------------ the stream contract


@version_param
async def test_tls_stream_passes_check_two_way_stream_over_fake_sockets(
    version: ssl.TLSVersion,
) -> None:
    contexts = make_tls_contexts(maximum_version=version)

    async def maker() -> tuple[Stream, Stream]:
        return tls_stream_pair_over(
            *fake_socket_streams(), client_context=contexts.client, server_context=contexts.server
        )

    async def clogged_maker() -> tuple[Stream, Stream]:
        # Both directions full of whole records nobody has read: every send
        # and wait_send_all_might_not_block waits until the peer reads.
        network = FakeTCPNetwork()
        client, server = tls_stream_pair_over(
            *(trio.SocketStream(sock) for sock in network.socketpair()),
            client_context=contexts.client,
            server_context=contexts.server,
        )
        await handshake(client, server)
        await client.send_all(b"junk" * 1000)
        await server.send_all(b"junk" * 1000)
        network.connections[0].send_buffer = 1
        return client, server

    await trio.testing.check_two_way_stream(maker, clogged_maker)


async def test_ciphertext_goes_through_the_fake_sockets(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    contexts = make_tls_contexts()
    client, server = tls_stream_pair_over(
        *(trio.SocketStream(sock) for sock in network.socketpair()),
        client_context=contexts.client,
        server_context=contexts.server,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, b"secret reply")
        await client.send_all(b"secret request")
        assert await receive_exactly(client, 12) == b"secret reply"
        assert await receive_exactly(server, 14) == b"secret request"
    (connection,) = network.connections
    assert connection.client_sent[:1] == b"\x16"  # a TLS handshake record
    assert b"secret" not in connection.client_sent + connection.server_sent
    assert client.statistics().ciphertext_bytes_sent == len(connection.client_sent)


# The cancellation contract (docs/cancellation.rst), every sweep of
# test_cancellation.py, over fake sockets: an exact transport, so no
# cancellation may break the stream.
FAKENET = "fakenet"

CONTRACT_CASES: dict[str, Callable[[int], Awaitable[str]]] = {
    **{
        f"{name} {version.name}": case
        for version in VERSIONS
        for name, case in {
            "send_all 1000 B": lambda k, v=version: contract.send_case(FAKENET, v, 1000, k),
            "send_all 3 chunks": lambda k, v=version: contract.send_case(
                FAKENET, v, 2 * contract.DEFAULT_WRITE_CHUNK + 12345, k
            ),
            "receive_some": lambda k, v=version: contract.receive_case(FAKENET, v, k),
            "do_handshake": lambda k, v=version: contract.handshake_case(FAKENET, v, k),
        }.items()
    },
    "another send": lambda k: contract.other_send_case(FAKENET, k),
    "wait_send_all_might_not_block": lambda k: contract.wait_case(FAKENET, k),
    "aclose": lambda k: contract.aclose_case(FAKENET, k),
    "unwrap": lambda k: contract.unwrap_case(FAKENET, k),
}


@pytest.fixture
def fakenet_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teach test_cancellation's pair maker the fake-socket transport, as an exact one."""
    real_transport_pair = contract.transport_pair

    def transport_pair(kind: str, **options: Any) -> tuple[trio.abc.Stream, trio.abc.Stream]:
        return fake_socket_streams() if kind == FAKENET else real_transport_pair(kind, **options)

    monkeypatch.setattr(contract, "transport_pair", transport_pair)
    monkeypatch.setattr(contract, "EXACT", [*contract.EXACT, FAKENET])


@pytest.mark.usefixtures("fakenet_transport")
@pytest.mark.parametrize("case", CONTRACT_CASES)
async def test_cancellation_contract_over_fake_sockets(case: str) -> None:
    tally = await contract.sweep(FAKENET, CONTRACT_CASES[case])
    assert tally.broken == 0 and tally.usable == tally.cancelled > 0


@pytest.mark.usefixtures("fakenet_transport")
async def test_every_operation_is_a_checkpoint_over_fake_sockets() -> None:
    await contract.test_every_operation_is_a_checkpoint_and_a_cancelled_start_does_nothing(FAKENET)


@pytest.mark.usefixtures("fakenet_transport")
@version_param
async def test_both_ends_cancelled_then_only_receiving_over_fake_sockets(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    await contract.test_both_ends_cancelled_mid_send_then_only_receiving(
        FAKENET, version, autojump_clock
    )


# ------------------------------------------------------ TLS over TCP


async def test_open_tls_over_tcp_stream_by_name(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts)
        assert await exchange("example.org", tls_contexts) == b"HELLO"
        nursery.cancel_scope.cancel()
    (connection,) = network.connections
    assert connection.server_address == (EXAMPLE_V6, 443, 0, 0)
    assert connection.client_closed and connection.server_closed


@pytest.mark.parametrize("name", ["bücher.example", "faß.example", "xn--fa-hia.example"])
async def test_internationalised_names_resolve_and_verify_as_idna_2008(
    fake_tcp_network: FakeTCPNetwork, name: str, autojump_clock: trio.testing.MockClock
) -> None:
    # "faß" is where IDNA 2003 (Python's codec: "fass") and IDNA 2008
    # ("xn--fa-hia") disagree. Trio resolves the 2008 form; the certificate
    # is issued for it; the client must send and check that form too.
    unicode_name = "faß.example" if name.startswith("xn--") else name
    fake_tcp_network.add_host(unicode_name, "198.51.100.20")
    contexts = make_tls_contexts(unicode_name)
    async with trio.open_nursery() as nursery:
        await start_server(nursery, contexts, host=unicode_name)
        assert await exchange(name, contexts) == b"HELLO"
        nursery.cancel_scope.cancel()


async def test_happy_eyeballs_falls_back_when_the_first_address_refuses(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    network.latency = 0.010
    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts, host=EXAMPLE_V4)  # no IPv6 listener
        started = trio.current_time()
        stream = await trio_tlsretry.open_tls_over_tcp_stream(
            "example.org", 443, ssl_context=tls_contexts.client
        )
        # Refused after one round trip, the next address is tried at once.
        assert trio.current_time() - started == pytest.approx(0.040)
        assert stream.transport_stream.socket.getpeername() == (EXAMPLE_V4, 443)
        await stream.do_handshake()
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert [(a.destination[0], a.outcome) for a in network.attempts] == [
        (EXAMPLE_V6, "refused"),
        (EXAMPLE_V4, "connected"),
    ]


async def test_happy_eyeballs_tries_the_next_address_when_the_first_is_silent(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    network.latency = 0.010
    network.blackhole(EXAMPLE_V6)
    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts)
        started = trio.current_time()
        assert await exchange("example.org", tls_contexts, happy_eyeballs_delay=0.5) == b"HELLO"
        # The IPv4 attempt started after the 0.5 s delay and won; connect,
        # handshake and the exchange are three round trips.
        assert trio.current_time() - started == pytest.approx(0.5 + 3 * 0.020)
        nursery.cancel_scope.cancel()
    assert [(a.destination[0], a.outcome) for a in network.attempts] == [
        (EXAMPLE_V4, "connected"),
        (EXAMPLE_V6, "cancelled"),
    ]


async def test_every_address_failing_raises_oserror(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio_tlsretry.open_tls_over_tcp_stream(
            "example.org", 443, ssl_context=tls_contexts.client
        )
    with pytest.raises(ConnectionRefusedError):  # an address: one direct attempt
        await trio_tlsretry.open_tls_over_tcp_stream(
            EXAMPLE_V4, 443, ssl_context=tls_contexts.client
        )
    assert [a.outcome for a in network.attempts] == ["refused"] * 3
    assert all(c.client_closed for c in network.connections)


async def test_serve_tls_over_tcp_serves_many_clients_at_once(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    network.latency = 0.050
    clients = 100
    replies: dict[int, bytes] = {}

    async def client(i: int) -> None:
        replies[i] = await exchange("example.org", tls_contexts, f"client {i}".encode())

    async with trio.open_nursery() as nursery:
        # Without the handshake limit (tested below), all at once.
        await start_server(nursery, tls_contexts, max_handshakes=None)
        started = trio.current_time()
        async with trio.open_nursery() as clients_nursery:
            for i in range(clients):
                clients_nursery.start_soon(client, i)
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert replies == {i: f"CLIENT {i}".encode() for i in range(clients)}
    # Concurrently: as long as one exchange (three round trips), not a hundred.
    assert elapsed == pytest.approx(3 * 0.100)
    assert len(network.connections) == clients
    assert len({c.client_address for c in network.connections}) == clients


async def test_a_silent_client_is_dropped_after_the_handshake_timeout(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts, handshake_timeout=5)
        started = trio.current_time()
        silent = await trio.open_tcp_stream("example.org", 443)
        # Other clients are served meanwhile.
        assert await exchange("example.org", tls_contexts) == b"HELLO"
        assert trio.current_time() - started < 1
        assert await silent.receive_some() == b""
        assert trio.current_time() - started == pytest.approx(5)
        await silent.aclose()
        nursery.cancel_scope.cancel()


async def test_a_client_trickling_its_hello_is_dropped_at_the_handshake_timeout(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    handled: list[Stream] = []

    async def handler(stream: Stream) -> None:
        handled.append(stream)
        await echo_upper(stream)

    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts, handler, handshake_timeout=5)
        tcp = await trio.open_tcp_stream("example.org", 443)
        # One byte of the ClientHello per second (a slowloris client).
        trickle = ChunkedStream(DelayedStream(tcp, send_delay=1), send_size=1)
        slow = TLSStream(trickle, tls_contexts.client, server_hostname="example.org")
        started = trio.current_time()
        async with trio.open_nursery() as clients:

            async def slow_client() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await slow.do_handshake()
                # Dropped at 5 s; it learns so on its next byte or two.
                assert 5 <= trio.current_time() - started <= 7

            clients.start_soon(slow_client)
            # Meanwhile, everyone else is served at once.
            assert await exchange("example.org", tls_contexts) == b"HELLO"
            assert trio.current_time() - started < 1
        await trio.aclose_forcefully(slow)
        nursery.cancel_scope.cancel()
    assert len(handled) == 1
    trickled = network.connections[0]
    assert trickled.server_closed and len(trickled.client_sent) < 10


@pytest.mark.parametrize(
    ("one_way_delay", "served"),
    # TLS 1.3 from the server's accept to the client's Finished: three
    # one-way trips (ClientHello, the server's flight, Finished) = 9 s or 12 s.
    [(3.0, True), (4.0, False)],
)
async def test_a_slow_network_is_given_the_handshake_timeout_and_no_more(
    network: FakeTCPNetwork,
    tls_contexts: TLSContexts,
    one_way_delay: float,
    served: bool,
    autojump_clock: trio.testing.MockClock,
) -> None:
    network.latency = one_way_delay
    handled: list[float] = []

    async def handler(stream: Stream) -> None:
        handled.append(trio.current_time())
        await echo_upper(stream)

    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts, handler, handshake_timeout=10)
        started = trio.current_time()
        if served:
            assert await exchange("example.org", tls_contexts) == b"HELLO"
            assert [t - started for t in handled] == pytest.approx([5 * one_way_delay])
        else:
            with pytest.raises(trio.BrokenResourceError):
                await exchange("example.org", tls_contexts)
            assert handled == []
        nursery.cancel_scope.cancel()


async def test_a_reset_mid_handshake_fails_that_client_only(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    network.on_connect = lambda connection: connection.reset_after("server", 100)
    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts)
        with pytest.raises(trio.BrokenResourceError) as info:
            await exchange("example.org", tls_contexts)
        assert isinstance(info.value.__cause__, trio.BrokenResourceError)
        assert isinstance(info.value.__cause__.__cause__, ConnectionResetError)
        network.on_connect = None
        assert await exchange("example.org", tls_contexts) == b"HELLO"
        nursery.cancel_scope.cancel()
    first, _ = network.connections
    assert first.was_reset and len(first.server_sent) == 100


async def test_a_reply_cut_short_is_an_error_not_an_eof(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts)
        stream = await trio_tlsretry.open_tls_over_tcp_stream(
            "example.org", 443, ssl_context=tls_contexts.client
        )
        await stream.send_all(b"warm up")
        assert await receive_exactly(stream, 7) == b"WARM UP"
        connection = network.connections[-1]
        connection.eof_after("server", len(connection.server_sent) + 20_000)
        await stream.send_all(b"x" * 50_000)
        received = bytearray()
        with pytest.raises(trio.BrokenResourceError) as info:
            while data := await stream.receive_some():
                received += data
        assert isinstance(info.value.__cause__, ssl.SSLEOFError)
        # Whole records before the cut arrive; the torn one is an error.
        assert 0 < len(received) < 20_000 and set(received) == {ord("X")}
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_whole_exchange_cancelled_at_every_checkpoint(
    network: FakeTCPNetwork, tls_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    # Connect by name, handshake, request, reply, close: cancelled at each
    # checkpoint in turn. After every cancellation the client's socket is
    # closed (nothing leaks), and the server still serves a full exchange.
    network.latency = 0.005

    async def attempt(k: int) -> bytes:
        return await exchange("example.org", tls_contexts, f"attempt {k}".encode())

    async def after_cancel(k: int) -> None:
        assert all(c.client_closed for c in network.connections)
        assert await exchange("example.org", tls_contexts, b"check") == b"CHECK"

    async with trio.open_nursery() as nursery:
        await start_server(nursery, tls_contexts)
        report = await cancellation_sweep(attempt, after_cancel=after_cancel)
        nursery.cancel_scope.cancel()
    # Resolution, connect, handshake, request, reply and close: each wait
    # was a place to cancel.
    assert report.cancelled > 10
    assert all(c.client_closed and c.server_closed for c in network.connections)


# ---------------------------------------------------- the docs example


async def test_docs_example_fake_network(
    fake_tcp_network: FakeTCPNetwork,
    tls_contexts: TLSContexts,
    autojump_clock: trio.testing.MockClock,
) -> None:
    example = load_docs_example("testing_fake_network")
    await example.test_fetch_motd(fake_tcp_network, tls_contexts, autojump_clock)
    assert math.isclose(fake_tcp_network.latency, 0.040)
