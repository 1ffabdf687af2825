"""The programs under ``docs/examples/`` run here, from the file the docs include.

The pages show these files with ``literalinclude``, so an example cannot drift
from what is tested. Clients and servers meet over real loopback TCP with
throw-away trustme certificates; the server examples are also fed clients
that vanish mid-connection (before, during and after the handshake, with a
FIN or a reset, while the server is sending) and must go on serving the next
client. Every example must be included by a page and run by some test; an
example of another page may be run by that page's own test module.
(``tests/test_testing_guide_example.py`` is the example of docs/testing.rst, itself a
test module; the two code blocks of docs/beyond.rst that ``tests/test_info.py``
runs stay inline there.)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import runpy
import signal
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import pytest
import trio
import trio.testing
from streamtools import load_docs_example, receive_exactly, receive_until_eof

from trio_tlsretry import (
    StreamState,
    TLSStream,
    serve_tls_over_tcp,
)
from trio_tlsretry._engine import DEFAULT_WRITE_CHUNK
from trio_tlsretry.testing import (
    TLSContexts,
    exact_progress_stream_pair,
    make_tls_contexts,
    tls_memory_stream_pair,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
HOST = "127.0.0.1"
#: Every wait on the network in this module is bounded by this (seconds).
WAIT = 10


quickstart_client = load_docs_example("quickstart_client")
quickstart_server = load_docs_example("quickstart_server")
quickstart_retry = load_docs_example("quickstart_retry")
readme_client = load_docs_example("readme_client")
server_smallest = load_docs_example("server_smallest")
server_shutdown = load_docs_example("server_shutdown")
errors_catch = load_docs_example("errors_catch")
half_close = load_docs_example("half_close")
post_handshake_auth = load_docs_example("post_handshake_auth")


def test_every_example_is_included_by_a_page_and_run_by_a_test() -> None:
    pages = "".join(page.read_text(encoding="utf-8") for page in (ROOT / "docs").glob("*.rst"))
    tests = "".join(test.read_text(encoding="utf-8") for test in (ROOT / "tests").glob("*.py"))
    for example in sorted(EXAMPLES.glob("*.py")):
        assert f".. literalinclude:: examples/{example.name}" in pages, example.name
        assert f'"{example.stem}"' in tests or example.name in tests, example.name


@pytest.fixture
def loopback_contexts() -> TLSContexts:
    """Contexts whose server certificate is valid for 127.0.0.1."""
    return make_tls_contexts(HOST)


# ------------------------------------------------------ clients that vanish


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream(HOST, port)


async def reset(tcp: trio.SocketStream) -> None:
    """Close with a TCP reset: SO_LINGER with a zero timeout."""
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await tcp.aclose()


async def vanish_before_handshake(port: int, context: ssl.SSLContext, hostname: str) -> None:
    await (await connect(port)).aclose()


async def vanish_mid_handshake(port: int, context: ssl.SSLContext, hostname: str) -> None:
    tcp = await connect(port)
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    await tcp.send_all(outgoing.read())  # the ClientHello
    assert await tcp.receive_some()  # the server's answer has started
    await tcp.aclose()


async def talking_client(port: int, context: ssl.SSLContext, hostname: str) -> TLSStream:
    """A client whose first message the server has echoed (its handler is running)."""
    stream = TLSStream(await connect(port), context, server_hostname=hostname)
    await stream.send_all(b"are you there?")
    assert await receive_exactly(stream, 14) == b"are you there?"
    return stream


async def vanish_after_handshake(port: int, context: ssl.SSLContext, hostname: str) -> None:
    stream = await talking_client(port, context, hostname)
    await stream.transport_stream.aclose()  # FIN without close_notify


async def reset_after_handshake(port: int, context: ssl.SSLContext, hostname: str) -> None:
    stream = await talking_client(port, context, hostname)
    await reset(stream.transport_stream)


async def reset_while_server_sends(port: int, context: ssl.SSLContext, hostname: str) -> None:
    stream = await talking_client(port, context, hostname)
    # More than the socket buffers hold: the echo stalls in the server's
    # send_all because this client stops reading, and then it resets.
    flood = b"\x00" * (32 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, flood)
        assert await stream.receive_some()
        nursery.cancel_scope.cancel()
    await reset(stream.transport_stream)


VanishingClient = Callable[[int, ssl.SSLContext, str], Awaitable[None]]
BEFORE_HANDLER: list[VanishingClient] = [vanish_before_handshake, vanish_mid_handshake]
IN_HANDLER: list[VanishingClient] = [
    vanish_after_handshake,
    reset_after_handshake,
    reset_while_server_sends,
]


async def echo_round_trip(port: int, context: ssl.SSLContext, hostname: str) -> None:
    """A well-behaved client: is the server still serving?"""
    stream = TLSStream(await connect(port), context, server_hostname=hostname)
    async with stream:
        message = os.urandom(100_000)
        await stream.send_all(message)
        assert await receive_exactly(stream, len(message)) == message


class HandlerTracker:
    """Wraps a handler to count the connections it has finished with."""

    def __init__(self) -> None:
        self.finished = 0
        self._changed = trio.Event()

    def wrap(self, handler: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        async def tracked(stream: Any) -> None:
            try:
                await handler(stream)
            finally:
                self.finished += 1
                self._changed.set()
                self._changed = trio.Event()

        return tracked

    async def wait_for(self, count: int) -> None:
        while self.finished < count:
            await self._changed.wait()


async def vanish_then_serve(
    port: int,
    context: ssl.SSLContext,
    hostname: str,
    clients: list[VanishingClient],
    handled: HandlerTracker,
    handler_calls: int,
) -> None:
    """Run each vanishing client, wait for the handlers to finish with them, then be served."""
    with trio.fail_after(WAIT):
        for client in clients:
            await client(port, context, hostname)
        await handled.wait_for(handler_calls)
        await echo_round_trip(port, context, hostname)


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[TLSStream], Awaitable[None]], context: ssl.SSLContext
) -> AsyncIterator[int]:
    """``serve_tls_over_tcp(handler, 0, context)`` on loopback; yields the port."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            listeners = await nursery.start(
                functools.partial(serve_tls_over_tcp, host=HOST), handler, 0, context
            )
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


