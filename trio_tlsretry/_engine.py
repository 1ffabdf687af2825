"""The synchronous TLS engine: ``SSLObject``, two memory BIOs, no I/O.

This module knows nothing about Trio (or any event loop). It owns

* the ``ssl.SSLObject`` and its incoming/outgoing ``ssl.MemoryBIO`` pair;
* the :class:`~trio_tlsretry._pinned.PinnedWrite` of the ``send_all`` in
  progress, and the rule that a write is retried with the identical slice;
* the *outgoing ciphertext queue*: every byte the TLS engine produced that the
  transport has not yet accepted, in wire order, whichever operation produced
  it. Because the queue belongs to the engine rather than to the task that
  caused the bytes, a cancelled task can never take ciphertext down with it;
* a small buffer of plaintext that was decrypted on the *send* path (see
  :meth:`TLSEngine.pump_incoming`) and is waiting for the receiver;
* counters for :class:`~trio_tlsretry.TLSStreamStatistics`.

Each method does a bounded amount of work and returns a plain answer (done /
needs more incoming ciphertext). The async layer in ``_stream.py`` decides when
to move bytes between the queue and the transport.
"""

from __future__ import annotations

import enum
import ssl
from collections import deque
from collections.abc import Callable
from typing import Final

from ._pinned import PinnedWrite

__all__ = ["DEFAULT_WRITE_CHUNK", "PLAINTEXT_BUFFER_LIMIT", "Stage", "Step", "TLSEngine"]

#: Plaintext handed to ``SSLObject.write`` at a time. The ciphertext of one
#: chunk (plus a few record headers) is the most the engine buffers for a
#: ``send_all``, whatever the size of the caller's data, and the most its
#: outgoing BIO ever holds (a MemoryBIO never gives memory back). A setting:
#: read when an engine is made, so a benchmark may assign it
#: (``benchmarks/_worker.py --knob WRITE_CHUNK=...``); docs/performance.rst
#: has the measurements behind the default.
DEFAULT_WRITE_CHUNK = 64 * 1024

#: Plaintext decrypted on the send path that may wait for the receiver before
#: the send path stops pulling more from the transport.
PLAINTEXT_BUFFER_LIMIT: Final = 256 * 1024

_EMPTY: Final = memoryview(b"")

#: The most plaintext one TLS record carries (RFC 8446 5.1, RFC 5246 6.2.1).
#: ``SSLObject.read`` returns at most one record, and allocates the whole
#: size it is asked for before shrinking the result, so asking for more only
#: costs: 256 KiB is a fresh memory mapping per call with glibc.
_MAX_RECORD_PLAINTEXT: Final = 16384


class Step(enum.Enum):
    """What one engine step did: the stream's drive loop acts on the answer.

    Every operation that may need the peer (the handshake, the pinned write,
    a read, the shutdown, post-handshake authentication) is a step the
    stream calls again and again until it answers :attr:`DONE`, flushing
    queued ciphertext and waiting for the peer in between.
    """

    #: The operation is complete.
    DONE = enum.auto()
    #: It made progress (encrypted a chunk, took new ciphertext): flush what
    #: is queued and ask again, without waiting for the peer.
    PROGRESS = enum.auto()
    #: It needs the peer's bytes and took nothing; it may have queued bytes
    #: the peer needs first (handshake messages), which go out before the wait.
    NEEDS_PEER = enum.auto()


