"""After a real handshake, a peer sends records no honest peer sends; the
server answers with the fatal alert RFC 8446 section 6.2 / RFC 5246 section
7.2.2 call for, then breaks; or, where the RFCs allow the records, goes on
(issue 14, item 3).

The peer is :class:`adversarial_peer.AdversarialPeer`, on tlslite-ng: an
implementation independent of OpenSSL, over a real loopback socket. Each case
asserts, for a ``serve_tls_over_tcp`` server:

* the alert the peer receives (level fatal and its description), or, for the
  records the RFCs allow, that the connection goes on (an echo comes back);
* the exception the handler's ``TLSStream`` raises: ``BrokenResourceError``
  whose ``__cause__`` is the ``ssl.SSLError`` OpenSSL reported, by reason;
* that the same server then serves an honest connection.

The same case runs against ``openssl s_server`` on the same certificate, which
must send the same alert description (that comparison is skipped without the
``openssl`` command). What ``trio.SSLStream`` sends in the same case is
printed, not asserted (``pytest -rP`` shows it).
"""

from __future__ import annotations

import math
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio
from adversarial_peer import (
    MAX_CIPHERTEXT,
    MAX_FRAGMENT,
    TLS12,
    TLS13,
    AdversarialPeer,
    AlertDescription,
    AlertLevel,
    ContentType,
    PeerOutcome,
    client_hello,
    exchange,
    fatal,
    key_update,
    reply,
    server_hello,
)
from openssl_tool import PEER_TIMEOUT, openssl

from trio_tlsretry import serve_tls_over_tcp
from trio_tlsretry.testing import TLSContexts, make_tls_contexts

#: Application data sent after the case's records when the connection must
#: go on. A line, because ``s_server -rev`` answers each line reversed.
PROBE = b"probe\n"
PROBE_REVERSED = b"eborp\n"

VERSION_NAME = {TLS13: "tls1.3", TLS12: "tls1.2"}


@dataclass(frozen=True)
class Fails:
    """The server must send the fatal alert ``description``; its ``TLSStream``
    raises ``BrokenResourceError`` from an ``ssl.SSLError`` with ``reason``."""

    description: int
    reason: str


@dataclass(frozen=True)
class Refuses:
    """The server answers with the warning alert ``description`` and does
    not break: its ``TLSStream`` ends normally, at the close_notify with
    which tlslite answers a warning."""

    description: int


#: The server ignores the record and the connection goes on.
GOES_ON = None

Expected = Fails | Refuses | None

Attack = Callable[[AdversarialPeer], list[bytes]]


@dataclass(frozen=True)
class Case:
    name: str
    attack: Attack
    #: What must happen, per protocol version the case runs on.
    expected: dict[tuple[int, int], Expected]


def corrupted_tag(peer: AdversarialPeer) -> list[bytes]:
    record = bytearray(peer.seal(ContentType.application_data, b"x" * 32))
    record[-1] ^= 0x01  # the last byte of the AEAD tag
    return [bytes(record)]


def oversized_header(peer: AdversarialPeer) -> list[bytes]:
    # The header alone: the server must refuse on the announced length,
    # before waiting for a body it has no room for.
    length = MAX_CIPHERTEXT[peer.version] + 1
    return [bytes([ContentType.application_data, 3, 3]) + length.to_bytes(2, "big")]


def oversized_plaintext(peer: AdversarialPeer) -> list[bytes]:
    # A ciphertext within its limit whose plaintext is one byte over 2^14.
    return [peer.seal(ContentType.application_data, b"x" * (MAX_FRAGMENT + 1))]


def empty(content_type: int) -> Attack:
    def attack(peer: AdversarialPeer) -> list[bytes]:
        return [peer.seal(content_type, b"")]

    return attack


def empty_change_cipher_spec(peer: AdversarialPeer) -> list[bytes]:
    if peer.version == TLS13:
        # TLS 1.3 never encrypts change_cipher_spec (RFC 8446 section 5).
        return [peer.record(ContentType.change_cipher_spec, b"")]
    return [peer.seal(ContentType.change_cipher_spec, b"")]


def change_cipher_spec(peer: AdversarialPeer) -> list[bytes]:
    # The one value TLS 1.3 tolerates during the handshake, not after it.
    return [peer.record(ContentType.change_cipher_spec, b"\x01")]


def empty_ciphertext(peer: AdversarialPeer) -> list[bytes]:
    return [peer.record(ContentType.application_data, b"")]


def no_content_type(peer: AdversarialPeer) -> list[bytes]:
    # All padding: RFC 8446 section 5.4 requires unexpected_message.
    return [peer.seal_inner(b"\x00" * 8)]


def unknown_content_type(peer: AdversarialPeer) -> list[bytes]:
    return [peer.seal(99, b"x")]


def unknown_outer_content_type(peer: AdversarialPeer) -> list[bytes]:
    return [peer.seal_inner(b"x" + bytes([ContentType.application_data]), outer_type=99)]


