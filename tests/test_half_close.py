"""Half-close: ``TLSStream.send_eof`` on TLS 1.3 and TLS 1.2.

On TLS 1.3 a ``close_notify`` only closes the sender's direction (RFC 8446
section 6.1), so ``send_eof`` sends one and the stream keeps receiving until
the peer's own ``close_notify``. On TLS 1.2 ``send_eof`` does the same, which
RFC 5246 section 7.2.1 allows for the side that closes (the peer is expected to
answer with its own ``close_notify``).

Peers: our own stream, the standard library's ``ssl.SSLSocket`` in a thread,
and ``openssl s_client`` / ``openssl s_server``. The last part of the file
backs the half-close rows of the comparison table in ``docs/beyond.rst``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from openssl_tool import (
    PEER_TIMEOUT,
    OpenSSLTool,
    needs_openssl,
    openssl,
    server_stream_for_s_client,
)
from streamtools import handshake, receive_exactly, receive_until_eof

from trio_tlsretry import StreamState, TLSStream
from trio_tlsretry.testing import (
    TLSContexts,
    cancel_at_checkpoint,
    make_tls_contexts,
    tls_memory_stream_pair,
)

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
HOSTNAME = "example.org"

Maker = Callable[[], Awaitable[tuple[TLSStream, TLSStream]]]

# --------------------------------------------------------------- helpers


async def connected_pair(
    version: ssl.TLSVersion | None = TLS13, **kwargs: object
) -> tuple[TLSStream, TLSStream]:
    contexts = make_tls_contexts(maximum_version=version)
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        **kwargs,  # type: ignore[arg-type]
    )
    await handshake(client, server)
    return client, server


#: Data that openssl's tools never read as a stdin command (their commands are
#: ASCII letters), in one pipe write below PIPE_BUF, so one stdin read of the
#: tool gets all of it and turns it into a single TLS record.
PAYLOAD = bytes(range(0x80, 0x100)) * 16


# -------------------------------------------------- trio's conformance suite


def makers(transport: str) -> tuple[Maker, Maker]:
    """Unclogged pairs over ``transport``; clogged pairs over lockstep.

    As in ``test_two_way.py``: the clogged maker completes the handshake up
    front, because over a lockstep transport a ``receive_some`` that had to
    start the handshake would itself get stuck sending.
    """
    contexts = make_tls_contexts(maximum_version=TLS13)

    async def make() -> tuple[TLSStream, TLSStream]:
        return tls_memory_stream_pair(
            client_context=contexts.client,
            server_context=contexts.server,
            exact_progress=transport == "exact",
            capacity=4096,
        )

    async def clogged() -> tuple[TLSStream, TLSStream]:
        client, server = tls_memory_stream_pair(
            client_context=contexts.client, server_context=contexts.server, lockstep=True
        )
        await handshake(client, server)
        return client, server

    return make, clogged


@pytest.mark.parametrize("transport", ["memory", "exact"])
async def test_check_half_closeable_stream_tls13(transport: str) -> None:
    await trio.testing.check_half_closeable_stream(*makers(transport))


def test_tls_stream_is_a_half_closeable_stream() -> None:
    assert issubclass(TLSStream, trio.abc.HalfCloseableStream)


# ------------------------------------------------------------- own peer


async def test_peer_keeps_sending_after_our_eof() -> None:
    client, server = await connected_pair()
    await client.send_all(b"request")
    await client.send_eof()
    # The client's direction is closed for good, its receiving side is not.
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"more")
    await client.send_eof()  # idempotent
    assert client.statistics().state is StreamState.OPEN

    assert await receive_until_eof(server) == b"request"
    replies = [bytes([byte]) * 20_000 for byte in b"abc"]
    for reply in replies:
        await server.send_all(reply)
    await server.send_eof()

    assert await receive_until_eof(client) == b"".join(replies)
    assert await client.receive_some() == b""
    await client.aclose()
    await server.aclose()


async def test_send_eof_waits_for_a_pending_send_all_remainder() -> None:
    """A cancelled send_all's pinned remainder goes out before the close_notify."""
    client, server = await connected_pair(exact_progress=True, capacity=1000)
    data = bytes(100_000)
    outcome = await cancel_at_checkpoint(2, lambda: client.send_all(data))
    assert not outcome.completed
    assert client.statistics().pinned_bytes > 0

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_eof)
        assert await receive_until_eof(server) == data
    assert client.statistics().pinned_bytes == 0


