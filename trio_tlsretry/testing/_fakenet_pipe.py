"""Connections of the fake TCP network: two byte pipes and their fault controls.

The part of the fake network below the sockets (``_fakenet.py`` tells how
the parts fit). A :class:`Pipe` is one direction of a connection, a
:class:`FakeTCPConnection` is the public record and fault controls of both,
and a :class:`ConnectionEnd` is what one socket may do with its side: the
kernel's non-blocking calls, which raise :exc:`BlockingIOError` where a real
non-blocking socket would. The sockets wait and checkpoint around them.
"""

from __future__ import annotations

import errno
import math
import os
from collections import deque
from collections.abc import Callable
from typing import Literal

import trio
from trio.lowlevel import ParkingLot

from ._fakenet_address import SocketAddress

__all__ = [
    "ConnectionEnd",
    "ConnectionSide",
    "FakeTCPConnection",
    "Pipe",
    "check_latency",
    "check_send_buffer",
    "now",
    "os_error",
]

#: One end of a :class:`FakeTCPConnection`: ``"client"`` (the socket that
#: connected) or ``"server"`` (the socket that accepted). Not the same thing
#: as :data:`~trio_tlsretry.testing.Direction` of the fault wrappers.
ConnectionSide = Literal["client", "server"]


def os_error(code: int, detail: str = "") -> OSError:
    """The ``OSError`` subclass Python raises for ``code`` (e.g. ``ConnectionResetError``)."""
    message = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, message)


def now() -> float:
    """Trio's clock; 0 outside :func:`trio.run`.

    Sockets may be closed outside ``trio.run`` (a test's teardown); a closing
    socket only needs a time to order its EOF after its data.
    """
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


def check_latency(seconds: float) -> None:
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(f"latency must be a finite number of seconds >= 0, not {seconds!r}")


def check_send_buffer(size: int) -> None:
    if size < 1:
        raise ValueError(f"send_buffer must be >= 1, not {size!r}")


def _check_count(nbytes: int) -> None:
    if nbytes < 0:
        raise ValueError("nbytes must be >= 0")