class Stage(enum.Enum):
    """Where a connection is in its life; only the engine changes it.

    Each member carries the facts the stream asks about as plain attributes
    (``engine.stage.writable``): the hot paths ask them on every call, and an
    attribute costs less than a property computed from the stage.
    """

    #: The handshake has not completed.
    HANDSHAKING = (1, False, False, False, False)
    #: Both directions are open.
    OPEN = (2, True, True, False, False)
    #: Our close_notify is queued or sent; the peer may still send.
    SENT_CLOSE = (3, True, False, True, False)
    #: The peer's close_notify arrived (or, for an HTTPS-style stream, its
    #: EOF was accepted as one); we may still send.
    RECEIVED_CLOSE = (4, True, True, False, True)
    #: Both close_notify alerts: nothing more moves.
    CLOSED = (5, True, False, True, True)

    def __init__(
        self,
        _ordinal: int,
        handshake_done: bool,
        writable: bool,
        sent_close: bool,
        peer_closed: bool,
    ) -> None:
        #: Past the handshake (a close queued during it counts as past it).
        self.handshake_done = handshake_done
        #: Application data may be written: the handshake is done and our
        #: close_notify is not queued.
        self.writable = writable
        #: Our close_notify is queued: nothing may be written after it.
        self.sent_close = sent_close
        #: The peer's close_notify arrived: no more application data comes.
        self.peer_closed = peer_closed


#: What each stage becomes when our close_notify is queued...
_AFTER_SENDING_CLOSE: Final = {
    Stage.HANDSHAKING: Stage.SENT_CLOSE,
    Stage.OPEN: Stage.SENT_CLOSE,
    Stage.SENT_CLOSE: Stage.SENT_CLOSE,
    Stage.RECEIVED_CLOSE: Stage.CLOSED,
    Stage.CLOSED: Stage.CLOSED,
}
#: ... and when the peer's arrives.
_AFTER_RECEIVING_CLOSE: Final = {
    Stage.HANDSHAKING: Stage.RECEIVED_CLOSE,
    Stage.OPEN: Stage.RECEIVED_CLOSE,
    Stage.SENT_CLOSE: Stage.CLOSED,
    Stage.RECEIVED_CLOSE: Stage.RECEIVED_CLOSE,
    Stage.CLOSED: Stage.CLOSED,
}