def handshake_message(message: Callable[[], bytes]) -> Attack:
    def attack(peer: AdversarialPeer) -> list[bytes]:
        return [peer.seal(ContentType.handshake, message())]

    return attack


def fragmented_key_update(peer: AdversarialPeer) -> list[bytes]:
    # The probe that follows uses the new key: the echo proves the server
    # put the three fragments together.
    return peer.key_update_in_fragments(2)


def interleaved_handshake(peer: AdversarialPeer) -> list[bytes]:
    # RFC 8446 section 5.1: no other record between the fragments of a
    # handshake message.
    message = key_update(0)
    return [
        peer.seal(ContentType.handshake, message[:2]),
        peer.seal(ContentType.application_data, b"x"),
        peer.seal(ContentType.handshake, message[2:]),
    ]


BAD_RECORD_MAC = Fails(AlertDescription.bad_record_mac, "DECRYPTION_FAILED_OR_BAD_RECORD_MAC")
UNEXPECTED_MESSAGE = Fails(AlertDescription.unexpected_message, "UNEXPECTED_MESSAGE")
UNEXPECTED_RECORD_TYPE = Fails(AlertDescription.unexpected_message, "BAD_RECORD_TYPE")


def both(expected: Expected) -> dict[tuple[int, int], Expected]:
    return {TLS13: expected, TLS12: expected}


CASES = [
    Case("corrupted-tag", corrupted_tag, both(BAD_RECORD_MAC)),
    Case(
        "oversized-header",
        oversized_header,
        {
            TLS13: Fails(AlertDescription.record_overflow, "ENCRYPTED_LENGTH_TOO_LONG"),
            TLS12: Fails(AlertDescription.record_overflow, "PACKET_LENGTH_TOO_LONG"),
        },
    ),
    Case(
        "oversized-plaintext",
        oversized_plaintext,
        both(Fails(AlertDescription.record_overflow, "DATA_LENGTH_TOO_LONG")),
    ),
    # RFC 8446 section 5.1 and RFC 5246 section 6.2.1: zero-length handshake
    # and alert fragments MUST NOT be sent. TLS 1.2 does not say what a
    # receiver does; OpenSSL ignores an empty handshake record there.
    Case(
        "empty-handshake",
        empty(ContentType.handshake),
        {TLS13: Fails(AlertDescription.unexpected_message, "BAD_LENGTH"), TLS12: GOES_ON},
    ),
    Case(
        "empty-alert",
        empty(ContentType.alert),
        {
            TLS13: Fails(AlertDescription.unexpected_message, "BAD_LENGTH"),
            TLS12: Fails(AlertDescription.unexpected_message, "INVALID_ALERT"),
        },
    ),
    # Zero-length application data is allowed (as traffic analysis cover).
    Case("empty-application-data", empty(ContentType.application_data), both(GOES_ON)),
    Case(
        "empty-change-cipher-spec",
        empty_change_cipher_spec,
        {
            TLS13: UNEXPECTED_RECORD_TYPE,
            TLS12: Fails(AlertDescription.unexpected_message, "CCS_RECEIVED_EARLY"),
        },
    ),
    Case(
        "unknown-content-type",
        unknown_content_type,
        {
            TLS13: UNEXPECTED_RECORD_TYPE,
            TLS12: Fails(AlertDescription.unexpected_message, "UNEXPECTED_RECORD"),
        },
    ),
    Case("server-hello", handshake_message(server_hello), both(UNEXPECTED_MESSAGE)),
    # A ClientHello is the start of a renegotiation in TLS 1.2, which
    # OpenSSL 3 refuses from a client by default, politely.
    Case(
        "client-hello",
        handshake_message(client_hello),
        {
            TLS13: UNEXPECTED_MESSAGE,
            TLS12: Refuses(AlertDescription.no_renegotiation),
        },
    ),
    # TLS 1.3 only from here on.
    Case("change-cipher-spec", change_cipher_spec, {TLS13: UNEXPECTED_RECORD_TYPE}),
    Case("empty-ciphertext", empty_ciphertext, {TLS13: BAD_RECORD_MAC}),
    Case("no-content-type", no_content_type, {TLS13: UNEXPECTED_RECORD_TYPE}),
    Case("unknown-outer-content-type", unknown_outer_content_type, {TLS13: UNEXPECTED_RECORD_TYPE}),
    Case(
        "key-update-request-5",
        handshake_message(partial(key_update, 5)),
        {TLS13: Fails(AlertDescription.illegal_parameter, "BAD_KEY_UPDATE")},
    ),
    Case("fragmented-key-update", fragmented_key_update, {TLS13: GOES_ON}),
    Case(
        "interleaved-handshake",
        interleaved_handshake,
        {
            TLS13: Fails(
                AlertDescription.unexpected_message, "MIXED_HANDSHAKE_AND_NON_HANDSHAKE_DATA"
            )
        },
    ),
]

PARAMS = [
    pytest.param(case, version, id=f"{case.name}-{VERSION_NAME[version]}")
    for case in CASES
    for version in case.expected
]


def honest(peer: AdversarialPeer) -> list[bytes]:
    return []


