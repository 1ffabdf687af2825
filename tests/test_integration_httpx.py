"""httpx / httpcore (trio backend) as an HTTPS client over TLSStream.

httpcore wraps each connection in ``trio.SSLStream(..., https_compatible=True)``
and finds the negotiated ALPN protocol through ``isinstance(stream,
trio.SSLStream)`` and ``stream._ssl_object``; while injected, both see a
:class:`~trio_tlsretry.TLSStream`. The server is hypercorn (itself over
TLSStream) with a small ASGI application of this module.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from integration_tools import (
    WAIT,
    TLSStreamCensus,
    hypercorn_recipe,
    hypercorn_serving,
    tlsstream_census,
)
from streamtools import load_docs_example

census = pytest.fixture(tlsstream_census)
httpx_recipe = load_docs_example("integration_httpx")

HTTP_VERSIONS = [False, True]
HTTP_VERSION_IDS = ["HTTP/1.1", "HTTP/2"]
Message = dict[str, Any]


def pattern(size: int) -> bytes:
    """The ``size`` bytes that ``GET /bytes/<size>`` answers with."""
    block = hashlib.sha256(b"%d" % size).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


class ContentApp:
    """``GET /bytes/<n>``: n known bytes. ``GET /stall``: no answer until the
    client goes away. ``POST /``: the recipe's echo, counting what arrives."""

    def __init__(self) -> None:
        self.stalled_requests = 0
        self.stalled = trio.Event()  # set (and replaced) at each stalled request
        self.uploaded = 0
        self.upload_progress = trio.Event()  # set (and replaced) as upload bytes arrive

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await hypercorn_recipe.echo_app(scope, receive, send)
        elif scope["path"] == "/stall":
            self.stalled_requests += 1
            self.stalled.set()
            self.stalled = trio.Event()
            while (await receive())["type"] != "http.disconnect":
                pass
        elif scope["path"].startswith("/bytes/"):
            body = pattern(int(scope["path"].removeprefix("/bytes/")))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
        else:

            async def counting_receive() -> Message:
                message = await receive()
                self.uploaded += len(message.get("body", b""))
                self.upload_progress.set()
                self.upload_progress = trio.Event()
                return message

            await hypercorn_recipe.echo_app(scope, counting_receive, send)


def assert_tlsstream_clients(census: TLSStreamCensus, http2: bool) -> None:
    """httpx's connections were TLSStreams, and httpcore saw their ALPN through one."""
    clients = census.side(server_side=False)
    assert clients
    for stream in clients:
        assert stream.selected_alpn_protocol() == ("h2" if http2 else "http/1.1")
    assert census.plaintext_received(server_side=False) > 0


@pytest.mark.parametrize("http2", HTTP_VERSIONS, ids=HTTP_VERSION_IDS)
async def test_sequential_requests_share_one_connection(
    census: TLSStreamCensus, tmp_path: Path, http2: bool
) -> None:
    sizes = [0, 1, 100, 16383, 16384, 100_000, 1_000_000] * 5
    async with hypercorn_serving(ContentApp(), tmp_path) as server:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient(verify=server.contexts.client, http2=http2) as client:
                for size in sizes:
                    response = await client.get(f"{server.url}/bytes/{size}")
                    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
                    assert response.content == pattern(size)
    (connection,) = census.side(server_side=False)
    assert connection.statistics().plaintext_bytes_received >= sum(sizes)
    assert_tlsstream_clients(census, http2)


@pytest.mark.parametrize("http2", HTTP_VERSIONS, ids=HTTP_VERSION_IDS)
async def test_concurrent_requests_with_the_recipe(
    census: TLSStreamCensus, tmp_path: Path, http2: bool
) -> None:
    sizes = [size * 1000 + size for size in range(40)]
    # The recipe asks for HTTP/2; for HTTP/1.1 the server does not offer it.
    alpn_protocols = ["h2", "http/1.1"] if http2 else ["http/1.1"]
    async with hypercorn_serving(ContentApp(), tmp_path, alpn_protocols=alpn_protocols) as server:
        urls = [f"{server.url}/bytes/{size}" for size in sizes]
        with trio.fail_after(WAIT):
            bodies = await httpx_recipe.fetch_all(urls, server.contexts.client)
    assert bodies == [pattern(size) for size in sizes]
    assert_tlsstream_clients(census, http2)


