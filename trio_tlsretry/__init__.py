"""trio_tlsretry: a TLS stream for Trio that survives cancellation.

``TLSStream`` is a drop-in replacement for :class:`trio.SSLStream` with pinned
writes, cancellation-safe retries and bounded buffering.
"""

from ._closing import DEFAULT_LINGER_BYTES, DEFAULT_LINGER_SECONDS, lingering_close
from ._errors import NeedHandshakeError, PostHandshakeAuthError, SendEOFNotSupportedError
from ._info import ConnectionInfo
from ._inject import extract_from_trio, inject_into_trio, injected_into_trio
from ._listener import (
    DEFAULT_GRACE,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_HANDSHAKES,
    GracefulStop,
    TLSListener,
    handshake_or_drop,
)
from ._stats import StreamState, TLSStreamStatistics
from ._stream import TLSStream, encode_server_hostname
from ._tcp import open_tls_over_tcp_listeners, open_tls_over_tcp_stream, serve_tls_over_tcp
from ._transport import ExactProgressStream

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_LINGER_BYTES",
    "DEFAULT_LINGER_SECONDS",
    "DEFAULT_MAX_HANDSHAKES",
    "ConnectionInfo",
    "ExactProgressStream",
    "GracefulStop",
    "NeedHandshakeError",
    "PostHandshakeAuthError",
    "SendEOFNotSupportedError",
    "StreamState",
    "TLSListener",
    "TLSStream",
    "TLSStreamStatistics",
    "__version__",
    "encode_server_hostname",
    "extract_from_trio",
    "handshake_or_drop",
    "inject_into_trio",
    "injected_into_trio",
    "lingering_close",
    "open_tls_over_tcp_listeners",
    "open_tls_over_tcp_stream",
    "serve_tls_over_tcp",
]
