"""``ConnectionInfo``: a frozen, typed snapshot of a negotiated TLS connection.

:meth:`TLSStream.connection_info() <trio_tlsretry.TLSStream.connection_info>`
returns one. Every field is read from the ``ssl.SSLObject`` at the moment of
the call; the object never changes afterwards, so it can be logged, compared
or kept after the stream is closed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from ._errors import NeedHandshakeError

__all__ = ["ConnectionInfo"]

#: ``SSLObject.version()`` strings, mapped to :class:`ssl.TLSVersion`.
_VERSIONS: dict[str, ssl.TLSVersion] = {
    "SSLv3": ssl.TLSVersion.SSLv3,
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class ConnectionInfo:
    """What was negotiated on a TLS connection, as plain typed fields.

    Build one with :meth:`from_ssl_object` or, on a stream, with
    :meth:`TLSStream.connection_info()
    <trio_tlsretry.TLSStream.connection_info>`.

    Instances are immutable and compare by value. They are hashable: the
    certificate dictionary is left out of the hash (its DER form, which
    carries the same certificate, is in it).
    """

    #: The protocol version, as :meth:`ssl.SSLObject.version` spells it:
    #: ``"TLSv1.3"``, ``"TLSv1.2"``, ...
    version: str
    #: The cipher suite's OpenSSL name, e.g. ``"TLS_AES_256_GCM_SHA384"``.
    cipher_name: str
    #: The protocol version that defined the cipher suite (the second item of
    #: :meth:`ssl.SSLObject.cipher`), e.g. ``"TLSv1.3"``. Not always
    #: :attr:`version`: a TLS 1.2 connection may use a suite from ``"SSLv3"``.
    cipher_protocol: str
    #: The number of secret bits of the cipher's key, e.g. ``256``.
    cipher_secret_bits: int
    #: The ALPN protocol both ends agreed on, or ``None``.
    alpn_protocol: str | None
    #: The SNI host name. On the client: the ``server_hostname`` the stream
    #: was created with (the name sent as SNI and checked against the
    #: certificate). On the server always ``None``: the standard library
    #: hands the client's SNI to :attr:`ssl.SSLContext.sni_callback` and
    #: nowhere else, so the server cannot read it back from the connection
    #: (see :doc:`/beyond` for a callback that records it).
    server_name: str | None
    #: The peer's certificate in the form of :meth:`ssl.SSLSocket.getpeercert`,
    #: ``None`` if the peer sent none. An empty dict if the certificate was not
    #: verified (``verify_mode`` is ``CERT_NONE``): the standard library only
    #: decodes verified certificates; :attr:`peer_certificate_der` still has it.
    peer_certificate: dict[str, Any] | None = field(hash=False)
    #: The peer's certificate as DER bytes, ``None`` if the peer sent none.
    peer_certificate_der: bytes | None
    #: Whether the handshake resumed an earlier session.
    session_reused: bool
    #: The ``tls-unique`` channel binding (RFC 5929) on TLS 1.2 and older;
    #: ``None`` on TLS 1.3. RFC 8446 (appendix C.5) leaves ``tls-unique``
    #: undefined for TLS 1.3 and RFC 9266 forbids using it there; OpenSSL
    #: returns bytes for it anyway, which would be unsafe to rely on.
    #: ``tls-unique`` is the only type CPython supports
    #: (:data:`ssl.CHANNEL_BINDING_TYPES`); there is no ``tls-exporter``.
    tls_unique: bytes | None
    #: ``True`` on the server end of the connection.
    server_side: bool

    @property
    def tls_version(self) -> ssl.TLSVersion:
        """:attr:`version` as a :class:`ssl.TLSVersion` member."""
        return _VERSIONS[self.version]

    @classmethod
    def from_ssl_object(cls, ssl_object: ssl.SSLObject) -> ConnectionInfo:
        """Read everything from ``ssl_object`` in one go.

        Raises:
          NeedHandshakeError: the handshake has not completed. OpenSSL also
            reports no version while it is in the middle of a later handshake
            message exchange (a TLS 1.2 renegotiation, or the client's
            certificate flight during post-handshake authentication); ask
            again once that has finished.
        """
        version = ssl_object.version()
        cipher = ssl_object.cipher()
        if version is None or cipher is None:
            raise NeedHandshakeError(
                "the TLS handshake has not completed, so there is no connection to describe"
            )
        name, protocol, bits = cipher
        # Both calls only fail (ValueError) while a handshake is in progress,
        # which version() above has just ruled out.
        certificate = ssl_object.getpeercert()
        der = ssl_object.getpeercert(binary_form=True)
        tls_unique = None if version == "TLSv1.3" else ssl_object.get_channel_binding("tls-unique")
        server_side = ssl_object.server_side
        return cls(
            version=version,
            cipher_name=name,
            cipher_protocol=protocol,
            cipher_secret_bits=bits,
            alpn_protocol=ssl_object.selected_alpn_protocol(),
            server_name=None if server_side else ssl_object.server_hostname,
            peer_certificate=None if der is None else dict(certificate or {}),
            peer_certificate_der=der,
            session_reused=ssl_object.session_reused,
            tls_unique=tls_unique,
            server_side=server_side,
        )
