"""The fake TCP network (trio_tlsretry.testing.FakeTCPNetwork) on its own, without TLS.

Everything runs under ``MockClock(autojump_threshold=0)``: no real socket is
made and no real time passes, so latencies and timeouts are checked exactly.
"""

from __future__ import annotations

import ast
import errno
import os
import socket
from pathlib import Path

import pytest
import trio
import trio.testing
from streamtools import receive_exactly, receive_until_eof

import trio_tlsretry.testing
from trio_tlsretry.testing import ConnectAttempt, FakeTCPNetwork, FakeTCPSocket

EXAMPLE_V4 = "192.0.2.10"
EXAMPLE_V6 = "2001:db8::10"


@pytest.fixture
def network() -> FakeTCPNetwork:
    network = FakeTCPNetwork()
    network.add_host("example.org", EXAMPLE_V6, EXAMPLE_V4)
    return network


def stream_pair(
    network: FakeTCPNetwork, send_buffer: int = 64 * 1024
) -> tuple[trio.SocketStream, trio.SocketStream]:
    network.send_buffer = send_buffer
    a, b = network.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def fill(stream: trio.SocketStream) -> None:
    """Send junk until the connection takes no more (a "clogged" stream)."""
    while True:
        with trio.move_on_after(1):
            await stream.send_all(b"x" * 1024)
            continue
        return


async def echo_once(stream: trio.SocketStream) -> None:
    async with stream:
        data = await stream.receive_some()
        await stream.send_all(data.upper())


# --------------------------------------------------------- trio's checks