class EchoServer:
    """A connection handler that echoes, and reports how each connection
    ended: ``None`` for the peer's close_notify, else the exception."""

    def __init__(self) -> None:
        self._ended_send, self._ended = trio.open_memory_channel[BaseException | None](math.inf)

    async def handle(self, stream: Any) -> None:
        failure = None
        try:
            while data := await stream.receive_some():
                await stream.send_all(data)
        except trio.BrokenResourceError as exc:
            failure = exc
        finally:
            await stream.aclose()
        self._ended_send.send_nowait(failure)

    async def next_ending(self) -> BaseException | None:
        with trio.fail_after(PEER_TIMEOUT):
            return await self._ended.receive()


Serve = Callable[..., Awaitable[object]]


@asynccontextmanager
async def echo_server(
    serve: Serve, context: ssl.SSLContext
) -> AsyncIterator[tuple[int, EchoServer]]:
    """``serve`` (``serve_tls_over_tcp`` or ``trio.serve_ssl_over_tcp``) on
    127.0.0.1 with an :class:`EchoServer`; yields its port and the handler."""
    server = EchoServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve, server.handle, 0, context, host="127.0.0.1"))
        yield listeners[0].transport_listener.socket.getsockname()[1], server
        nursery.cancel_scope.cancel()


async def run_peer(
    port: int, version: tuple[int, int], attack: Attack, goes_on: bool
) -> PeerOutcome:
    return await trio.to_thread.run_sync(
        exchange, port, version, attack, PROBE if goes_on else None, abandon_on_cancel=True
    )


@pytest.fixture(scope="module")
def contexts() -> TLSContexts:
    return make_tls_contexts()


@pytest.fixture(scope="module")
def server_pem(contexts: TLSContexts, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("adversarial") / "server.pem"
    contexts.server_cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


async def s_server_outcome(
    server_pem: str, version: tuple[int, int], attack: Attack, goes_on: bool
) -> PeerOutcome:
    """The same case against ``openssl s_server -rev`` on the same certificate."""
    args = ["-accept", "127.0.0.1:0", "-cert", server_pem, "-naccept", "1", "-rev"]
    async with openssl("s_server", *args) as tool:
        with trio.fail_after(PEER_TIMEOUT):
            match = await tool.wait_for_stdout(rb"ACCEPT 127\.0\.0\.1:(\d+)")
        return await run_peer(int(match.group(1)), version, attack, goes_on)


def peer_should_see(expected: Expected, echo: bytes) -> PeerOutcome:
    """What the peer must read: the alert, or ``echo`` if the connection goes on."""
    if isinstance(expected, Fails):
        return fatal(expected.description)
    if isinstance(expected, Refuses):
        return PeerOutcome("alert", AlertLevel.warning, expected.description)
    return reply(echo)


def describe(ending: BaseException | None) -> str:
    """How a server handler's connection ended, for the printed comparison."""
    if ending is None:
        return "no exception"
    return f"{type(ending).__name__} from {ending.__cause__!r}"


@pytest.mark.parametrize(("case", "version"), PARAMS)
async def test_adversarial_record(
    case: Case, version: tuple[int, int], contexts: TLSContexts, server_pem: str
) -> None:
    expected = case.expected[version]
    goes_on = expected is GOES_ON
    label = f"{case.name} {VERSION_NAME[version]}"

    # Assertions come after each server has stopped, so that a failure is
    # reported as itself rather than inside the server nursery's group.
    async with echo_server(serve_tls_over_tcp, contexts.server) as (port, server):
        ours = await run_peer(port, version, case.attack, goes_on)
        ending = await server.next_ending()
        # The failure is that connection's alone: the server goes on serving.
        next_connection = await run_peer(port, version, honest, goes_on=True)
        next_ending = await server.next_ending()
    print(f"{label}: TLSStream sent {ours}, raised {describe(ending)}")
    assert ours == peer_should_see(expected, PROBE), f"TLSStream sent {ours}"
    if isinstance(expected, Fails):
        assert type(ending) is trio.BrokenResourceError, repr(ending)
        assert isinstance(ending.__cause__, ssl.SSLError), repr(ending.__cause__)
        assert ending.__cause__.reason == expected.reason, repr(ending.__cause__)
    else:
        assert ending is None, repr(ending)
    assert next_connection == reply(PROBE)
    assert next_ending is None, repr(next_ending)

    # Recorded for comparison, not asserted.
    async with echo_server(trio.serve_ssl_over_tcp, contexts.server) as (port, server):
        trio_sent = await run_peer(port, version, case.attack, goes_on)
        trio_ending = await server.next_ending()
    print(f"{label}: trio.SSLStream sent {trio_sent}, raised {describe(trio_ending)}")

    if shutil.which("openssl") is None:
        return
    theirs = await s_server_outcome(server_pem, version, case.attack, goes_on)
    print(f"{label}: openssl s_server sent {theirs}")
    assert theirs == peer_should_see(expected, PROBE_REVERSED), f"openssl s_server sent {theirs}"