class TLSEngine:
    """Sans-IO TLS state for one connection.

    Outcomes are reported as return values, never by raising
    ``SSLWantReadError``: a method returns ``False`` (or ``None``) when it
    needs more incoming ciphertext, which the caller supplies with
    :meth:`receive_ciphertext`. Any other ``ssl.SSLError`` propagates.
    """

    # Thousands of idle connections are common; no per-instance dict.
    __slots__ = (
        "_deferred_error",
        "_flush_mark",
        "_handshake_end",
        "_head",
        "_incoming",
        "_outgoing",
        "_plaintext",
        "_plaintext_bytes",
        "_produced",
        "_tls13",
        "_version",
        "certificate_requested",
        "ciphertext_bytes_received",
        "ciphertext_bytes_sent",
        "max_outgoing_ciphertext_bytes",
        "pinned",
        "plaintext_bytes_received",
        "plaintext_bytes_sent",
        "ssl_object",
        "stage",
        "write_chunk",
        "write_retries",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None,
        write_chunk: int | None = None,
    ) -> None:
        if write_chunk is None:
            write_chunk = DEFAULT_WRITE_CHUNK
        if write_chunk < 1:
            raise ValueError("write_chunk must be at least 1")
        self._incoming: Final = ssl.MemoryBIO()
        self._outgoing: Final = ssl.MemoryBIO()
        self.ssl_object: Final = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self.write_chunk = write_chunk
        #: The connection's life stage (:class:`Stage`).
        self.stage = Stage.HANDSHAKING
        #: A post-handshake CertificateRequest is out and unanswered.
        self.certificate_requested = False
        # Set when the handshake completes; until then assume the worst.
        self._tls13 = False
        # Kept from the handshake: SSLObject.version() answers None once the
        # transport's EOF has been read, and the version cannot change later.
        self._version: str | None = None
        #: The ``send_all`` in progress, if any.
        self.pinned: PinnedWrite | None = None
        # The head of the outgoing queue: bytes taken out of ``outgoing`` and
        # partly handed to the transport. The rest of the queue still sits in
        # the BIO, so order is preserved without a second container.
        self._head: memoryview = _EMPTY
        # Where the last ciphertext the peer may be waiting for ends, counted
        # in bytes of the whole outgoing stream (see ``_note_output``).
        self._flush_mark = 0
        # Where the handshake's own output ends in the ciphertext stream.
        self._handshake_end = 0
        # Ciphertext produced so far (sent or queued), at the last _note_output.
        self._produced = 0
        # Created on first use: most connections never need it.
        self._plaintext: deque[bytes] | None = None
        self._plaintext_bytes = 0
        self._deferred_error: ssl.SSLError | None = None
        # Counters.
        self.plaintext_bytes_sent = 0
        self.plaintext_bytes_received = 0
        self.ciphertext_bytes_sent = 0
        self.ciphertext_bytes_received = 0
        self.write_retries = 0
        self.max_outgoing_ciphertext_bytes = 0

    # ----------------------------------------------------------------- stage

    def _received_close(self) -> None:
        self.stage = _AFTER_RECEIVING_CLOSE[self.stage]

    # ----------------------------------------------------------------- queue

    @property
    def outgoing_ciphertext_bytes(self) -> int:
        """Ciphertext produced by the engine and not yet accepted by the transport."""
        return len(self._head) + self._outgoing.pending

    @property
    def incoming_ciphertext_bytes(self) -> int:
        """Ciphertext received from the transport and not yet processed."""
        return self._incoming.pending

    @property
    def transport_eof_seen(self) -> bool:
        """The transport's EOF has been fed in: no more ciphertext will come."""
        return self._incoming.eof

    def has_outgoing(self) -> bool:
        return bool(self._head) or self._outgoing.pending > 0

    def must_flush_before_receiving(self) -> bool:
        """Is there queued ciphertext the peer may be waiting for?

        Everything queued counts (handshake messages, a KeyUpdate's answer,
        the rest of a record a cancelled send left half-sent, which the peer
        cannot decrypt without), except session tickets that a TLS 1.3 server
        made at the end of its handshake and nothing has followed: nothing on
        the peer's side waits for them, and flushing them from a receive
        could deadlock against a client that only sends over an unbuffered
        transport (python-trio/trio#819).
        """
        return self.ciphertext_bytes_sent < self._flush_mark

    @property
    def handshake_bytes_unsent(self) -> int:
        """How much of the handshake's last flight the transport has not taken.

        Non-zero only when the flush that should have followed the handshake
        was cancelled (or left to another task): the peer's handshake waits
        for these bytes. Whatever was queued after them is not counted.
        """
        return max(0, self._handshake_end - self.ciphertext_bytes_sent)

    @property
    def bytes_before_flush_mark(self) -> int:
        """How much of the queue :meth:`must_flush_before_receiving` is about."""
        return max(0, self._flush_mark - self.ciphertext_bytes_sent)

    def _note_output(self, *, peer_may_wait: bool = True) -> None:
        # Called after every engine call that may have produced ciphertext;
        # ``peer_may_wait`` is False only for a TLS 1.3 server's tickets.
        pending = len(self._head) + self._outgoing.pending
        if pending > self.max_outgoing_ciphertext_bytes:
            self.max_outgoing_ciphertext_bytes = pending
        produced = self.ciphertext_bytes_sent + pending
        if produced > self._produced:
            self._produced = produced
            if peer_may_wait:
                self._flush_mark = produced

    def outgoing_head(self) -> memoryview:
        """The next bytes to hand to the transport (empty if none).

        Repeated calls return the same bytes until :meth:`consume_outgoing`
        says some were sent. The head is refilled with everything queued in
        the BIO, at most about one write chunk of ciphertext.
        """
        if not self._head and self._outgoing.pending:
            self._head = memoryview(self._outgoing.read())
        return self._head

    def awaited_head(self) -> memoryview:
        """The part of :meth:`outgoing_head` the peer may be waiting for
        (:meth:`must_flush_before_receiving`); empty when there is none."""
        return self.outgoing_head()[: self.bytes_before_flush_mark]

    def consume_outgoing(self, sent: int) -> bool:
        """The transport accepted the first ``sent`` bytes of the head.

        Returns whether ciphertext is still queued (:meth:`has_outgoing`).
        """
        if not 0 <= sent <= len(self._head):
            raise ValueError(f"transport reported {sent} bytes sent of {len(self._head)}")
        # An empty slice would keep the whole block of ciphertext alive.
        self._head = self._head[sent:] if sent < len(self._head) else _EMPTY
        self.ciphertext_bytes_sent += sent
        if self._head or self._outgoing.pending:
            return True
        pinned = self.pinned
        if pinned is not None:
            pinned.mark_delivered()
        return False

    # ------------------------------------------------------------- handshake

    def do_handshake(self) -> bool:
        """Advance the handshake; ``True`` once it has completed."""
        if self.stage.handshake_done:
            return True
        queue_was_empty = not self.has_outgoing()
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            self._note_output()
            return False
        self.stage = Stage.OPEN
        self._version = self.ssl_object.version()
        self._tls13 = self._version == "TLSv1.3"
        # A TLS 1.3 server has nothing left to say after the client's
        # Finished except its NewSessionTicket messages. They may wait.
        tickets_only = self.ssl_object.server_side and self._tls13 and queue_was_empty
        self._note_output(peer_may_wait=not tickets_only)
        self._handshake_end = self._flush_mark
        return True

    def handshake_step(self) -> Step:
        """:meth:`do_handshake` as a step of the drive loop."""
        return Step.DONE if self.do_handshake() else Step.NEEDS_PEER

    @property
    def negotiated_version(self) -> str | None:
        """The protocol version the handshake agreed on (``None`` before it).

        Unlike ``SSLObject.version()``, still answers after the transport's
        EOF has been read.
        """
        return self._version

    @property
    def server_side(self) -> bool:
        return self.ssl_object.server_side

    @property
    def tls13(self) -> bool:
        """Whether the completed handshake negotiated TLS 1.3."""
        return self._tls13

    # ----------------------------------------------------------------- write

    @property
    def has_pinned_write(self) -> bool:
        """A ``send_all`` is in progress (or was cancelled and left a remainder)."""
        return self.pinned is not None

    def is_pinned(self, source: object) -> bool:
        """Is ``source`` the very object the pinned write was made from?"""
        pinned = self.pinned
        return pinned is not None and pinned.source is source

    @property
    def pinned_bytes(self) -> int:
        """Plaintext of the pinned write not yet handed to the transport."""
        pinned = self.pinned
        return pinned.undelivered if pinned is not None else 0

    def advance_pinned_write(self) -> Step:
        """One step of the pinned write, with the outgoing queue empty.

        When every byte has been accepted (and, the queue being empty,
        delivered), the write is finished and unpinned. Otherwise the
        outstanding chunk is offered to OpenSSL (:meth:`write_pinned_chunk`).
        Raises ``ssl.SSLError`` if OpenSSL fails the connection.
        """
        pinned = self.pinned
        if pinned is None:
            return Step.DONE
        if not pinned.unaccepted:
            pinned.mark_delivered()
            self.unpin()
            return Step.DONE
        return Step.PROGRESS if self.write_pinned_chunk() else Step.NEEDS_PEER

    def pin(self, source: object, data: bytes) -> PinnedWrite:
        """Make ``data`` (the snapshot of ``source``) the write in progress."""
        if self.pinned is not None:
            raise RuntimeError("a pinned write is already in progress")
        pinned = PinnedWrite(source, data)
        self.pinned = pinned
        return pinned

    def unpin(self) -> None:
        """Forget the pinned write; it must be fully delivered."""
        pinned = self.pinned
        if pinned is not None:
            if pinned.undelivered:  # pragma: no cover - internal misuse
                raise RuntimeError("unpin() with undelivered plaintext")
            pinned.release()
            self.pinned = None

    def write_pinned_chunk(self) -> bool:
        """Offer the pinned write's outstanding chunk to the TLS engine.

        Returns ``True`` when the chunk was accepted (its ciphertext is now in
        the outgoing queue) and ``False`` when OpenSSL needs incoming data
        first. In the ``False`` case the very same ``memoryview`` stays in
        ``pinned.chunk`` and is the only thing the next call passes.

        Before writing on a TLS 1.2 (or older) connection, records already in
        the incoming BIO are decrypted into the plaintext buffer: if a
        renegotiation is under way, ``SSL_write`` would read them itself and
        fail with ``UNEXPECTED_RECORD`` on application data (OpenSSL only lets
        ``SSL_read`` meet application data mid-handshake). This is the failure
        that breaks ``trio.SSLStream`` when a peer renegotiates during a
        two-way transfer.
        """
        pinned = self.pinned
        if pinned is None:  # pragma: no cover - internal misuse
            raise RuntimeError("write_pinned_chunk() without a pinned write")
        if not self._write(pinned.next_chunk(self.write_chunk)):
            return False
        pinned.accept_chunk()
        return True

    def write_small(
        self, source: object, data: bytes, try_send: Callable[[memoryview], int]
    ) -> None:
        """Encrypt all of ``data`` in one go and offer it to ``try_send`` at once.

        The small-write fast path: ``data`` is at most :attr:`write_chunk`
        bytes, nothing is pinned and the outgoing queue is empty.
        ``try_send`` is a non-blocking send (it never awaits) that returns
        how much it took. Nothing can observe the write half-done, so it is
        pinned only when it must be, as the pinned write would have left it:
        ``data`` itself when OpenSSL wants to read first (nothing was taken,
        and the retry must pass the same bytes); the write as accepted when
        ``try_send`` took less than all of its ciphertext or raised (which
        propagates). An ``ssl.SSLError`` propagates with nothing pinned.
        """
        if not self._write(data):
            self.pin(source, data)
            return
        head = self._head = memoryview(self._outgoing.read())
        try:
            sent = try_send(head)
        except BaseException:
            self._pin_accepted(source, data)
            raise
        if self.consume_outgoing(sent):
            self._pin_accepted(source, data)

    def _pin_accepted(self, source: object, data: bytes) -> None:
        """Pin a write that OpenSSL already took in full."""
        self.pin(source, data).accepted = len(data)

    def _write(self, data: bytes | memoryview) -> bool:
        """``SSLObject.write``; ``False`` if it wants to read first (nothing taken)."""
        if self._may_renegotiate():
            self.pump_incoming()
        try:
            self.ssl_object.write(data)
        except ssl.SSLWantReadError:
            self.write_retries += 1
            self._note_output()
            return False
        self.plaintext_bytes_sent += len(data)
        self._note_output()
        return True

    def _may_renegotiate(self) -> bool:
        # Renegotiation exists only before TLS 1.3; the version is known once
        # the handshake is done (writes only happen after it).
        return not self._tls13 and (self._incoming.pending > 0 or self.ssl_object.pending() > 0)

    # ------------------------------------------------------------------ read

    def receive_ciphertext(self, data: bytes | bytearray | memoryview) -> None:
        """Feed ciphertext from the transport; ``b""`` means transport EOF."""
        if data:
            self.ciphertext_bytes_received += len(data)
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    @property
    def buffered_plaintext_bytes(self) -> int:
        return self._plaintext_bytes

    def pending_plaintext(self) -> int:
        """Decrypted bytes a read would return without more ciphertext."""
        return self.ssl_object.pending() + self._plaintext_bytes

    def pump_incoming(self) -> None:
        """Decrypt every complete record already received into the buffer.

        Used on the send path, where OpenSSL must not meet application data
        itself. Stops at the first ``WANT_READ``. A close_notify or an error is
        remembered and reported by :meth:`read` after the buffered plaintext,
        so the receiver sees bytes and events in wire order.
        """
        if self._deferred_error is not None or self.stage.peer_closed:
            return
        while True:
            try:
                data = self.ssl_object.read(_MAX_RECORD_PLAINTEXT)
            except ssl.SSLWantReadError:
                self._note_output()
                return
            except ssl.SSLError as exc:
                self._note_output()
                self._deferred_error = exc
                return
            self._note_output()
            if not data:
                # Python < 3.12 may return b"" on a clean close.
                self._deferred_error = ssl.SSLZeroReturnError("close_notify received")
                return
            if self._plaintext is None:
                self._plaintext = deque()
            self._plaintext.append(data)
            self._plaintext_bytes += len(data)

    def defer_error(self, exc: ssl.SSLError) -> None:
        """Report ``exc`` from the next :meth:`read`, after plaintext already handed out."""
        if self._deferred_error is None:
            self._deferred_error = exc

    def pending_error(self) -> ssl.SSLError | None:
        """A TLS error met by :meth:`pump_incoming`, if it was not a close_notify."""
        exc = self._deferred_error
        if isinstance(exc, ssl.SSLZeroReturnError):
            return None
        return exc

    def nothing_to_decrypt(self) -> bool:
        """Would ``SSLObject.read`` certainly raise ``SSLWantReadError``?

        True when no ciphertext is waiting in the incoming BIO (and no EOF),
        and OpenSSL holds no decrypted byte. CPython leaves OpenSSL's
        read-ahead off, so OpenSSL only ever takes the rest of the record it
        is reading from the BIO and cannot be sitting on a complete record.
        Asking first is much cheaper than the exception (tested against the
        real thing in ``test_engine.py``).
        """
        incoming = self._incoming
        return not incoming.pending and not incoming.eof and not self.ssl_object.pending()

    def read(self, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes`` of plaintext, ``b""`` at close_notify, ``None``
        if more ciphertext is needed.

        Several TLS records are decrypted in one call when they are already
        here: ``SSLObject.read`` stops at a record boundary, and handing each
        16 KiB record back to the scheduler separately costs more than the
        decryption. Raises ``ssl.SSLError`` (including ``SSLEOFError`` for a
        transport EOF without close_notify).
        """
        pieces: list[bytes] = []
        got = self.read_into(pieces, max_bytes)
        if not got:
            return None if got is None else b""
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def read_into(self, pieces: list[bytes], max_bytes: int) -> bool | None:
        """:meth:`read`, appending the plaintext to ``pieces`` instead of joining it.

        Returns ``True`` when plaintext was appended, ``False`` at
        close_notify and ``None`` when more ciphertext is needed. For a
        caller that gathers several reads, so the plaintext is joined once.
        """
        buffer = self._plaintext
        if buffer:
            pieces.append(self._take_buffered(buffer, max_bytes))
            return True
        if self._deferred_error is not None:
            exc = self._deferred_error
            if isinstance(exc, ssl.SSLZeroReturnError):
                self._deferred_error = None
                self._received_close()
                return False
            raise exc
        if self.stage.peer_closed:
            return False
        ssl_object = self.ssl_object
        if self.nothing_to_decrypt():
            return None
        wanted = max_bytes
        first = len(pieces)
        try:
            while wanted > 0:
                piece = ssl_object.read(min(wanted, _MAX_RECORD_PLAINTEXT))
                if not piece:
                    # CPython returns b"" instead of raising when the
                    # close_notify arrives before we sent ours.
                    raise ssl.SSLZeroReturnError("close_notify received")
                pieces.append(piece)
                wanted -= len(piece)
                if self.nothing_to_decrypt():
                    break  # skip the SSLWantReadError the next read would raise
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            if len(pieces) == first:
                self._note_output()
                self._received_close()
                return False
            self._deferred_error = ssl.SSLZeroReturnError("close_notify received")
        except ssl.SSLError as exc:
            if len(pieces) == first:
                self._note_output()
                raise
            # Hand over what was decrypted before the error; report it next.
            self._deferred_error = exc
        self._note_output()
        if len(pieces) == first:
            return None
        self.plaintext_bytes_received += max_bytes - wanted
        return True

    def _take_buffered(self, buffer: deque[bytes], max_bytes: int) -> bytes:
        out: list[bytes] = []
        wanted = max_bytes
        while buffer and wanted > 0:
            piece = buffer[0]
            if len(piece) <= wanted:
                buffer.popleft()
                out.append(piece)
                wanted -= len(piece)
            else:
                out.append(piece[:wanted])
                buffer[0] = piece[wanted:]
                wanted = 0
        data = out[0] if len(out) == 1 else b"".join(out)
        self._plaintext_bytes -= len(data)
        self.plaintext_bytes_received += len(data)
        return data

    # ------------------------------------------- post-handshake client auth

    def request_client_certificate(self) -> None:
        """Queue a TLS 1.3 CertificateRequest to the (connected) client.

        OpenSSL only emits the message on the next write or handshake call,
        so a ``do_handshake`` follows. Raises ``ssl.SSLError`` if the
        connection cannot do post-handshake authentication.
        """
        self.ssl_object.verify_client_post_handshake()
        self.ssl_object.do_handshake()
        self.certificate_requested = True
        self._note_output()

    def client_certificate_step(self) -> Step:
        """Process what arrived; done once the requested certificate is in.

        The client's Certificate is only handled inside ``SSL_read``, so the
        records are decrypted into the plaintext buffer, where application
        data waits for the receiver. Raises the TLS error that verification
        or the client met, if any.
        """
        self.pump_incoming()
        if self.has_peer_certificate():
            self.certificate_requested = False
            return Step.DONE
        error = self.pending_error()
        if error is not None:
            raise error
        return Step.NEEDS_PEER

    def has_peer_certificate(self) -> bool:
        try:
            return self.ssl_object.getpeercert(binary_form=True) is not None
        except ValueError:
            # CPython refuses while SSL_is_init_finished() is false: the
            # client's certificate flight is only partly processed, or the
            # post-handshake authentication failed (see pending_error()).
            return False

    # -------------------------------------------------------------- shutdown

    def start_shutdown(self) -> bool:
        """Queue our close_notify; ``True`` if the peer's has also arrived.

        ``SSLObject.unwrap`` raises ``SSLWantReadError`` until the peer's
        close_notify has been read; the first call queues ours either way.
        """
        try:
            self.ssl_object.unwrap()
        except ssl.SSLWantReadError:
            self.stage = _AFTER_SENDING_CLOSE[self.stage]
            self._note_output()
            return False
        self.stage = Stage.CLOSED
        self._note_output()
        return True

    def shutdown_step(self) -> Step:
        """:meth:`start_shutdown` as a step: done once the peer's close_notify is in."""
        return Step.DONE if self.start_shutdown() else Step.NEEDS_PEER

    def absorb_at_close(self, data: bytes | bytearray | memoryview) -> None:
        """Process ciphertext read just before the transport closes; keep no plaintext.

        The records are decrypted so that OpenSSL handles what it carries
        (a TLS 1.3 server's session tickets make :attr:`ssl_object`'s
        ``session`` resumable); the plaintext is dropped, as is what follows
        a close_notify or a TLS error: the connection is ending and nobody
        will read any of it. Before the handshake completes nothing is
        decrypted (the bytes only leave the transport).
        """
        self.ciphertext_bytes_received += len(data)
        if (
            not self.stage.handshake_done
            or self._deferred_error is not None
            or self.stage.peer_closed
        ):
            return
        self._incoming.write(data)
        while True:
            try:
                if not self.ssl_object.read(_MAX_RECORD_PLAINTEXT):
                    self._received_close()
                    return
            except ssl.SSLWantReadError:
                return
            except ssl.SSLError as exc:
                # (A close_notify is an SSLZeroReturnError on Python 3.12+.)
                self._deferred_error = exc
                return

    def accept_eof_as_close(self) -> None:
        """Treat the transport's EOF without close_notify as the peer's close.

        For ``https_compatible`` streams: reads answer ``b""`` from now on.
        """
        self._received_close()

    def take_trailing_ciphertext(self) -> bytes:
        """Bytes received after the peer's close_notify (for ``unwrap``)."""
        return self._incoming.read()
