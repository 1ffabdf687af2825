"""The details of a TLS connection that ``TLSStream`` forwards, as ``trio.SSLStream`` does.

Read-only views of the engine's ``SSLObject`` (plus the two settings a caller
may change before the handshake, ``context`` and ``session``), kept apart
from ``_stream.py`` so that the I/O layer never touches the ``SSLObject``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from ._engine import TLSEngine
from ._errors import NeedHandshakeError
from ._info import ConnectionInfo

__all__ = ["ConnectionDetails"]

_T = TypeVar("_T")


class ConnectionDetails:
    """Mixin: the forwarded attributes of :class:`~trio_tlsretry.TLSStream`."""

    __slots__ = ()
    _engine: TLSEngine

    @property
    def _ssl_object(self) -> ssl.SSLObject:
        # Not ours to use: third-party code written for trio.SSLStream reads
        # its private ``_ssl_object`` (httpcore does, for ALPN), so a drop-in
        # has one too.
        return self._engine.ssl_object

    def connection_info(self) -> ConnectionInfo:
        """A frozen, typed view of the negotiated connection.

        Raises:
          NeedHandshakeError: the handshake has not completed yet.
        """
        ssl_object = self._engine.ssl_object
        return self._after_handshake(
            "connection_info", lambda: ConnectionInfo.from_ssl_object(ssl_object)
        )

    def _after_handshake(self, name: str, fn: Callable[[], _T]) -> _T:
        if not self._engine.stage.handshake_done:
            raise NeedHandshakeError(f"call do_handshake() before asking for {name}()")
        return fn()

    @property
    def context(self) -> ssl.SSLContext:
        """The :class:`ssl.SSLContext` of this connection.

        Assignable, as on :class:`trio.SSLStream` and :class:`ssl.SSLObject`:
        a server's SNI callback can switch the connection to a context with
        another certificate.
        """
        return self._engine.ssl_object.context

    @context.setter
    def context(self, context: ssl.SSLContext) -> None:
        self._engine.ssl_object.context = context

    @property
    def server_side(self) -> bool:
        """``True`` for the server end of the connection."""
        return self._engine.ssl_object.server_side

    @property
    def server_hostname(self) -> str | None:
        """The host name the client verifies and sends as SNI."""
        return self._engine.ssl_object.server_hostname

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session, for resumption on a later connection."""
        return self._engine.ssl_object.session

    @session.setter
    def session(self, session: ssl.SSLSession) -> None:
        self._engine.ssl_object.session = session

    @property
    def session_reused(self) -> bool:
        """Whether the handshake resumed an earlier session."""
        return self._after_handshake(
            "session_reused", lambda: self._engine.ssl_object.session_reused
        )

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate, as :meth:`ssl.SSLSocket.getpeercert`."""
        return self._after_handshake(
            "getpeercert", lambda: self._engine.ssl_object.getpeercert(binary_form)
        )

    def cipher(self) -> tuple[str, str, int] | None:
        """``(name, protocol, secret_bits)`` of the negotiated cipher."""
        return self._after_handshake("cipher", self._engine.ssl_object.cipher)

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        """The ciphers both ends offered (server side only)."""
        return self._after_handshake("shared_ciphers", self._engine.ssl_object.shared_ciphers)

    def compression(self) -> str | None:
        """The compression algorithm in use, normally ``None``."""
        return self._after_handshake("compression", self._engine.ssl_object.compression)

    def version(self) -> str | None:
        """The negotiated protocol version, e.g. ``"TLSv1.3"``.

        Kept from the handshake, so it still answers after the peer has gone
        (``SSLObject.version()`` returns ``None`` once the transport's EOF has
        been read).
        """
        engine = self._engine
        return self._after_handshake("version", lambda: engine.negotiated_version)

    def selected_alpn_protocol(self) -> str | None:
        """The ALPN protocol both ends agreed on, if any."""
        return self._after_handshake(
            "selected_alpn_protocol", self._engine.ssl_object.selected_alpn_protocol
        )

    def selected_npn_protocol(self) -> str | None:
        """Always ``None``: NPN is obsolete; kept for ``trio.SSLStream`` parity."""
        return self._after_handshake("selected_npn_protocol", lambda: None)

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        """Channel binding data (RFC 5929) for ``cb_type``."""
        return self._after_handshake(
            "get_channel_binding", lambda: self._engine.ssl_object.get_channel_binding(cb_type)
        )

    def pending(self) -> int:
        """Decrypted bytes available to ``receive_some`` without reading more."""
        return self._engine.pending_plaintext()
