"""trio-websocket over wss:// through TLSStream, on both ends.

trio-websocket opens client connections with ``trio.open_ssl_over_tcp_stream``
and listeners with ``trio.open_ssl_over_tcp_listeners`` (both
``https_compatible=True``), and tells TLS listeners and streams apart with
``isinstance(..., trio.SSLListener)`` / ``trio.SSLStream``; while injected,
all of these are this library's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
from integration_tools import (
    HOST,
    TLS_VERSION_IDS,
    TLS_VERSIONS,
    WAIT,
    TLSStreamCensus,
    client_context,
    contexts_for,
    tlsstream_census,
    version_name,
)
from streamtools import load_docs_example
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from trio_tlsretry.testing import TLSContexts

census = pytest.fixture(tlsstream_census)
websocket_recipe = load_docs_example("integration_websocket")

SIZES = [0, 1, 16383, 16384, 65536, 1024 * 1024, 4 * 1024 * 1024]
Handler = Callable[[WebSocketRequest], Awaitable[None]]


@pytest.fixture
def contexts() -> TLSContexts:
    return contexts_for()


@pytest.fixture
async def echo_url(census: TLSStreamCensus, contexts: TLSContexts) -> AsyncIterator[str]:
    """The recipe's echo server, on loopback (made while injected)."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            server = await nursery.start(websocket_recipe.serve, HOST, 0, contexts.server)
        yield f"wss://{HOST}:{server.port}/"
        nursery.cancel_scope.cancel()


@functools.cache
def message_of(size: int, text: bool) -> str | bytes:
    data = os.urandom(size)
    return data.hex()[:size] if text else data


def connect(
    url: str, context: ssl.SSLContext
) -> contextlib.AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket_url(url, context, max_message_size=websocket_recipe.MAX_MESSAGE_SIZE)


def assert_both_ends_were_tlsstreams(census: TLSStreamCensus, connections: int) -> None:
    assert len(census.side(server_side=True)) == connections
    assert len(census.side(server_side=False)) == connections
    assert census.plaintext_received(server_side=True) > 0
    assert census.plaintext_received(server_side=False) > 0


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_VERSION_IDS)
async def test_messages_from_0_bytes_to_4_MiB_both_ways(
    census: TLSStreamCensus, contexts: TLSContexts, echo_url: str, version: ssl.TLSVersion
) -> None:
    context = client_context(contexts, version)
    with trio.fail_after(WAIT):
        async with connect(echo_url, context) as connection:
            for text in (False, True):
                for size in SIZES:
                    message = message_of(size, text)
                    await connection.send_message(message)
                    assert await connection.get_message() == message
    assert_both_ends_were_tlsstreams(census, 1)
    total = 2 * sum(SIZES)
    for server_side in (True, False):
        (stream,) = census.side(server_side=server_side)
        assert stream.version() == version_name(version)
        assert stream.statistics().plaintext_bytes_received > total
        assert stream.statistics().plaintext_bytes_sent > total


async def test_concurrent_clients(
    census: TLSStreamCensus, contexts: TLSContexts, echo_url: str
) -> None:
    clients, messages = 20, 5

    async def client(number: int) -> None:
        async with connect(echo_url, contexts.client) as connection:
            for index in range(messages):
                message = os.urandom(1000 * number + index)
                await connection.send_message(message)
                assert await connection.get_message() == message

    with trio.fail_after(WAIT):
        # ...and the recipe's one-shot client meanwhile.
        assert await websocket_recipe.ask(echo_url, "hello", contexts.client) == "hello"
        async with trio.open_nursery() as nursery:
            for number in range(clients):
                nursery.start_soon(client, number)
    assert_both_ends_were_tlsstreams(census, clients + 1)


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_VERSION_IDS)
async def test_server_pushes_then_closes_with_a_code(
    census: TLSStreamCensus, contexts: TLSContexts, version: ssl.TLSVersion
) -> None:
    pushes = [os.urandom(size) for size in SIZES]

    async def push(request: WebSocketRequest) -> None:
        connection = await request.accept()
        for message in pushes:
            await connection.send_message(message)
        await connection.aclose(4001, "server going away")

    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            server = await nursery.start(
                functools.partial(
                    serve_websocket,
                    max_message_size=websocket_recipe.MAX_MESSAGE_SIZE,
                ),
                push,
                HOST,
                0,
                contexts.server,
            )
            url = f"wss://{HOST}:{server.port}/"
            async with connect(url, client_context(contexts, version)) as connection:
                for message in pushes:  # nothing asked for: the server pushes
                    assert await connection.get_message() == message
                with pytest.raises(ConnectionClosed) as closed:
                    await connection.get_message()
        nursery.cancel_scope.cancel()
    assert_close_reason(closed.value.reason, 4001, "server going away")
    assert_both_ends_were_tlsstreams(census, 1)


def assert_close_reason(reason: CloseReason | None, code: int, text: str) -> None:
    assert reason is not None
    assert (reason.code, reason.reason) == (code, text)


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_VERSION_IDS)
async def test_client_closes_with_a_code(
    census: TLSStreamCensus, contexts: TLSContexts, version: ssl.TLSVersion
) -> None:
    seen: list[CloseReason | None] = []
    handled = trio.Event()

    async def until_closed(request: WebSocketRequest) -> None:
        connection = await request.accept()
        try:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await connection.send_message(await connection.get_message())
            seen.append(closed.value.reason)
        finally:
            handled.set()

    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            server = await nursery.start(serve_websocket, until_closed, HOST, 0, contexts.server)
            url = f"wss://{HOST}:{server.port}/"
            async with connect(url, client_context(contexts, version)) as connection:
                await connection.send_message("ping")
                assert await connection.get_message() == "ping"
                await connection.aclose(4000, "client done")
            assert_close_reason(connection.closed, 4000, "client done")
            await handled.wait()
        nursery.cancel_scope.cancel()
    (reason,) = seen
    assert_close_reason(reason, 4000, "client done")
    assert_both_ends_were_tlsstreams(census, 1)


async def test_recipe_program(
    census: TLSStreamCensus,
    contexts: TLSContexts,
    echo_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cafile = str(tmp_path / "ca.pem")
    contexts.ca.cert_pem.write_to_path(cafile)
    with trio.fail_after(WAIT):
        # main() runs trio.run() of its own: in a thread, while this test's
        # run serves. (It injects again: a no-op here.)
        await trio.to_thread.run_sync(websocket_recipe.main, echo_url, "hello, TLSStream", cafile)
    assert capsys.readouterr().out == "hello, TLSStream\n"
    assert_both_ends_were_tlsstreams(census, 1)
