"""TLS stream pairs over in-memory transports, with throw-away certificates."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, TypeVar

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

    Both contexts come from :func:`ssl.create_default_context`, so they
    behave like production ones (certificate and host-name checks on). Change
    them before the streams are made, e.g. ``contexts.client.set_alpn_protocols(...)``.

    Args:
      hostname: the name the server certificate is issued for.
      maximum_version: if given, the highest TLS version both contexts allow
        (``ssl.TLSVersion.TLSv1_2`` to test TLS 1.2 paths).

    Attributes:
      ca: the :class:`trustme.CA` (issue more certificates from it).
      server_cert: the :class:`trustme.LeafCert` of the server.
      server: a server :class:`ssl.SSLContext` holding ``server_cert``.
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
    """A new CA with a server certificate for ``hostname`` and both contexts.

    The same as ``TLSContexts(hostname, maximum_version=maximum_version)``.
    Making a CA and a certificate takes a few milliseconds; share one
    ``TLSContexts`` between many pairs when a test makes a lot of them.
    """
    return TLSContexts(hostname, maximum_version=maximum_version)


def tls_stream_pair_over(
    client_transport: trio.abc.Stream,
    server_transport: trio.abc.Stream,
    *,
    client_context: ssl.SSLContext | None = None,
    server_context: ssl.SSLContext | None = None,
    server_hostname: str = DEFAULT_HOSTNAME,
) -> tuple[TLSStream[Any], TLSStream[Any]]:
    """``(client, server)`` TLSStreams over the two given transports.

    Use it to put a TLSStream over any transport, for instance over the fault
    wrappers of this package. Pass both contexts or neither: missing ones
    come from a fresh :class:`TLSContexts` for ``server_hostname``, whose CA
    a context you pass yourself does not know.

    Args:
      client_transport: the transport of the client end.
      server_transport: the transport of the server end.
      client_context: the client's context.
      server_context: the server's context.
      server_hostname: the name the client checks and sends as SNI.
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
) -> tuple[TLSStream[Any], TLSStream[Any]]:
    """``(client, server)`` TLSStreams connected through memory.

    With no contexts, a fresh trustme CA issues a certificate for
    ``server_hostname`` and the client trusts that CA, so the handshake
    verifies the certificate and the host name like a real one. Pass both
    contexts or neither (see :func:`tls_stream_pair_over`).

    No handshake has happened yet: it runs on the first operation, so drive
    the two ends from two tasks, as with real peers.

    Args:
      client_context: the client's context.
      server_context: the server's context.
      server_hostname: the name the client checks and sends as SNI.
      lockstep: use :func:`trio.testing.lockstep_stream_pair` (no buffering:
        every send waits until the peer receives it).
      exact_progress: use :func:`~trio_tlsretry.testing.exact_progress_stream_pair`,
        with which every cancelled send of the TLSStream is recoverable.
      capacity: with ``exact_progress``, the bytes each direction buffers; a
        small value splits every TLS send into many cancellable pieces.

    By default the transport is :func:`trio.testing.memory_stream_pair`
    (unbounded buffering, not cancel-atomic on send).

    Raises:
      ValueError: both ``lockstep`` and ``exact_progress`` were given.
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
