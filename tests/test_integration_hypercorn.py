"""hypercorn (its trio worker) serving HTTPS through TLSStream.

hypercorn builds ``trio.SSLListener(..., https_compatible=True)``, which
:func:`trio_tlsretry.inject_into_trio` makes a :class:`~trio_tlsretry.TLSListener`,
and closes every connection with ``send_eof()`` (which ``trio.SSLStream`` does
not have) followed by ``aclose()``, catching only Trio's stream exceptions.
Once, on TLS 1.2, or on TLS 1.3 after the client's EOF, ``send_eof`` raised
``SendEOFNotSupportedError`` and the whole server went down (issue 13). Each
test here ends by checking that the server still serves a new connection,
and :func:`integration_tools.hypercorn_serving` that it shuts down cleanly.

The tests drive the server with httpx (itself over TLSStream while injected),
with a blocking standard-library client in a thread (a peer that is not this
library), and with curl when it is installed.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio
from integration_tools import (
    EXAMPLES,
    HOST,
    TLS_VERSION_IDS,
    TLS_VERSIONS,
    WAIT,
    HTTPSServer,
    TLSStreamCensus,
    client_context,
    contexts_for,
    hypercorn_recipe,
    hypercorn_serving,
    tlsstream_census,
    version_name,
    write_certificates,
)

from trio_tlsretry import StreamState

census = pytest.fixture(tlsstream_census)

LARGE = 50 * 1000 * 1000
CHUNK = 64 * 1024
HTTP_VERSIONS = [False, True]
HTTP_VERSION_IDS = ["HTTP/1.1", "HTTP/2"]


@pytest.fixture(scope="module")
def large_body() -> bytes:
    return os.urandom(LARGE)


async def in_chunks(data: bytes) -> AsyncIterator[bytes]:
    """A request body streamed in pieces (httpcore's HTTP/2 code slices one
    large ``bytes`` body quadratically, which would only measure that)."""
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        yield bytes(view[start : start + CHUNK])


async def assert_still_serving(server: HTTPSServer, census: TLSStreamCensus) -> None:
    """A fresh connection gets its request echoed, through a new server TLSStream."""
    connections_before = len(census.side(server_side=True))
    with trio.fail_after(WAIT):
        async with httpx.AsyncClient(verify=server.contexts.client) as client:
            response = await client.post(server.url, content=b"still there?")
    assert response.status_code == 200
    assert response.content == b"still there?"
    assert len(census.side(server_side=True)) == connections_before + 1


# ------------------------------------------------------------------- httpx


@pytest.mark.parametrize("http2", HTTP_VERSIONS, ids=HTTP_VERSION_IDS)
@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_VERSION_IDS)
async def test_httpx_echoes_50_MB_both_ways(
    census: TLSStreamCensus,
    tmp_path: Path,
    large_body: bytes,
    version: ssl.TLSVersion,
    http2: bool,
) -> None:
    async with hypercorn_serving(hypercorn_recipe.echo_app, tmp_path) as server:
        context = client_context(server.contexts, version)
        digest = hashlib.sha256()
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient(verify=context, http2=http2) as client:
                request = client.stream("POST", server.url, content=in_chunks(large_body))
                async with request as response:
                    async for data in response.aiter_raw():
                        digest.update(data)
        assert response.status_code == 200
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert digest.digest() == hashlib.sha256(large_body).digest()
        # Both ends of that one connection were TLSStreams, and carried it all.
        # (httpx closed its end without close_notify: it is https_compatible.)
        (server_stream,) = census.side(server_side=True)
        (client_stream,) = census.side(server_side=False)
        assert server_stream.version() == client_stream.version() == version_name(version)
        assert server_stream.selected_alpn_protocol() == ("h2" if http2 else "http/1.1")
        for stream in (server_stream, client_stream):
            assert stream.statistics().plaintext_bytes_received >= LARGE
            assert stream.statistics().plaintext_bytes_sent >= LARGE
        await census.wait_all_closed(server_side=True)
        await assert_still_serving(server, census)


@pytest.mark.parametrize("http2", HTTP_VERSIONS, ids=HTTP_VERSION_IDS)
async def test_httpx_many_sequential_and_concurrent_requests(
    census: TLSStreamCensus, tmp_path: Path, http2: bool
) -> None:
    sequential, tasks, requests_per_task = 40, 20, 5
    # hypercorn closes a connection that has been idle for its keep-alive
    # timeout, and the short one hypercorn_serving sets ran out between two
    # requests of a loaded run: httpx then opened more connections than it
    # had tasks, or sent a request into the closing connection (reset). Here
    # nothing is closed for idleness until the server shuts down.
    async with hypercorn_serving(
        hypercorn_recipe.echo_app, tmp_path, keep_alive_timeout=math.inf
    ) as server:
        verify = server.contexts.client

        async def ask(client: httpx.AsyncClient, message: bytes) -> None:
            response = await client.post(server.url, content=message)
            assert (response.status_code, response.content) == (200, message)

        with trio.fail_after(WAIT):
            # Sequential, each on a new connection...
            for number in range(sequential):
                async with httpx.AsyncClient(verify=verify, http2=http2) as client:
                    await ask(client, b"sequential %d" % number)
            assert len(census.side(server_side=True)) == sequential

            # ...then concurrent, on one client: a pool of HTTP/1.1
            # connections, or streams multiplexed over HTTP/2 connections.
            async def task(client: httpx.AsyncClient, number: int) -> None:
                for request in range(requests_per_task):
                    await ask(client, os.urandom(1000) + b"%d.%d" % (number, request))

            # At most one connection a task at any time, and none expires
            # (neither side closes an idle one): so at most one a task in all.
            limits = httpx.Limits(
                max_connections=tasks, max_keepalive_connections=tasks, keepalive_expiry=None
            )
            async with (
                httpx.AsyncClient(verify=verify, http2=http2, limits=limits) as client,
                trio.open_nursery() as nursery,
            ):
                for number in range(tasks):
                    nursery.start_soon(task, client, number)
        concurrent = census.side(server_side=True)[sequential:]
        assert 1 <= len(concurrent) <= tasks
        carried = sum(stream.statistics().plaintext_bytes_received for stream in concurrent)
        assert carried > tasks * requests_per_task * 1000  # every request went through them
        await assert_still_serving(server, census)
    # The server has shut down, closing every connection it still held.
    server_streams = census.side(server_side=True)
    assert all(stream.statistics().state is StreamState.CLOSED for stream in server_streams)


# ------------------------------------ a standard-library client in a thread


def close_after_handshake(tls: ssl.SSLSocket) -> None:
    """A probe: hypercorn closes the idle connection when its keep-alive timer ends."""


def close_mid_request(tls: ssl.SSLSocket) -> None:
    """hypercorn sees the EOF with a request open and closes at once: send_eof
    after the client's EOF, the TLS 1.3 crash of issue 13."""
    tls.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\npart")