# ------------------------------------------------------- docs/quickstart.rst


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "bare-tcp-close"])
async def test_quickstart_client_fetches_a_page(
    loopback_contexts: TLSContexts, close_notify: bool
) -> None:
    page = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    requests: list[bytes] = []

    async def http_server(stream: TLSStream) -> None:
        request = bytearray()
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some()
            assert data, "the client closed before its request was complete"
            request += data
        requests.append(bytes(request))
        await stream.send_all(page)
        if close_notify:
            await stream.aclose()
        else:  # what many HTTPS servers do, and why the example is https_compatible
            await stream.transport_stream.aclose()

    async with serving(http_server, loopback_contexts.server) as port:
        with trio.fail_after(WAIT):
            response = await quickstart_client.fetch(HOST, port, loopback_contexts.client)
    assert requests == [b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"]
    assert response == page


# ------------------------------------------------------------- README.md


def test_the_readme_shows_its_example_file_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = (EXAMPLES / "readme_client.py").read_text(encoding="utf-8")
    assert f"```python\n{example[example.index('import ssl') :]}```" in readme


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "bare-tcp-close"])
async def test_readme_client_fetches_a_page(
    loopback_contexts: TLSContexts, close_notify: bool
) -> None:
    page = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    requests: list[bytes] = []
    closed = trio.Event()

    async def http_server(stream: TLSStream) -> None:
        request = bytearray()
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some()
            assert data, "the client closed before its request was complete"
            request += data
        requests.append(bytes(request))
        await stream.send_all(page)
        if close_notify:
            await stream.aclose()
        else:  # many HTTPS servers do this: the example must not fail on it
            await stream.transport_stream.aclose()
        closed.set()

    async with serving(http_server, loopback_contexts.server) as port:
        with trio.fail_after(WAIT):
            response = await readme_client.fetch(HOST, port, loopback_contexts.client)
            await closed.wait()
    assert requests == [b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"]
    assert response == page


async def test_readme_client_gives_up_on_a_server_that_never_reads(
    loopback_contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    """The retry loop is bounded, and the close in ``finally`` ends under its timeout."""
    # A peer that never reads: the ClientHello alone fills the 64-byte pipe.
    client_transport, _server_transport = exact_progress_stream_pair(64)

    async def open_stream(*args: Any, **kwargs: Any) -> TLSStream:
        return TLSStream(
            client_transport,
            kwargs["ssl_context"],
            server_hostname=args[0],
            https_compatible=kwargs["https_compatible"],
        )

    original = readme_client.trio_tlsretry.open_tls_over_tcp_stream
    readme_client.trio_tlsretry.open_tls_over_tcp_stream = open_stream
    try:
        with pytest.raises(TimeoutError, match="did not take the request in 15 s"):
            await readme_client.fetch(HOST, 443, loopback_contexts.client)
    finally:
        readme_client.trio_tlsretry.open_tls_over_tcp_stream = original
    # Three attempts of 5 s, then a close bounded by its own 5 s.
    assert 15 <= trio.current_time() <= 20
    with pytest.raises(trio.ClosedResourceError):
        await client_transport.send_all(b"x")  # the close closed the transport


async def test_quickstart_server_program_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(WAIT):
        await quickstart_server.main()
    assert capsys.readouterr().out == "echoed: b'hello'\nprotocol: TLSv1.3\n"


async def test_quickstart_server_survives_vanishing_clients(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handled = HandlerTracker()
    clients = BEFORE_HANDLER + IN_HANDLER  # every connection reaches this handler
    async with trio.open_nursery() as nursery:
        handler = handled.wrap(quickstart_server.echo_handler)
        with trio.fail_after(WAIT):
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handler, 0, host=HOST)
            )
        port = listeners[0].socket.getsockname()[1]
        await vanish_then_serve(
            port, quickstart_server.client_context, "localhost", clients, handled, len(clients)
        )
        nursery.cancel_scope.cancel()
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(clients)
    assert all(line.startswith("connection failed: ") for line in printed), printed


@contextlib.contextmanager
def stall_warnings() -> Iterator[trio.MemoryReceiveChannel[str]]:
    """The warnings of the retry example, as they are logged."""
    send, receive = trio.open_memory_channel[str](math.inf)

    class ToChannel(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            send.send_nowait(record.getMessage())

    handler = ToChannel(logging.WARNING)
    quickstart_retry.log.addHandler(handler)
    try:
        yield receive
    finally:
        quickstart_retry.log.removeHandler(handler)


async def test_send_patiently_finishes_once_the_peer_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The transport buffers one chunk's ciphertext: the first chunk gets
    # through, then the send stalls until the peer reads.
    client, server = tls_memory_stream_pair(exact_progress=True, capacity=2 * DEFAULT_WRITE_CHUNK)
    message = os.urandom(4 * DEFAULT_WRITE_CHUNK)
    stalls: list[str] = []

    async def slow_reader() -> None:
        await server.do_handshake()
        stalls.append(await warnings.receive())
        stalls.append(await warnings.receive())
        assert await receive_exactly(server, len(message)) == message

    with stall_warnings() as warnings:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            await quickstart_retry.send_patiently(client, message)
    assert 10 <= trio.current_time() < 15  # two stalls of 5 s, then it went through
    assert len(stalls) == 2 and stalls[0] == stalls[1]  # no progress while nobody read
    to_go = int(stalls[0].split()[2])
    assert 0 < to_go < len(message)
    assert client.statistics().state is StreamState.OPEN


async def test_send_patiently_gives_up_and_closes(autojump_clock: trio.testing.MockClock) -> None:
    client, server = tls_memory_stream_pair(exact_progress=True, capacity=1000)
    with stall_warnings() as warnings:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)  # and then never reads
            with pytest.raises(TimeoutError, match="read nothing for 15 seconds"):
                await quickstart_retry.send_patiently(client, os.urandom(200_000))
            nursery.cancel_scope.cancel()
        for _ in range(3):
            assert warnings.receive_nowait().startswith("send stalled, ")
        with pytest.raises(trio.WouldBlock):
            warnings.receive_nowait()
    assert client.statistics().state is StreamState.CLOSED
    assert trio.current_time() == 15


# ---------------------------------------------------------- docs/server.rst


async def test_smallest_server_survives_vanishing_clients(loopback_contexts: TLSContexts) -> None:
    handled = HandlerTracker()
    async with serving(handled.wrap(server_smallest.echo), loopback_contexts.server) as port:
        # Clients that vanish before or during the handshake never reach the
        # handler: serve_tls_over_tcp drops them.
        await vanish_then_serve(
            port,
            loopback_contexts.client,
            HOST,
            BEFORE_HANDLER + IN_HANDLER,
            handled,
            len(IN_HANDLER),
        )


@pytest.mark.parametrize("vanish", IN_HANDLER)
async def test_a_handler_that_does_not_catch_ends_the_server(
    loopback_contexts: TLSContexts, vanish: VanishingClient
) -> None:
    """Without its ``except``, the smallest server's handler is ended by each such client."""

    async def echo_that_does_not_catch(stream: TLSStream) -> None:
        async with stream:
            async for data in stream:
                await stream.send_all(data)

    with pytest.RaisesGroup(trio.BrokenResourceError, flatten_subgroups=True):
        async with serving(echo_that_does_not_catch, loopback_contexts.server) as port:
            with trio.fail_after(WAIT):
                await vanish(port, loopback_contexts.client, HOST)
                await trio.sleep_forever()  # until the handler's exception ends the server


async def test_shutdown_lets_open_connections_finish(loopback_contexts: TLSContexts) -> None:
    shutdown_requested = trio.Event()
    client_context = loopback_contexts.client
    serve = functools.partial(server_shutdown.serve_until, host=HOST)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, shutdown_requested, loopback_contexts.server, 0)
            for vanish in BEFORE_HANDLER + IN_HANDLER:
                await vanish(port, client_context, HOST)
            await echo_round_trip(port, client_context, HOST)
            stream = await talking_client(port, client_context, HOST)

            shutdown_requested.set()
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(OSError):
                await connect(port)  # no longer accepting
            await stream.send_all(b"still there?")
            assert await receive_exactly(stream, 12) == b"still there?"
            await stream.aclose()
        # serve_until returned: every handler has finished, none raised.


