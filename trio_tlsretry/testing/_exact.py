"""An in-memory transport pair that reports exactly how much it sent.

Trio's ``memory_stream_pair`` is not cancel-atomic on send (its ``send_all``
queues the data and then runs a hook), so a ``TLSStream`` over it has to
treat a cancelled transport send as fatal. This pair implements
:class:`~trio_tlsretry.ExactProgressStream`: every send either moves a known
number of bytes into a bounded buffer or, when cancelled, moves none. With a
small ``capacity`` every ``send_all`` of a ``TLSStream`` is split into many
partial sends, each a place where a test can cancel.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator

import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint_if_cancelled

from .._transport import ExactProgressStream

__all__ = ["ExactProgressMemoryStream", "exact_progress_stream_pair"]


class _Pipe:
    """One direction: a bounded byte buffer with waiters on both ends."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer = bytearray()
        self.send_closed = False  # writer closed or sent EOF
        self.receive_closed = False  # reader closed
        self.changed = ParkingLot()
        self.total_sent = 0

    def wake(self) -> None:
        self.changed.unpark_all()


class ExactProgressMemoryStream(ExactProgressStream, trio.abc.HalfCloseableStream):
    """One end of :func:`exact_progress_stream_pair`.

    Every operation is a checkpoint and cancel-atomic: a cancelled
    :meth:`send_some` sent nothing, a cancelled :meth:`receive_some` took
    nothing.
    """

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self._closed = False
        self._send_busy = False
        self._receive_busy = False

    @property
    def bytes_sent(self) -> int:
        """Bytes this end has sent (accepted by :meth:`send_some`)."""
        return self._outgoing.total_sent

    @property
    def capacity(self) -> int:
        """Bytes that may wait in each direction before a send blocks."""
        return self._outgoing.capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        if value < 1:
            raise ValueError("capacity must be >= 1")
        self._outgoing.capacity = value
        self._outgoing.wake()

    def _check_send(self) -> None:
        if self._closed or self._outgoing.send_closed:
            raise trio.ClosedResourceError("this stream (or its send side) is closed")
        if self._outgoing.receive_closed:
            raise trio.BrokenResourceError("the receiving end was closed")

    @contextlib.contextmanager
    def _sending(self) -> Iterator[None]:
        """One send operation at a time, as trio's streams require."""
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending")
        self._send_busy = True
        try:
            yield
        finally:
            self._send_busy = False

    async def _wait_for_room(self, *, sending: bool) -> bool:
        """Wait until the buffer has room (at once if not ``sending``); return whether we waited."""
        pipe = self._outgoing
        waited = False
        while True:
            self._check_send()
            if len(pipe.buffer) < pipe.capacity or not sending:
                return waited
            waited = True
            await pipe.changed.park()

    async def send_some(self, data: bytes | bytearray | memoryview) -> int:
        """Send a prefix of ``data`` that fits the buffer; wait for room if none."""
        with self._sending():
            await checkpoint_if_cancelled()
            waited = await self._wait_for_room(sending=bool(data))
            pipe = self._outgoing
            with memoryview(data) as view:
                piece = view[: pipe.capacity - len(pipe.buffer)]
                pipe.buffer += piece
                sent = len(piece)
            pipe.total_sent += sent
            pipe.wake()
            if not waited:
                await cancel_shielded_checkpoint()
            return sent

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``; empty data still reports a closed or broken stream."""
        with memoryview(data) as view:
            empty = not view
        if not empty:
            await super().send_all(data)
            return
        with self._sending():
            await checkpoint_if_cancelled()
            self._check_send()
            await cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the buffer has room (a send operation: one task at a time)."""
        with self._sending():
            await checkpoint_if_cancelled()
            if not await self._wait_for_room(sending=True):
                await cancel_shielded_checkpoint()

    async def send_eof(self) -> None:
        """Signal EOF to the other end; further sends raise ``ClosedResourceError``."""
        with self._sending():
            await checkpoint_if_cancelled()
        self._outgoing.send_closed = True
        self._outgoing.wake()
        await cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Take up to ``max_bytes`` (default: everything) from the buffer."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as trio's streams
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receive_busy:
            raise trio.BusyResourceError("another task is receiving")
        self._receive_busy = True
        try:
            await checkpoint_if_cancelled()
            pipe = self._incoming
            waited = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream is closed")
                if pipe.buffer or pipe.send_closed:
                    break
                waited = True
                await pipe.changed.park()
            size = len(pipe.buffer) if max_bytes is None else min(max_bytes, len(pipe.buffer))
            data = bytes(pipe.buffer[:size])
            del pipe.buffer[:size]
            pipe.wake()
            if not waited:
                await cancel_shielded_checkpoint()
            return data
        finally:
            self._receive_busy = False

    async def aclose(self) -> None:
        """Close both directions of this end; the peer sees EOF / a broken pipe."""
        self._closed = True
        self._outgoing.send_closed = True
        self._incoming.receive_closed = True
        self._outgoing.wake()
        self._incoming.wake()
        await trio.lowlevel.checkpoint()


def exact_progress_stream_pair(
    capacity: int = 64 * 1024,
) -> tuple[ExactProgressMemoryStream, ExactProgressMemoryStream]:
    """Two connected :class:`ExactProgressMemoryStream` ends.

    ``capacity`` bytes may wait in each direction before a sender blocks;
    with a small capacity a ``TLSStream`` send is split into many exactly
    accounted partial sends.
    """
    if capacity < 1:
        raise ValueError("capacity must be >= 1")
    a_to_b = _Pipe(capacity)
    b_to_a = _Pipe(capacity)
    return ExactProgressMemoryStream(a_to_b, b_to_a), ExactProgressMemoryStream(b_to_a, a_to_b)
