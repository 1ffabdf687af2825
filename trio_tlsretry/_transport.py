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

Over a ``SocketStream`` there are two ways to move the bytes. If its socket
is a real operating-system socket (see :func:`is_os_socket`), the stream
reads and writes the socket's file descriptor itself (``_OSSocketIO``), which
saves a scheduler round trip per call. Any other socket, such as one made by a
custom socket factory (a fake network in a test, an instrumented wrapper), is
driven through its own async ``send`` and ``recv``: its descriptor may not
exist, and its methods may do something a raw descriptor write would skip.
Both ways are exactly accounted.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import sys
import threading
import time
from abc import abstractmethod
from typing import ClassVar

import trio

from ._busy_poll import BusyPollBudget

__all__ = ["ExactProgressStream", "TransportIO", "is_os_socket", "transport_io_for"]


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


class TransportIO:
    """How ciphertext moves over one transport: the base class, for any stream.

    The stream uses every transport the same way: non-blocking attempts
    first (:meth:`try_send`, :meth:`try_receive`), then waits (:meth:`send`,
    :meth:`receive`). A subclass per kind of transport makes them faster or
    more precise; this base class serves any :class:`trio.abc.Stream`, which
    has no non-blocking operations and whose ``send_all`` cannot say how much
    it sent when it fails: :attr:`torn_by` records that.

    A failing transport is reported by every method the same way, as
    :exc:`trio.BrokenResourceError` or :exc:`trio.ClosedResourceError` (an
    ``OSError`` is mapped, and chained as the cause), so the stream maps
    failures in one place (``TLSStream._raise_transport_error``).
    """

    __slots__ = ("busy_poll", "reads", "torn_by", "transport")

    #: Whether every send reports exactly what it took, so that cancelling
    #: one part-way leaves nothing unaccounted for (not so for a plain
    #: stream's ``send_all``).
    exact_sends: ClassVar[bool] = False

    def __init__(self, transport: trio.abc.Stream) -> None:
        self.transport = transport
        #: How long a receive may poll before blocking; kept for every
        #: transport so the stream's setting survives, used by sockets only.
        self.busy_poll = BusyPollBudget()
        #: The exception that interrupted a send part-way, leaving unknown
        #: how many bytes went out (``None``: every send so far was exact).
        self.torn_by: BaseException | None = None
        #: Reads that brought data or an EOF (the stream's way to tell that
        #: another task read while it waited).
        self.reads = 0

    def try_send(self, data: memoryview) -> int:
        """Send a prefix of ``data`` without waiting; 0 if that is not possible now."""
        return 0

    async def send(self, data: memoryview) -> int:
        """Send a prefix of ``data`` (here: all of it) and return its length.

        If it raises, nothing was sent, unless :attr:`torn_by` is set.
        """
        try:
            await self.transport.send_all(data)
        except BaseException as exc:
            # trio's send_all is not cancel-atomic: some prefix may be out.
            self.torn_by = exc
            if isinstance(exc, OSError):
                raise _raw_error(exc) from exc
            raise
        return len(data)

    async def wait_writable(self) -> None:
        """The transport's ``wait_send_all_might_not_block``."""
        try:
            await self.transport.wait_send_all_might_not_block()
        except OSError as exc:
            raise _raw_error(exc) from exc

    def try_receive(self, max_bytes: int) -> bytes | bytearray | memoryview | None:
        """Read without waiting: data, ``b""`` at EOF, ``None`` if none is ready.

        The data may be a view of a scratch buffer that the next read on this
        thread overwrites: use it before the next await.
        """
        return None

    async def receive(self, max_bytes: int) -> bytes | bytearray | memoryview | None:
        """Wait for data and read it, as :meth:`try_receive` (``None``: none came).

        Cancelling it loses nothing (``receive_some`` is cancel-atomic).
        """
        try:
            return await self.transport.receive_some(max_bytes)
        except OSError as exc:
            raise _raw_error(exc) from exc


