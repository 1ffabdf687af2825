"""trio_tlsretry: a TLS stream for Trio that survives cancellation.

``TLSStream`` is a drop-in replacement for :class:`trio.SSLStream` with pinned
writes, cancellation-safe retries and bounded buffering.
"""

from __future__ import annotations

from ._errors import NeedHandshakeError, SendEOFNotSupportedError
from ._stats import StreamState, TLSStreamStatistics
from ._stream import TLSStream
from ._transport import ExactProgressStream

__version__ = "0.1.0"

__all__ = [
    "ExactProgressStream",
    "NeedHandshakeError",
    "SendEOFNotSupportedError",
    "StreamState",
    "TLSStream",
    "TLSStreamStatistics",
    "__version__",
]
