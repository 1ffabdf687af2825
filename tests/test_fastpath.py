"""The await-free pieces of ``_fastpath`` that the stream tests reach only at
their edges: the close-time ``drain``'s bound, its end at a FIN, a transport
that fails under it, and the records it hands to the engine.

Over a real socket pair: what ``drain`` reads is what the kernel holds."""

from __future__ import annotations

import socket as stdlib_socket
import ssl

import trio

from trio_tlsretry._engine import TLSEngine
from trio_tlsretry._fastpath import drain
from trio_tlsretry._transport import transport_io_for
from trio_tlsretry.testing import make_tls_contexts


def socket_pair() -> tuple[trio.SocketStream, stdlib_socket.socket]:
    """A trio ``SocketStream`` and the plain socket at its other end."""
    ours, theirs = stdlib_socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


def unread(stream: trio.SocketStream) -> int:
    """Bytes the kernel still holds for ``stream`` (read without waiting)."""
    with stdlib_socket.socket(fileno=stream.socket.dup().detach()) as sock:
        total = 0
        while True:
            try:
                total += len(sock.recv(1 << 16, stdlib_socket.MSG_DONTWAIT))
            except BlockingIOError:
                return total


def fresh_engine() -> TLSEngine:
    contexts = make_tls_contexts()
    return TLSEngine(contexts.client, server_side=False, server_hostname=contexts.hostname)


async def test_drain_reads_at_most_its_limit() -> None:
    stream, peer = socket_pair()
    with peer:
        peer.sendall(b"x" * 10_000)
        io = transport_io_for(stream)
        engine = fresh_engine()  # before the handshake: nothing is decrypted
        drain(engine, io, 3_000, 1_000)
        assert engine.ciphertext_bytes_received == 3_000
        assert unread(stream) == 7_000
        await stream.aclose()


async def test_drain_stops_at_the_peers_fin_and_at_an_empty_socket() -> None:
    stream, peer = socket_pair()
    peer.sendall(b"y" * 500)
    io = transport_io_for(stream)
    engine = fresh_engine()
    drain(engine, io, 1 << 20, 256)  # stops when nothing more is there
    assert engine.ciphertext_bytes_received == 500
    peer.close()
    drain(engine, io, 1 << 20, 256)  # the FIN: returns, reads nothing
    assert engine.ciphertext_bytes_received == 500
    await stream.aclose()


class FailingIO:
    """A transport whose read fails, as a reset socket's does."""

    def __init__(self) -> None:
        self.calls = 0

    def try_receive(self, max_bytes: int) -> bytes:
        self.calls += 1
        raise trio.BrokenResourceError("connection reset by peer")


def test_drain_swallows_a_transport_failure() -> None:
    io = FailingIO()
    engine = fresh_engine()
    drain(engine, io, 1 << 20, 256)  # type: ignore[arg-type]  # only try_receive is used
    assert io.calls == 1
    assert engine.ciphertext_bytes_received == 0


async def test_drain_gives_tls_records_to_the_engine() -> None:
    # A TLS 1.3 client that never read the session tickets its server sent
    # after the handshake: drained, they reach OpenSSL, and the session
    # becomes resumable.
    contexts = make_tls_contexts(maximum_version=ssl.TLSVersion.TLSv1_3)
    client = TLSEngine(contexts.client, server_side=False, server_hostname=contexts.hostname)
    server = TLSEngine(contexts.server, server_side=True, server_hostname=None)
    while not (client.stage.handshake_done and server.stage.handshake_done):
        client.do_handshake()
        server.do_handshake()
        move(client, server)
        if not client.stage.handshake_done:
            move(server, client)
    assert server.has_outgoing()  # the tickets, kept back from the client
    assert not client.ssl_object.session.has_ticket
    stream, peer = socket_pair()
    with peer:
        while server.has_outgoing():
            head = server.outgoing_head()
            peer.sendall(head)
            server.consume_outgoing(len(head))
        drain(client, transport_io_for(stream), 1 << 20, 1 << 16)
        assert unread(stream) == 0
        assert client.ssl_object.session.has_ticket
        assert client.buffered_plaintext_bytes == 0
    await stream.aclose()


def move(source: TLSEngine, destination: TLSEngine) -> None:
    while source.has_outgoing():
        head = source.outgoing_head()
        destination.receive_ciphertext(bytes(head))
        source.consume_outgoing(len(head))
