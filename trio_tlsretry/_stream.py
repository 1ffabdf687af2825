"""``TLSStream``: the async layer over the sans-IO engine.

The engine (``_engine.py``) holds all TLS state and never awaits. This module
owns the three things that need Trio: locks, checkpoints and cancellation.
"""

from __future__ import annotations

import operator
import ssl
from collections.abc import Callable
from typing import Final, Generic, NoReturn, TypeVar

import idna
import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._details import ConnectionDetails
from ._engine import PLAINTEXT_BUFFER_LIMIT, Step, TLSEngine
from ._errors import PostHandshakeAuthError
from ._fastpath import drain, push, send_pinned, top_up
from ._locks import ConflictDetector, FastLock
from ._pinned import snapshot
from ._stats import StreamState, TLSStreamStatistics
from ._transport import failure_cause, transport_io_for

__all__ = ["DEFAULT_RECEIVE_SIZE", "TLSStream"]

#: ``receive_some()`` without ``max_bytes`` returns at most this much: one
#: TLS record, as ``trio.SSLStream`` (whose ``SSLObject.read`` returns one
#: record). A setting, read at each call (``benchmarks/_worker.py --knob``).
DEFAULT_RECEIVE_SIZE = 16 * 1024
#: Ciphertext asked of the transport per read, as much as ``trio.SSLStream``
#: asks (``SocketStream``'s default): the most the incoming BIO holds at once,
#: and an ``ssl.MemoryBIO`` never gives memory back. A setting, read at each call.
TRANSPORT_RECEIVE_SIZE = 64 * 1024
#: The most a ``receive_some(max_bytes)`` reads from a socket at once when it
#: tops up what it already has (``_fastpath.top_up``); fed to OpenSSL in
#: ``TRANSPORT_RECEIVE_SIZE`` slices. A setting, read at each call.
TOP_UP_READ_SIZE = 256 * 1024

#: The most :meth:`TLSStream.aclose` reads (without waiting) from a socket
#: before closing it, so the close is a FIN and not a reset
#: (``_drain_before_close``). A bound on the work a close may do if the peer
#: keeps sending; the kernel's receive buffer is usually smaller.
CLOSE_DRAIN_LIMIT: Final = 16 * 1024 * 1024

#: Seconds a connection that TLS failed (during the handshake or after it)
#: spends trying to send its fatal alert (``_send_alert``).
ALERT_TIMEOUT: Final = 1.0

# Compared by identity on hot paths (a global is cheaper than an Enum lookup).
_PROGRESS: Final = Step.PROGRESS
_NEEDS_PEER: Final = Step.NEEDS_PEER

#: What a transport's methods raise (``TransportIO`` maps everything else).
_TRANSPORT_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError)

#: The type of the transport a :class:`TLSStream` wraps.
T_Stream = TypeVar("T_Stream", bound=trio.abc.Stream)


