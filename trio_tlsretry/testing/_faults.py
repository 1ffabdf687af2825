"""Stream wrappers that inject transport faults.

Each wrapper is a :class:`trio.abc.HalfCloseableStream` around another
stream (usually one end of a memory stream pair, under a
:class:`~trio_tlsretry.TLSStream`). With every fault disabled a wrapper is a
transparent pass-through; each one simulates a single kind of misbehaving
network:

=============================  ==============================================
:class:`ChunkedStream`         data arriving (or leaving) a few bytes at a time
:class:`DelayedStream`         latency on every operation
:class:`FailingStream`         a connection reset after N bytes, or on demand
:class:`CorruptingStream`      bytes flipped or overwritten in transit
:class:`InjectingStream`       extra bytes spliced into the byte stream
:class:`AbruptEOFStream`       the peer vanishing without ``close_notify``
=============================  ==============================================

Wrappers keep the cancellation properties of what they wrap. In particular a
wrapper around an :class:`~trio_tlsretry.ExactProgressStream` (such as
:func:`~trio_tlsretry.testing.exact_progress_stream_pair`) is itself an
``ExactProgressStream``, so a ``TLSStream`` on top still recovers from
cancelled sends and fault injection composes with
:func:`~trio_tlsretry.testing.cancellation_sweep`. Every receive is
cancel-atomic whenever the wrapped receive is.

Offsets and byte counts are positions in the byte stream *as the caller of
the wrapper sees it*: :attr:`FaultStream.bytes_sent` counts bytes the caller
handed to ``send_all``/``send_some`` that were accepted, and
:attr:`FaultStream.bytes_received` counts bytes ``receive_some`` returned.
"""

from __future__ import annotations

import abc
import errno
import operator
from collections.abc import Callable
from typing import Any, Literal, NoReturn, TypeVar, cast

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from .._locks import ConflictDetector
from .._transport import ExactProgressStream

__all__ = [
    "AbruptEOFStream",
    "ChunkedStream",
    "CorruptingStream",
    "DelayedStream",
    "Direction",
    "FailingStream",
    "FaultStream",
    "InjectingStream",
]

_F = TypeVar("_F", bound="FaultStream")

#: Which direction of a wrapper a fault applies to: ``"receive"`` (what the
#: wrapper's ``receive_some`` returns) or ``"send"`` (what the wrapper hands to
#: the wrapped stream). Not the same thing as
#: :data:`~trio_tlsretry.testing.ConnectionSide` of the fake network.
Direction = Literal["receive", "send"]