async def test_recipe_program(
    census: TLSStreamCensus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with hypercorn_serving(ContentApp(), tmp_path) as server:
        urls = [f"{server.url}/bytes/{size}" for size in (0, 5, 70000)]
        with trio.fail_after(WAIT):
            # main() runs trio.run() of its own: in a thread, while this
            # test's run serves. (It injects again: a no-op here.)
            await trio.to_thread.run_sync(httpx_recipe.main, urls, server.cafile)
    assert capsys.readouterr().out.splitlines() == [
        f"{urls[0]}: 0 bytes",
        f"{urls[1]}: 5 bytes",
        f"{urls[2]}: 70000 bytes",
    ]
    assert_tlsstream_clients(census, http2=True)


# ------------------------------------------------ cancelled and retried


@pytest.mark.parametrize("http2", HTTP_VERSIONS, ids=HTTP_VERSION_IDS)
async def test_requests_that_time_out_are_retried_on_the_same_client(
    census: TLSStreamCensus, tmp_path: Path, http2: bool
) -> None:
    app = ContentApp()
    async with hypercorn_serving(app, tmp_path) as server:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient(verify=server.contexts.client, http2=http2) as client:
                # httpx's own timeout, twice, then the answer (recipe).
                with pytest.raises(httpx.ReadTimeout):
                    await httpx_recipe.get_with_retries(
                        client, f"{server.url}/stall", attempts=2, seconds_per_attempt=0.2
                    )
                assert app.stalled_requests == 2
                response = await httpx_recipe.get_with_retries(client, f"{server.url}/bytes/7")
                assert response.content == pattern(7)

                # A trio cancel scope, cancelled once the server has the request.
                for _ in range(3):
                    with trio.CancelScope() as scope:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(client.get, f"{server.url}/stall")
                            await app.stalled.wait()
                            scope.cancel()
                    assert scope.cancelled_caught
                assert app.stalled_requests == 5

                # The client goes on answering correctly, one at a time and at once.
                for size in (0, 1, 65536, 1_000_000):
                    assert (await client.get(f"{server.url}/bytes/{size}")).content == pattern(size)
                async with trio.open_nursery() as nursery:
                    for size in range(20):
                        nursery.start_soon(expect_bytes, client, f"{server.url}/bytes/{size}", size)
    assert_tlsstream_clients(census, http2)


async def expect_bytes(client: httpx.AsyncClient, url: str, size: int) -> None:
    response = await client.get(url)
    assert response.content == pattern(size)


@pytest.mark.parametrize("http2", HTTP_VERSIONS, ids=HTTP_VERSION_IDS)
async def test_upload_cancelled_midway_then_retried(
    census: TLSStreamCensus, tmp_path: Path, http2: bool
) -> None:
    # On HTTP/2 httpcore keeps the connection of the cancelled request and
    # sends the retry over it. Over trio.SSLStream, whose send_all was cut
    # off mid-record, that connection is broken and the retry fails with
    # httpx.WriteError; over TLSStream the pinned remainder goes out first.
    body = os.urandom(20 * 1024 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    app = ContentApp()
    async with hypercorn_serving(app, tmp_path) as server:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient(verify=server.contexts.client, http2=http2) as client:
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            functools.partial(client.post, server.url, content=chunks())
                        )
                        while app.uploaded < 1024 * 1024:
                            await app.upload_progress.wait()
                        scope.cancel()  # in the middle of the upload
                assert scope.cancelled_caught
                assert app.uploaded < len(body)
                response = await client.post(server.url, content=chunks())
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()
    assert_tlsstream_clients(census, http2)
