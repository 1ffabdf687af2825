"""TLS stream pairs over in-memory transports, with throw-away certificates."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TypeVar

import trio
import trio.testing
import trustme

from .._stream import TLSStream
from ._exact import exact_progress_stream_pair

__all__ = [
    "TLSContexts",
    "make_tls_contexts",
    "tls_memory_stream_pair",
    "tls_stream_pair_over",
]

_S = TypeVar("_S", bound=trio.abc.Stream)

#: The host name the default certificates are issued for.
DEFAULT_HOSTNAME = "example.org"


class TLSContexts:
    """A fresh trustme CA and matching server and client contexts.

    Attributes:
      ca: the :class:`trustme.CA` (issue more certificates from it).
      server: a server :class:`ssl.SSLContext` holding a certificate for
        ``hostname``.
      client: a client :class:`ssl.SSLContext` that trusts ``ca``.
      hostname: the name the server certificate is valid for.
    """

    def __init__(
        self,
        hostname: str = DEFAULT_HOSTNAME,
        *,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> None:
        self.hostname = hostname
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert(hostname)
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(self.server)
        self.client = ssl.create_default_context()
        self.ca.configure_trust(self.client)
        if maximum_version is not None:
            self.server.maximum_version = maximum_version
            self.client.maximum_version = maximum_version


def make_tls_contexts(
    hostname: str = DEFAULT_HOSTNAME, *, maximum_version: ssl.TLSVersion | None = None
) -> TLSContexts:
    """A new CA with a server certificate for ``hostname`` and both contexts."""
    return TLSContexts(hostname, maximum_version=maximum_version)


def tls_stream_pair_over(
    client_transport: trio.abc.Stream,
    server_transport: trio.abc.Stream,
    *,
    client_context: ssl.SSLContext | None = None,
    server_context: ssl.SSLContext | None = None,
    server_hostname: str = DEFAULT_HOSTNAME,
) -> tuple[TLSStream, TLSStream]:
    """``(client, server)`` TLSStreams over the two given transports.

    Missing contexts come from a fresh :class:`TLSContexts` for
    ``server_hostname``.
    """
    if client_context is None or server_context is None:
        contexts = TLSContexts(server_hostname)
        client_context = client_context or contexts.client
        server_context = server_context or contexts.server
    client = TLSStream(client_transport, client_context, server_hostname=server_hostname)
    server = TLSStream(server_transport, server_context, server_side=True)
    return client, server


def tls_memory_stream_pair(
    *,
    client_context: ssl.SSLContext | None = None,
    server_context: ssl.SSLContext | None = None,
    server_hostname: str = DEFAULT_HOSTNAME,
    lockstep: bool = False,
    exact_progress: bool = False,
    capacity: int = 64 * 1024,
) -> tuple[TLSStream, TLSStream]:
    """``(client, server)`` TLSStreams connected through memory.

    The transport is :func:`trio.testing.memory_stream_pair` by default,
    :func:`trio.testing.lockstep_stream_pair` with ``lockstep=True`` (every
    send waits for the peer to receive), or
    :func:`~trio_tlsretry.testing.exact_progress_stream_pair` with
    ``exact_progress=True`` (``capacity`` bytes of buffer a direction). No
    handshake has happened yet; both ends may be used at once from two tasks.
    """
    if lockstep and exact_progress:
        raise ValueError("choose lockstep or exact_progress, not both")
    maker: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]
    if lockstep:
        maker = trio.testing.lockstep_stream_pair
    elif exact_progress:
        maker = lambda: exact_progress_stream_pair(capacity)  # noqa: E731
    else:
        maker = trio.testing.memory_stream_pair
    client_transport, server_transport = maker()
    return tls_stream_pair_over(
        client_transport,
        server_transport,
        client_context=client_context,
        server_context=server_context,
        server_hostname=server_hostname,
    )