async def test_shutdown_grace_period_ends_with_close_notify(
    loopback_contexts: TLSContexts,
) -> None:
    shutdown_requested = trio.Event()
    serve = functools.partial(server_shutdown.serve_until, host=HOST, grace_period=0)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, shutdown_requested, loopback_contexts.server, 0)
            stream = await talking_client(port, loopback_contexts.client, HOST)
            shutdown_requested.set()
            # The idle connection is cancelled at once and says goodbye properly.
            assert await stream.receive_some() == b""
        await stream.aclose()


async def test_shutdown_program_survives_vanishing_clients_and_stops_on_sigterm(
    tmp_path: Path, loopback_contexts: TLSContexts
) -> None:
    """``python server_shutdown.py 0`` as a user runs it, with cert.pem and key.pem."""
    leaf = loopback_contexts.server_cert
    (tmp_path / "cert.pem").write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    client_context = loopback_contexts.client
    program = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "server_shutdown.py"), "0"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert program.stdout is not None and program.stderr is not None
    try:
        with trio.fail_after(WAIT):
            banner = b""
            while not banner.endswith(b"\n"):
                banner += await program.stdout.receive_some()
            match = re.fullmatch(rb"listening on port (\d+); send SIGTERM to stop\n", banner)
            assert match, banner
            port = int(match[1])
            for vanish in BEFORE_HANDLER + IN_HANDLER:
                await vanish(port, client_context, HOST)
            await echo_round_trip(port, client_context, HOST)
            stream = await talking_client(port, client_context, HOST)
            program.send_signal(signal.SIGTERM)
            # The open connection is served until it closes, then the program exits.
            await stream.send_all(b"still there?")
            assert await receive_exactly(stream, 12) == b"still there?"
            await stream.aclose()
            errors = await receive_until_eof(program.stderr)
            assert await program.wait() == 0, errors.decode()
            assert errors == b""
    finally:
        if program.returncode is None:
            program.kill()
            await program.wait()


