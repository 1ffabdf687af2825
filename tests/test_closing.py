"""Where connections end: nothing sent before a close is lost (docs/closing.rst).

* the close matrix over real loopback TCP (``close_matrix.py``): clients
  ``TLSStream``, ``trio.SSLStream``, the blocking ``ssl.SSLSocket`` and
  ``openssl s_client``, three upload sizes and three endings, against a
  ``TLSStream`` server with tickets sent as ``trio.SSLStream`` sends them
  (the default) and sent right after the handshake (the opt-in); and a
  ``TLSStream`` client uploading to ``trio.SSLStream`` and ``openssl
  s_server`` servers. Each cell runs ``RUNS`` times;
* TLS 1.3 session tickets: kept until the server's first send by default,
  sent at once when asked for, and still usable for resumption by a client
  that never reads (its close drains them);
* every public async method is a checkpoint on every transport, in every
  state in which it returns.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import close_matrix
import pytest
import trio
import trio.testing
from close_matrix import CELL_TIMEOUT, CLIENTS, SIZES, Outcome, run_cell
from openssl_tool import PEER_TIMEOUT, needs_openssl, openssl
from streamtools import contexts_for, handshake, handshaken_socket_pair, payload
from test_interop_openssl import data_of, high_bytes
from test_post_handshake_auth import PHAContexts

from trio_tlsretry import StreamState, TLSStream, lingering_close
from trio_tlsretry.testing import FakeTCPNetwork, TLSContexts, tls_memory_stream_pair

TLS13 = ssl.TLSVersion.TLSv1_3
#: Runs of each cell of the matrix.
RUNS = 20

#: The ending the server must see for each way the client ends.
EXPECTED_ENDING = {"aclose": "eof", "send_eof": "eof", "abort": "no close_notify"}

#: Cells where the client makes loss unavoidable: the server sent its tickets
#: at once, and the client closes its socket without reading or draining
#: them, so its kernel answers with a reset (docs/closing.rst). The server
#: then gets everything with the proper ending, or a reset.
UNAVOIDABLE = {
    ("trio.SSLStream", "aclose"),
    ("trio.SSLStream", "abort"),
    ("ssl.SSLSocket", "abort"),
}


def check(outcome: Outcome, size: int, ending: str, *, loss_possible: bool) -> None:
    expected = Outcome(size, EXPECTED_ENDING[ending])
    if loss_possible and outcome.ending == "reset":
        return
    assert outcome == expected


MATRIX = [
    pytest.param(client, ending, size, prompt, id=f"{client}-{ending}-{size}-{tickets}")
    for client, (_, endings) in CLIENTS.items()
    for ending in endings
    for size in SIZES
    for prompt, tickets in ((False, "tickets-wait"), (True, "prompt-tickets"))
]


@pytest.mark.parametrize(("client", "ending", "size", "prompt"), MATRIX)
async def test_close_matrix(client: str, ending: str, size: int, prompt: bool) -> None:
    run_client, _ = CLIENTS[client]
    data = payload(size)
    loss_possible = prompt and (client, ending) in UNAVOIDABLE
    for _ in range(RUNS):
        outcome = await run_cell(run_client, data, ending, prompt_tickets=prompt)
        check(outcome, size, ending, loss_possible=loss_possible)


async def test_an_sslstream_client_upload_arrives_whole_at_a_default_server() -> None:
    # The case the issue measured as lost in 20 of 20 runs with prompt
    # tickets: the whole upload, then close_notify, every time.
    data = payload(8_000_003)
    for _ in range(RUNS):
        outcome = await run_cell(close_matrix.sslstream_client, data, "aclose")
        assert outcome == Outcome(len(data), "eof")


@pytest.mark.parametrize("size", SIZES)
async def test_a_tlsstream_client_upload_arrives_whole_at_an_sslstream_server(size: int) -> None:
    data = payload(size)
    for ending in ("aclose", "send_eof", "abort"):
        for _ in range(RUNS):
            outcome = await run_cell(
                close_matrix.tlsstream_client, data, ending, server="trio.SSLStream"
            )
            assert outcome == Outcome(size, EXPECTED_ENDING[ending])


# ------------------------------------------------------- openssl as a peer


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> tuple[TLSContexts, str, str]:
    """TLS 1.3 contexts for 127.0.0.1, the server's key and chain and the CA as files."""
    contexts = contexts_for(TLS13, hostname="127.0.0.1")
    directory = tmp_path_factory.mktemp("closing-certs")
    server_pem, ca_pem = directory / "server.pem", directory / "ca.pem"
    contexts.server_cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    contexts.ca.cert_pem.write_to_path(str(ca_pem))
    return contexts, str(server_pem), str(ca_pem)