def _check_size(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be None or >= 1")


def _check_count(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be None or >= 0")


def _check_side(side: str) -> None:
    if side not in ("send", "receive"):
        raise ValueError(f"side must be 'send' or 'receive', not {side!r}")


def _within_budget(limit: int | None, used: int, max_bytes: int | None) -> tuple[int | None, bool]:
    """A receive's ``max_bytes`` clipped to what is left of a byte budget
    (``limit`` bytes, ``used`` so far; ``None`` means no budget), and whether
    the budget is spent."""
    if limit is None:
        return max_bytes, False
    room = limit - used
    if room <= 0:
        return max_bytes, True
    return (room if max_bytes is None or max_bytes > room else max_bytes), False


class FaultStream(trio.abc.HalfCloseableStream):
    """Base class of the fault-injecting wrappers: a pass-through stream.

    Subclasses override ``_send_piece`` (send a prefix of the data, return
    how much of it was accepted) and ``_receive`` (return the next bytes for
    the caller). The base class handles argument checks, conflict detection,
    closing and the byte counters.

    When ``transport_stream`` is an :class:`~trio_tlsretry.ExactProgressStream`
    the constructed object is an instance of a subclass that is also an
    ``ExactProgressStream``: its ``send_some`` sends a prefix and sends
    nothing when cancelled, exactly like the wrapped stream.

    Every wrapper has the read-only attributes :attr:`transport_stream`,
    :attr:`bytes_sent` and :attr:`bytes_received`.

    Args:
      transport_stream: the stream to wrap. ``send_eof`` is forwarded if it is
        a :class:`trio.abc.HalfCloseableStream`.
    """

    def __new__(cls: type[_F], transport_stream: trio.abc.Stream, *args: Any, **kwargs: Any) -> _F:
        if isinstance(transport_stream, ExactProgressStream) and not issubclass(
            cls, ExactProgressStream
        ):
            cls = _exact_variant(cls)
        return object.__new__(cls)

    def __init__(self, transport_stream: trio.abc.Stream) -> None:
        self._transport_stream = transport_stream
        self._bytes_sent = 0
        self._bytes_received = 0
        self._closed = False
        self._send_conflict = ConflictDetector("another task is sending on this stream")
        self._receive_conflict = ConflictDetector("another task is receiving on this stream")

    @property
    def transport_stream(self) -> trio.abc.Stream:
        """The wrapped stream."""
        return self._transport_stream

    @property
    def bytes_sent(self) -> int:
        """Bytes of the caller's data the send side has accepted so far."""
        return self._bytes_sent

    @property
    def bytes_received(self) -> int:
        """Bytes :meth:`receive_some` has returned so far."""
        return self._bytes_received

    # -------------------------------------------------------------- hooks

    async def _forward_send(self, data: memoryview) -> int:
        """Send a prefix of ``data`` on the wrapped stream; return its length."""
        transport = self.transport_stream
        if isinstance(transport, ExactProgressStream):
            return await transport.send_some(data)
        await transport.send_all(data)
        return len(data)

    async def _send_piece(self, data: memoryview) -> int:
        """Send a non-empty prefix of non-empty ``data``; return its length."""
        return await self._forward_send(data)

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        """The next bytes for the caller (``b""`` at EOF)."""
        return await self.transport_stream.receive_some(max_bytes)

    # ---------------------------------------------------------- interface

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream is closed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data`` through the wrapper, piece by piece."""
        with self._send_conflict, memoryview(data) as view:
            self._check_open()
            if not view:
                await checkpoint()
                return
            sent = 0
            while sent < len(view):
                self._check_open()
                piece = await self._send_piece(view[sent:])
                sent += piece
                self._bytes_sent += piece

    async def wait_send_all_might_not_block(self) -> None:
        """Forwarded to the wrapped stream."""
        with self._send_conflict:
            self._check_open()
            await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Forwarded to the wrapped stream.

        Raises:
          TypeError: the wrapped stream is not half-closeable.
        """
        with self._send_conflict:
            self._check_open()
            transport = self.transport_stream
            if not isinstance(transport, trio.abc.HalfCloseableStream):
                raise TypeError(f"{type(transport).__name__} does not support send_eof()")
            await transport.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive through the wrapper (``b""`` at EOF)."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._receive_conflict:
            self._check_open()
            data = await self._receive(max_bytes)
            self._bytes_received += len(data)
            return data

    async def aclose(self) -> None:
        """Close this wrapper and the wrapped stream."""
        self._closed = True
        await self.transport_stream.aclose()


class _ExactSend(FaultStream, ExactProgressStream):
    """Mixed into a wrapper whose transport is an ``ExactProgressStream``.

    Adds :meth:`send_some`, which sends one piece with one call of the
    transport's cancel-atomic ``send_some``, and makes
    ``isinstance(wrapper, ExactProgressStream)`` true, which is what
    ``TLSStream`` checks. ``FaultStream`` comes first in the MRO, so its
    ``send_all`` (with conflict detection) wins over the inherited loop.
    """

    async def send_some(self, data: bytes | bytearray | memoryview) -> int:
        """Send a prefix of ``data``; return its length. Sends nothing if cancelled."""
        with self._send_conflict, memoryview(data) as view:
            self._check_open()
            if not view:
                await checkpoint()
                return 0
            sent = await self._send_piece(view)
            self._bytes_sent += sent
            return sent


_EXACT_VARIANTS: dict[type[FaultStream], type[FaultStream]] = {}


def _exact_variant(cls: type[_F]) -> type[_F]:
    variant = _EXACT_VARIANTS.get(cls)
    if variant is None:
        namespace = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
        }
        variant = cast("type[FaultStream]", abc.ABCMeta(cls.__name__, (cls, _ExactSend), namespace))
        _EXACT_VARIANTS[cls] = variant
    return cast("type[_F]", variant)


# ---------------------------------------------------------------- chunking


class ChunkedStream(FaultStream):
    """Moves at most a few bytes per operation.

    Simulates a slow or fragmenting network: TCP segments split anywhere, a
    TLS record arriving one byte at a time. Any code that assumes one
    ``receive_some`` returns one whole message breaks under it.

    Args:
      transport_stream: the stream to wrap.
      receive_size: each ``receive_some`` returns at most this many bytes
        (``None``: no limit beyond the caller's ``max_bytes``).
      send_size: each send hands at most this many bytes to the wrapped
        stream in one call (``None``: all at once). Over an
        ``ExactProgressStream`` every piece is a separate cancel-atomic
        ``send_some``.

    Attributes:
      receive_size: as the argument; may be changed at any time.
      send_size: as the argument; may be changed at any time.
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        *,
        receive_size: int | None = 1,
        send_size: int | None = None,
    ) -> None:
        _check_size("receive_size", receive_size)
        _check_size("send_size", send_size)
        super().__init__(transport_stream)
        self.receive_size = receive_size
        self.send_size = send_size

    async def _send_piece(self, data: memoryview) -> int:
        if self.send_size is not None:
            data = data[: self.send_size]
        return await self._forward_send(data)

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        size = self.receive_size
        if size is not None and (max_bytes is None or max_bytes > size):
            max_bytes = size
        return await self.transport_stream.receive_some(max_bytes)


# ------------------------------------------------------------------- delay


class DelayedStream(FaultStream):
    """Waits a fixed time before every send and receive.

    Simulates latency. The wait is :func:`trio.sleep`, so under
    ``trio.testing.MockClock(autojump_threshold=0)`` it costs no real time,
    and it is where a timeout in the code under test will usually fire.
    Cancelling during the wait loses nothing: the wrapped stream has not been
    touched yet.

    Args:
      transport_stream: the stream to wrap.
      send_delay: seconds to wait before each send on the wrapped stream
        (once per piece: one per ``send_some`` over an exact-progress
        transport).
      receive_delay: seconds to wait before each ``receive_some``.

    Attributes:
      send_delay: as the argument; may be changed at any time.
      receive_delay: as the argument; may be changed at any time.
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        *,
        send_delay: float = 0.0,
        receive_delay: float = 0.0,
    ) -> None:
        if send_delay < 0 or receive_delay < 0:
            raise ValueError("delays must be >= 0")
        super().__init__(transport_stream)
        self.send_delay = send_delay
        self.receive_delay = receive_delay

    async def _send_piece(self, data: memoryview) -> int:
        await trio.sleep(self.send_delay)
        return await self._forward_send(data)

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        await trio.sleep(self.receive_delay)
        return await self.transport_stream.receive_some(max_bytes)