# ---------------------------------------------------------- docs/errors.rst


async def test_ask_returns_the_answer() -> None:
    client, server = tls_memory_stream_pair()

    async def echo_once() -> None:
        await server.send_all(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_once)
        assert await errors_catch.ask(client, b"ping") == b"ping"
    assert client.statistics().state is StreamState.CLOSED


async def test_ask_logs_a_refused_certificate(caplog: pytest.LogCaptureFixture) -> None:
    stranger = make_tls_contexts()  # a server whose CA the client does not trust
    client, server = tls_memory_stream_pair(
        client_context=make_tls_contexts().client, server_context=stranger.server
    )

    async def server_side() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()  # the client refused the certificate

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        assert await errors_catch.ask(client, b"ping") is None
    assert "connection failed: SSLCertVerificationError" in caplog.text
    assert client.statistics().state is StreamState.CLOSED


async def test_ask_logs_a_peer_that_vanished(caplog: pytest.LogCaptureFixture) -> None:
    client, server = tls_memory_stream_pair()

    async def read_then_vanish() -> None:
        await server.receive_some()
        await server.transport_stream.aclose()  # no close_notify

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_then_vanish)
        assert await errors_catch.ask(client, b"ping") is None
    assert "connection failed: SSLEOFError" in caplog.text