def encode_server_hostname(hostname: str | bytes) -> str:
    """The ASCII form of ``hostname`` that is sent as SNI and checked.

    Python's ``ssl`` module encodes a Unicode name with the obsolete IDNA
    2003 rules, which map some names to a *different* domain (``faß.de``
    becomes ``fass.de``; CPython issue bpo-17305). IDNA 2008 with UTS 46
    mapping (the ``idna`` package, a dependency of Trio) is what browsers and
    Trio's own name resolution use, so the certificate is checked against
    the name that is actually connected to. ASCII names pass unchanged.

    Raises:
      ValueError: the name is not a valid (internationalised) host name.
    """
    if isinstance(hostname, bytes):
        return hostname.decode("ascii")
    try:
        return hostname.encode("ascii").decode("ascii")
    except UnicodeEncodeError:
        pass
    try:
        return idna.encode(hostname, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid server_hostname {hostname!r}: {exc}") from exc


def _is_eof(exc: BaseException | None) -> bool:
    """Does this TLS failure mean the transport ended without close_notify?

    OpenSSL reports it as ``SSLEOFError``, as an ``SSLSyscallError`` during a
    handshake, or (Python 3.10) as a plain ``SSLError`` naming
    ``UNEXPECTED_EOF_WHILE_READING``.
    """
    return isinstance(exc, (ssl.SSLEOFError, ssl.SSLSyscallError)) or (
        isinstance(exc, ssl.SSLError) and "UNEXPECTED_EOF_WHILE_READING" in str(exc)
    )


async def _acquire(lock: FastLock) -> bool:
    """Take ``lock``; return whether we had to wait (and so yielded)."""
    if lock.try_acquire():
        return False
    await lock.acquire()
    return True


class TLSStream(ConnectionDetails, trio.abc.HalfCloseableStream, Generic[T_Stream]):
    """A TLS connection over any :class:`trio.abc.Stream`.

    A drop-in replacement for :class:`trio.SSLStream` with the same
    constructor, methods and forwarded TLS details, and stronger guarantees:

    * ``send_all`` pins an immutable snapshot of its data before its first
      await and only ever retries the identical slice of it;
    * a cancelled ``send_all``, ``receive_some``, ``do_handshake``,
      ``wait_send_all_might_not_block`` or ``unwrap`` leaves the stream usable
      whenever the transport reports what it sent (see
      :doc:`/cancellation`), and retrying ``send_all`` with the same object
      resumes at the exact byte where it stopped;
    * buffered ciphertext stays bounded whatever the size of a write.

    Generic in the transport's type, like :class:`trio.SSLStream`:
    ``TLSStream[trio.SocketStream]``.

    Args:
      transport_stream: the stream carrying ciphertext, usually a
        :class:`trio.SocketStream`.
      ssl_context: the :class:`ssl.SSLContext` for this connection.
      server_hostname: the name to verify the server's certificate against
        (and send as SNI). Required on the client when the context checks
        host names. A Unicode name is encoded with IDNA 2008, as Trio
        does, not with Python's IDNA 2003 codec (:func:`encode_server_hostname`).
      server_side: ``True`` to act as the TLS server.
      https_compatible: do not send ``close_notify`` on close, and treat a
        transport EOF without ``close_notify`` as a clean EOF, as HTTPS
        clients and servers commonly do.
      prompt_session_tickets: server side, TLS 1.3, over a socket: send the
        session tickets right after the handshake instead of with the first
        send (the default, as :class:`trio.SSLStream`). Lets clients of a
        server that never sends resume their sessions, but a client that
        closes without reading them makes its kernel reset the connection,
        which can destroy the end of its upload at the server: use it only
        when every client reads (or drains, as ``TLSStream`` does in
        :meth:`aclose`) before it closes. See :doc:`/closing`.
      handshake_limiter: a :class:`trio.CapacityLimiter` shared by many
        streams: the handshake holds one of its tokens while it runs, and
        waits for one (without using the CPU) before it starts; on the
        server side it starts once the client's first bytes have arrived,
        so a client that connects and says nothing holds no token. The wait
        is part of the handshake, so a timeout around
        :meth:`do_handshake` (:func:`handshake_or_drop`) counts it.
        :class:`TLSListener` passes its own.

    Raises:
      ValueError: from :meth:`ssl.SSLContext.wrap_bio` when the arguments do
        not fit the context (for example ``server_side=True`` with a client
        context, or no ``server_hostname`` while ``check_hostname`` is on),
        or ``server_hostname`` is not a valid host name.
    """

    # Thousands of idle connections are common; no per-instance dict. A weak
    # reference slot, though: trio.SSLStream can be weakly referenced (by a
    # WeakSet of live connections, say), and a drop-in must allow it too.
    __slots__ = (
        "__weakref__",
        "_engine",
        "_failure",
        "_failure_cause",
        "_handshake_limiter",
        "_handshake_lock",
        "_https_compatible",
        "_pha_conflict",
        "_plaintext_drained",
        "_prompt_session_tickets",
        "_receive_conflict",
        "_receive_scope",
        "_send_conflict",
        "_state",
        "_transport_io",
        "_transport_receive_lock",
        "_transport_send_lock",
        "transport_stream",
    )

    def __init__(
        self,
        transport_stream: T_Stream,
        ssl_context: ssl.SSLContext,
        *,
        server_hostname: str | bytes | None = None,
        server_side: bool = False,
        https_compatible: bool = False,
        prompt_session_tickets: bool = False,
        handshake_limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        if server_hostname is not None:
            server_hostname = encode_server_hostname(server_hostname)
        if not server_side and ssl_context.check_hostname and not server_hostname:
            # wrap_bio, unlike wrap_socket, accepts this and then skips the
            # host-name check altogether.
            raise ValueError("server_hostname is required when ssl_context.check_hostname is on")
        #: The underlying transport (``None`` once :meth:`unwrap` has
        #: handed it back, as with :class:`trio.SSLStream`).
        self.transport_stream: T_Stream = transport_stream
        self._https_compatible = https_compatible
        self._prompt_session_tickets = prompt_session_tickets
        self._handshake_limiter = handshake_limiter
        try:
            self._engine = TLSEngine(
                ssl_context, server_side=server_side, server_hostname=server_hostname
            )
        except ssl.SSLError as exc:
            # For example a PROTOCOL_TLS_CLIENT context with server_side=True.
            raise ValueError(f"ssl_context cannot be used for this side: {exc}") from exc
        self._transport_io = transport_io_for(transport_stream)
        self._state = StreamState.OPEN
        self._failure: str | None = None
        self._failure_cause: BaseException | None = None
        self._send_conflict = ConflictDetector("another task is already sending on this TLSStream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this TLSStream"
        )
        self._handshake_lock = FastLock()
        self._transport_send_lock = FastLock()
        self._transport_receive_lock = FastLock()
        self._receive_scope: trio.CancelScope | None = None
        self._plaintext_drained = ParkingLot()
        self._pha_conflict = ConflictDetector(
            "another task is already waiting for the client's certificate"
        )

    # ------------------------------------------------------------- state

    def statistics(self) -> TLSStreamStatistics:
        """A snapshot of this stream's buffers and counters."""
        engine = self._engine
        return TLSStreamStatistics(
            pinned_bytes=engine.pinned_bytes,
            outgoing_ciphertext_bytes=engine.outgoing_ciphertext_bytes,
            incoming_ciphertext_bytes=engine.incoming_ciphertext_bytes,
            buffered_plaintext_bytes=engine.buffered_plaintext_bytes,
            state=self._state,
            plaintext_bytes_sent=engine.plaintext_bytes_sent,
            plaintext_bytes_received=engine.plaintext_bytes_received,
            ciphertext_bytes_sent=engine.ciphertext_bytes_sent,
            ciphertext_bytes_received=engine.ciphertext_bytes_received,
            write_retries=engine.write_retries,
            max_outgoing_ciphertext_bytes=engine.max_outgoing_ciphertext_bytes,
            busy_poll_hits=self._transport_io.busy_poll.hits,
            busy_poll_misses=self._transport_io.busy_poll.misses,
        )

    @property
    def busy_poll(self) -> float:
        """The longest a wait for incoming data polls before blocking, in seconds.

        Over a :class:`trio.SocketStream` (on POSIX), a receive that finds no
        data may first poll the socket for a short while, yielding to the
        scheduler between polls, before it blocks in Trio's I/O wait. When
        replies come within tens of microseconds (loopback, a fast local
        network) that saves the cost of putting the CPU to sleep and waking
        it, which is most of a small round trip's cost on a virtual machine.
        How long a wait polls is learned per connection: after a wait of
        ``w`` seconds the next one polls for up to ``1.5 * w``, if
        ``w <= busy_poll``, and not at all after a longer wait, so a quiet
        connection stops polling after its first long wait. Each poll step
        is a Trio checkpoint and offers the CPU to other processes, so other
        tasks, and a peer on the same CPU, still run. Polling reads nothing
        until data is there, so it changes nothing in the cancellation
        contract.

        Default 100 microseconds, or 0 if the process may run on only one
        CPU (where polling could only delay whoever sends the data). ``0``
        turns polling off: every wait blocks at once, as
        ``trio.SSLStream``'s do. Other transports never poll.
        ``statistics()`` counts the polls that found data
        (``busy_poll_hits``) and those that ended blocking
        (``busy_poll_misses``). :doc:`/performance` has the measurements.

        Raises (on assignment):
          TypeError: not a number.
          ValueError: negative, infinite or NaN.
        """
        return self._transport_io.busy_poll.limit

    @busy_poll.setter
    def busy_poll(self, seconds: float) -> None:
        self._transport_io.busy_poll.set_limit(seconds)

    def _check_usable(self) -> None:
        if self._state is StreamState.OPEN:
            return
        if self._state is StreamState.CLOSED:
            raise trio.ClosedResourceError("this TLSStream is closed")
        raise trio.BrokenResourceError(self._failure) from self._failure_cause

    def _break(self, message: str, cause: BaseException | None) -> None:
        if self._state is StreamState.OPEN:
            self._state = StreamState.BROKEN
            self._failure = message
            self._failure_cause = cause
        self._plaintext_drained.unpark_all()

    async def _fail(self, exc: ssl.SSLError) -> NoReturn:
        """The one way out when TLS fails the connection: alert, then raise.

        When OpenSSL fails a connection it queues the fatal alert that
        RFC 8446 section 6.2 and RFC 5246 section 7.2.2 require
        (``bad_record_mac``, ``record_overflow``, ``unknown_ca``, ...). Every
        operation, during the handshake or after it, ends here, so the peer
        learns why instead of seeing the connection drop. The stream is
        broken *before* the alert's flush, so a cancellation during that
        flush still leaves it broken with ``exc`` as the cause; the flush is
        bounded (``_send_alert``) so a peer that does not read cannot hold up
        the error.
        """
        message = f"TLS error: {exc}"
        self._break(message, exc)
        await self._send_alert()
        raise trio.BrokenResourceError(message) from exc

    def _note_transport_failure(self, exc: BaseException) -> str:
        """The transport failed: break the stream (unless closed); the message."""
        cause = failure_cause(exc)
        message = f"the transport failed: {cause!r}"
        self._break(message, cause)
        return message

    def _raise_transport_error(self, exc: BaseException) -> NoReturn:
        """The one mapping of a transport failure to what the caller sees."""
        cause = failure_cause(exc)
        if self._state is StreamState.CLOSED:
            raise trio.ClosedResourceError("this TLSStream was closed") from cause
        raise trio.BrokenResourceError(self._note_transport_failure(exc)) from cause

    # ------------------------------------------------------ moving bytes

    async def _flush(self) -> None:
        """Hand every queued ciphertext byte to the transport, in order.

        The queue lives in the engine, not in this task, so whoever holds the
        transport send lock sends the head of the queue, whichever task's
        operation produced those bytes. Order on the wire is therefore fixed
        when the engine produces the bytes, and a task cancelled while waiting
        for the lock leaves its bytes in the queue for the next flusher.
        """
        await self._send_queued(self._engine.outgoing_head, self._check_usable)

    async def _flush_awaited(self) -> None:
        """Hand over only what the peer may be waiting for
        (``must_flush_before_receiving``), leaving application data queued
        behind it for the next send operation."""
        await self._send_queued(self._engine.awaited_head, self._check_usable)

    async def _send_queued(
        self, next_head: Callable[[], memoryview], check: Callable[[], None]
    ) -> None:
        """Send ``next_head()`` until it is empty, under the transport send lock.

        ``check`` runs before each send (``_check_usable``, or nothing for a
        broken stream's last alert).
        """
        engine = self._engine
        await _acquire(self._transport_send_lock)
        try:
            transport_io = self._transport_io
            while head := next_head():
                check()
                try:
                    sent = await transport_io.send(head)
                except trio.Cancelled as exc:
                    if transport_io.torn_by is not None:
                        # Some unknown prefix of ``head`` may be on the wire;
                        # sending any more could only tear a record.
                        self._break(
                            "a send on the transport was cancelled part-way and the "
                            "transport cannot say how much it sent (use a "
                            "trio.SocketStream or an ExactProgressStream to make "
                            "cancellation recoverable)",
                            exc,
                        )
                    raise
                except _TRANSPORT_ERRORS as exc:
                    self._raise_transport_error(exc)
                except BaseException as exc:
                    if transport_io.torn_by is not None:
                        # A transport bug, but the same uncertainty as a
                        # cancellation: part of ``head`` may be on the wire.
                        self._break(f"the transport's send_all raised {exc!r}", exc)
                    raise
                engine.consume_outgoing(sent)
        finally:
            self._release_transport_send_lock()

    def _release_transport_send_lock(self) -> None:
        self._transport_send_lock.release()
        # A receiver may have skipped flushing bytes the peer waits for
        # because we held the lock (``receive_some``,
        # ``_flush_handshake_flight``). If they are still queued, interrupt
        # its transport read so it comes back and flushes them.
        receive_scope = self._receive_scope
        if receive_scope is not None and self._engine.must_flush_before_receiving():
            receive_scope.cancel()

    async def _send_alert(self) -> None:
        """Best effort: hand the queued alert (and anything before it) over.

        Over a socket, non-blocking sends first: the alert is small and
        usually fits, so nothing waits. What does not fit gets a flush
        bounded by ALERT_TIMEOUT. If another task holds the transport, it is
        in the middle of a send that may itself be stuck; we do not queue
        behind it. A failing transport is not reported: the TLS error that
        brought us here is the one the caller must see.
        """
        if not self._engine.has_outgoing() or self._transport_send_lock.locked:
            return
        try:
            self._push_without_waiting()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not self._engine.has_outgoing():
            return
        with trio.move_on_after(ALERT_TIMEOUT):
            try:
                await self._send_queued(self._engine.outgoing_head, lambda: None)
            except Exception:
                pass

    def _push_without_waiting(self) -> None:
        """Hand queued ciphertext to a socket as far as it takes it, without awaiting.

        Only when no task holds the transport (we do not take the lock: with
        no await, nobody can take it before we return).
        """
        if self._transport_send_lock.locked:
            return
        try:
            push(self._engine, self._transport_io)
        except _TRANSPORT_ERRORS as exc:
            self._raise_transport_error(exc)

    async def _flush_handshake_flight(self) -> None:
        """Send the handshake's last flight if it has not gone out (the client's Finished).

        Used when a handshake completes and by every ``do_handshake``, which
        may follow one whose flush was cancelled. Only the handshake's own
        bytes decide: with those out, application data queued after them
        (the rest of a record a cancelled ``send_all`` tore) is left to the
        next send or receive, which know how to wait for it
        (``_flush_or_receive``); a ``do_handshake`` on a finished handshake
        sends nothing. If another task holds the send lock, it drains the
        whole queue (ours included) and we must not wait for it: its send may
        be blocked until the peer reads, while the peer is blocked until we
        read (full duplex over a bounded transport). If that task stops
        early, ``_flush`` wakes any receiver.
        """
        if self._engine.handshake_bytes_unsent and not self._transport_send_lock.locked:
            await self._flush_awaited()

    async def _flush_or_receive(self) -> None:
        """Before waiting for the peer: flush what it may wait for, or take what it sent.

        A receiver must not wait for the peer while the peer may be waiting
        for our queued bytes (the rest of a record a cancelled ``send_all``
        tore, a KeyUpdate's answer). But the peer may be in the same place:
        both ends cancelled a large ``send_all`` and now only receive, each
        with the rest of a torn record queued and each transport full because
        neither end reads. A receiver that only flushed would wait for ever
        on both sides. So we also read while we flush: whichever finishes
        first ends the other, and the caller asks the engine again (new
        ciphertext may hold plaintext to return; the unflushed rest stays
        queued and is offered again before the next wait, or sent by the
        next ``send_all``).

        An operating-system socket takes what it can without waiting first;
        usually that is everything and no second task is needed (other
        transports have no way to try, so they always get the second task).
        Ending the flush early needs a transport whose sends are exact (a
        cancelled one sent nothing); over any other, ending it would break
        the stream, so there we only flush.
        """
        self._push_without_waiting()
        if not self._engine.must_flush_before_receiving():
            return
        if not self._transport_io.exact_sends or self._engine.transport_eof_seen:
            # (After the transport's EOF there is nothing more to read.)
            await self._flush_awaited()
            return
        # The reader and the flush each end the other through the nursery's
        # scope. Neither lets an exception out of its task, so a caller's
        # cancellation reaches the caller as a plain ``Cancelled``, never
        # wrapped in an ExceptionGroup; ``failure`` carries what must be
        # raised once both are done.
        failure: BaseException | None = None

        async def receive_meanwhile() -> None:
            nonlocal failure
            try:
                await self._receive()
            except trio.Cancelled:
                # Ours (the flush finished), or the caller's, which the flush
                # meets too and reports.
                return
            except BaseException as exc:
                if failure is None:
                    failure = exc
            scope.cancel()

        async with trio.open_nursery() as nursery:
            scope = nursery.cancel_scope
            nursery.start_soon(receive_meanwhile)
            try:
                await self._flush_awaited()
            except trio.Cancelled as exc:
                if not scope.cancel_called:
                    failure = exc  # the caller's cancellation
            except BaseException as exc:
                if failure is None:
                    failure = exc
            scope.cancel()
        if failure is not None:
            raise failure

    async def _receive(self) -> bool:
        """Move one transport read of ciphertext into the engine.

        Returns whether we yielded to the scheduler. If another task
        completed a transport read while we waited for the lock, return at
        once: the caller retries its engine operation, which may now succeed,
        and a second read could wait for data that never comes.
        """
        # Callers ask only before the transport's EOF (``_drive``):
        # after it, the engine operation reports it.
        engine = self._engine
        io = self._transport_io
        seen = io.reads
        lock = self._transport_receive_lock
        yielded = await _acquire(lock)
        try:
            if seen != io.reads:
                return yielded
            self._check_usable()
            try:
                data = io.try_receive(TRANSPORT_RECEIVE_SIZE)
                if data is None:
                    # We have to wait. Cancelling a wait for data loses
                    # nothing (Trio's receive_some is cancel-atomic, and a
                    # readiness wait reads nothing).
                    # Over a socket, the wait may poll briefly before it
                    # blocks (:attr:`busy_poll`).
                    yielded = True
                    if engine.must_flush_before_receiving():
                        # Bytes the peer may wait for sit behind a send that
                        # holds the transport (the receiver skipped them). If
                        # that send stops early, ``_flush`` cancels this
                        # scope so we come back and send them.
                        # Only then: a CancelScope costs more than a small
                        # record's whole TLS work.
                        with trio.CancelScope() as scope:
                            self._receive_scope = scope
                            try:
                                data = await io.receive(TRANSPORT_RECEIVE_SIZE)
                            finally:
                                self._receive_scope = None
                    else:
                        data = await io.receive(TRANSPORT_RECEIVE_SIZE)
                    if data is None:
                        return yielded  # woken, or readiness without data
            except _TRANSPORT_ERRORS as exc:
                self._raise_transport_error(exc)
            except trio.Cancelled:
                raise
            except BaseException as exc:
                # Any other exception is a bug in the transport, and whether it
                # swallowed ciphertext we will never see is unknown: the byte
                # stream cannot be trusted again. Raised as it is, once; every
                # later call reports a broken stream (trio.SSLStream does the
                # same during its handshake).
                self._break(f"the transport's receive_some raised {exc!r}", exc)
                raise
            # No await between the transport read and the engine: a
            # cancellation can only arrive before the read (nothing consumed)
            # or after this line (everything kept in the incoming BIO).
            engine.receive_ciphertext(data)
            io.reads += 1
            return yielded
        finally:
            lock.release()

    # ------------------------------------------------------- the one loop

    async def _drive(
        self,
        what: str,
        step: Callable[[], object] | None,
        read_size: int = 0,
        outcome: object = _PROGRESS,
    ) -> tuple[object, bool]:
        """Call ``step`` until it is done; return its result and whether we yielded.

        ``step`` is an engine step: it answers ``Step.PROGRESS`` or
        ``Step.NEEDS_PEER`` until the operation is complete, then
        ``Step.DONE``. ``None`` stands for the read of ``receive_some``
        (``_read_step(read_size)``), whose result is the plaintext: the one
        operation that drains the plaintext buffer, does not flush first and
        answers an error through ``_read_failed``. (Named here rather than
        passed as a bound callable: a waiting receive holds its step for as
        long as it waits, and an idle server has one per connection.)
        ``outcome`` is the answer of a step the caller already took
        (``receive_some`` takes its first itself: when the plaintext is
        already in, no coroutine is needed).

        Every operation that may need the peer is this loop around one
        engine step: the handshake, the pinned write of ``send_all``, the
        read of ``receive_some``, the shutdown of ``unwrap``, and the wait
        for a client's certificate. Here is why each await sits where it
        does; the pinned write, which the library exists for, is the example.

        1. *Flush before asking the engine* (not for the read). A new chunk
           is encrypted only when the outgoing queue is empty. That bounds
           buffered ciphertext to about one chunk, and it makes
           ``pinned.delivered`` exact: when the queue is empty, every
           accepted byte has reached the transport. Other tasks may queue
           bytes while we flush or wait (a reader's answer to a
           renegotiation), so after every flush and every wait the loop
           comes back here, never straight to the engine. A receiver does
           not flush first: it must never wait behind application data the
           peer is not reading (see 4).

        2. *The flush is the only await that can lose anything, and only over
           a transport that cannot report progress.* Over a
           :class:`trio.SocketStream` or an ``ExactProgressStream`` a
           cancelled flush sends nothing, the queue keeps its head, and the
           next send operation continues from the exact byte. Over any other
           transport a cancellation inside its ``send_all`` breaks the stream
           (``_send_queued`` says why).

        3. *The engine step never awaits.* ``advance_pinned_write`` either
           has OpenSSL accept the outstanding chunk in full
           (``SSL_MODE_ENABLE_PARTIAL_WRITE`` is off in CPython) and queues
           its ciphertext (``PROGRESS``), or answers ``NEEDS_PEER`` having
           taken nothing. Then the same ``memoryview`` stays the outstanding
           chunk: OpenSSL's "retry with the same arguments" rule is kept by
           construction, which over memory BIOs nothing else would check. A
           TLS error from any step fails the connection (``_fail``: alert,
           then ``BrokenResourceError``) except in the read, which hands it
           to ``_read_failed`` (an HTTPS-style EOF is the end of the data).

        4. *NEEDS_PEER: what the peer waits for goes first.* The step may
           have queued handshake messages (a TLS 1.2 renegotiation, the
           handshake itself): they are flushed (back to 1) before we wait
           for the peer's. Then the loop's one way to wait (below):
           records decrypted meanwhile on a send path are application data
           the receiver has not asked for yet; they wait in the engine's
           plaintext buffer, and once that is full we wait for the receiver
           rather than read more (a peer cannot make us buffer without
           bound).

        5. *Cancellation between any two steps is harmless:* the state that
           matters (pinned offset, outstanding chunk, outgoing queue, incoming
           BIO, plaintext buffer) lives in the engine and is consistent at
           every await.
        """
        engine = self._engine
        receiving = step is None
        yielded = False
        # Each turn does one thing: flush, wait, or ask the engine. After a
        # flush or a wait the engine is asked again, and for a sender only
        # once the queue is empty (see 1).
        while outcome is _PROGRESS or outcome is _NEEDS_PEER:
            if not receiving and engine.has_outgoing():
                # 1 and 4: what is queued goes out before the engine is asked
                # again or we wait. Other tasks may queue more meanwhile (a
                # renegotiation's answer that a read produced, what a
                # ``_flush_or_receive`` left behind), so this repeats until
                # the queue is empty.
                await self._flush()
                outcome = _PROGRESS
            elif outcome is _NEEDS_PEER:
                if engine.transport_eof_seen:  # pragma: no cover - a guard
                    # OpenSSL 3 reports the transport's EOF itself
                    # (UNEXPECTED_EOF_WHILE_READING) as soon as a step meets it,
                    # so this is not reached with it; but a step that asked for
                    # more after the EOF would otherwise wait here for ever.
                    eof = ssl.SSLEOFError(f"the transport closed {what}")
                    if not receiving:
                        await self._fail(eof)
                    return await self._read_failed(eof), yielded
                elif not receiving and engine.buffered_plaintext_bytes >= PLAINTEXT_BUFFER_LIMIT:
                    # The receiver drains this buffer (and never meets it
                    # full here: it reads the buffer first). After the EOF
                    # check: once the transport has ended, waiting for a
                    # receiver to make room could not help.
                    await self._plaintext_drained.park()
                    yielded = True
                elif engine.must_flush_before_receiving() and not self._transport_send_lock.locked:
                    # Bytes the peer may itself be waiting for (the rest of a
                    # record a cancelled ``send_all`` tore, a KeyUpdate's
                    # answer) go out first, or the peer's bytes come in
                    # meanwhile (``_flush_or_receive``). If another task holds
                    # the transport to send them, we read (below), and it
                    # wakes our read should it stop early.
                    await self._flush_or_receive()
                elif await self._receive():  # one transport read
                    yielded = True
                outcome = _PROGRESS
            else:
                self._check_usable()
                try:
                    outcome = self._read_step(read_size) if step is None else step()
                except ssl.SSLError as exc:
                    if not receiving:
                        await self._fail(exc)
                    return await self._read_failed(exc), yielded
        return outcome, yielded  # Step.DONE, or the plaintext read

    # --------------------------------------------------------- handshake

    async def _ensure_handshake(self) -> bool:
        """Complete the handshake if needed; return whether we yielded."""
        engine = self._engine
        if engine.stage.handshake_done:
            return False
        yielded = await _acquire(self._handshake_lock)
        limiter = self._handshake_limiter
        held: trio.CapacityLimiter | None = None
        try:
            if engine.stage.handshake_done:
                # Another task finished it (and flushed) while we waited.
                return yielded
            if limiter is not None:
                # A token is for a handshake under way: a client that
                # connects and says nothing must not hold one, or a few
                # silent clients would stop every other handshake until
                # their timeouts. So the ClientHello comes first (an EOF
                # instead is reported by the handshake step).
                if (
                    engine.server_side
                    and not engine.ciphertext_bytes_received
                    and await self._receive()
                ):
                    yielded = True
                # Borrowed by the stream, not the task: whichever task drives
                # the handshake (the lazy first send or receive included),
                # the one token is released when it ends.
                await limiter.acquire_on_behalf_of(self)  # a checkpoint
                held = limiter
                yielded = True
            _, waited = await self._drive("during the handshake", engine.handshake_step)
            yielded = yielded or waited
            # A TLS 1.3 server's session tickets wait for its next send
            # (``must_flush_before_receiving`` is false for them): flushing
            # them from a receive could deadlock against a client that only
            # sends over an unbuffered transport (python-trio/trio#819), and
            # a client that never reads would leave them unread in its
            # socket, whose close then resets the connection and can destroy
            # the end of its upload (docs/closing.rst). Opted in, a
            # non-blocking socket send (which cannot deadlock) sends them now,
            # as ``openssl s_server`` does.
            if self._prompt_session_tickets:
                self._push_without_waiting()
            # The client's Finished: the server waits for it.
            await self._flush_handshake_flight()
            return yielded
        finally:
            if held is not None:
                held.release_on_behalf_of(self)
            self._handshake_lock.release()

    async def do_handshake(self) -> None:
        """Complete the TLS handshake, if it has not completed yet.

        Called automatically by the first ``send_all``, ``receive_some`` or
        ``wait_send_all_might_not_block``; call it yourself to get certificate
        errors early or to read :meth:`getpeercert` before any data moves.
        Host-name checking always happens here (never skipped, unlike a bare
        ``SSLObject.read``: CPython bpo-30141).

        Cancellation-safe: a cancelled handshake resumes on the next call.
        Several tasks may call it at once; they all wait for the same
        handshake.

        Raises:
          trio.BrokenResourceError: the handshake failed; ``__cause__`` holds
            the :class:`ssl.SSLError` (for instance
            :class:`ssl.SSLCertVerificationError`).
          trio.ClosedResourceError: the stream was closed.
        """
        await checkpoint_if_cancelled()
        self._check_usable()
        yielded = await self._ensure_handshake()
        # A flush over a socket may finish without waiting, so it does not
        # count as the call's checkpoint.
        await self._flush_handshake_flight()
        if not yielded:
            await cancel_shielded_checkpoint()

    # --------------------------------------------------------------- send

    async def _drive_pinned(self) -> None:
        """Push the pinned write (if any) through the engine to the transport."""
        await self._drive("during a renegotiation", self._engine.advance_pinned_write)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of ``data``.

        ``data`` is snapshotted before the first await (no copy for
        ``bytes``), so changing a ``bytearray`` after the call started changes
        nothing on the wire.

        If the call is cancelled, the unsent remainder stays *pinned*: call
        ``send_all`` again with the very same object to resume exactly where
        it stopped; any other send operation first completes the remainder.
        See :doc:`/cancellation` for the full contract.

        Raises:
          TypeError: ``data`` is not bytes-like (``str`` included).
          trio.BusyResourceError: another task is already sending.
          trio.BrokenResourceError: the connection failed (TLS error,
            transport failure, or an unrecoverable cancellation).
          trio.ClosedResourceError: the stream was closed.
        """
        engine = self._engine
        resume = engine.is_pinned(data)
        fresh = b"" if resume else snapshot(data)
        with self._send_conflict:
            # Cancelled here, the call did nothing at all: nothing is pinned.
            await checkpoint_if_cancelled()
            self._check_usable()
            writable = engine.stage.writable
            if not writable and engine.stage.sent_close:
                raise trio.ClosedResourceError("send_eof() was already called")
            if writable and not engine.has_pinned_write and not self._transport_send_lock.locked:
                # The common case: nothing else in flight. Same engine steps
                # as below, minus the awaits: over a socket the ciphertext
                # goes out without waiting (other transports take nothing
                # here); whatever cannot be finished without waiting is
                # finished by _drive_pinned.
                io = self._transport_io
                try:
                    if engine.has_outgoing() or len(fresh) > engine.write_chunk:
                        engine.pin(data, fresh)
                        send_pinned(engine, io)
                    elif fresh:
                        # One record: the engine pins it only if it must.
                        engine.write_small(data, fresh, io.try_send)
                    # Else nothing to encrypt and nothing queued: no empty
                    # socket write (h11 ends every HTTP/1.1 response with b"").
                except ssl.SSLError as exc:
                    await self._fail(exc)
                except _TRANSPORT_ERRORS as exc:
                    self._raise_transport_error(exc)
                if engine.has_pinned_write:
                    await self._drive_pinned()
                await cancel_shielded_checkpoint()
                return
            if not resume:
                if engine.has_pinned_write:
                    # A cancelled send_all left a remainder: finish it first so
                    # no message is torn on the wire. Cancelled in here, the
                    # new data was never pinned, so this call did nothing new.
                    await self._ensure_handshake()
                    await self._drive_pinned()
                # From here on a cancellation leaves ``fresh`` pinned, so
                # retrying with ``data`` resumes and anything else sends it
                # first; even a cancellation during the implicit handshake.
                engine.pin(data, fresh)
            await self._ensure_handshake()
            await self._drive_pinned()
            # The uncontended fast path may not have yielded (a lock taken
            # without waiting, a socket send that did not block); a checkpoint
            # must. Shielded: every byte has been handed over, so a
            # cancellation now would wrongly report failure.
            await cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until a ``send_all`` might not block.

        As with :class:`trio.SSLStream`, this only waits on the transport: it
        neither starts the handshake nor sends a pinned remainder (the next
        ``send_all`` does both). It waits its turn behind a task that is
        sending on the transport for a ``receive_some``, since that send
        would have to finish before ours could start anyway.
        """
        with self._send_conflict:
            await checkpoint_if_cancelled()
            self._check_usable()
            await _acquire(self._transport_send_lock)
            try:
                await self._transport_io.wait_writable()
            except _TRANSPORT_ERRORS as exc:
                self._raise_transport_error(exc)
            finally:
                self._release_transport_send_lock()

    # ------------------------------------------------------------ receive

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive up to ``max_bytes`` of plaintext; ``b""`` at the peer's close.

        Returns ``b""`` once the peer has sent ``close_notify`` (or, with
        ``https_compatible=True``, when the transport reaches EOF, even before
        or during the handshake: port scanners, health checks and load
        balancer probes connect and close without a word).

        Cancellation-safe: no decrypted byte is lost; the next call returns
        it.

        Raises:
          ValueError: ``max_bytes`` is less than 1.
          TypeError: ``max_bytes`` is not an integer.
          trio.BusyResourceError: another task is already receiving.
          trio.BrokenResourceError: the connection failed, or the transport
            reached EOF without ``close_notify`` (unless ``https_compatible``).
          trio.ClosedResourceError: the stream was closed.
        """
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        engine = self._engine
        with self._receive_conflict:
            await checkpoint_if_cancelled()
            if self._https_compatible and self._failed_by_eof():
                await cancel_shielded_checkpoint()
                return b""
            self._check_usable()
            try:
                yielded = False if engine.stage.handshake_done else await self._ensure_handshake()
            except trio.BrokenResourceError:
                # An EOF that broke the handshake is an EOF to an HTTPS-style
                # receiver; the stream stays broken for sending.
                if self._https_compatible and self._failed_by_eof():
                    await cancel_shielded_checkpoint()
                    return b""
                raise
            # Once ``read`` returns plaintext nothing may await with it in
            # hand except the shielded checkpoint below, so a cancellation can
            # never lose decrypted bytes. The first step runs here: when the
            # plaintext is already in, no loop is needed.
            data: object
            try:
                data = self._read_step(max_bytes)
            except ssl.SSLError as exc:
                data = await self._read_failed(exc)
            if data is _NEEDS_PEER or data is _PROGRESS:
                data, waited = await self._drive("while receiving", None, max_bytes, data)
                yielded = yielded or waited
        if not yielded:
            await cancel_shielded_checkpoint()
        return data  # type: ignore[return-value]  # the step's result: bytes

    def _read_step(self, max_bytes: int) -> bytes | Step:
        """The read step of ``receive_some``: up to ``max_bytes`` of plaintext
        (``b""`` at the peer's close_notify), or what the loop must do.

        A caller that asks for more than is decrypted gets, in this one call,
        what the socket already holds too, up to ``max_bytes``
        (``_fastpath.top_up``), unless another task is reading or the
        transport has ended. A transport failure met on the way breaks the
        stream; the next call reports it, after this data.
        """
        engine = self._engine
        got = engine.read(max_bytes)  # an ssl.SSLError propagates
        if got is not None:
            wants_more = 0 < len(got) < max_bytes
        elif max_bytes <= DEFAULT_RECEIVE_SIZE:
            return _NEEDS_PEER  # a caller who asks for one record waits for it
        else:
            wants_more = True
        if wants_more and not self._transport_receive_lock.locked and not engine.transport_eof_seen:
            io = self._transport_io
            reads = io.reads
            more, failure = top_up(
                engine, io, got or b"", max_bytes, TOP_UP_READ_SIZE, TRANSPORT_RECEIVE_SIZE
            )
            if failure is not None:
                self._note_transport_failure(failure)
            if more:
                got = more
            elif reads != io.reads:
                return _PROGRESS  # ciphertext, an EOF or an error came in
        if got is None:
            return _NEEDS_PEER
        if len(self._plaintext_drained):
            self._plaintext_drained.unpark_all()
        return got

    async def _read_failed(self, exc: ssl.SSLError) -> bytes:
        """A read failed: a broken stream, or with ``https_compatible`` an EOF.

        A transport EOF without close_notify is the end of the data for an
        HTTPS-style stream (the stream stays open for sending); anything
        else fails the connection, alert first.
        """
        if self._https_compatible and _is_eof(exc):
            self._engine.accept_eof_as_close()
            return b""
        await self._fail(exc)

    def _failed_by_eof(self) -> bool:
        """Did the stream break because the transport ended (no close_notify)?"""
        return self._state is StreamState.BROKEN and _is_eof(self._failure_cause)

    # -------------------------------------------------------------- close

    async def send_eof(self) -> None:
        """Send ``close_notify`` and keep receiving until the peer's.

        Closes our sending direction; ``receive_some`` goes on returning what
        the peer sends until its own ``close_notify`` (then ``b""``). Any
        pinned remainder of a cancelled ``send_all`` is sent first.

        On TLS 1.3 this is a true half-close: the peer may go on sending
        (RFC 8446 section 6.1). On TLS 1.2 and older, RFC 5246 section 7.2.1
        lets the side that sends ``close_notify`` keep reading until the
        peer's ``close_notify``, but a conforming peer answers at once with
        its own and may discard what it had not yet sent; so on those
        versions use ``send_eof`` to end the conversation, not to keep
        receiving a long reply. Either way it never raises anything but
        Trio's stream exceptions, so code written for streams that may or
        may not half-close (hypercorn's, for one) keeps working.

        Raises:
          trio.BrokenResourceError: the connection failed.
          trio.ClosedResourceError: the stream was closed.
          trio.BusyResourceError: another task is sending.
        """
        with self._send_conflict:
            await checkpoint_if_cancelled()
            self._check_usable()
            if self._engine.stage.sent_close:
                # A cancelled call may have left part of the close_notify queued.
                await self._flush()
                # (A flush over a socket may not wait: the call's checkpoint.)
                await cancel_shielded_checkpoint()
                return
            await self._ensure_handshake()
            await self._drive_pinned()
            try:
                # SSLObject.unwrap() calls SSL_shutdown twice, and the second
                # call reads records already received, failing on application
                # data. Decrypt those into the engine's buffer first; they
                # wait there for receive_some.
                self._engine.pump_incoming()
                self._engine.start_shutdown()
            except ssl.SSLError as exc:
                await self._fail(exc)
            await self._flush()
            # Shielded: the close_notify is handed over, so reporting a
            # cancellation now would claim the call did not happen.
            await cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        """Close the stream: flush, send ``close_notify``, close the transport.

        Does not wait for the peer's ``close_notify``. Skips it (and closes
        the transport at once) when ``https_compatible`` is set, the stream is
        broken, or another task is in the middle of a send. As with
        :class:`trio.SSLStream`, a stream whose handshake has not run yet
        performs it first, so the peer sees a clean close rather than a
        dropped connection, and a handshake that fails (an untrusted
        certificate, say) is reported, not hidden. The pinned remainder of a
        cancelled ``send_all`` is sent first. All of this runs within the
        caller's cancel scope; if that scope is cancelled, the transport is
        closed forcefully and ``Cancelled`` propagates. The stream is closed
        in every case.

        Raises:
          trio.BrokenResourceError: the handshake this call performed failed
            (the transport is closed all the same).
        """
        if self._state is StreamState.CLOSED:
            # A checkpoint, without the CancelScope trio.lowlevel.checkpoint()
            # builds: servers close each stream several times over.
            await checkpoint_if_cancelled()
            await cancel_shielded_checkpoint()
            return
        graceful = (
            self._state is StreamState.OPEN
            and not self._https_compatible
            and not self._send_conflict.held
        )
        if not graceful:
            self._mark_closed()
            self._drain_before_close()
            await self.transport_stream.aclose()
            return
        try:
            with self._send_conflict:
                # A failed handshake propagates (after the forceful close
                # below): the caller must learn that the peer was never who
                # it should have been.
                await self._ensure_handshake()
                try:
                    await self._drive_pinned()
                    if not self._engine.stage.sent_close:
                        try:
                            self._engine.start_shutdown()
                        except ssl.SSLError as exc:
                            await self._fail(exc)
                    await self._flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The peer or transport is gone (told why, if TLS failed):
                    # nobody to say goodbye to.
                    pass
        except BaseException:
            self._mark_closed()
            self._drain_before_close()
            await trio.aclose_forcefully(self.transport_stream)
            raise
        self._mark_closed()
        self._drain_before_close()
        await self.transport_stream.aclose()

    def _drain_before_close(self) -> None:
        """Read what the kernel already holds, so the close is a FIN, not a reset.

        ``_fastpath.drain`` says why; here only the bound
        (``CLOSE_DRAIN_LIMIT``). A transport failure met on the way ends the
        drain and is not reported: the stream is closing.
        """
        drain(self._engine, self._transport_io, CLOSE_DRAIN_LIMIT, TRANSPORT_RECEIVE_SIZE)

    def _mark_closed(self) -> None:
        """The stream is closed for good; wake a sender parked on the buffer."""
        self._state = StreamState.CLOSED
        self._plaintext_drained.unpark_all()

    async def unwrap(self) -> tuple[trio.abc.Stream, bytes | bytearray]:
        """Shut TLS down cleanly and hand back the transport.

        Sends ``close_notify`` (after any pinned remainder), waits for the
        peer's, and returns ``(transport_stream, trailing_bytes)`` where
        ``trailing_bytes`` is whatever the peer sent after its close_notify.
        The stream is closed afterwards and its ``transport_stream`` is
        ``None``, as with :class:`trio.SSLStream`; the transport itself is not
        closed. Cancellation safe: a cancelled ``unwrap`` may be called again.
        """
        engine = self._engine
        with self._send_conflict, self._receive_conflict:
            await checkpoint_if_cancelled()
            self._check_usable()
            await self._ensure_handshake()
            await self._drive_pinned()
            await self._drive("before the peer's close_notify", engine.shutdown_step)
            await self._flush()
            self._mark_closed()
            trailing = engine.take_trailing_ciphertext()
            # Handed back: like trio.SSLStream, keep no reference to it.
            transport: trio.abc.Stream = self.transport_stream
            self.transport_stream = None  # type: ignore[assignment]
            await cancel_shielded_checkpoint()
            return transport, trailing

    # ------------------------------------------- post-handshake client auth

    async def verify_client_post_handshake(self) -> None:
        """Ask the connected client for its certificate (TLS 1.3 server side).

        Sends a CertificateRequest and returns once the client's certificate
        has arrived and passed verification, after which
        :meth:`getpeercert` returns it. Both contexts need
        ``post_handshake_auth = True`` (on the server it also stops the
        certificate being asked for during the handshake) and the server
        context a ``verify_mode`` of ``CERT_OPTIONAL`` or ``CERT_REQUIRED``.

        Application data that arrives meanwhile is kept for
        ``receive_some``; another task may keep receiving (and sending)
        during the wait. Cancellation-safe like the handshake: a cancelled
        call leaves the request outstanding, and calling again waits for the
        same certificate instead of asking twice.

        Raises:
          PostHandshakeAuthError: the connection cannot do post-handshake
            authentication; nothing was sent.
          trio.BusyResourceError: another task is already waiting for the
            client's certificate.
          trio.ClosedResourceError: the stream was closed, or
            :meth:`send_eof` was called (nothing may follow our
            ``close_notify``); nothing was sent.
          trio.BrokenResourceError: the client refused or sent a certificate
            that failed verification (``__cause__`` is the ``ssl.SSLError``),
            or the connection failed.
        """
        engine = self._engine
        with self._pha_conflict:
            await checkpoint_if_cancelled()
            self._check_usable()
            await self._ensure_handshake()
            if not engine.certificate_requested:
                if engine.stage.sent_close:
                    # A CertificateRequest after our close_notify would be a
                    # record after the closure alert (RFC 8446 section 6.1).
                    raise trio.ClosedResourceError("send_eof() was already called")
                if not engine.server_side:
                    raise PostHandshakeAuthError("only the server can ask for a certificate")
                if not engine.tls13:
                    raise PostHandshakeAuthError(
                        f"post-handshake authentication needs TLS 1.3, not "
                        f"{engine.negotiated_version}"
                    )
                if engine.has_peer_certificate():
                    raise PostHandshakeAuthError("the client already sent a certificate")
                try:
                    engine.request_client_certificate()
                except ssl.SSLError as exc:
                    raise PostHandshakeAuthError(
                        f"cannot request the client's certificate: {exc}"
                    ) from exc
            # Application data that arrives meanwhile waits in the engine's
            # plaintext buffer for receive_some.
            await self._drive("before the client's certificate", engine.client_certificate_step)
            await cancel_shielded_checkpoint()
