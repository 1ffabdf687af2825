"""The fixtures behind the pytest plugin.

Each test gets its own throw-away certificate authority, so tests never share
TLS state. The TLS fixtures are plain (synchronous) pytest fixtures: they
work with pytest-trio, and with any other way of running the async tests.
``fake_tcp_network`` and ``hang_guard`` are the exceptions: Trio keeps its
socket hooks per ``trio.run`` and a guard watches one run, so they can only
be set up inside the test's run, which takes pytest-trio's async fixtures.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trustme

from .._stream import TLSStream
from ._fakenet import FakeTCPNetwork
from ._hang import DEFAULT_HANG_SECONDS, DEFAULT_REAL_SECONDS, HangError, _wait_for_hang
from ._pairs import TLSContexts, tls_memory_stream_pair

__all__ = [
    "EXACT_PAIR_CAPACITY",
    "fake_tcp_network",
    "hang_guard",
    "tls_ca",
    "tls_client_context",
    "tls_contexts",
    "tls_exact_stream_pair",
    "tls_server_context",
    "tls_stream_pair",
]

#: The bytes each direction of ``tls_exact_stream_pair`` buffers: small
#: enough that a send of a few hundred KiB blocks until the peer reads.
EXACT_PAIR_CAPACITY = 16 * 1024


@pytest.fixture
def tls_contexts() -> TLSContexts:
    """A fresh :class:`~trio_tlsretry.testing.TLSContexts` for ``example.org``."""
    return TLSContexts()


@pytest.fixture
def tls_ca(tls_contexts: TLSContexts) -> trustme.CA:
    """The throw-away :class:`trustme.CA` of this test (issue more certificates from it)."""
    return tls_contexts.ca


@pytest.fixture
def tls_server_context(tls_contexts: TLSContexts) -> ssl.SSLContext:
    """A server :class:`ssl.SSLContext` with a certificate for ``example.org`` from ``tls_ca``."""
    return tls_contexts.server


@pytest.fixture
def tls_client_context(tls_contexts: TLSContexts) -> ssl.SSLContext:
    """A client :class:`ssl.SSLContext` that trusts ``tls_ca``."""
    return tls_contexts.client


@pytest.fixture
def tls_exact_stream_pair(
    tls_client_context: ssl.SSLContext, tls_server_context: ssl.SSLContext
) -> tuple[TLSStream[Any], TLSStream[Any]]:
    """``(client, server)`` TLSStreams over an exact-progress transport with small buffers.

    The pair for testing cancellation and retries. Each direction buffers
    16 KiB (``client.transport_stream.capacity`` changes the client's), so
    a larger ``send_all`` blocks until the peer reads, and a cancelled
    ``send_all`` can always be retried: the transport reports exactly what
    it accepted (:func:`~trio_tlsretry.testing.exact_progress_stream_pair`).
    The handshake has not happened yet: drive both ends from two tasks.
    """
    return tls_memory_stream_pair(
        client_context=tls_client_context,
        server_context=tls_server_context,
        exact_progress=True,
        capacity=EXACT_PAIR_CAPACITY,
    )


@pytest.fixture
def tls_stream_pair(
    tls_client_context: ssl.SSLContext, tls_server_context: ssl.SSLContext
) -> tuple[TLSStream[Any], TLSStream[Any]]:
    """``(client, server)`` TLSStreams over a memory stream pair, made from the two contexts.

    The handshake has not happened yet: it runs on the first operation, so
    drive both ends at once (from two tasks), as with real peers.

    Not for testing cancellation: the transport buffers without limit, so a
    ``send_all`` never waits for the peer and a timeout around it never
    fires; and its sends are not cancel-atomic, so a send cancelled part-way
    breaks the stream. Use ``tls_exact_stream_pair`` for that.
    """
    return tls_memory_stream_pair(
        client_context=tls_client_context, server_context=tls_server_context
    )


@pytest.fixture
async def fake_tcp_network() -> AsyncIterator[FakeTCPNetwork]:
    """A :class:`~trio_tlsretry.testing.FakeTCPNetwork`, installed for the test's ``trio.run``.

    Every ``trio.open_tcp_stream``, listener and name lookup of the test
    goes through it; only ``localhost`` exists until the test adds hosts.
    Needs pytest-trio (an async fixture).
    """
    with FakeTCPNetwork() as network:
        yield network


@pytest.fixture
async def hang_guard() -> AsyncIterator[None]:
    """Fail the test with :exc:`~trio_tlsretry.testing.HangError` instead of hanging.

    The same limits as :func:`~trio_tlsretry.testing.fail_on_hang` with its
    defaults (600 s on Trio's clock, 60 s of real time): under the autojump
    clock a test whose tasks all wait forever fails at once, with a list of
    where each task was waiting. Needs pytest-trio (an async fixture).
    """
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            raise HangError(await _wait_for_hang(DEFAULT_HANG_SECONDS, DEFAULT_REAL_SECONDS))

        nursery.start_soon(watch)
        yield
        nursery.cancel_scope.cancel()