# ----------------------------------------------------------------- failure


class FailingStream(FaultStream):
    """Breaks with :exc:`trio.BrokenResourceError` after N bytes, or on demand.

    Simulates a connection reset. Exactly ``fail_after_sent`` bytes go
    through the send side and exactly ``fail_after_received`` bytes come out
    of the receive side (the wrapped stream is never asked for more); the
    next operation that needs more raises ``BrokenResourceError`` whose
    ``__cause__`` is a :exc:`ConnectionResetError`, as from a real socket.
    Once broken, every send and receive fails the same way.

    :meth:`fail_now` breaks the stream at once and interrupts any send or
    receive that is waiting on the wrapped stream, which then raises
    ``BrokenResourceError`` too (the interrupted operation is cancelled on the
    wrapped stream, so over a cancel-atomic transport it consumed nothing).

    Args:
      transport_stream: the stream to wrap.
      fail_after_sent: bytes the send side accepts before failing
        (``None``: no limit).
      fail_after_received: bytes the receive side delivers before failing
        (``None``: no limit).
      error: makes the exception to raise instead, for example
        ``lambda: OSError(errno.EPIPE, "broken pipe")`` to imitate a transport
        that leaks ``OSError`` (called once per failing operation).

    Attributes:
      fail_after_sent: as the argument; may be changed until it is reached.
      fail_after_received: as the argument; may be changed until it is
        reached.
      error: as the argument.
      failed: whether the stream has failed (set by :meth:`fail_now` too).
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        *,
        fail_after_sent: int | None = None,
        fail_after_received: int | None = None,
        error: Callable[[], BaseException] | None = None,
    ) -> None:
        _check_count("fail_after_sent", fail_after_sent)
        _check_count("fail_after_received", fail_after_received)
        super().__init__(transport_stream)
        self.fail_after_sent = fail_after_sent
        self.fail_after_received = fail_after_received
        self.error = error
        self.failed = False
        self._scopes: set[trio.CancelScope] = set()

    def fail_now(self) -> None:
        """Break the stream now, waking waiting operations with the error."""
        self.failed = True
        for scope in self._scopes:
            scope.cancel()

    async def _fail(self) -> NoReturn:
        self.failed = True
        await checkpoint()
        if self.error is not None:
            raise self.error()
        raise trio.BrokenResourceError("simulated connection failure") from ConnectionResetError(
            errno.ECONNRESET, "simulated by FailingStream"
        )

    async def _send_piece(self, data: memoryview) -> int:
        limit = self.fail_after_sent
        if limit is not None:
            room = limit - self.bytes_sent
            if room <= 0:
                self.failed = True
            else:
                data = data[:room]
        if self.failed:
            await self._fail()
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                return await self._forward_send(data)
            finally:
                self._scopes.discard(scope)
        await self._fail()

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        max_bytes, spent = _within_budget(self.fail_after_received, self.bytes_received, max_bytes)
        if spent:
            self.failed = True
        if self.failed:
            await self._fail()
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                return await self.transport_stream.receive_some(max_bytes)
            finally:
                self._scopes.discard(scope)
        await self._fail()


# -------------------------------------------------------------- tampering


class _Tamper(FaultStream):
    """Shared bookkeeping: one side, an offset in that side's byte stream."""

    def __init__(self, transport_stream: trio.abc.Stream, offset: int, side: Direction) -> None:
        _check_side(side)
        if offset < 0:
            raise ValueError("offset must be >= 0")
        super().__init__(transport_stream)
        self.offset = offset
        self.side: Direction = side