@needs_openssl
@pytest.mark.parametrize("prompt", [False, True], ids=["tickets-wait", "prompt-tickets"])
@pytest.mark.parametrize("size", SIZES)
async def test_s_client_upload_then_stdin_eof(
    pems: tuple[TLSContexts, str, str], size: int, prompt: bool
) -> None:
    # s_client reads its socket all along (it is a select loop), so the
    # tickets never sit unread; at the end of stdin it sends close_notify.
    contexts, _, ca_pem = pems
    data = high_bytes(size)
    for _ in range(RUNS):
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        with trio.fail_after(PEER_TIMEOUT):
            async with openssl(
                "s_client", "-connect", f"127.0.0.1:{port}", "-brief", "-CAfile", ca_pem
            ) as tool:
                server = TLSStream(
                    await listener.accept(),
                    contexts.server,
                    server_side=True,
                    prompt_session_tickets=prompt,
                )
                await listener.aclose()

                async def feed(tool: Any = tool) -> None:
                    await tool.send(data)
                    await tool.process.stdin.aclose()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed)
                    outcome = await close_matrix.read_upload(server, size)
                assert outcome == Outcome(size, "eof")


@needs_openssl
@pytest.mark.parametrize("ending", ["aclose", "abort"])
@pytest.mark.parametrize("size", SIZES)
async def test_tlsstream_client_upload_to_s_server(
    pems: tuple[TLSContexts, str, str], size: int, ending: str
) -> None:
    # s_server sends its two TLS 1.3 tickets right after the handshake; our
    # client never reads, and its close drains them, so s_server gets a FIN
    # after every byte (a reset would lose the end of the upload).
    contexts, server_pem, _ = pems
    data = high_bytes(size)
    for _ in range(RUNS):
        with trio.fail_after(PEER_TIMEOUT):
            async with openssl(
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-cert",
                server_pem,
                "-naccept",
                "1",
                "-tls1_3",
            ) as server:
                match = await server.wait_for_stdout(rb"ACCEPT 127\.0\.0\.1:(\d+)")
                await close_matrix.tlsstream_client(int(match.group(1)), data, ending, contexts)
                await server.wait_for(lambda: b"CONNECTION CLOSED" in server.stdout)
                assert len(data_of(server.stdout)) == size
                assert data_of(server.stdout) == data
                if ending == "aclose":
                    assert b"DONE" in server.stdout  # it read our close_notify
                assert b"reset" not in bytes(server.stderr).lower()


# ------------------------------------------------------ session tickets


async def test_tls13_tickets_wait_for_the_first_send_by_default() -> None:
    async with handshaken_socket_pair(contexts_for(TLS13)) as (client, server):
        assert server.statistics().outgoing_ciphertext_bytes > 0
        await server.send_all(b"x")  # the tickets go first
        assert server.statistics().outgoing_ciphertext_bytes == 0
        assert await client.receive_some() == b"x"


async def test_tls13_tickets_go_at_once_when_asked_for() -> None:
    a, b = trio.socket.socketpair()
    contexts = contexts_for(TLS13)
    client = TLSStream(trio.SocketStream(a), contexts.client, server_hostname=contexts.hostname)
    server = TLSStream(
        trio.SocketStream(b), contexts.server, server_side=True, prompt_session_tickets=True
    )
    async with client, server:
        await handshake(client, server)
        assert server.statistics().outgoing_ciphertext_bytes == 0
        assert server.statistics().ciphertext_bytes_sent > 0


