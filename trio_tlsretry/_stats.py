"""The statistics snapshot returned by ``TLSStream.statistics()``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["StreamState", "TLSStreamStatistics"]


class StreamState(str, enum.Enum):
    """Where a :class:`~trio_tlsretry.TLSStream` is in its life."""

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
    """

    #: Plaintext of the pinned ``send_all`` data not yet handed to the
    #: transport (0 when no ``send_all`` is in progress or pending a retry).
    pinned_bytes: int
    #: Ciphertext produced by the TLS engine that the transport has not yet
    #: accepted.
    outgoing_ciphertext_bytes: int
    #: Ciphertext received from the transport that the engine has not yet
    #: processed.
    incoming_ciphertext_bytes: int
    #: Decrypted plaintext waiting for the next ``receive_some``.
    buffered_plaintext_bytes: int
    #: The stream's state.
    state: StreamState
    #: Plaintext accepted by the TLS engine from ``send_all`` calls.
    plaintext_bytes_sent: int
    #: Plaintext returned by ``receive_some`` calls.
    plaintext_bytes_received: int
    #: Ciphertext handed to the transport.
    ciphertext_bytes_sent: int
    #: Ciphertext received from the transport.
    ciphertext_bytes_received: int
    #: Times ``SSLObject.write`` asked for incoming data and the same pinned
    #: chunk had to be offered again.
    write_retries: int
    #: The largest amount of outgoing ciphertext buffered at any moment.
    max_outgoing_ciphertext_bytes: int
    #: Waits for incoming data that polling ended, with no sleep in Trio's
    #: I/O wait (see :attr:`~trio_tlsretry.TLSStream.busy_poll`).
    busy_poll_hits: int
    #: Waits that polled, found nothing in time and then blocked.
    busy_poll_misses: int