class CorruptingStream(_Tamper):
    """Flips or overwrites bytes at a chosen offset of one direction.

    Simulates data damaged in transit (or an attacker tampering with it).
    Under TLS this must end the connection with
    :exc:`trio.BrokenResourceError` whose ``__cause__`` is an
    :exc:`ssl.SSLError` (a bad record MAC, or a handshake failure), never with
    wrong plaintext.

    By default the byte at ``offset`` is XORed with ``xor``; with
    ``replacement`` the bytes from ``offset`` on are overwritten by it
    instead. The length of the stream never changes.

    Args:
      transport_stream: the stream to wrap.
      offset: position of the first damaged byte in the chosen direction.
      xor: mask XORed into the byte at ``offset`` (when no ``replacement``).
      replacement: bytes written over the stream from ``offset`` on.
      side: ``"receive"`` (default) damages what ``receive_some`` returns,
        ``"send"`` damages what reaches the wrapped stream.

    Attributes:
      offset: where the damage starts, counted in bytes of the ``side``
        direction. May be changed until the stream reaches it, for instance
        to just after the handshake: ``wrapper.offset = wrapper.bytes_received``.
      side: ``"receive"`` or ``"send"``, as the argument.
      xor: as the argument.
      replacement: as the argument.
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        *,
        offset: int,
        xor: int = 0xFF,
        replacement: bytes | None = None,
        side: Direction = "receive",
    ) -> None:
        if replacement is None and not 0 < xor < 256:
            raise ValueError("xor must be in 1..255")
        if replacement is not None and not replacement:
            raise ValueError("replacement must not be empty")
        super().__init__(transport_stream, offset, side)
        self.xor = xor
        self.replacement = replacement

    def _damage(self, data: bytes | bytearray | memoryview, position: int) -> bytes | bytearray:
        """``data`` (found at ``position`` of the stream) with the fault applied."""
        patch = self.replacement if self.replacement is not None else bytes([self.xor])
        start = max(self.offset, position)
        end = min(self.offset + len(patch), position + len(data))
        if start >= end:
            return data if not isinstance(data, memoryview) else bytes(data)
        out = bytearray(data)
        for index in range(start, end):
            value = patch[index - self.offset]
            if self.replacement is None:
                value ^= out[index - position]
            out[index - position] = value
        return out

    async def _send_piece(self, data: memoryview) -> int:
        if self.side == "send":
            return await self._forward_send(memoryview(self._damage(data, self.bytes_sent)))
        return await self._forward_send(data)

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        data = await self.transport_stream.receive_some(max_bytes)
        if self.side == "receive":
            data = self._damage(data, self.bytes_received)
        return data


class InjectingStream(_Tamper):
    """Splices extra bytes into one direction at a chosen offset.

    Simulates a confused middlebox or an attacker inserting data. The
    injected bytes appear right before the stream byte numbered ``offset``
    (``offset=0``: before everything); they are not counted in
    :attr:`~FaultStream.bytes_sent`, but they are counted in
    :attr:`~FaultStream.bytes_received` on the receive side, which counts what
    the caller got. Under TLS, injected bytes end the connection with
    :exc:`trio.BrokenResourceError` caused by an :exc:`ssl.SSLError`.

    Args:
      transport_stream: the stream to wrap.
      offset: how many bytes of the original stream come before the
        injected ones.
      data: the bytes to insert (non-empty).
      side: ``"receive"`` (default) splices them into what ``receive_some``
        returns, ``"send"`` into what reaches the wrapped stream.

    Attributes:
      offset: as the argument; may be changed until the stream reaches it.
      side: ``"receive"`` or ``"send"``, as the argument.
      data: the bytes to insert.
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        *,
        offset: int,
        data: bytes,
        side: Direction = "receive",
    ) -> None:
        if not data:
            raise ValueError("data must not be empty")
        super().__init__(transport_stream, offset, side)
        self.data = bytes(data)
        # How much of ``data`` has been delivered (received side) or sent.
        self._injected = 0
        # Bytes of the original receive stream handed out so far.
        self._original_received = 0

    @property
    def injected(self) -> bool:
        """Whether all of the injected bytes have gone through."""
        return self._injected == len(self.data)

    async def _send_piece(self, data: memoryview) -> int:
        if self.side == "send" and not self.injected:
            before = self.offset - self.bytes_sent
            if before > 0:
                return await self._forward_send(data[:before])
            while not self.injected:
                self._injected += await self._forward_send(memoryview(self.data)[self._injected :])
        return await self._forward_send(data)

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        if self.side == "receive" and not self.injected:
            before = self.offset - self._original_received
            if before <= 0:
                await checkpoint_if_cancelled()
                end = len(self.data) if max_bytes is None else self._injected + max_bytes
                piece = self.data[self._injected : end]
                self._injected += len(piece)
                await cancel_shielded_checkpoint()
                return piece
            if max_bytes is None or max_bytes > before:
                max_bytes = before
        data = await self.transport_stream.receive_some(max_bytes)
        self._original_received += len(data)
        return data


