"""The await-free fast path: what the stream can finish without waiting.

Over a socket, most calls need no wait at all: the kernel takes a small
record's ciphertext at once (a one-record write is the engine's
``write_small``, which takes the non-blocking send itself), and a receive
that asks for more than one record finds the rest already in the kernel.
Each function here moves bytes between the engine and the transport with
non-blocking calls only
(``TransportIO.try_send`` and ``try_receive``; over other transports they
take and give nothing), so nothing can interrupt it half-way: a cancellation
can only land before or after. Whatever cannot be finished without waiting
is left in the engine's usual state for the stream's drive loop.

The caller makes sure no other task holds the transport in the same
direction (none can take it before we return: there is no await), and maps
a failing transport's ``trio.BrokenResourceError`` /
``trio.ClosedResourceError`` to what its caller sees (``drain`` swallows
them: it runs as the transport closes).
"""

from __future__ import annotations

import ssl

import trio

from ._engine import Step, TLSEngine
from ._transport import TransportIO

__all__ = ["drain", "push", "send_pinned", "top_up"]


def push(engine: TLSEngine, io: TransportIO) -> None:
    """Hand queued ciphertext to the transport as far as it takes it now."""
    while engine.has_outgoing():
        sent = io.try_send(engine.outgoing_head())
        if not sent:
            return
        engine.consume_outgoing(sent)


def send_pinned(engine: TLSEngine, io: TransportIO) -> None:
    """The drive loop for the pinned write, minus its awaits.

    Flush the queue, then encrypt the next chunk, until the transport is
    full, the engine wants to read (a renegotiation), or everything is sent
    (and unpinned).
    """
    while True:
        push(engine, io)
        if engine.has_outgoing():
            return  # the transport is full
        if engine.advance_pinned_write() is not Step.PROGRESS:
            return  # all sent and unpinned, or OpenSSL wants to read first


def top_up(
    engine: TLSEngine,
    io: TransportIO,
    data: bytes,
    max_bytes: int,
    read_size: int,
    slice_size: int,
) -> tuple[bytes, BaseException | None]:
    """Add what the transport already holds to ``data``, up to ``max_bytes``.

    A caller that asks for more than one record gets, in one call,
    everything already received up to ``max_bytes``, instead of paying a
    trip through the scheduler per transport read. The transport is read
    for about as much ciphertext as the plaintext still wanted (up to
    ``read_size``), and that ciphertext goes into the incoming BIO
    ``slice_size`` bytes at a time, decrypting in between: the BIO, whose
    memory OpenSSL never gives back, holds no more than after one ordinary
    transport read (plus part of a record). The scratch buffer a socket
    read may return is used up before anything else runs.

    Returns the plaintext and the transport failure met on the way, if any
    (the caller reports it with the next call, after this data). A TLS error
    is deferred in the engine, which reports it after this data too.
    """
    pieces = [data]
    wanted = max_bytes - len(data)
    done = False
    while not done:
        # Ciphertext is a little larger than its plaintext: reading
        # ``wanted`` bytes leaves at most part of a record over.
        size = min(max(wanted, slice_size), read_size)
        try:
            ciphertext = io.try_receive(size)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            return _joined(pieces), exc
        if ciphertext is None:
            break
        io.reads += 1
        if not ciphertext:
            engine.receive_ciphertext(ciphertext)
            break  # EOF: the next call reports it
        for start in range(0, len(ciphertext), slice_size):
            # Every slice goes in, even once we are done: it has left the
            # transport, and the next call decrypts it.
            engine.receive_ciphertext(ciphertext[start : start + slice_size])
            if done:
                continue
            had = len(pieces)
            try:
                got = engine.read_into(pieces, wanted)
            except ssl.SSLError as exc:
                engine.defer_error(exc)
                done = True
                continue
            if got is None:
                continue  # part of a record: the next slice completes it
            if not got:
                done = True  # close_notify: the next call's b""
                continue
            wanted -= sum(map(len, pieces[had:]))
            done = wanted <= 0
        # A short read emptied the transport: another would only say so.
        done = done or len(ciphertext) < size
    return _joined(pieces), None


def _joined(pieces: list[bytes]) -> bytes:
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def drain(engine: TLSEngine, io: TransportIO, limit: int, read_size: int) -> None:
    """Read what the transport already holds, up to ``limit`` bytes, just before it closes.

    Linux answers ``close()`` on a socket that still holds unread bytes
    with a reset instead of a FIN (RFC 2525 section 2.17), and a reset
    makes the peer's kernel discard whatever it had received and not yet
    handed to its application: the end of an upload, our close_notify.
    Unread bytes are common at close: a TLS 1.3 server's session tickets
    reach a client that only sends, a peer's close_notify arrives after
    our last read. So, as nginx's lingering close does after a response,
    the stream reads before closing; here only what is already there, so a
    close never waits for the peer. TLS records go through the engine
    (``absorb_at_close``: a client keeps the session tickets it was sent,
    and can resume later); everything else is dropped. Bytes that arrive
    after this still cause a reset: docs/closing.rst says when that can
    happen. Other transports give nothing here (they cannot be read
    without waiting, and reset nothing).
    """
    budget = limit
    while budget > 0:
        try:
            data = io.try_receive(min(budget, read_size))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:  # nothing there (None), or the peer's FIN (b"")
            return
        budget -= len(data)
        engine.absorb_at_close(data)
