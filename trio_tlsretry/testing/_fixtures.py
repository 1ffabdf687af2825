"""The fixtures behind the pytest plugin."""

from __future__ import annotations

import ssl

import pytest
import trustme

from .._stream import TLSStream
from ._pairs import TLSContexts, tls_memory_stream_pair


@pytest.fixture
def tls_contexts() -> TLSContexts:
    """A fresh CA with matching server and client contexts."""
    return TLSContexts()


@pytest.fixture
def tls_ca(tls_contexts: TLSContexts) -> trustme.CA:
    """The throw-away certificate authority of this test."""
    return tls_contexts.ca


@pytest.fixture
def tls_server_context(tls_contexts: TLSContexts) -> ssl.SSLContext:
    """A server context with a certificate for ``example.org``."""
    return tls_contexts.server


@pytest.fixture
def tls_client_context(tls_contexts: TLSContexts) -> ssl.SSLContext:
    """A client context that trusts :func:`tls_ca`."""
    return tls_contexts.client


@pytest.fixture
def tls_stream_pair(
    tls_client_context: ssl.SSLContext, tls_server_context: ssl.SSLContext
) -> tuple[TLSStream, TLSStream]:
    """``(client, server)`` TLSStreams over a memory stream pair."""
    return tls_memory_stream_pair(
        client_context=tls_client_context, server_context=tls_server_context
    )
