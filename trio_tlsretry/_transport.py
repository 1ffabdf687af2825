"""How ciphertext is handed to a transport, and what a cancellation costs.

Trio's ``SendStream.send_all`` is not cancel-atomic: when it is cancelled,
some unknown prefix of the data may already be on the wire. A TLS stream that
cannot know how much of a record went out can never send the rest, so over an
arbitrary transport such a cancellation has to break the stream.

Two kinds of transport tell us exactly what was sent, and over them a
cancelled send costs nothing:

* :class:`ExactProgressStream`, whose ``send_some`` reports how many bytes it
  sent and sends nothing if cancelled;
* :class:`trio.SocketStream`, whose socket's ``send`` has the same property
  (every Trio socket operation is cancel-atomic).
"""

from __future__ import annotations

import errno
from abc import abstractmethod

import trio

__all__ = ["ExactProgressStream", "TransportSender", "sender_for"]


class ExactProgressStream(trio.abc.Stream):
    """A :class:`trio.abc.Stream` that reports exactly how much it sent.

    :class:`~trio_tlsretry.TLSStream` recognises transports of this type and
    uses :meth:`send_some` instead of ``send_all``, which makes every
    cancellation recoverable. Subclasses implement :meth:`send_some`; the
    inherited :meth:`send_all` is a loop over it.
    """

    @abstractmethod
    async def send_some(self, data: bytes | bytearray | memoryview) -> int:
        """Send a non-empty prefix of ``data`` and return its length.

        Must be *cancel-atomic*: if it raises ``trio.Cancelled`` (or any other
        exception), no byte of ``data`` was sent. ``data`` is never empty.
        """

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data`` with repeated :meth:`send_some` calls."""
        with memoryview(data) as view:
            if not view:
                await trio.lowlevel.checkpoint()
                return
            sent = 0
            while sent < len(view):
                sent += await self.send_some(view[sent:])


class TransportSender:
    """Hands ciphertext to an arbitrary transport with ``send_all``.

    ``exact`` is ``False``: an exception out of :meth:`send` (a cancellation
    included) leaves it unknown how many bytes went out.
    """

    exact = False

    def __init__(self, transport: trio.abc.SendStream) -> None:
        self.transport = transport

    async def send(self, data: memoryview) -> int:
        """Send a prefix of ``data`` (here: all of it) and return its length."""
        await self.transport.send_all(data)
        return len(data)


class _ExactSender(TransportSender):
    exact = True

    def __init__(self, transport: ExactProgressStream) -> None:
        super().__init__(transport)
        self._send_some = transport.send_some

    async def send(self, data: memoryview) -> int:
        return await self._send_some(data)


class _SocketSender(TransportSender):
    """Drives ``SocketStream.socket.send`` directly so partial sends are known."""

    exact = True

    def __init__(self, transport: trio.SocketStream) -> None:
        super().__init__(transport)
        self._socket = transport.socket

    async def send(self, data: memoryview) -> int:
        socket = self._socket
        if socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("the transport's write side was shut down")
        try:
            return await socket.send(data)
        except OSError as exc:
            # The socket was closed under us (EBADF) or the peer is gone.
            if exc.errno == errno.EBADF or socket.fileno() == -1:
                raise trio.ClosedResourceError("the transport socket was closed") from exc
            raise trio.BrokenResourceError(f"the transport socket failed: {exc}") from exc


def sender_for(transport: trio.abc.SendStream) -> TransportSender:
    """Pick the most precise way to send over ``transport``."""
    if isinstance(transport, ExactProgressStream):
        return _ExactSender(transport)
    if isinstance(transport, trio.SocketStream):
        return _SocketSender(transport)
    return TransportSender(transport)