# One unread record sits in the incoming BIO ("whole record"), or the rest of
# a partly read record sits inside OpenSSL ("partial record").
@pytest.mark.parametrize("first_read", [10, 5], ids=["whole-record", "partial-record"])
async def test_send_eof_keeps_data_received_but_not_yet_delivered(first_read: int) -> None:
    client, server = await connected_pair()
    await server.send_all(b"A" * 10)
    await server.send_all(b"B" * 10)
    # One transport read takes both records; this returns the first bytes only.
    first = await client.receive_some(first_read)
    assert first == b"A" * first_read
    assert client.statistics().incoming_ciphertext_bytes > 0

    await client.send_eof()
    assert await receive_until_eof(server) == b""
    await server.send_all(b"C" * 10)
    await server.send_eof()
    assert first + await receive_until_eof(client) == b"A" * 10 + b"B" * 10 + b"C" * 10


async def test_cancelled_send_eof_retry_sends_the_whole_close_notify() -> None:
    client, server = await connected_pair(exact_progress=True, capacity=10)
    # Nobody reads the server's transport, so after 10 bytes of the 24-byte
    # close_notify record the flush blocks; checkpoint 1 is that wait.
    outcome = await cancel_at_checkpoint(1, client.send_eof)
    assert not outcome.completed
    assert client.statistics().outgoing_ciphertext_bytes > 0

    # The retry must finish the flush while the server reads. Under the bug it
    # returns at once with bytes still queued (checked before leaving the
    # nursery, so the failure cancels the reader instead of hanging).
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_until_eof, server)
        await client.send_eof()
        assert client.statistics().outgoing_ciphertext_bytes == 0


# ---------------------------------------------------------------- TLS 1.2


@pytest.mark.parametrize("side", ["client", "server"])
async def test_send_eof_on_tls12_sends_close_notify_and_keeps_receiving(side: str) -> None:
    # RFC 5246 section 7.2.1: close_notify closes the sender's direction, and
    # the side that sent it may keep reading until the peer's close_notify.
    client, server = await connected_pair(TLS12)
    assert client.version() == "TLSv1.2"
    closer, peer = (client, server) if side == "client" else (server, client)

    await closer.send_eof()

    assert closer.statistics().state is StreamState.OPEN
    assert await peer.receive_some() == b""
    with pytest.raises(trio.ClosedResourceError):
        await closer.send_all(b"late")
    # What the peer still sends before its own close_notify arrives.
    await peer.send_all(b"in flight")
    assert await receive_exactly(closer, len(b"in flight")) == b"in flight"
    await peer.aclose()
    assert await closer.receive_some() == b""
    await closer.aclose()


async def test_send_eof_on_tls12_before_the_handshake_does_the_handshake_first() -> None:
    contexts = make_tls_contexts(maximum_version=TLS12)
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_eof)
        nursery.start_soon(server.do_handshake)
    assert client.version() == "TLSv1.2"
    assert await server.receive_some() == b""


@pytest.mark.parametrize("version", [TLS12, TLS13])
async def test_send_eof_after_the_peer_vanished_raises_only_trio_errors(
    version: ssl.TLSVersion,
) -> None:
    # hypercorn closes every connection with send_eof() and catches only
    # Trio's stream exceptions. A client that hangs up without close_notify
    # (as https_compatible clients may) must not make it raise anything else,
    # and the version decision must not rely on SSLObject.version(), which
    # answers None once the EOF has been read.
    contexts = make_tls_contexts(maximum_version=version)
    client_transport, server_transport = trio.testing.memory_stream_pair()
    client = TLSStream(client_transport, contexts.client, server_hostname=HOSTNAME)
    server = TLSStream(server_transport, contexts.server, server_side=True, https_compatible=True)
    await handshake(client, server)
    await trio.aclose_forcefully(client.transport_stream)
    assert await server.receive_some() == b""
    assert server.version() == ("TLSv1.3" if version is TLS13 else "TLSv1.2")
    try:
        await server.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    await server.aclose()
    assert server.statistics().state is StreamState.CLOSED