async def test_socket_streams_pass_trios_half_closeable_stream_checks(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async def maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        return stream_pair(network, send_buffer=4096)

    async def clogged_maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        left, right = await maker()
        await fill(left)
        await fill(right)
        return left, right

    await trio.testing.check_half_closeable_stream(maker, clogged_maker)


# ------------------------------------------------------------ install


class _MarkerFactory(trio.abc.SocketFactory):
    def socket(self, family: int = 0, type: int = 0, proto: int = 0) -> trio.socket.SocketType:
        raise AssertionError("the marker factory must not be used")


async def test_install_replaces_trios_hooks_and_restores_the_previous_ones(
    network: FakeTCPNetwork,
) -> None:
    previous = _MarkerFactory()
    trio.socket.set_custom_socket_factory(previous)
    with network:
        sock = trio.socket.socket(socket.AF_INET6)
        assert isinstance(sock, FakeTCPSocket)
        sock.close()
        with pytest.raises(RuntimeError, match="already installed"):
            network.install()
        assert (await trio.socket.getaddrinfo("example.org", 443))[0][4][0] == EXAMPLE_V6
    assert trio.socket.set_custom_socket_factory(None) is previous
    assert trio.socket.set_custom_hostname_resolver(None) is None
    network.uninstall()  # not installed: nothing to do


def test_install_outside_trio_run_is_an_error(network: FakeTCPNetwork) -> None:
    with pytest.raises(RuntimeError):
        network.install()


async def test_only_tcp_sockets_are_made(network: FakeTCPNetwork) -> None:
    with network:
        with pytest.raises(OSError) as info:
            trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert info.value.errno == errno.EPROTONOSUPPORT


# ------------------------------------------------------------- names


async def test_names_resolve_to_their_addresses_in_order(network: FakeTCPNetwork) -> None:
    network.add_host("bücher.example", "198.51.100.7")
    with network:
        entries = await trio.socket.getaddrinfo("EXAMPLE.org.", "443")
        assert [entry[4] for entry in entries] == [(EXAMPLE_V6, 443, 0, 0), (EXAMPLE_V4, 443)]
        assert {entry[1] for entry in entries} == {socket.SOCK_STREAM}
        only_v4 = await trio.socket.getaddrinfo("example.org", 80, family=socket.AF_INET)
        assert [entry[4] for entry in only_v4] == [(EXAMPLE_V4, 80)]
        # Trio encodes non-ASCII names with IDNA 2008 before asking; the host
        # was stored in that form.
        for name in ("bücher.example", "xn--bcher-kva.example"):
            (entry,) = await trio.socket.getaddrinfo(name, 443)
            assert entry[4] == ("198.51.100.7", 443)
        with pytest.raises(socket.gaierror) as info:
            await trio.socket.getaddrinfo("nowhere.example", 443)
        assert info.value.errno == socket.EAI_NONAME
        assert await trio.socket.getnameinfo((EXAMPLE_V4, 443), 0) == ("example.org", "443")
        assert await trio.socket.getnameinfo((EXAMPLE_V4, 443), socket.NI_NUMERICHOST) == (
            EXAMPLE_V4,
            "443",
        )


def test_hosts_are_checked(network: FakeTCPNetwork) -> None:
    with pytest.raises(ValueError, match="already a host"):
        network.add_host("Example.org", "198.51.100.1")
    with pytest.raises(ValueError, match="already belongs"):
        network.add_host("other.example", "2001:DB8:0::10")
    with pytest.raises(ValueError, match="not an IP address"):
        network.add_host("other.example", "example.org")
    with pytest.raises(ValueError, match="at least one"):
        network.add_host("other.example")
    assert [host.name for host in network.hosts] == ["localhost", "example.org"]


# ------------------------------------------------------- connections


async def test_serve_tcp_and_open_tcp_stream_by_name(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    with network:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, echo_once, 443)
            # host=None: Trio binds the wildcard address of each family.
            assert {listener.socket.getsockname()[:2] for listener in listeners} == {
                ("0.0.0.0", 443),
                ("::", 443),
            }
            stream = await trio.open_tcp_stream("example.org", 443)
            async with stream:
                assert stream.socket.getpeername() == (EXAMPLE_V6, 443, 0, 0)
                await stream.send_all(b"hello")
                assert await receive_until_eof(stream) == b"HELLO"
            nursery.cancel_scope.cancel()
    (connection,) = network.connections
    assert connection.client_sent == b"hello"
    assert connection.server_sent == b"HELLO"
    assert connection.server_address == (EXAMPLE_V6, 443, 0, 0)
    assert connection.client_address[0] == "::1"  # unbound sockets dial from localhost
    assert network.attempts == [ConnectAttempt((EXAMPLE_V6, 443, 0, 0), "connected")]


async def test_listeners_on_a_hosts_name_bind_its_addresses(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    with network:
        listeners = await trio.open_tcp_listeners(8443, host="example.org")
        assert sorted(listener.socket.getsockname()[0] for listener in listeners) == sorted(
            [EXAMPLE_V4, EXAMPLE_V6]
        )
        # Another address of the port is free; the same one is taken.
        with pytest.raises(OSError) as info:
            await trio.open_tcp_listeners(8443, host=EXAMPLE_V4)
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as info:
            await trio.open_tcp_listeners(8443, host="198.51.100.99")
        assert info.value.errno == errno.EADDRNOTAVAIL
        (localhost,) = await trio.open_tcp_listeners(8443, host="127.0.0.1")
        for listener in [*listeners, localhost]:
            await listener.aclose()


async def test_nothing_listening_is_refused_and_unknown_addresses_unreachable(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    with network:
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream("example.org", 443)
        sock = trio.socket.socket()
        with pytest.raises(ConnectionRefusedError):
            await sock.connect((EXAMPLE_V4, 443))
        sock.close()
        sock = trio.socket.socket()
        with pytest.raises(OSError) as info:
            await sock.connect(("203.0.113.1", 443))
        assert info.value.errno == errno.EHOSTUNREACH
        sock.close()
    assert [attempt.outcome for attempt in network.attempts] == [
        "refused",
        "refused",
        "refused",
        "unreachable",
    ]


async def test_connect_takes_a_round_trip_and_bytes_arrive_after_the_latency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = FakeTCPNetwork(latency=0.1)
    network.add_host("example.org", EXAMPLE_V4)
    arrivals: list[float] = []

    async def handler(stream: trio.SocketStream) -> None:
        arrivals.append(trio.current_time())  # accepted
        data = await stream.receive_some()
        arrivals.append(trio.current_time())  # request read
        await stream.send_all(data)

    with network:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_tcp, handler, 443)
            start = trio.current_time()
            stream = await trio.open_tcp_stream("example.org", 443)
            assert trio.current_time() - start == pytest.approx(0.2)
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
            assert trio.current_time() - start == pytest.approx(0.4)
            assert [t - start for t in arrivals] == pytest.approx([0.2, 0.3])
            nursery.cancel_scope.cancel()


async def test_blackholed_connects_wait_until_the_connect_timeout(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    network.blackhole(EXAMPLE_V4)
    with network:
        await trio.open_tcp_listeners(443, host=EXAMPLE_V4)
        start = trio.current_time()
        sock = trio.socket.socket()
        with pytest.raises(TimeoutError):
            await sock.connect((EXAMPLE_V4, 443))
        assert trio.current_time() - start == pytest.approx(network.connect_timeout)
        # Cancelled, a connect closes its socket (as Trio's does).
        sock = trio.socket.socket()
        with trio.move_on_after(3):
            await sock.connect((EXAMPLE_V4, 443))
        assert sock.fileno() == -1
    assert [attempt.outcome for attempt in network.attempts] == ["timed out", "cancelled"]


async def test_on_connect_sees_each_connection_before_any_byte(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    network.on_connect = lambda connection: seen.append(
        (connection.client_sent, connection.server_sent)
    )
    with network:
        (listener,) = await trio.open_tcp_listeners(443, host=EXAMPLE_V4)
        client = await trio.open_tcp_stream(EXAMPLE_V4, 443)
        server = await listener.accept()
        assert server.socket.getpeername() == client.socket.getsockname()
        assert server.socket.getsockname() == client.socket.getpeername() == (EXAMPLE_V4, 443)
        await client.send_all(b"x")
        assert seen == [(b"", b"")]
        for resource in (client, server, listener):
            await resource.aclose()


# ------------------------------------------------- buffers and faults


async def test_send_takes_what_fits_and_waits_for_room(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    network.send_buffer = 10
    a, b = network.socketpair()
    assert await a.send(b"0123456789abcdef") == 10
    # Full: a send waits; cancelled while waiting, it sent nothing.
    with trio.move_on_after(1) as scope:
        await a.send(b"abcdef")
    assert scope.cancelled_caught
    assert await b.recv(4) == b"0123"
    assert await a.send(b"abcdef") == 4
    assert await b.recv(100) == b"456789abcd"
    assert network.connections[0].client_sent == b"0123456789abcd"
    # A waiting send wakes when the peer reads.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send, b"0123456789")
        await trio.testing.wait_all_tasks_blocked()
        assert await b.recv(5) == b"01234"
    a.close()
    b.close()


async def test_reset_after_n_bytes(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = stream_pair(network)
    connection = network.connections[-1]
    connection.reset_after("client", 5)
    await server.send_all(b"welcome")
    assert await client.socket.send(b"0123456789") == 5
    with pytest.raises(trio.BrokenResourceError) as info:
        await client.send_all(b"more")
    assert isinstance(info.value.__cause__, ConnectionResetError)
    # Each side still reads what was on its way, then the reset.
    assert await receive_exactly(server, 5) == b"01234"
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()
    assert await receive_exactly(client, 7) == b"welcome"
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    assert connection.was_reset
    with pytest.raises(ValueError, match="sender"):
        connection.reset_after("middlebox", 1)  # type: ignore[arg-type]


async def test_eof_after_n_bytes_swallows_the_rest(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = stream_pair(network)
    connection = network.connections[-1]
    connection.eof_after("server", 3)
    await server.send_all(b"abcdef")
    await server.send_all(b"ghi")
    assert await receive_until_eof(client) == b"abc"
    assert connection.server_sent == b"abcdefghi"
    # The other direction is untouched.
    await client.send_all(b"still here")
    assert await receive_exactly(server, 10) == b"still here"


async def test_closing_with_unread_data_resets_the_connection(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = stream_pair(network)
    await client.send_all(b"request nobody reads")
    await server.send_all(b"reply")
    await server.aclose()
    assert await client.receive_some() == b"reply"
    with pytest.raises(trio.BrokenResourceError) as info:
        await client.receive_some()
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert network.connections[-1].was_reset


async def test_a_graceful_close_is_an_eof_and_later_sends_fail(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = stream_pair(network)
    await server.send_all(b"bye")
    await server.aclose()
    assert await receive_until_eof(client) == b"bye"
    # The first send to a closed peer is taken (and dropped); the reset it
    # provokes makes the next one fail.
    await client.send_all(b"hello?")
    with pytest.raises(trio.BrokenResourceError) as info:
        await client.send_all(b"hello?")
    assert isinstance(info.value.__cause__, BrokenPipeError)
    assert not network.connections[-1].was_reset


async def test_closing_a_listener_resets_connections_nobody_accepted(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    with network:
        (listener,) = await trio.open_tcp_listeners(443, host=EXAMPLE_V4)
        client = await trio.open_tcp_stream(EXAMPLE_V4, 443)
        await listener.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(EXAMPLE_V4, 443)


async def test_socket_details_trio_relies_on(network: FakeTCPNetwork) -> None:
    a, b = network.socketpair()
    assert a.type == socket.SOCK_STREAM and a.family == socket.AF_INET
    # Not a real descriptor: a descriptor call on it fails instead of
    # touching some other file.
    with pytest.raises(OSError) as info:
        os.fstat(a.fileno())
    assert info.value.errno == errno.EBADF
    a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert a.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    with pytest.raises(TypeError):
        await a.recv(1.5)  # type: ignore[arg-type]
    buffer = bytearray(8)
    await b.send(b"abc")
    assert await a.recv_into(buffer) == 3 and buffer[:3] == b"abc"
    assert not a.is_readable()
    a.shutdown(socket.SHUT_WR)
    assert a.did_shutdown_SHUT_WR
    assert await b.recv(10) == b""
    a.close()
    assert a.fileno() == -1
    with pytest.raises(OSError) as info:
        await a.recv(1)
    assert info.value.errno == errno.EBADF
    b.close()


# ------------------------------------------------ checkpoints and parts


async def test_every_blocking_call_is_one_cancel_atomic_checkpoint(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    listener = FakeTCPSocket(network, socket.AF_INET)
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = FakeTCPSocket(network, socket.AF_INET)
    await client.connect(listener.getsockname())
    await client.send(b"hi")
    server: list[FakeTCPSocket] = []

    async def accept() -> None:
        server.append((await listener.accept())[0])

    async def send() -> None:
        await client.send(b"x")

    async def recv() -> None:
        await server[0].recv(1)

    for operation in (accept, send, recv, client.wait_writable):
        # Cancelled before it starts, it does nothing, though it could finish.
        with trio.CancelScope() as scope:
            scope.cancel()
            await operation()
        assert scope.cancelled_caught
        # Not cancelled, it finishes without waiting and still yields once.
        with trio.testing.assert_checkpoints():
            await operation()
    assert len(server) == 1
    assert network.connections[0].client_sent == b"hix"
    assert await server[0].recv(10) == b"ix"


async def test_two_tasks_may_not_wait_on_the_same_direction_of_a_socket(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    network.send_buffer = 1
    a, b = network.socketpair()
    await a.send(b"x")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.recv, 1)
        nursery.start_soon(a.send, b"y")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError, match="reading"):
            await a.recv(1)
        with pytest.raises(trio.BusyResourceError, match="writing"):
            await a.wait_writable()
        nursery.cancel_scope.cancel()
    # The waiters were cancelled: the socket is free again.
    assert await b.recv(1) == b"x"
    assert await a.send(b"z") == 1


def test_the_fake_networks_parts_use_only_each_others_methods() -> None:
    """No class of the fake network reads or writes another object's private field.

    Every ``thing._name`` where ``thing`` is not ``self`` must name a method
    defined in one of the parts (their documented interfaces), never a field.
    """
    parts = sorted(Path(trio_tlsretry.testing.__file__).parent.glob("_fakenet*.py"))
    trees = [ast.parse(path.read_text(), str(path)) for path in parts]
    methods = {
        node.name
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    foreign = [
        f"{path.name}:{node.lineno} {ast.unparse(node)}"
        for path, tree in zip(parts, trees, strict=True)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        and node.attr not in methods
    ]
    assert len(parts) >= 4
    assert foreign == []
