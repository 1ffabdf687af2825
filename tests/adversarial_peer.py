"""An adversarial TLS client for the tests, built on tlslite-ng.

tlslite-ng is a pure-Python TLS implementation, independent of the OpenSSL
behind both ``TLSStream`` and ``openssl s_server``. It performs a real TLS 1.2
or TLS 1.3 handshake; after that, :class:`AdversarialPeer` writes records that
no honest implementation writes (a broken authentication tag, a record over
the size limit, an empty or unknown record type, a bad KeyUpdate...), sealed
under the connection's real keys so that the server gets past decryption to
the part being tested. It then reads what comes back and reports it as a
:class:`PeerOutcome`: a TLS 1.3 alert arrives encrypted and tlslite decrypts
it.

Everything here is blocking, on a socket with a timeout: run it from trio
with :func:`trio.to_thread.run_sync`. Records are built with tlslite's record
layer, whose sealing method is internal (``RecordLayer._encryptThenSeal``):
tlslite has no public way to write a record it considers invalid. The
handshake offers AES-GCM only, so every record is sealed by that one AEAD.
"""

from __future__ import annotations

import os
import socket
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

with warnings.catch_warnings():
    # tlslite's package __init__ imports its asyncore integration, which
    # warns on Python 3.10 and 3.11 (asyncore is deprecated by PEP 594, and
    # tlslite skips it where it is gone); nothing here uses it.
    warnings.simplefilter("ignore", DeprecationWarning)
    from tlslite.constants import AlertDescription, AlertLevel, ContentType, KeyUpdateMessageType
    from tlslite.errors import TLSAbruptCloseError, TLSRemoteAlert
    from tlslite.handshakesettings import HandshakeSettings
    from tlslite.tlsconnection import TLSConnection

__all__ = [
    "MAX_CIPHERTEXT",
    "MAX_FRAGMENT",
    "TLS12",
    "TLS13",
    "AdversarialPeer",
    "AlertDescription",
    "AlertLevel",
    "ContentType",
    "PeerOutcome",
    "client_hello",
    "exchange",
    "fatal",
    "key_update",
    "reply",
    "server_hello",
]

#: Protocol versions as tlslite names them (TLS 1.3 is (3, 4), although its
#: record headers say 3.3).
TLS12 = (3, 3)
TLS13 = (3, 4)

#: Every socket operation of the peer gives up after this many seconds: a
#: guard against a server that neither answers nor closes.
SOCKET_TIMEOUT = 10.0

#: The largest plaintext fragment a record may carry (RFC 8446 section 5.1,
#: RFC 5246 section 6.2.1).
MAX_FRAGMENT = 2**14
#: The largest ciphertext length a record header may announce: RFC 8446
#: section 5.2 for TLS 1.3, RFC 5246 section 6.2.3 for TLS 1.2.
MAX_CIPHERTEXT = {TLS13: 2**14 + 256, TLS12: 2**14 + 2048}

_HEADER = struct.Struct(">BBBH")


def handshake_message(message_type: int, body: bytes) -> bytes:
    """A handshake message: type, 24-bit length, body (RFC 8446 section 4)."""
    return bytes([message_type]) + len(body).to_bytes(3, "big") + body


def key_update(request_update: int) -> bytes:
    """A KeyUpdate message (type 24) with any ``request_update`` byte."""
    return handshake_message(24, bytes([request_update]))


def server_hello() -> bytes:
    """A well-formed, minimal ServerHello (type 2): no server ever accepts one."""
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x13\x01" + b"\x00" + b"\x00\x00"
    return handshake_message(2, body)


def client_hello() -> bytes:
    """A well-formed, minimal ClientHello (type 1), as a renegotiation would start."""
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + b"\x00\x00"
    return handshake_message(1, body)


@dataclass(frozen=True)
class PeerOutcome:
    """How the server answered the peer's records.

    ``kind`` is ``"alert"`` (with ``level`` and ``description``), ``"reply"``
    (the server answered the probe with ``data``: the connection goes on),
    ``"eof"`` (a TCP close without an alert), ``"reset"`` (a TCP reset) or
    ``"timeout"`` (nothing within :data:`SOCKET_TIMEOUT`).
    """

    kind: str
    level: int | None = None
    description: int | None = None
    data: bytes = b""

    def __str__(self) -> str:
        if self.kind == "alert":
            level = AlertLevel.toStr(self.level)
            return f"{level} {AlertDescription.toStr(self.description)} ({self.description})"
        if self.kind == "reply":
            return f"reply {self.data!r}"
        return self.kind


def fatal(description: int) -> PeerOutcome:
    """The outcome "the server sent this fatal alert"."""
    return PeerOutcome("alert", AlertLevel.fatal, description)


def reply(data: bytes) -> PeerOutcome:
    """The outcome "the server answered with ``data``"."""
    return PeerOutcome("reply", data=data)