# ----------------------------------------- the standard library as the peer


def stdlib_server_after_eof(
    sock: socket.socket, context: ssl.SSLContext, replies: list[bytes]
) -> tuple[str | None, bytes]:
    """Serve one connection: read until the client's EOF, *then* send ``replies``.

    Runs in a thread with a blocking ``ssl.SSLSocket``. Returns the version
    and everything received before the EOF.
    """
    sock.settimeout(PEER_TIMEOUT)
    with context.wrap_socket(sock, server_side=True) as tls:
        version = tls.version()
        received = bytearray()
        while chunk := tls.recv(65536):  # b"" once the close_notify arrived
            received += chunk
        # Only now, with the client's close_notify processed, do we send.
        for reply in replies:
            tls.sendall(reply)
        tls.unwrap()  # our close_notify; the client's is already here
        return version, bytes(received)


async def test_stdlib_peer_sends_after_it_saw_our_eof() -> None:
    """The part openssl's tools cannot show (they stop at our close_notify).

    The peer is ``ssl.SSLSocket``: it sends only after ``recv`` returned
    ``b""``, i.e. after OpenSSL processed our close_notify, and our stream
    receives all of it and then the peer's close_notify.
    """
    contexts = make_tls_contexts(maximum_version=TLS13)
    ours, theirs = socket.socketpair()
    replies = [bytes([byte]) * 30_000 for byte in b"xyz"]
    results: list[tuple[str | None, bytes]] = []

    async def run_peer() -> None:
        results.append(
            await trio.to_thread.run_sync(stdlib_server_after_eof, theirs, contexts.server, replies)
        )

    transport = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    client = TLSStream(transport, contexts.client, server_hostname=HOSTNAME)
    with trio.fail_after(PEER_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_peer)
            await client.send_all(b"request")
            await client.send_eof()
            assert await receive_until_eof(client) == b"".join(replies)
    assert results == [("TLSv1.3", b"request")]
    await client.aclose()


# --------------------------------------------------------- openssl peers


def write_pems(contexts: TLSContexts, directory: Path) -> dict[str, str]:
    paths = {
        "ca": directory / "ca.pem",
        "server": directory / "server.pem",
    }
    contexts.ca.cert_pem.write_to_path(str(paths["ca"]))
    contexts.server_cert.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    return {name: str(path) for name, path in paths.items()}


@asynccontextmanager
async def server_facing_s_client(
    contexts: TLSContexts, tmp_path: Path
) -> AsyncIterator[tuple[TLSStream, OpenSSLTool]]:
    """Our TLS 1.3 server stream, connected to ``openssl s_client``."""
    pems = write_pems(contexts, tmp_path)
    args = ["-CAfile", pems["ca"], "-verify_hostname", HOSTNAME, "-verify_return_error", "-tls1_3"]
    async with server_stream_for_s_client(contexts.server, *args) as (server, tool):
        yield server, tool


@asynccontextmanager
async def client_facing_s_server(
    contexts: TLSContexts, tmp_path: Path
) -> AsyncIterator[tuple[TLSStream, OpenSSLTool]]:
    """Our TLS 1.3 client stream, connected to ``openssl s_server``."""
    pems = write_pems(contexts, tmp_path)
    args = ["-accept", "127.0.0.1:0", "-cert", pems["server"], "-naccept", "1", "-tls1_3"]
    async with openssl("s_server", *args) as tool:
        with trio.fail_after(PEER_TIMEOUT):
            match = await tool.wait_for_stdout(rb"ACCEPT 127\.0\.0\.1:(\d+)")
        transport = await trio.open_tcp_stream("127.0.0.1", int(match.group(1)))
        client = TLSStream(transport, contexts.client, server_hostname=HOSTNAME)
        await client.do_handshake()
        yield client, tool