# --------------------------------------------------------------------- EOF


class AbruptEOFStream(FaultStream):
    """Reports end-of-file early: the peer went away without ``close_notify``.

    Simulates a TCP connection closed (or truncated by an attacker) in the
    middle of a TLS session. After ``eof_after`` received bytes, or as soon
    as :meth:`trigger_eof` is called, ``receive_some`` returns ``b""`` from
    then on and the wrapped stream is not read again. A ``TLSStream`` on top
    raises :exc:`trio.BrokenResourceError` (cause: :exc:`ssl.SSLEOFError`)
    unless it was made with ``https_compatible=True``, in which case it
    reports a clean EOF. The send side is untouched.

    Args:
      transport_stream: the stream to wrap.
      eof_after: bytes delivered before the EOF (``None``: only on demand).

    Attributes:
      eof_after: as the argument; may be changed until it is reached.
      at_eof: whether the EOF has been reported (or triggered).
    """

    def __init__(self, transport_stream: trio.abc.Stream, *, eof_after: int | None = None) -> None:
        _check_count("eof_after", eof_after)
        super().__init__(transport_stream)
        self.eof_after = eof_after
        self.at_eof = False
        self._scope: trio.CancelScope | None = None

    def trigger_eof(self) -> None:
        """Make every receive from now on return ``b""``, a waiting one included.

        A ``receive_some`` blocked on the wrapped stream is cancelled there
        (losing nothing if that receive is cancel-atomic) and returns ``b""``.
        """
        self.at_eof = True
        if self._scope is not None:
            self._scope.cancel()

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        max_bytes, spent = _within_budget(self.eof_after, self.bytes_received, max_bytes)
        if spent:
            self.at_eof = True
        if self.at_eof:
            await checkpoint()
            return b""
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                return await self.transport_stream.receive_some(max_bytes)
            finally:
                self._scope = None
        return b""