class _ExactProgressIO(TransportIO):
    """An :class:`ExactProgressStream`: every send reports what it sent."""

    __slots__ = ("_send_some",)
    exact_sends = True

    def __init__(self, transport: ExactProgressStream) -> None:
        super().__init__(transport)
        self._send_some = transport.send_some

    async def send(self, data: memoryview) -> int:
        try:
            return await self._send_some(data)
        except OSError as exc:
            raise _raw_error(exc) from exc


# Not on every platform (``os.sched_yield`` is POSIX); polling is only done
# where ``os.readv`` works on sockets, but keep the fallback harmless.
_yield_cpu = getattr(os, "sched_yield", lambda: None)

_scratch = threading.local()


def _scratch_buffer(size: int) -> memoryview:
    """``size`` bytes of this thread's receive buffer (which only ever grows)."""
    buffer: memoryview | None = getattr(_scratch, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _scratch.buffer = memoryview(bytearray(size))
    return buffer[:size]


class _RawOSError(trio.BrokenResourceError):
    """A transport's own ``OSError`` (not a Trio stream exception), mapped.

    The stream reports the ``OSError`` itself as the cause (:func:`failure_cause`).
    """


def failure_cause(exc: BaseException) -> BaseException:
    """What a transport failure is reported as caused by: a mapped raw
    ``OSError`` is reported as itself, anything else as it is."""
    if isinstance(exc, _RawOSError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def _raw_error(exc: OSError) -> trio.BrokenResourceError:
    return _RawOSError(f"the transport raised {exc!r}")


def _socket_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the transport socket was closed")
    return trio.BrokenResourceError(f"the transport socket failed: {exc}")


class _OSSocketIO(TransportIO):
    """Non-blocking I/O on a ``SocketStream``'s file descriptor.

    Each ``os.write``/``os.readv`` either moves a known number of bytes or
    fails with ``BlockingIOError`` having moved none; only the wait for
    readiness can be cancelled. That makes every send exactly accounted, and
    skips the scheduler round trip Trio's socket methods make after an
    operation that did not need to wait (the stream makes its own single
    checkpoint per call). Trio's ``notify_closing`` wakes our waits when the
    socket is closed, as it does for its own.
    """

    __slots__ = ("_socket",)
    exact_sends = True

    def __init__(self, transport: trio.SocketStream) -> None:
        super().__init__(transport)
        self._socket = transport.socket

    def _fileno(self) -> int:
        fd = self._socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the transport socket was closed")
        return fd

    def try_send(self, data: memoryview) -> int:
        """Send a prefix of ``data`` without waiting; 0 if the socket is full."""
        # The shutdown check (a Python property) is left to the failure path:
        # this runs on every small send_all.
        fd = self._fileno()
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if self._socket.did_shutdown_SHUT_WR:
                raise trio.ClosedResourceError("the transport's write side was shut down") from exc
            raise _socket_error(exc) from exc

    async def send(self, data: memoryview) -> int:
        if not data:
            return 0  # try_send's 0 would mean "full", and we would wait for ever
        while not (sent := self.try_send(data)):
            await trio.lowlevel.wait_writable(self._fileno())
        return sent

    def try_receive(self, max_bytes: int) -> bytes | memoryview | None:
        # Into a reusable buffer: ``os.read`` of 256 KiB allocates (and, with
        # glibc, maps and unmaps) 256 KiB for every call, which costs several
        # times the syscall when only a small record has arrived. One buffer
        # per thread: the caller copies the data into the incoming BIO before
        # anything else can run on this thread.
        fd = self._fileno()
        buffer = _scratch_buffer(max_bytes)
        try:
            n = os.readv(fd, (buffer,))
        except BlockingIOError:
            return None
        except OSError as exc:
            raise _socket_error(exc) from exc
        return buffer[:n] if n else b""

    async def receive(self, max_bytes: int) -> bytes | memoryview | None:
        """Wait until data arrives and read it; ``None`` if readiness brought none.

        Called after :meth:`try_receive` found nothing. First polls for up
        to ``busy_poll.budget`` seconds (see ``_busy_poll`` for why), then
        blocks in Trio's ``wait_readable``. Each poll step is a full
        checkpoint: other tasks run and Trio checks every other descriptor,
        so a poll delays them by one scheduler pass and two system calls per
        step at most, and a cancellation ends it at once having read
        nothing. Each step also
        offers the CPU to other processes (``sched_yield``): if the peer is
        runnable on our CPU, spinning would only delay the reply we wait for
        (with both benchmark ends on one CPU, ping-pong measured 1.48x
        ``trio.SSLStream`` when polling without the yield, against 1.85x
        without polling; with the yield the two measured the same).
        """
        poll = self.busy_poll
        # Real time, not Trio's clock: under MockClock the latter stands
        # still while tasks are runnable, and a poll keeps us runnable.
        started = time.perf_counter()
        if poll.budget:
            deadline = started + poll.budget
            while True:
                # Yield first: the caller's read just found nothing, so let
                # other tasks (and a cancellation) go before reading again.
                await trio.lowlevel.checkpoint()
                _yield_cpu()
                data = self.try_receive(max_bytes)
                now = time.perf_counter()
                if data is not None:
                    # No await from here on: ``data`` may be a view of the
                    # per-thread scratch buffer (see try_receive).
                    poll.hits += 1
                    poll.record_wait(now - started)
                    return data
                if now >= deadline:
                    break
            poll.misses += 1
        await trio.lowlevel.wait_readable(self._fileno())
        # The whole wait, polling included, teaches the next one.
        poll.record_wait(time.perf_counter() - started)
        return self.try_receive(max_bytes)


class _SocketMethodsIO(TransportIO):
    """A ``SocketStream`` driven through its socket's own async methods.

    Used for sockets that are not real OS sockets (custom socket factories)
    and on platforms without ``os.read``/``os.write`` on sockets. A socket's
    ``send`` reports how much it took and, like every Trio socket operation,
    is cancel-atomic, so sends stay exactly accounted; reads go through the
    stream's ``receive_some``, which calls the socket's ``recv``.
    """

    __slots__ = ("_socket",)
    exact_sends = True

    def __init__(self, transport: trio.SocketStream) -> None:
        super().__init__(transport)
        self._socket = transport.socket

    async def send(self, data: memoryview) -> int:
        if self._socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("the transport's write side was shut down")
        try:
            return await self._socket.send(data)
        except OSError as exc:
            raise _socket_error(exc) from exc


# The class of Trio's own socket objects, learnt from Trio itself the first
# time it is needed (see is_os_socket).
_os_socket_class: type[trio.socket.SocketType] | None = None


def is_os_socket(sock: trio.socket.SocketType) -> bool:
    """Whether ``sock`` is Trio's own wrapper of an operating-system socket.

    The rule: the object's type is exactly the type of what
    :func:`trio.socket.from_stdlib_socket` returns (which is also what
    :func:`trio.socket.socket` returns without a custom socket factory).
    ``isinstance(sock, trio.socket.SocketType)`` is not enough: a custom
    socket factory must return instances of that class too, and a subclass
    of Trio's class may override methods that a raw descriptor write would
    bypass. Only for an exact match does a ``fileno()`` stand for the socket.

    Trio does not name that class publicly, so the first call asks Trio to
    wrap a throw-away stdlib socket and remembers the type of the result (if
    no socket can be made, nothing is remembered and the answer is ``False``).
    """
    global _os_socket_class
    os_socket_class = _os_socket_class
    if os_socket_class is None:
        try:
            with stdlib_socket.socket() as probe:
                os_socket_class = type(trio.socket.from_stdlib_socket(probe))
        except OSError:
            return False
        _os_socket_class = os_socket_class
    return type(sock) is os_socket_class


def transport_io_for(transport: trio.abc.Stream) -> TransportIO:
    """The most precise way to move ciphertext over ``transport``."""
    if isinstance(transport, ExactProgressStream):
        return _ExactProgressIO(transport)
    if isinstance(transport, trio.SocketStream):
        if sys.platform == "win32" or not is_os_socket(transport.socket):
            return _SocketMethodsIO(transport)
        return _OSSocketIO(transport)
    return TransportIO(transport)