@pytest.mark.parametrize("prompt", [False, True], ids=["tickets-wait", "prompt-tickets"])
async def test_tls13_tickets_wait_over_an_unbuffered_transport(prompt: bool) -> None:
    # python-trio/trio#819: flushing them from a receive over a lockstep
    # transport could deadlock against a client that only sends; the opt-in
    # only pushes what a socket takes without waiting.
    contexts = contexts_for(TLS13)
    left, right = trio.testing.lockstep_stream_pair()
    client = TLSStream(left, contexts.client, server_hostname=contexts.hostname)
    server = TLSStream(right, contexts.server, server_side=True, prompt_session_tickets=prompt)
    await handshake(client, server)
    assert server.statistics().outgoing_ciphertext_bytes > 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"only sending")
        assert await server.receive_some() == b"only sending"


async def test_a_client_that_never_reads_keeps_prompt_tickets_and_resumes() -> None:
    # A receive-only server with prompt tickets, and a TLSStream client that
    # only sends: its aclose drains the tickets through the engine, so the
    # session it leaves behind can be resumed.
    contexts = contexts_for(TLS13, hostname="127.0.0.1")
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    session: ssl.SSLSession | None = None
    async with listener:
        for attempt in ("first", "resumed"):
            client = TLSStream(
                await trio.open_tcp_stream("127.0.0.1", port),
                contexts.client,
                server_hostname="127.0.0.1",
            )
            if session is not None:
                client.session = session
            server = TLSStream(
                await listener.accept(),
                contexts.server,
                server_side=True,
                prompt_session_tickets=True,
            )
            await handshake(client, server)
            await client.send_all(b"for a server that never answers")
            # The tickets reached the client's socket before the server
            # read this (they were sent at the end of its handshake).
            assert await server.receive_some() == b"for a server that never answers"
            assert client.session_reused == (attempt == "resumed")
            await client.aclose()
            assert await server.receive_some() == b""
            await server.aclose()
            session = client.session
            assert session is not None and session.has_ticket


# ----------------------------------------------------------- checkpoints

Pair = tuple[TLSStream[Any], TLSStream[Any]]


@asynccontextmanager
async def pair_over(transport: str) -> AsyncIterator[Pair]:
    """A ``(client, server)`` pair (PHA contexts, TLS 1.3) over ``transport``."""
    contexts = PHAContexts()
    if transport == "memory":
        left, right = trio.testing.memory_stream_pair()
    elif transport == "socket":
        a, b = trio.socket.socketpair()
        left, right = trio.SocketStream(a), trio.SocketStream(b)
    else:
        fa, fb = FakeTCPNetwork().socketpair()
        left, right = trio.SocketStream(fa), trio.SocketStream(fb)
    client = TLSStream(left, contexts.client, server_hostname=contexts.base.hostname)
    server = TLSStream(right, contexts.server, server_side=True)
    try:
        yield client, server
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


async def cooperative_peer(peer: TLSStream[Any], message: bytes) -> None:
    """What the other end does all along: handshake, send ``message`` (if
    any), read to the end (answering a certificate request on the way), then
    close."""
    try:
        await peer.do_handshake()
        if message:
            await peer.send_all(message)
        while await peer.receive_some():
            pass
        await peer.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def to_state(stream: TLSStream[Any], peer: TLSStream[Any], state: str) -> None:
    if state == "fresh":
        return
    if state in ("handshaken", "half-closed"):
        await stream.do_handshake()
        if state == "half-closed":
            await stream.send_eof()
        return
    if state == "broken":
        await trio.aclose_forcefully(peer.transport_stream)
        with pytest.raises(trio.BrokenResourceError):
            while await stream.receive_some():
                pass
        assert stream.statistics().state is StreamState.BROKEN
        return
    await stream.aclose()  # closed


METHODS: dict[str, Callable[[TLSStream[Any]], Awaitable[object]]] = {
    "do_handshake": lambda s: s.do_handshake(),
    "send_all": lambda s: s.send_all(b"data"),
    "receive_some": lambda s: s.receive_some(),
    "wait_send_all_might_not_block": lambda s: s.wait_send_all_might_not_block(),
    "send_eof": lambda s: s.send_eof(),
    "aclose": lambda s: s.aclose(),
    "unwrap": lambda s: s.unwrap(),
    "verify_client_post_handshake": lambda s: s.verify_client_post_handshake(),
}

