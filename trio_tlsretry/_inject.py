"""Put ``TLSStream`` inside third-party Trio software without forking it.

Libraries such as hypercorn, httpcore and trio-websocket create their TLS
streams through ``trio.SSLStream``, ``trio.SSLListener`` and trio's
``*_ssl_over_tcp_*`` helpers, looked up on the ``trio`` module when they run.
:func:`inject_into_trio` points those five names at this library's
counterparts for the whole process; :func:`extract_from_trio` points them back.
The precedent is ``truststore.inject_into_ssl()``, which does the same for
``ssl.SSLContext``.
"""

from __future__ import annotations

from typing import Final

import trio

from ._listener import TLSListener
from ._stream import TLSStream
from ._tcp import open_tls_over_tcp_listeners, open_tls_over_tcp_stream, serve_tls_over_tcp

__all__ = ["extract_from_trio", "inject_into_trio", "injected_into_trio"]

#: trio's name -> what stands in for it while injected.
_REPLACEMENTS: Final[dict[str, object]] = {
    "SSLStream": TLSStream,
    "SSLListener": TLSListener,
    "open_ssl_over_tcp_stream": open_tls_over_tcp_stream,
    "open_ssl_over_tcp_listeners": open_tls_over_tcp_listeners,
    "serve_ssl_over_tcp": serve_tls_over_tcp,
}

# trio's own objects, saved by the first injection and put back by extraction.
_originals: dict[str, object] | None = None


def inject_into_trio() -> None:
    """Make ``trio.SSLStream`` and friends this library's, for the whole process.

    After this call ``trio.SSLStream`` is :class:`TLSStream`,
    ``trio.SSLListener`` is :class:`TLSListener`, and
    ``trio.open_ssl_over_tcp_stream``, ``trio.open_ssl_over_tcp_listeners``
    and ``trio.serve_ssl_over_tcp`` are :func:`open_tls_over_tcp_stream`,
    :func:`open_tls_over_tcp_listeners` and :func:`serve_tls_over_tcp`. Code
    that looks these up on the ``trio`` module when it runs (``trio.SSLStream(...)``,
    ``isinstance(stream, trio.SSLStream)``) gets, and recognises, a
    :class:`TLSStream`. Code that imported a name before the call
    (``from trio import SSLStream``) keeps trio's: inject before importing
    such code.

    Idempotent: calling it again changes nothing. Not thread-safe: call it
    at start-up, before Trio runs.
    """
    global _originals
    if _originals is None:
        _originals = {name: getattr(trio, name) for name in _REPLACEMENTS}
    for name, replacement in _REPLACEMENTS.items():
        setattr(trio, name, replacement)


def extract_from_trio() -> None:
    """Undo :func:`inject_into_trio`: trio's own objects are back.

    Streams and listeners made while injected stay what they are. Calling it
    without an injection in force does nothing.
    """
    global _originals
    if _originals is None:
        return
    for name, original in _originals.items():
        setattr(trio, name, original)
    _originals = None


def injected_into_trio() -> bool:
    """Whether :func:`inject_into_trio` is in force."""
    return _originals is not None