def keep_alive_round_trip(tls: ssl.SSLSocket) -> None:
    """A whole keep-alive exchange, then the close (as httpx closes its pool)."""
    tls.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello")
    response = b""
    while not response.endswith(b"\r\n\r\nhello"):
        data = tls.recv(65536)
        assert data, response
        response += data
    assert response.startswith(b"HTTP/1.1 200 ")


def reset_mid_request(tls: ssl.SSLSocket) -> None:
    # The round trip first: a reset can discard what the server has not read
    # yet, and a handshake that fails that way is one hypercorn never closes.
    keep_alive_round_trip(tls)
    close_mid_request(tls)
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def stdlib_client(
    port: int, context: ssl.SSLContext, then: Callable[[ssl.SSLSocket], None]
) -> None:
    """Handshake, run ``then``, and close the socket: never a ``close_notify``
    (``SSLSocket.close()`` does not send one; only ``unwrap()`` does)."""
    with socket.create_connection((HOST, port), timeout=WAIT) as tcp:
        tls = context.wrap_socket(tcp, server_hostname=HOST)
        then(tls)
        tls.close()


@pytest.mark.parametrize(
    "then",
    [close_after_handshake, close_mid_request, reset_mid_request, keep_alive_round_trip],
)
@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_VERSION_IDS)
async def test_clients_that_close_without_close_notify(
    census: TLSStreamCensus,
    tmp_path: Path,
    version: ssl.TLSVersion,
    then: Callable[[ssl.SSLSocket], None],
) -> None:
    async with hypercorn_serving(hypercorn_recipe.echo_app, tmp_path) as server:
        context = client_context(server.contexts, version, alpn=["http/1.1"])
        with trio.fail_after(WAIT):
            for _ in range(3):
                await trio.to_thread.run_sync(stdlib_client, server.port, context, then)
            # hypercorn has closed all three (send_eof, then aclose) and is
            # still running: the crash of issue 13 happened right there.
            await census.wait_all_closed(server_side=True)
        streams = census.side(server_side=True)
        assert len(streams) == 3
        assert {stream.version() for stream in streams} == {version_name(version)}
        await assert_still_serving(server, census)