@needs_openssl
@pytest.mark.parametrize("peer", ["s_client", "s_server"])
async def test_openssl_peer_sees_our_eof(peer: str, tmp_path: Path) -> None:
    """openssl reports our close_notify, answers with its own, and exits cleanly.

    s_client prints ``closed`` when ``SSL_read`` reports the close_notify;
    s_server prints ``DONE``. Both then call ``SSL_shutdown`` (their own
    close_notify, which our ``receive_some`` turns into ``b""``) and exit 0,
    although s_client's stdin is still open.
    """
    contexts = make_tls_contexts()
    connect = server_facing_s_client if peer == "s_client" else client_facing_s_server
    async with connect(contexts, tmp_path) as (stream, tool):
        assert stream.version() == "TLSv1.3"
        await tool.send(PAYLOAD)
        assert await receive_exactly(stream, len(PAYLOAD)) == PAYLOAD
        await stream.send_eof()
        assert await receive_until_eof(stream) == b""
        assert await tool.wait() == 0
        await stream.aclose()
    marker = b"\nclosed\n" if peer == "s_client" else b"\nDONE\n"
    assert marker in tool.stdout


@needs_openssl
@pytest.mark.parametrize("peer", ["s_client", "s_server"])
async def test_openssl_data_in_flight_at_our_eof_still_arrives(peer: str, tmp_path: Path) -> None:
    """What openssl sent before it saw our EOF is all received after send_eof.

    The tool sends PAYLOAD as one record; we take one byte of it, so the rest
    is inside our TLS engine, not yet delivered, when send_eof runs.
    """
    contexts = make_tls_contexts()
    connect = server_facing_s_client if peer == "s_client" else client_facing_s_server
    async with connect(contexts, tmp_path) as (stream, tool):
        await tool.send(PAYLOAD)
        first = await stream.receive_some(1)
        await stream.send_eof()
        assert first + await receive_until_eof(stream) == PAYLOAD
        assert await tool.wait() == 0
        await stream.aclose()


# ------------------------------------ other libraries (docs/beyond.rst table)


def test_trio_ssl_stream_cannot_half_close() -> None:
    contexts = make_tls_contexts()
    left, _right = trio.testing.memory_stream_pair()
    stream = trio.SSLStream(left, contexts.client, server_hostname=HOSTNAME)
    assert not isinstance(stream, trio.abc.HalfCloseableStream)
    assert not hasattr(stream, "send_eof")


async def test_anyio_tls_stream_send_eof_is_not_implemented() -> None:
    anyio = pytest.importorskip("anyio")
    from anyio.streams.tls import TLSAttribute

    contexts = make_tls_contexts()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            transport = await listeners[0].accept()
            server = TLSStream(transport, contexts.server, server_side=True)
            await server.do_handshake()
            assert await receive_until_eof(server) == b""
            await server.aclose()

        nursery.start_soon(serve)
        client = await anyio.connect_tcp(
            "127.0.0.1", port, tls=True, ssl_context=contexts.client, tls_hostname=HOSTNAME
        )
        assert client.extra(TLSAttribute.tls_version) == "TLSv1.3"
        with pytest.raises(NotImplementedError, match="not yet been implemented"):
            await client.send_eof()
        await client.aclose()
    await listeners[0].aclose()


def test_asyncio_ssl_transport_cannot_write_eof() -> None:
    contexts = make_tls_contexts()

    async def main() -> tuple[bool, str | None]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=contexts.server)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=contexts.client, server_hostname=HOSTNAME
        )
        version = writer.get_extra_info("ssl_object").version()
        can = writer.can_write_eof()
        with pytest.raises(NotImplementedError):
            writer.write_eof()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return can, version

    assert asyncio.run(asyncio.wait_for(main(), PEER_TIMEOUT)) == (False, "TLSv1.3")