# ---------------------------------------------------------- docs/beyond.rst


async def test_half_close_request_then_read_all() -> None:
    client, server = tls_memory_stream_pair()
    answer = os.urandom(1024 * 1024)

    async def answer_after_the_request_ended() -> None:
        assert await receive_until_eof(server) == b"everything, please"
        await server.send_all(answer)
        await server.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_after_the_request_ended)
        response = await half_close.request_then_read_all(client, b"everything, please")
    assert response == answer


async def test_post_handshake_auth(tmp_path: Path) -> None:
    contexts = make_tls_contexts()
    alice = contexts.ca.issue_cert("alice.example.org")
    contexts.ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    alice.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    post_handshake_auth.allow_post_handshake_auth(
        contexts.server,
        contexts.client,
        client_ca=str(tmp_path / "client-ca.pem"),
        client_cert=str(tmp_path / "client.pem"),
    )
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server
    )

    async def client_side() -> None:
        await client.send_all(b"GET /private")
        # OpenSSL answers the certificate request inside this receive.
        assert await client.receive_some() == b"welcome"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        assert await receive_exactly(server, 12) == b"GET /private"
        assert server.getpeercert() is None  # no certificate asked for in the handshake
        certificate = await post_handshake_auth.client_certificate(server)
        await server.send_all(b"welcome")
    assert [name for _kind, name in certificate["subjectAltName"]] == ["alice.example.org"]


# ------------------------------------------------- numbers in the docs pages


def parse_size(text: str) -> int:
    number, unit = text.split()
    return int(number) * {"KiB": 1024, "MiB": 1024 * 1024, "bytes": 1}[unit]


def parse_duration(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"µs": 1e-6, "ms": 1e-3, "second": 1, "seconds": 1}[unit]


def test_docs_show_the_numbers_of_the_code(tmp_path: Path) -> None:
    """The pages state sizes, timeouts and extras as the code and pyproject.toml have them."""
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinxcontrib_trio")
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "-q", "-b", "text", "docs", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=120,
    )

    def page(name: str) -> str:
        return " ".join((tmp_path / f"{name}.txt").read_text(encoding="utf-8").split())

    from trio_tlsretry import DEFAULT_HANDSHAKE_TIMEOUT, _engine, _stream

    numbers = runpy.run_path(str(ROOT / "docs" / "conf.py"))["SUBSTITUTIONS"]
    assert parse_size(numbers["write_chunk"]) == _engine.DEFAULT_WRITE_CHUNK
    assert parse_size(numbers["plaintext_buffer_limit"]) == _engine.PLAINTEXT_BUFFER_LIMIT
    assert parse_duration(numbers["alert_timeout"]) == _stream.ALERT_TIMEOUT
    assert parse_duration(numbers["handshake_timeout"]) == DEFAULT_HANDSHAKE_TIMEOUT

    assert f"encrypted in pieces of {numbers['write_chunk']}" in page("index")
    assert f"in slices of {numbers['write_chunk']}" in page("pinned-writes")
    assert f"Once it holds {numbers['plaintext_buffer_limit']}" in page("pinned-writes")
    assert f"The default is {numbers['handshake_timeout']}" in page("server")
    assert f"bounded by {numbers['alert_timeout']}" in page("errors")
    with (ROOT / "pyproject.toml").open("rb") as pyproject:
        extras = tomllib.load(pyproject)["project"]["optional-dependencies"]
    quickstart = page("quickstart")
    listed = quickstart[quickstart.index("optional extras:") :].split(". ")[0]
    assert re.findall(r'"(\w+)" \(', listed) == list(extras)


def test_api_page_documents_every_export() -> None:
    import trio_tlsretry

    api = (ROOT / "docs" / "api.rst").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. (?:auto\w+|data):: (\w+)", api, re.MULTILINE))
    assert documented == set(trio_tlsretry.__all__)
