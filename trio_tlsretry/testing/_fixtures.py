"""The fixtures behind the pytest plugin.

Each test gets its own throw-away certificate authority, so tests never share
TLS state. The TLS fixtures are plain (synchronous) pytest fixtures: they
work with pytest-trio, and with any other way of running the async tests.
``fake_tcp_network`` is the exception: Trio keeps its socket hooks per
``trio.run``, so the network can only be installed inside the test's run,
which takes pytest-trio's async fixtures.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme

from .._stream import TLSStream
from ._fakenet import FakeTCPNetwork
from ._pairs import TLSContexts, tls_memory_stream_pair

__all__ = [
    "fake_tcp_network",
    "tls_ca",
    "tls_client_context",
    "tls_contexts",
    "tls_server_context",
    "tls_stream_pair",
]


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
def tls_stream_pair(
    tls_client_context: ssl.SSLContext, tls_server_context: ssl.SSLContext
) -> tuple[TLSStream[Any], TLSStream[Any]]:
    """``(client, server)`` TLSStreams over a memory stream pair, made from the two contexts.

    The handshake has not happened yet: it runs on the first operation, so
    drive both ends at once (from two tasks), as with real peers.
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
