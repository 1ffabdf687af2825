"""Exceptions defined by trio_tlsretry.

Everything else the library raises is one of Trio's stream exceptions
(``trio.BrokenResourceError``, ``trio.ClosedResourceError``,
``trio.BusyResourceError``) or a standard ``TypeError``/``ValueError`` for a
caller's mistake; see ``docs/errors.rst``.
"""

from __future__ import annotations

import trio

__all__ = ["NeedHandshakeError", "PostHandshakeAuthError", "SendEOFNotSupportedError"]


class NeedHandshakeError(trio.NeedHandshakeError):
    """A detail of the TLS connection was asked for before the handshake.

    A subclass of :class:`trio.NeedHandshakeError`, so code written for
    :class:`trio.SSLStream` that catches that keeps working.

    Raised by :class:`~trio_tlsretry.TLSStream` methods such as
    :meth:`~trio_tlsretry.TLSStream.cipher` that only have an answer once the
    handshake has completed. Call :meth:`~trio_tlsretry.TLSStream.do_handshake`
    first.
    """


class SendEOFNotSupportedError(Exception):
    """No longer raised; kept so that ``except`` clauses naming it still import.

    :meth:`~trio_tlsretry.TLSStream.send_eof` used to raise it on TLS 1.2.
    It now sends ``close_notify`` on every version and raises only Trio's
    stream exceptions, as code written for :class:`trio.SSLStream` expects.
    """


class PostHandshakeAuthError(Exception):
    """Post-handshake client authentication cannot be started.

    Raised by :meth:`~trio_tlsretry.TLSStream.verify_client_post_handshake`
    when the connection is not TLS 1.3, this end is not the server, the
    server context does not ask for certificates, or the client did not offer
    post-handshake authentication (``post_handshake_auth`` on its context).
    Nothing was sent and the stream stays usable. ``__cause__`` holds the
    :class:`ssl.SSLError`, if any.
    """
