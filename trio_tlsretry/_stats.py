"""The statistics snapshot returned by ``TLSStream.statistics()``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["StreamState", "TLSStreamStatistics"]


class StreamState(str, enum.Enum):
    """Where a :class:`~trio_tlsretry.TLSStream` is in its life.

    * ``OPEN`` (``"open"``): usable; every operation may be called (or
      retried).
    * ``BROKEN`` (``"broken"``): failed for good; every operation raises
      ``trio.BrokenResourceError``.
    * ``CLOSED`` (``"closed"``): closed by ``aclose`` or handed back by
      ``unwrap``; every operation raises ``trio.ClosedResourceError``.
    """

    #: Usable; every operation may be called (or retried).
    OPEN = "open"
    #: Failed for good; every operation raises ``trio.BrokenResourceError``.
    BROKEN = "broken"
    #: Closed by ``aclose`` or handed back by ``unwrap``; every operation raises
    #: ``trio.ClosedResourceError``.
    CLOSED = "closed"


@dataclass(frozen=True)
class TLSStreamStatistics:
    """A frozen snapshot of a stream's buffers and counters.

    Follows Trio's ``statistics()`` convention: an object with plain
    attributes, taken at the moment of the call and never updated.

    The stream encrypts a large ``send_all`` one write chunk (64 KiB) at a
    time, and only once the transport has taken all the ciphertext of the
    previous chunk. ``pinned_bytes`` and ``plaintext_bytes_sent`` move a
    whole chunk at a time; the ``ciphertext_*`` counters are exact to the
    byte. A snapshot taken while another task is sending depends on how far
    that task has got, which is up to the scheduler.

    Attributes:
      pinned_bytes: the part of the pinned ``send_all`` message not yet
        known to be with the transport, in whole write chunks: ``len(message)``
        until all the ciphertext of the first 64 KiB chunk has been handed to
        the transport, then one chunk less each time the next chunk is out
        in full, ``0`` once the call returns. The plaintext whose ciphertext
        the transport has taken is at least ``len(message) - pinned_bytes``
        and at most one chunk more. A message is pinned from the start of
        its ``send_all`` (an implicit handshake included) until it is all
        out, and stays pinned when the call is cancelled; ``0`` when nothing
        is pinned. Compare it with ``len(message)`` to tell how many chunks
        are still to go, not to count bytes; for byte-exact progress watch
        ``ciphertext_bytes_sent``.
      outgoing_ciphertext_bytes: ciphertext produced by the TLS engine that
        the transport has not yet accepted (at most about one chunk's worth).
      incoming_ciphertext_bytes: ciphertext received from the transport that
        the engine has not yet processed.
      buffered_plaintext_bytes: decrypted plaintext waiting for the next
        ``receive_some``.
      state: the stream's :class:`StreamState`.
      plaintext_bytes_sent: plaintext of ``send_all`` calls the TLS engine
        has encrypted (a whole chunk at once, so up to 64 KiB ahead of what
        the transport has taken).
      plaintext_bytes_received: plaintext returned by ``receive_some`` calls.
      ciphertext_bytes_sent: ciphertext handed to the transport, exact to the
        byte (what the transport accepted).
      ciphertext_bytes_received: ciphertext received from the transport.
      write_retries: times ``SSLObject.write`` asked for incoming data
        (a renegotiation) and the same pinned chunk had to be offered again.
      max_outgoing_ciphertext_bytes: the largest amount of outgoing
        ciphertext buffered at any moment.
      busy_poll_hits: waits for incoming data that polling ended, with no
        sleep in Trio's I/O wait (see :attr:`~trio_tlsretry.TLSStream.busy_poll`).
      busy_poll_misses: waits that polled, found nothing in time and then
        blocked.
    """

    pinned_bytes: int
    outgoing_ciphertext_bytes: int
    incoming_ciphertext_bytes: int
    buffered_plaintext_bytes: int
    state: StreamState
    plaintext_bytes_sent: int
    plaintext_bytes_received: int
    ciphertext_bytes_sent: int
    ciphertext_bytes_received: int
    write_retries: int
    max_outgoing_ciphertext_bytes: int
    busy_poll_hits: int
    busy_poll_misses: int
