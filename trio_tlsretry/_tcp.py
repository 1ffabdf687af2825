"""TLS over TCP: the ``open_ssl_over_tcp_*`` / ``serve_ssl_over_tcp`` counterparts."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Awaitable, Callable

import trio

from ._listener import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_HANDSHAKES,
    GracefulStop,
    TLSListener,
    _check_timeout,
    _handshake_limiter,
    handshaking_handler,
)
from ._stream import TLSStream

__all__ = ["open_tls_over_tcp_listeners", "open_tls_over_tcp_stream", "serve_tls_over_tcp"]


async def open_tls_over_tcp_stream(
    host: str | bytes,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    https_compatible: bool = False,
    happy_eyeballs_delay: float | None = 0.25,
) -> TLSStream[trio.SocketStream]:
    """Open a TCP connection to ``host``:``port`` and wrap it in a client :class:`TLSStream`.

    The counterpart of :func:`trio.open_ssl_over_tcp_stream`. The handshake
    has not happened yet when this returns; it runs on the first send or
    receive, or when you call :meth:`TLSStream.do_handshake` (do so to get
    certificate errors at a predictable place).

    Args:
      host: the host to connect to; also the name the server's certificate is
        verified against and sent as SNI.
      port: the TCP port.
      ssl_context: the client context; ``ssl.create_default_context()`` (the
        system's CAs, host-name checking on) when ``None``.
      https_compatible: see :class:`TLSStream`.
      happy_eyeballs_delay: see :func:`trio.open_tcp_stream`. An IP address
        as ``host`` is connected to directly, with nothing to race.

    Raises:
      OSError: the TCP connection could not be made.
    """
    if ssl_context is None:
        ssl_context = ssl.create_default_context()
    address = _ip_literal(host)
    if address is None:
        transport = await trio.open_tcp_stream(
            host, port, happy_eyeballs_delay=happy_eyeballs_delay
        )
    else:
        transport = await _connect_to_address(address, port)
    try:
        return TLSStream(
            transport,
            ssl_context,
            server_hostname=host,
            https_compatible=https_compatible,
        )
    except BaseException:
        await trio.aclose_forcefully(transport)
        raise


def _ip_literal(host: str | bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.decode("ascii") if isinstance(host, bytes) else host)
    except (ValueError, UnicodeDecodeError):
        return None


async def _connect_to_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> trio.SocketStream:
    """Connect to one known address: no resolution, nothing to race.

    ``trio.open_tcp_stream`` resolves the host and runs happy eyeballs in a
    nursery even for a single numeric address; for a short-lived connection
    that costs about as much CPU as the rest of the TCP setup (see
    docs/performance.rst). Failures raise ``OSError``, as there.
    """
    family = trio.socket.AF_INET if address.version == 4 else trio.socket.AF_INET6
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((str(address), port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def open_tls_over_tcp_listeners(
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    host: str | bytes | None = None,
    https_compatible: bool = False,
    backlog: int | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_handshakes: int | trio.CapacityLimiter | None = DEFAULT_MAX_HANDSHAKES,
    prompt_session_tickets: bool = False,
) -> list[TLSListener[trio.SocketStream]]:
    """Listen on ``port`` and return one :class:`TLSListener` per bound address.

    The counterpart of :func:`trio.open_ssl_over_tcp_listeners`; ``port``,
    ``host`` and ``backlog`` mean what they mean for
    :func:`trio.open_tcp_listeners` (port 0 picks a free port; read it from
    ``listeners[0].transport_listener.socket.getsockname()``).
    ``handshake_timeout`` is stored on each listener, and
    ``https_compatible`` and ``prompt_session_tickets`` are passed to them
    (see :class:`TLSListener`). ``max_handshakes`` is one limit shared by
    all the listeners (the addresses share the CPU): they get the same
    :attr:`TLSListener.handshake_limiter`.

    Raises:
      ValueError, TypeError: as :class:`TLSListener`, before anything is bound.
      OSError: as :func:`trio.open_tcp_listeners`.
    """
    _check_timeout(handshake_timeout)
    limiter = _handshake_limiter(max_handshakes)
    tcp_listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    try:
        return [
            TLSListener(
                tcp,
                ssl_context,
                https_compatible=https_compatible,
                handshake_timeout=handshake_timeout,
                max_handshakes=limiter,
                prompt_session_tickets=prompt_session_tickets,
            )
            for tcp in tcp_listeners
        ]
    except BaseException:
        for tcp in tcp_listeners:
            await trio.aclose_forcefully(tcp)
        raise


async def serve_tls_over_tcp(
    handler: Callable[[TLSStream[trio.SocketStream]], Awaitable[object]],
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    host: str | bytes | None = None,
    https_compatible: bool = False,
    backlog: int | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_handshakes: int | trio.CapacityLimiter | None = DEFAULT_MAX_HANDSHAKES,
    prompt_session_tickets: bool = False,
    graceful_stop: GracefulStop | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[TLSListener[trio.SocketStream]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve TLS over TCP on ``port``, calling ``handler(stream)`` for each connection.

    The counterpart of :func:`trio.serve_ssl_over_tcp`, with deliberate
    differences: each connection first completes its TLS handshake in its
    own task, within ``handshake_timeout`` seconds and with at most
    ``max_handshakes`` handshakes running at once, and ``handler`` only ever
    sees streams whose handshake succeeded (so ``stream.getpeercert()`` and
    friends work at once); the stream is closed once the handler ends; and a
    :class:`GracefulStop` can end the server gracefully.

    * A client that connects and sends nothing, or sends its handshake one
      byte at a time, is dropped after ``handshake_timeout`` seconds. It only
      occupies its own task, so other clients are accepted and served
      meanwhile.
    * Beyond ``max_handshakes`` handshakes in progress, new connections wait
      for their turn, in order, without using the CPU; the wait counts
      against their ``handshake_timeout``. Established connections stay
      responsive under a flood of new ones (:doc:`/performance-flood`).
    * A failed handshake (bad certificate, protocol mismatch, plain text
      instead of TLS, the client hanging up) closes that connection quietly;
      it never reaches ``handler`` and never takes the server down.
    * An exception raised by ``handler`` itself is *not* caught: as with
      :func:`trio.serve_listeners` it propagates and stops the whole server.
      That keeps bugs visible; catch what you expect (e.g.
      :class:`trio.BrokenResourceError` when a client vanishes) inside your
      handler, or pass a ``handler_nursery`` of your own.
    * ``handler`` owns the stream while it runs. When it ends (returns,
      raises or is cancelled) the stream is closed if it is still open, with
      ``close_notify``, in a shielded scope of at most two seconds
      (``graceful_stop.close_timeout`` when given).

    Use it with :meth:`trio.Nursery.start` to learn the bound listeners::

        listeners = await nursery.start(serve_tls_over_tcp, handler, 0, ctx)
        port = listeners[0].transport_listener.socket.getsockname()[1]

    Runs until cancelled, or, with ``graceful_stop``, until that is stopped
    and every connection has ended; the listeners are closed on the way out.
    To renew the certificate while it runs, assign a new context to each
    listener's :attr:`TLSListener.ssl_context`.

    Args:
      handler: ``async def handler(stream: TLSStream)``.
      port, host, backlog: as for :func:`trio.open_tcp_listeners`.
      ssl_context: a server-side :class:`ssl.SSLContext`.
      https_compatible: see :class:`TLSStream`.
      handshake_timeout: seconds each connection gets for its handshake
        (waiting for its turn included); ``math.inf`` disables the limit.
      max_handshakes: handshakes in progress at once, over all the
        listeners (default :data:`DEFAULT_MAX_HANDSHAKES`); ``None`` for no
        limit, or a :class:`trio.CapacityLimiter` to share.
      prompt_session_tickets: see :class:`TLSStream`: safe only when every
        client reads or drains before it closes.
      graceful_stop: a :class:`GracefulStop` that ends the server gracefully.
      handler_nursery: as for :func:`trio.serve_listeners`.
      task_status: reports the list of :class:`TLSListener` once listening.

    Raises:
      ValueError, TypeError: bad arguments, before anything is bound.
      OSError: the port cannot be bound.
    """
    listeners = await open_tls_over_tcp_listeners(
        port,
        ssl_context,
        host=host,
        https_compatible=https_compatible,
        backlog=backlog,
        handshake_timeout=handshake_timeout,
        max_handshakes=max_handshakes,
        prompt_session_tickets=prompt_session_tickets,
    )
    handle = handshaking_handler(handler, handshake_timeout, graceful_stop)
    try:
        # The sockets listen already: connections queue in the backlog
        # until the accept loops run.
        task_status.started(listeners)
        async with trio.open_nursery() as own_handlers:
            handlers = own_handlers if handler_nursery is None else handler_nursery
            with trio.CancelScope() as accepting:
                if graceful_stop is not None:
                    graceful_stop._add_accept_scope(accepting)
                try:
                    await trio.serve_listeners(handle, listeners, handler_nursery=handlers)
                finally:
                    # serve_listeners closes each listener as its loop ends;
                    # this covers a loop that never started. (Shielded: in a
                    # cancelled scope aclose_forcefully would raise Cancelled.)
                    with trio.CancelScope(shield=True):
                        for listener in listeners:
                            await trio.aclose_forcefully(listener)
                    if graceful_stop is not None:
                        graceful_stop._remove_accept_scope(accepting)
            # Only a graceful stop gets here (an outer cancellation raises):
            # leaving the nursery waits for the connections, whose scopes
            # carry the grace deadline.
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
