"""``TLSListener``: accept connections and wrap each in a server-side ``TLSStream``.

Also what a long-running server needs around it: the limit on handshakes in
progress (``max_handshakes``) and :class:`GracefulStop`.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ._stream import T_Stream, TLSStream

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_HANDSHAKES",
    "GracefulStop",
    "TLSListener",
    "handshake_or_drop",
]

#: Seconds a new connection gets to finish its TLS handshake under
#: :func:`~trio_tlsretry.serve_tls_over_tcp`.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0

#: Handshakes a :class:`TLSListener` (and so
#: :func:`~trio_tlsretry.serve_tls_over_tcp`) runs at once; more connections
#: wait their turn, in order. Chosen by measurement: see
#: :doc:`/performance-flood`.
DEFAULT_MAX_HANDSHAKES: Final = 8

#: Seconds :meth:`GracefulStop.stop` gives open connections by default.
DEFAULT_GRACE: Final = 30.0

#: Seconds :class:`GracefulStop` gives a connection to send its
#: ``close_notify`` by default, once its handler has returned or was cancelled.
DEFAULT_CLOSE_TIMEOUT: Final = 2.0


def _check_timeout(handshake_timeout: float) -> float:
    timeout = float(handshake_timeout)
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"handshake_timeout must be > 0 (or math.inf), not {handshake_timeout!r}")
    return timeout


def _check_seconds(name: str, value: float) -> float:
    """``value`` as a float if it is a number of seconds >= 0 (``math.inf`` included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be >= 0 (or math.inf), not {value!r}")
    return seconds


def _handshake_limiter(
    max_handshakes: int | trio.CapacityLimiter | None,
) -> trio.CapacityLimiter | None:
    """The limiter for ``max_handshakes``: made for an int, as given for a limiter."""
    if max_handshakes is None or isinstance(max_handshakes, trio.CapacityLimiter):
        return max_handshakes
    if isinstance(max_handshakes, bool) or not isinstance(max_handshakes, int):
        raise TypeError(
            f"max_handshakes must be an int, a trio.CapacityLimiter or None, not {max_handshakes!r}"
        )
    if max_handshakes < 1:
        raise ValueError(f"max_handshakes must be >= 1 (None for no limit), not {max_handshakes!r}")
    return trio.CapacityLimiter(max_handshakes)


def _check_server_context(ssl_context: ssl.SSLContext) -> ssl.SSLContext:
    # Fail at start-up (or at the swap), not on every accepted connection,
    # when the context cannot act as a server (e.g. a client context from
    # ssl.create_default_context()).
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, not {ssl_context!r}")
    try:
        ssl_context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    except ssl.SSLError as exc:
        raise ValueError(f"ssl_context cannot make server-side connections: {exc}") from exc
    return ssl_context


class TLSListener(trio.abc.Listener[TLSStream[T_Stream]]):
    """A :class:`trio.abc.Listener` that hands out server-side :class:`TLSStream`\\ s.

    The counterpart of :class:`trio.SSLListener`, and generic in the same way:
    ``TLSListener[trio.SocketStream]`` accepts ``TLSStream[trio.SocketStream]``.
    Like it, :meth:`accept` returns as soon as the transport listener has a
    connection and does *not* perform the handshake: a slow or silent client
    must never hold up the accept loop, which serves every other client too. The handshake happens
    later, in the connection's own task: explicitly with
    :meth:`TLSStream.do_handshake`, or implicitly on the first send or
    receive.

    ``handshake_timeout`` is not enforced by :meth:`accept` (which has no
    per-connection task to enforce it in). It is the limit applied by
    :func:`handshake_or_drop`, which :func:`~trio_tlsretry.serve_tls_over_tcp`
    runs in each connection's task before calling the handler; if you write
    your own accept loop, call :func:`handshake_or_drop` with
    ``listener.handshake_timeout`` yourself.

    ``max_handshakes`` *is* enforced wherever the handshake runs: every
    accepted stream shares :attr:`handshake_limiter`, holds one of its
    tokens while its handshake runs, and before that waits for one, in the
    order the connections asked, without using the CPU. The wait is part of
    the handshake, so the handshake timeout counts it. See
    :doc:`/performance-flood` for why the limit exists and how the default
    was chosen.

    Args:
      transport_listener: the listener for the ciphertext transport, usually a
        :class:`trio.SocketListener`.
      ssl_context: a server-side :class:`ssl.SSLContext` with a certificate
        loaded (for instance from
        ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``). It can be
        replaced later: see :attr:`ssl_context`.
      https_compatible: passed on to every :class:`TLSStream`.
      handshake_timeout: seconds each connection gets to complete its
        handshake; ``math.inf`` for no limit.
      max_handshakes: how many accepted connections may run their handshake
        at once (default :data:`DEFAULT_MAX_HANDSHAKES`); ``None`` for no
        limit; or a :class:`trio.CapacityLimiter` to share one limit among
        several listeners (:func:`~trio_tlsretry.open_tls_over_tcp_listeners`
        shares one among the listeners it opens).
      prompt_session_tickets: passed on to every :class:`TLSStream`: send
        TLS 1.3 session tickets right after the handshake. Safe only when
        every client reads or drains before it closes; see
        :class:`TLSStream`.

    Raises:
      ValueError: ``handshake_timeout`` is not positive, ``max_handshakes``
        is below 1, or ``ssl_context`` cannot make server-side connections.
      TypeError: ``max_handshakes`` is not an int, a
        :class:`trio.CapacityLimiter` or ``None``.
    """

    def __init__(
        self,
        transport_listener: trio.abc.Listener[T_Stream],
        ssl_context: ssl.SSLContext,
        *,
        https_compatible: bool = False,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_handshakes: int | trio.CapacityLimiter | None = DEFAULT_MAX_HANDSHAKES,
        prompt_session_tickets: bool = False,
    ) -> None:
        self._ssl_context = _check_server_context(ssl_context)
        #: The listener that produces the ciphertext transports.
        self.transport_listener = transport_listener
        #: Passed on to every accepted :class:`TLSStream`.
        self.https_compatible = https_compatible
        #: The handshake limit that :func:`handshake_or_drop` applies.
        self.handshake_timeout = _check_timeout(handshake_timeout)
        #: The :class:`trio.CapacityLimiter` every accepted stream's
        #: handshake holds a token of (``None``: no limit). Its
        #: ``total_tokens`` may be changed while the listener runs; its
        #: ``statistics()`` tell how many handshakes run and wait.
        self.handshake_limiter = _handshake_limiter(max_handshakes)
        #: Passed on to every accepted :class:`TLSStream`.
        self.prompt_session_tickets = prompt_session_tickets

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context the next accepted :class:`TLSStream` gets.

        Assign a new server context to renew the certificate without a
        restart: connections accepted from then on handshake with it, those
        accepted before keep the context they were made with (their
        handshake included, if it has not run yet). The assignment is
        atomic, as a new context is fully loaded before it is assigned;
        loading a new chain into the context in use
        (``load_cert_chain`` on it) is not, since a failure half-way may
        leave it with a certificate and a key that do not match.

        Raises:
          ValueError: on assignment, the context cannot make server-side
            connections (the old one stays).
          TypeError: on assignment, not an :class:`ssl.SSLContext`.
        """
        return self._ssl_context

    @ssl_context.setter
    def ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl_context = _check_server_context(ssl_context)

    async def accept(self) -> TLSStream[T_Stream]:
        """Wait for a connection and return it as a server-side :class:`TLSStream`.

        The handshake has not started yet (see the class description).
        """
        transport = await self.transport_listener.accept()
        try:
            return TLSStream(
                transport,
                self._ssl_context,
                server_side=True,
                https_compatible=self.https_compatible,
                prompt_session_tickets=self.prompt_session_tickets,
                handshake_limiter=self.handshake_limiter,
            )
        except BaseException:
            await trio.aclose_forcefully(transport)
            raise

    async def aclose(self) -> None:
        """Close the transport listener (connections already accepted stay open)."""
        await self.transport_listener.aclose()


async def handshake_or_drop(
    stream: TLSStream[Any], handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
) -> bool:
    """Complete the handshake of ``stream`` within ``handshake_timeout`` seconds.

    Returns ``True`` once the handshake is done. If it fails (a TLS error, a
    transport error, the peer hanging up) or does not finish in time (a
    client that sends nothing, or sends one byte a second), the stream is
    closed with :func:`trio.aclose_forcefully` and ``False`` is returned:
    the failure is that client's problem and is not raised. A cancellation
    from outside (server shutdown) still propagates, after closing the
    stream. The time the stream waits for its turn under a
    ``handshake_limiter`` counts against ``handshake_timeout``.
    """
    timeout = _check_timeout(handshake_timeout)
    try:
        with trio.move_on_after(timeout):
            await stream.do_handshake()
            return True
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    await trio.aclose_forcefully(stream)
    return False


class GracefulStop:
    """Stops :func:`~trio_tlsretry.serve_tls_over_tcp` gracefully.

    Create one, pass it as ``graceful_stop=``, and call :meth:`stop` when
    the server should end (on ``SIGTERM``, say)::

        stop = GracefulStop()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(
                serve_tls_over_tcp, handler, 8443, context, graceful_stop=stop))
            ...
            stop.stop(grace=30)
        # here every connection has ended

    :meth:`stop` makes the server, at once:

    1. stop accepting: its listening sockets are closed, so new connections
       are refused by the kernel;
    2. give the connections it serves (their handshakes included) ``grace``
       seconds to end by themselves; a handler that wants to end early (an
       idle keep-alive connection, say) can learn of the stop through
       :attr:`stop_requested` or :meth:`wait_stop_requested`;
    3. cancel the handlers still running when the grace period ends.

    Whenever a handler ends (returned, raised or cancelled), the server
    closes its stream if the handler did not, with ``close_notify``, in a
    shielded scope of ``close_timeout`` seconds (so a client that does not
    read cannot hold the stop up). A handler that closes the stream itself
    when it is cancelled (``async with stream:``) closes it without
    ``close_notify``, as any :meth:`TLSStream.aclose` in a cancelled scope
    does: leave the closing to the server, or close in a shielded scope.

    :func:`~trio_tlsretry.serve_tls_over_tcp` then returns, once every
    connection has ended (with a ``handler_nursery`` of your own: once the
    listeners are closed; the handlers keep running in your nursery, under
    the same deadline). Calling :meth:`stop` again can shorten the grace
    period, never lengthen it: ``stop(grace=0)`` cancels the handlers now.
    Cancelling the server from outside still works as before and ends
    everything at once.

    One :class:`GracefulStop` may serve several servers; it is meant for one
    stop (a stopped one stops every server that starts with it right away).
    Its methods must be called from within the Trio run (from another
    thread: ``trio.from_thread.run_sync(stop.stop)``).

    Args:
      close_timeout: seconds each stream gets to send its ``close_notify``
        once its handler has ended.

    Raises:
      ValueError: ``close_timeout`` is negative or NaN.
    """

    def __init__(self, *, close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        self._close_timeout = _check_seconds("close_timeout", close_timeout)
        self._requested = trio.Event()
        self._accepting_stopped = trio.Event()
        self._deadline = math.inf
        self._accept_scopes: set[trio.CancelScope] = set()
        self._connection_scopes: set[trio.CancelScope] = set()

    @property
    def close_timeout(self) -> float:
        """Seconds a stream gets to send its ``close_notify`` after its handler."""
        return self._close_timeout

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`stop` has been called."""
        return self._requested.is_set()

    @property
    def accepting(self) -> bool:
        """Whether a server using this object still has its listeners open."""
        return bool(self._accept_scopes)

    @property
    def deadline(self) -> float:
        """When (on Trio's clock) the handlers still running are cancelled.

        ``math.inf`` until :meth:`stop` is called.
        """
        return self._deadline

    @property
    def open_connections(self) -> int:
        """Connections being served (their handshakes included), over every server."""
        return len(self._connection_scopes)

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop accepting now; cancel the connections still open ``grace`` seconds later.

        Returns at once. ``math.inf`` waits for the connections however
        long they take; ``0`` cancels them now. A second call may shorten
        the grace period, not lengthen it.

        Raises:
          ValueError: ``grace`` is negative or NaN.
          TypeError: ``grace`` is not a number.
          RuntimeError: called outside the Trio run.
        """
        seconds = _check_seconds("grace", grace)
        now = trio.current_time()
        deadline = now + seconds
        if deadline < self._deadline:
            self._deadline = deadline
            for scope in self._connection_scopes:
                self._apply_deadline(scope)
        if not self._requested.is_set():
            self._requested.set()
            for scope in self._accept_scopes:
                scope.cancel()
            if not self._accept_scopes:
                self._accepting_stopped.set()

    async def wait_stop_requested(self) -> None:
        """Return once :meth:`stop` has been called."""
        await self._requested.wait()

    async def wait_accepting_stopped(self) -> None:
        """Return once :meth:`stop` has been called and every server's listeners are closed.

        From then on, new connections are refused.
        """
        await self._accepting_stopped.wait()

    # -- used by the server

    def _apply_deadline(self, scope: trio.CancelScope) -> None:
        if self._deadline <= trio.current_time():
            scope.cancel()
        else:
            scope.deadline = min(scope.deadline, self._deadline)

    def _add_accept_scope(self, scope: trio.CancelScope) -> None:
        self._accept_scopes.add(scope)
        if self._requested.is_set():
            scope.cancel()

    def _remove_accept_scope(self, scope: trio.CancelScope) -> None:
        self._accept_scopes.discard(scope)
        if self._requested.is_set() and not self._accept_scopes:
            self._accepting_stopped.set()

    def _add_connection_scope(self, scope: trio.CancelScope) -> None:
        self._connection_scopes.add(scope)
        if self._requested.is_set():
            self._apply_deadline(scope)

    def _remove_connection_scope(self, scope: trio.CancelScope) -> None:
        self._connection_scopes.discard(scope)


async def close_after_handler(stream: TLSStream[Any], close_timeout: float) -> None:
    """Close ``stream`` (a no-op if the handler did), with ``close_notify``, shielded.

    At most ``close_timeout`` seconds: then it is closed forcefully.
    """
    with trio.move_on_after(close_timeout, shield=True):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # A handshake that aclose ran and that failed, or a peer gone:
            # the stream is closed all the same.
            pass


def handshaking_handler(
    handler: Callable[[TLSStream[T_Stream]], Awaitable[object]],
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    graceful_stop: GracefulStop | None = None,
) -> Callable[[TLSStream[T_Stream]], Awaitable[None]]:
    """Wrap ``handler``: it only ever sees streams whose handshake succeeded.

    Each connection runs in a cancel scope that ``graceful_stop`` can put a
    deadline on, and its stream is closed once the handler ends.
    """
    timeout = _check_timeout(handshake_timeout)
    close_timeout = DEFAULT_CLOSE_TIMEOUT if graceful_stop is None else graceful_stop.close_timeout

    async def handle(stream: TLSStream[T_Stream]) -> None:
        with trio.CancelScope() as scope:
            if graceful_stop is not None:
                graceful_stop._add_connection_scope(scope)
            try:
                if await handshake_or_drop(stream, timeout):
                    await handler(stream)
            finally:
                try:
                    await close_after_handler(stream, close_timeout)
                finally:
                    if graceful_stop is not None:
                        graceful_stop._remove_connection_scope(scope)

    return handle
