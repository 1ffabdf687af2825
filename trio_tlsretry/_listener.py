"""``TLSListener``: accept connections and wrap each in a server-side ``TLSStream``."""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ._stream import T_Stream, TLSStream

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "TLSListener", "handshake_or_drop"]

#: Seconds a new connection gets to finish its TLS handshake under
#: :func:`~trio_tlsretry.serve_tls_over_tcp`.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0


def _check_timeout(handshake_timeout: float) -> float:
    timeout = float(handshake_timeout)
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"handshake_timeout must be > 0 (or math.inf), not {handshake_timeout!r}")
    return timeout


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

    Args:
      transport_listener: the listener for the ciphertext transport, usually a
        :class:`trio.SocketListener`.
      ssl_context: a server-side :class:`ssl.SSLContext` with a certificate
        loaded (for instance from
        ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``).
      https_compatible: passed on to every :class:`TLSStream`.
      handshake_timeout: seconds each connection gets to complete its
        handshake; ``math.inf`` for no limit.

    Raises:
      ValueError: ``handshake_timeout`` is not positive, or ``ssl_context``
        cannot make server-side connections.
    """

    def __init__(
        self,
        transport_listener: trio.abc.Listener[T_Stream],
        ssl_context: ssl.SSLContext,
        *,
        https_compatible: bool = False,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        # Fail at start-up, not on every accepted connection, when the context
        # cannot act as a server (e.g. a client context from
        # ssl.create_default_context()).
        try:
            ssl_context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
        except ssl.SSLError as exc:
            raise ValueError(f"ssl_context cannot make server-side connections: {exc}") from exc
        #: The listener that produces the ciphertext transports.
        self.transport_listener = transport_listener
        #: The context every accepted :class:`TLSStream` uses.
        self.ssl_context = ssl_context
        #: Passed on to every accepted :class:`TLSStream`.
        self.https_compatible = https_compatible
        #: The handshake limit that :func:`handshake_or_drop` applies.
        self.handshake_timeout = _check_timeout(handshake_timeout)

    async def accept(self) -> TLSStream[T_Stream]:
        """Wait for a connection and return it as a server-side :class:`TLSStream`.

        The handshake has not started yet (see the class description).
        """
        transport = await self.transport_listener.accept()
        try:
            return TLSStream(
                transport,
                self.ssl_context,
                server_side=True,
                https_compatible=self.https_compatible,
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
    stream.
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


def handshaking_handler(
    handler: Callable[[TLSStream[T_Stream]], Awaitable[object]],
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> Callable[[TLSStream[T_Stream]], Awaitable[None]]:
    """Wrap ``handler`` so it only ever sees streams whose handshake succeeded."""
    timeout = _check_timeout(handshake_timeout)

    async def handle(stream: TLSStream[T_Stream]) -> None:
        if await handshake_or_drop(stream, timeout):
            await handler(stream)

    return handle