class Pipe:
    """One direction of a connection: bytes on their way, then maybe an end.

    ``segments`` are the unread bytes, each with the time it arrives; the end
    (``"eof"`` or ``"reset"``) arrives after all of them. ``on_reset`` is
    called when a send reaches an injected reset (it resets the whole
    connection). The writer calls :meth:`write`, the reader :meth:`take`;
    both wait on ``changed`` when they raise :exc:`BlockingIOError`.
    """

    def __init__(self, capacity: int, latency: float, on_reset: Callable[[], None]) -> None:
        self.capacity = capacity
        self.latency = latency
        self.on_reset = on_reset
        self.segments: deque[tuple[float, bytearray]] = deque()
        self.queued = 0
        self.sent = bytearray()
        self.end: Literal["eof", "reset"] | None = None
        self.end_arrival = math.inf
        self.reader_closed = False
        self.writer_error: int | None = None
        self.swallowing = False  # past an injected EOF: bytes are taken and dropped
        self.eof_at: int | None = None
        self.reset_at: int | None = None
        self.changed = ParkingLot()

    def wake(self) -> None:
        self.changed.unpark_all()

    def _arrival(self) -> float:
        arrival = now() + self.latency
        if self.segments:
            # A lowered latency must not let later bytes overtake earlier ones.
            arrival = max(arrival, self.segments[-1][0])
        return arrival

    def room(self) -> int:
        return self.capacity - self.queued

    def resize(self, capacity: int) -> None:
        """Hold ``capacity`` unread bytes from now on (a waiting writer rechecks)."""
        self.capacity = capacity
        self.wake()

    # ------------------------------------------------------ the writer

    def writable(self) -> bool:
        """Whether :meth:`write` would not raise :exc:`BlockingIOError` (it may fail)."""
        return (
            self.writer_error is not None
            or self.reader_closed
            or self.swallowing
            or self.room() > 0
        )

    def write(self, data: memoryview) -> int:
        """Take what fits of ``data``, as a non-blocking ``send``: how many bytes.

        Raises :exc:`BlockingIOError` when nothing fits, ``OSError`` once the
        connection is reset or the reader closed. Bytes to a closed reader
        or past an injected EOF are taken and dropped.
        """
        if self.writer_error is not None:
            raise os_error(self.writer_error)
        if self.reader_closed or self.swallowing:
            self.sent += data
            if self.reader_closed:
                # The peer's kernel answers these bytes with a reset.
                self.writer_error = errno.EPIPE
            return len(data)
        if not data:
            return 0
        room = self.room()
        if room <= 0:
            raise BlockingIOError
        size = min(room, len(data), *self._limits())
        self._push(data[:size])
        total = len(self.sent)
        if self.eof_at is not None and total >= self.eof_at:
            self.cut()
        if self.reset_at is not None and total >= self.reset_at:
            self.on_reset()
        return size

    def _push(self, data: memoryview) -> None:
        self.segments.append((self._arrival(), bytearray(data)))
        self.queued += len(data)
        self.sent += data
        self.wake()

    def _limits(self) -> list[int]:
        """How many more bytes may be sent before each injected fault triggers."""
        total = len(self.sent)
        return [at - total for at in (self.eof_at, self.reset_at) if at is not None]

    def finish(self, kind: Literal["eof", "reset"]) -> None:
        """End this direction after the bytes already in it (a first end stays)."""
        if self.end is None:
            self.end = kind
            self.end_arrival = self._arrival()
            self.wake()

    # ------------------------------------------------------ the faults

    def reset(self) -> None:
        """End with a reset after the bytes on their way, and fail every later write."""
        self.finish("reset")  # an EOF that came first stays an EOF
        if self.writer_error is None:
            self.writer_error = errno.ECONNRESET
        self.wake()

    def cut(self) -> None:
        """End with an EOF now and drop every later byte."""
        self.finish("eof")
        self.swallowing = True

    def fault_after(self, kind: Literal["eof", "reset"], nbytes: int) -> bool:
        """Arm ``kind`` to trigger after ``nbytes`` bytes in all: whether that is already past."""
        _check_count(nbytes)
        if kind == "eof":
            self.eof_at = nbytes
        else:
            self.reset_at = nbytes
        return len(self.sent) >= nbytes

    # ------------------------------------------------------ the reader

    def take(self, max_bytes: int) -> bytes:
        """Read what has arrived, as a non-blocking ``recv``: data, or ``b""`` at EOF.

        Raises :exc:`BlockingIOError` if nothing has arrived yet, and
        ``ConnectionResetError`` once a reset has arrived and every byte
        before it was read.
        """
        current = now()
        out = bytearray()
        segments = self.segments
        while segments and segments[0][0] <= current and len(out) < max_bytes:
            chunk = segments[0][1]
            size = min(max_bytes - len(out), len(chunk))
            out += chunk[:size]
            del chunk[:size]
            if not chunk:
                segments.popleft()
        if out:
            self.queued -= len(out)
            self.wake()
            return bytes(out)
        if not segments and self.end is not None and self.end_arrival <= current:
            if self.end == "eof":
                return b""
            raise os_error(errno.ECONNRESET)
        raise BlockingIOError

    def next_arrival(self) -> float:
        return self.segments[0][0] if self.segments else self.end_arrival

    def close_reader(self) -> None:
        """Drop the unread bytes; the writer's next write fails (see :meth:`write`)."""
        self.reader_closed = True
        self.segments.clear()
        self.queued = 0
        self.wake()

    def unread(self) -> bool:
        """Whether closing the reader now drops bytes a reset has not already dropped."""
        return bool(self.queued) and self.end != "reset"