#: (state, method) pairs that raise; trio's rule: a call that raises need not
#: checkpoint. Every other pair must return, and checkpoint.
RAISES = {
    **{(s, m): trio.BrokenResourceError for s in ["broken"] for m in METHODS if m != "aclose"},
    **{(s, m): trio.ClosedResourceError for s in ["closed"] for m in METHODS if m != "aclose"},
    ("half-closed", "send_all"): trio.ClosedResourceError,
    ("half-closed", "verify_client_post_handshake"): trio.ClosedResourceError,
}


@pytest.mark.parametrize("transport", ["socket", "fake network", "memory"])
@pytest.mark.parametrize("state", ["fresh", "handshaken", "half-closed", "broken", "closed"])
@pytest.mark.parametrize("method", list(METHODS))
async def test_every_public_async_method_is_a_checkpoint(
    transport: str, state: str, method: str
) -> None:
    # Our stream is the server (verify_client_post_handshake is a server's).
    with trio.fail_after(10):
        async with pair_over(transport) as (client, server), trio.open_nursery() as nursery:
            # Only receive_some needs data (unwrap fails on unread data).
            message = b"from the peer" if method == "receive_some" else b""
            nursery.start_soon(cooperative_peer, client, message)
            await to_state(server, client, state)
            call = METHODS[method]
            error = RAISES.get((state, method))
            if error is not None:
                with pytest.raises(error):
                    await call(server)
            else:
                with trio.testing.assert_checkpoints():
                    await call(server)
            nursery.cancel_scope.cancel()


# --------------------------------------------------------- lingering close


async def early_answer(close: Callable[[TLSStream[Any]], Awaitable[None]]) -> object:
    """A server answers after 100,000 bytes of an 8,000,003-byte upload and
    closes with ``close``; what the uploading client reads back."""
    contexts = contexts_for(TLS13, hostname="127.0.0.1")
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    reply: object = None

    async def client() -> None:
        nonlocal reply
        stream = TLSStream(
            await trio.open_tcp_stream("127.0.0.1", port),
            contexts.client,
            server_hostname="127.0.0.1",
        )
        try:
            await stream.send_all(payload(8_000_003))
            received = b""
            while data := await stream.receive_some():
                received += data
            reply = received
        except trio.BrokenResourceError as exc:
            reply = close_matrix.ending_of(exc)
        await stream.aclose()

    with trio.fail_after(CELL_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            server = TLSStream(await listener.accept(), contexts.server, server_side=True)
            await listener.aclose()
            received = 0
            while received < 100_000:
                received += len(await server.receive_some(65536))
            await server.send_all(b"413 Content Too Large")
            await close(server)
    return reply


async def test_lingering_close_lets_a_client_that_is_still_sending_read_the_answer() -> None:
    for _ in range(RUNS):
        assert await early_answer(lingering_close) == b"413 Content Too Large"


async def test_lingering_close_bounds_the_wait_for_a_silent_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The peer neither sends nor closes: the linger ends at its timeout, in
    # virtual time, with the stream closed.
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    started = trio.current_time()
    await lingering_close(server, seconds=2.0)
    assert trio.current_time() - started == pytest.approx(2.0)
    assert server.statistics().state is StreamState.CLOSED


async def test_lingering_close_bounds_the_bytes_it_drops() -> None:
    client, server = tls_memory_stream_pair()
    await handshake(client, server)
    async with trio.open_nursery() as nursery:

        async def flood() -> None:
            with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
                while True:
                    await client.send_all(b"x" * 65536)

        nursery.start_soon(flood)
        await lingering_close(server, seconds=math.inf, max_bytes=200_000)
        assert 200_000 <= server.statistics().plaintext_bytes_received < 200_000 + 65536
        await client.aclose()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": math.nan}, "seconds"),
        ({"max_bytes": 0}, "max_bytes"),
    ],
)
async def test_lingering_close_rejects_bad_bounds(kwargs: dict[str, Any], message: str) -> None:
    _, server = tls_memory_stream_pair()
    with pytest.raises(ValueError, match=message):
        await lingering_close(server, **kwargs)
