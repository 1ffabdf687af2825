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
    """``send_eof`` was called on a connection that cannot half-close.

    Only TLS 1.3 lets one side send ``close_notify`` and keep receiving; on
    TLS 1.2 and older a ``close_notify`` closes the whole connection, so
    :meth:`~trio_tlsretry.TLSStream.send_eof` refuses and sends nothing.
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