class FakeTCPConnection:
    """An established connection: the observer's record and the fault controls.

    Made by the network when a ``connect`` succeeds (or by
    :meth:`FakeTCPNetwork.socketpair`), before any byte flows, and passed to
    :attr:`FakeTCPNetwork.on_connect`. The *client* is the side that
    connected, the *server* the side that accepted.

    Attributes:
      client_address: the client's address (``getsockname()`` of the
        connecting socket).
      server_address: the address connected to (``getpeername()`` of the
        client).
      was_reset: whether the connection was reset (by a fault, or by a close
        with unread data).
      client_closed: whether the client's socket was closed.
      server_closed: whether the server's socket was closed (also when a
        listener closed before accepting it).
    """

    def __init__(
        self,
        client_address: SocketAddress,
        server_address: SocketAddress,
        send_buffer: int,
        latency: float,
    ) -> None:
        self.client_address = client_address
        self.server_address = server_address
        self._to_server = Pipe(send_buffer, latency, self.reset)
        self._to_client = Pipe(send_buffer, latency, self.reset)
        self.was_reset = False
        self.client_closed = False
        self.server_closed = False

    def __repr__(self) -> str:
        return (
            f"<FakeTCPConnection {self.client_address} -> {self.server_address}: "
            f"client sent {len(self._to_server.sent)}, server sent {len(self._to_client.sent)}"
            f"{', reset' if self.was_reset else ''}>"
        )

    @property
    def client_sent(self) -> bytes:
        """Every byte the client's socket accepted for sending, in order.

        Bytes swallowed after an injected EOF, or sent to a closed server, are
        included: this is what the client *sent*, not what arrived.
        """
        return bytes(self._to_server.sent)

    @property
    def server_sent(self) -> bytes:
        """Every byte the server's socket accepted for sending, in order."""
        return bytes(self._to_client.sent)

    @property
    def latency(self) -> float:
        """Seconds from a ``send`` until the peer can read those bytes (both ways)."""
        return self._to_server.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        check_latency(seconds)
        self._to_server.latency = self._to_client.latency = seconds

    @property
    def send_buffer(self) -> int:
        """Unread bytes each direction holds before ``send`` waits."""
        return self._to_server.capacity

    @send_buffer.setter
    def send_buffer(self, size: int) -> None:
        check_send_buffer(size)
        for pipe in self._pipes():
            pipe.resize(size)

    def _pipes(self) -> tuple[Pipe, Pipe]:
        return self._to_server, self._to_client

    def _pipe_from(self, sender: ConnectionSide) -> Pipe:
        if sender == "client":
            return self._to_server
        if sender == "server":
            return self._to_client
        raise ValueError(f"sender must be 'client' or 'server', not {sender!r}")

    def _end(self, side: ConnectionSide) -> ConnectionEnd:
        """The handle the socket on ``side`` uses (for the fake network's sockets only)."""
        return ConnectionEnd(self, side, self._pipe_from(side), self._pipe_from(_peer_of(side)))

    def reset(self) -> None:
        """Reset the connection now.

        Each side still reads the bytes that were on their way to it, then
        ``recv`` raises ``ConnectionResetError``; every later ``send`` raises
        it at once.
        """
        self.was_reset = True
        for pipe in self._pipes():
            pipe.reset()

    def reset_after(self, sender: ConnectionSide, nbytes: int) -> None:
        """Reset the connection once ``sender`` has sent ``nbytes`` bytes in all.

        The send that reaches the count takes only the bytes up to it; the
        peer reads them and then gets the reset. If ``sender`` already sent
        that much, the reset happens now.

        Args:
          sender: ``"client"`` (the side that connected) or ``"server"`` (the
            side that accepted).
          nbytes: how many bytes ``sender`` sends before the reset.
        """
        if self._pipe_from(sender).fault_after("reset", nbytes):
            self.reset()

    def eof_after(self, sender: ConnectionSide, nbytes: int) -> None:
        """The peer of ``sender`` sees EOF after ``nbytes`` bytes of it.

        Models a connection cut short in one direction: ``sender``'s later
        bytes are taken and dropped (its sends keep succeeding, and
        :attr:`client_sent`/:attr:`server_sent` still record them).

        Args:
          sender: ``"client"`` (the side that connected) or ``"server"`` (the
            side that accepted).
          nbytes: how many bytes of ``sender`` the peer reads before EOF.
        """
        pipe = self._pipe_from(sender)
        if pipe.fault_after("eof", nbytes):
            pipe.cut()


def _peer_of(side: ConnectionSide) -> ConnectionSide:
    return "server" if side == "client" else "client"


class ConnectionEnd:
    """What one socket may do with its side of a connection.

    Made by the connection for the socket on ``side``. :meth:`send` and
    :meth:`receive` are non-blocking: they raise :exc:`BlockingIOError`
    where the socket must wait, with :meth:`wait_writable` or
    :meth:`wait_readable`, and try again.
    """

    def __init__(
        self, connection: FakeTCPConnection, side: ConnectionSide, outgoing: Pipe, incoming: Pipe
    ) -> None:
        self._connection = connection
        self._side = side
        self._outgoing = outgoing
        self._incoming = incoming

    def send(self, data: memoryview) -> int:
        """How many bytes of ``data`` were taken (see :meth:`Pipe.write`)."""
        return self._outgoing.write(data)

    def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes that have arrived (see :meth:`Pipe.take`)."""
        return self._incoming.take(max_bytes)

    def writable(self) -> bool:
        """Whether :meth:`send` would not raise :exc:`BlockingIOError`."""
        return self._outgoing.writable()

    def readable(self) -> bool:
        """Whether :meth:`receive` would not raise :exc:`BlockingIOError`."""
        return self._incoming.next_arrival() <= now()

    async def wait_writable(self) -> None:
        """Wait until the outgoing direction changes (it may still be full)."""
        await self._outgoing.changed.park()

    async def wait_readable(self) -> None:
        """Wait until the incoming direction changes or its next bytes arrive."""
        with trio.move_on_at(self._incoming.next_arrival()):
            await self._incoming.changed.park()

    def shutdown_write(self) -> None:
        """Send an EOF after the bytes already sent."""
        self._outgoing.finish("eof")

    def shutdown_read(self) -> None:
        """Wake a reader, who now reads ``b""``."""
        self._incoming.wake()

    def reset(self) -> None:
        """Reset the whole connection (:meth:`FakeTCPConnection.reset`)."""
        self._connection.reset()

    def close(self) -> None:
        """Close this side as Linux does: a reset if unread bytes are dropped, else an EOF."""
        if self._side == "client":
            self._connection.client_closed = True
        else:
            self._connection.server_closed = True
        if self._incoming.unread():
            # Unread data: the kernel sends a reset instead of a FIN.
            self._connection.reset()
        else:
            self._outgoing.finish("eof")
        self._incoming.close_reader()
        self._outgoing.wake()
