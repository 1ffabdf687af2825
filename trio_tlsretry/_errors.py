"""Exceptions defined by trio_tlsretry.

Everything else the library raises is one of Trio's stream exceptions
(``trio.BrokenResourceError``, ``trio.ClosedResourceError``,
``trio.BusyResourceError``) or a standard ``TypeError``/``ValueError`` for a
caller's mistake; see ``docs/errors.rst``.
"""

from __future__ import annotations

__all__ = ["NeedHandshakeError", "SendEOFNotSupportedError"]


class NeedHandshakeError(Exception):
    """A detail of the TLS connection was asked for before the handshake.

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