def read_until_close_notify(port: int, context: ssl.SSLContext) -> bytes:
    """A ``Connection: close`` request, and everything until the server's close_notify.

    With ``suppress_ragged_eofs=False`` a TCP close without close_notify raises
    ``SSLEOFError`` here instead of reading as the end.
    """
    with socket.create_connection((HOST, port), timeout=WAIT) as tcp:
        tls = context.wrap_socket(tcp, server_hostname=HOST, suppress_ragged_eofs=False)
        tls.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Length: 3\r\n\r\nbye"
        )
        response = b""
        while data := tls.recv(65536):
            response += data
        tls.close()
    return response


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_VERSION_IDS)
async def test_server_closes_with_close_notify(
    census: TLSStreamCensus, tmp_path: Path, version: ssl.TLSVersion
) -> None:
    # hypercorn's send_eof() reaches TLSStream.send_eof, which sends
    # close_notify on every version; over trio.SSLStream (which has no
    # send_eof, and is https_compatible here) the client would see a bare
    # TCP close instead.
    async with hypercorn_serving(hypercorn_recipe.echo_app, tmp_path) as server:
        context = client_context(server.contexts, version, alpn=["http/1.1"])
        with trio.fail_after(WAIT):
            response = await trio.to_thread.run_sync(read_until_close_notify, server.port, context)
        assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\nbye")
        await assert_still_serving(server, census)


# -------------------------------------------------------------------- curl

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


@needs_curl
@pytest.mark.parametrize("http2", HTTP_VERSIONS, ids=HTTP_VERSION_IDS)
@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_VERSION_IDS)
async def test_curl_echoes_50_MB_both_ways(
    census: TLSStreamCensus,
    tmp_path: Path,
    large_body: bytes,
    version: ssl.TLSVersion,
    http2: bool,
) -> None:
    assert CURL is not None
    upload, download = tmp_path / "upload.bin", tmp_path / "download.bin"
    upload.write_bytes(large_body)
    async with hypercorn_serving(hypercorn_recipe.echo_app, tmp_path) as server:
        command = [CURL, "--silent", "--show-error", "--fail", "--cacert", server.cafile]
        command += ["--http2"] if http2 else ["--http1.1"]
        if version is ssl.TLSVersion.TLSv1_2:
            command += ["--tls-max", "1.2"]
        else:
            command += ["--tlsv1.3"]
        command += ["--header", "Expect:"]  # no 100-continue round trip
        command += ["--data-binary", f"@{upload}", "--output", str(download)]
        command += ["--write-out", "%{http_version}", server.url]
        with trio.fail_after(WAIT):
            finished = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
            await census.wait_all_closed(server_side=True)
        assert finished.stdout == (b"2" if http2 else b"1.1"), finished.stderr
        assert hashlib.sha256(download.read_bytes()).digest() == hashlib.sha256(large_body).digest()
        (stream,) = census.side(server_side=True)
        assert stream.version() == version_name(version)
        assert stream.selected_alpn_protocol() == ("h2" if http2 else "http/1.1")
        assert stream.statistics().plaintext_bytes_received >= LARGE
        await assert_still_serving(server, census)


# ------------------------------------------- the recipe, run as a program


async def test_recipe_program_serves_until_signalled(tmp_path: Path) -> None:
    # A process of its own: the recipe injects for the whole process.
    contexts = contexts_for()
    write_certificates(contexts, tmp_path)
    program = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "integration_hypercorn.py"), f"{HOST}:0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    assert program.stderr is not None
    try:
        with trio.fail_after(WAIT):
            log = b""
            while b"Running on https://" not in log or not log.endswith(b"\n"):
                data = await program.stderr.receive_some()
                assert data, log
                log += data
            port = int(log.split(b"Running on https://")[1].split(b" ")[0].rsplit(b":", 1)[1])
            for version in TLS_VERSIONS:
                context = client_context(contexts, version, alpn=["http/1.1"])
                # The close_notify at the end shows that TLSStream served it.
                response = await trio.to_thread.run_sync(read_until_close_notify, port, context)
                assert response.endswith(b"\r\n\r\nbye")
            program.send_signal(signal.SIGTERM)
            status = await program.wait()
            log += await program.stderr.receive_some()
            assert status == 0, log.decode()
    finally:
        if program.returncode is None:
            program.kill()
            await program.wait()