class AdversarialPeer:
    """The client end of a TLS connection, handshake done, that can write any record.

    Use :meth:`connect`; close with :meth:`close`.
    """

    def __init__(self, sock: socket.socket, connection: TLSConnection) -> None:
        self.sock = sock
        self.connection = connection
        #: The negotiated version, :data:`TLS12` or :data:`TLS13`.
        self.version: tuple[int, int] = connection.version

    @classmethod
    def connect(cls, port: int, version: tuple[int, int]) -> AdversarialPeer:
        """Connect to 127.0.0.1:``port`` and complete a handshake at ``version``.

        The server certificate is not checked: the tests are about what
        happens after the handshake.
        """
        sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        try:
            connection = TLSConnection(sock)
            # Wait for the server's close_notify in close(): the server's
            # handler must see ours before the socket goes.
            connection.closeSocket = False
            settings = HandshakeSettings()
            settings.minVersion = settings.maxVersion = version
            settings.cipherNames = ["aes128gcm"]
            connection.handshakeClientCert(settings=settings, serverName="example.org")
        except BaseException:
            sock.close()
            raise
        if connection.version != version:
            sock.close()
            raise RuntimeError(f"asked for TLS {version}, the handshake gave {connection.version}")
        return cls(sock, connection)

    def close(self) -> None:
        """Exchange close_notify if the connection is still up, then close the socket."""
        try:
            if not self.connection.closed:
                self.connection.close()
        finally:
            self.sock.close()

    # ----------------------------------------------------------- records

    def record(self, content_type: int, payload: bytes) -> bytes:
        """A record with ``payload`` exactly as given, unencrypted: the
        header's length is the payload's. For headers that lie, write the
        bytes yourself."""
        return _HEADER.pack(content_type, 3, 3, len(payload)) + payload

    def seal(self, content_type: int, fragment: bytes) -> bytes:
        """A record carrying ``fragment`` as ``content_type``, sealed under the
        current write keys (this uses up one sequence number, as sending it
        would).

        In TLS 1.3 the content type goes inside, after the fragment (RFC 8446
        section 5.2); the outer type is application_data.
        """
        if self.version == TLS13:
            return self.seal_inner(fragment + bytes([content_type]))
        sealed = self.connection._recordLayer._encryptThenSeal(bytearray(fragment), content_type)
        return self.record(content_type, bytes(sealed))

    def seal_inner(
        self, inner_plaintext: bytes, outer_type: int = ContentType.application_data
    ) -> bytes:
        """TLS 1.3 only: a record whose decrypted TLSInnerPlaintext is exactly
        ``inner_plaintext`` (content, content type byte, zero padding), under
        the outer content type ``outer_type``.

        The tag authenticates an application_data header: with any other
        ``outer_type`` the record cannot decrypt, and the server must refuse
        it on its type first."""
        assert self.version == TLS13, "TLSInnerPlaintext exists in TLS 1.3 only"
        sealed = self.connection._recordLayer._encryptThenSeal(
            bytearray(inner_plaintext), ContentType.application_data
        )
        return self.record(outer_type, bytes(sealed))

    def send(self, *records: bytes) -> None:
        """Write ``records`` to the socket in one go."""
        self.sock.sendall(b"".join(records))

    def key_update_in_fragments(self, fragment_size: int) -> list[bytes]:
        """TLS 1.3: a KeyUpdate with update_requested, split over handshake
        records of ``fragment_size`` bytes; records sealed after these use
        the next traffic secret (RFC 8446 section 4.6.3), as the server's
        reading will. tlslite handles the server's KeyUpdate in answer as it
        reads."""
        message = key_update(KeyUpdateMessageType.update_requested)
        records = [
            self.seal(ContentType.handshake, message[start : start + fragment_size])
            for start in range(0, len(message), fragment_size)
        ]
        # The key change tlslite makes after sending a KeyUpdate of its own
        # (TLSRecordLayer.send_keyupdate_request).
        session = self.connection.session
        session.cl_app_secret, session.sr_app_secret = (
            self.connection._recordLayer.calcTLS1_3KeyUpdate_reciever(
                session.cipherSuite, session.cl_app_secret, session.sr_app_secret
            )
        )
        return records

    # ----------------------------------------------------------- outcome

    def probe(self, data: bytes) -> bytes:
        """An honest application data record carrying ``data``."""
        return self.seal(ContentType.application_data, data)

    def outcome(self, reply_size: int) -> PeerOutcome:
        """Read until the server has sent ``reply_size`` bytes of application
        data, sent an alert, or closed the connection.

        Session tickets and KeyUpdates the server sends on the way are
        handled by tlslite.
        """
        received = bytearray()
        try:
            while len(received) < reply_size:
                data = self.connection.read(max=reply_size - len(received))
                if not data:
                    return PeerOutcome("eof", data=bytes(received))
                received += data
        except TLSRemoteAlert as alert:
            return PeerOutcome("alert", alert.level, alert.description, bytes(received))
        except TLSAbruptCloseError:
            return PeerOutcome("eof", data=bytes(received))
        except ConnectionResetError:
            return PeerOutcome("reset", data=bytes(received))
        except TimeoutError:
            return PeerOutcome("timeout", data=bytes(received))
        return reply(bytes(received))


def exchange(
    port: int,
    version: tuple[int, int],
    attack: Callable[[AdversarialPeer], list[bytes]],
    probe: bytes | None,
) -> PeerOutcome:
    """One connection to 127.0.0.1:``port`` at ``version``: the handshake,
    then the records ``attack(peer)`` returns (it may also send by itself),
    then, if ``probe`` is given, ``probe`` as application data; then how the
    server answered (:meth:`AdversarialPeer.outcome`). The connection is
    closed on the way out.
    """
    peer = AdversarialPeer.connect(port, version)
    try:
        records = attack(peer)
        if probe is not None:
            records.append(peer.probe(probe))
        try:
            peer.send(*records)
        except (BrokenPipeError, ConnectionResetError):
            # The server gave up part way through: what it sent before
            # closing is still to be read.
            pass
        return peer.outcome(len(probe) if probe is not None else 1)
    finally:
        peer.close()
