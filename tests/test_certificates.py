"""Certificate failures: the handshake fails with a documented exception on
each side, and none of the application's data is sent.

The client-to-server direction runs through a recording pipe so the test can
look at the bytes that really went out.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from trio_tlsretry import StreamState, TLSStream

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [TLS12, TLS13]
HOSTNAME = "example.org"
DEADLINE = 100  # virtual seconds under the autojump clock
SECRET = b"TOP-SECRET-" * 10_000  # 110 kB: far more than any handshake flight

NOW = datetime.datetime.now(datetime.timezone.utc)
YEAR = datetime.timedelta(days=365)

# ---------------------------------------------------------------------------
# A memory pipe that remembers everything the client sent.
# (trio.testing.memory_stream_one_way_pair plus one bytearray; specific to
# these tests, which check that no application data left the client.)


def recording_stream_pair() -> tuple[trio.StapledStream[Any, Any], trio.abc.Stream, bytearray]:
    """``(client_transport, server_transport, recorded client->server bytes)``."""
    recorded = bytearray()
    up_send = trio.testing.MemorySendStream()
    up_receive = trio.testing.MemoryReceiveStream()

    def pump() -> None:
        try:
            data = up_send.get_data_nowait()
        except trio.WouldBlock:
            return
        recorded.extend(data)
        try:
            up_receive.put_data(data)
        except trio.ClosedResourceError:
            raise trio.BrokenResourceError("the receiving end was closed") from None

    async def async_pump() -> None:
        pump()

    def close() -> None:
        try:
            pump()
            up_receive.put_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    up_send.send_all_hook = async_pump
    up_send.close_hook = close
    down_send, down_receive = trio.testing.memory_stream_one_way_pair()
    client = trio.StapledStream(up_send, down_receive)
    server = trio.StapledStream(down_send, up_receive)
    return client, server, recorded


# ---------------------------------------------------------------------------
# Certificate set-ups.


@dataclass
class Setup:
    client_context: ssl.SSLContext
    server_context: ssl.SSLContext


def _client_context(ca: trustme.CA, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.maximum_version = version
    return context


def _server_context(cert: trustme.LeafCert, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.maximum_version = version
    return context


_CA = trustme.CA()
_OTHER_CA = trustme.CA()
SERVER_CERTS = {
    "expired": _CA.issue_cert(HOSTNAME, not_before=NOW - 2 * YEAR, not_after=NOW - YEAR),
    "not-yet-valid": _CA.issue_cert(HOSTNAME, not_before=NOW + YEAR, not_after=NOW + 2 * YEAR),
    "wrong-host": _CA.issue_cert("other.example"),
    "untrusted-ca": _OTHER_CA.issue_cert(HOSTNAME),
}
#: OpenSSL's verify codes (X509_V_ERR_*) the client reports.
VERIFY_CODES = {"expired": 10, "not-yet-valid": 9, "wrong-host": 62, "untrusted-ca": 20}
GOOD_CERT = _CA.issue_cert(HOSTNAME)
CLIENT_CERT = _CA.issue_cert("client@example.org")
UNTRUSTED_CLIENT_CERT = _OTHER_CA.issue_cert("client@example.org")


@dataclass
class Outcome:
    client: BaseException | None
    server: BaseException | None
    client_received: bytes
    server_received: bytes


async def converse(client: TLSStream, server: TLSStream, *, client_sends: bytes | None) -> Outcome:
    """Client: handshake (through send_all if ``client_sends``), then one receive.

    Server: handshake, then receive until EOF or error. A side that fails
    closes its transport, as an application would, so the other side is never
    left waiting.
    """
    errors: dict[str, BaseException | None] = {"client": None, "server": None}
    received = {"client": bytearray(), "server": bytearray()}

    async def client_side() -> None:
        try:
            if client_sends is None:
                await client.do_handshake()
            else:
                await client.send_all(client_sends)
            received["client"] += await client.receive_some()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            errors["client"] = exc
        await client.aclose()

    async def server_side() -> None:
        try:
            await server.do_handshake()
            while piece := await server.receive_some():
                received["server"] += piece
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            errors["server"] = exc
        await server.aclose()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            nursery.start_soon(server_side)
    return Outcome(
        errors["client"], errors["server"], bytes(received["client"]), bytes(received["server"])
    )


def streams(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> tuple[TLSStream, TLSStream, bytearray]:
    client_transport, server_transport, recorded = recording_stream_pair()
    client = TLSStream(client_transport, client_context, server_hostname=HOSTNAME)
    server = TLSStream(server_transport, server_context, server_side=True)
    return client, server, recorded


def assert_no_application_data(client: TLSStream, recorded: bytearray, outcome: Outcome) -> None:
    stats = client.statistics()
    assert stats.plaintext_bytes_sent == 0  # the engine never encrypted any of it
    assert len(recorded) < len(SECRET) // 10  # only handshake and alert records left
    assert b"TOP-SECRET" not in recorded
    assert outcome.server_received == b""


# ---------------------------------------------------------------------------
# The server's certificate is bad: the client refuses it.


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("problem", sorted(SERVER_CERTS))
@pytest.mark.parametrize("via", ["do_handshake", "send_all"])
async def test_bad_server_certificate(
    version: ssl.TLSVersion, problem: str, via: str, autojump_clock: trio.testing.MockClock
) -> None:
    client, server, recorded = streams(
        _client_context(_CA, version), _server_context(SERVER_CERTS[problem], version)
    )
    outcome = await converse(client, server, client_sends=SECRET if via == "send_all" else None)

    error = outcome.client
    assert isinstance(error, trio.BrokenResourceError)
    cause = error.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError), repr(cause)
    assert cause.verify_code == VERIFY_CODES[problem], cause.verify_message
    assert client.statistics().state is StreamState.CLOSED  # we closed it after the error
    # The server hears about it through the client's alert.
    assert isinstance(outcome.server, trio.BrokenResourceError)
    assert isinstance(outcome.server.__cause__, ssl.SSLError), repr(outcome.server.__cause__)
    assert_no_application_data(client, recorded, outcome)


@pytest.mark.parametrize("version", VERSIONS)
async def test_bad_certificate_error_is_sticky(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """After a verification failure every operation repeats the same error and sends nothing."""
    client_transport, server_transport, recorded = recording_stream_pair()
    client = TLSStream(client_transport, _client_context(_CA, version), server_hostname=HOSTNAME)
    server = TLSStream(
        server_transport, _server_context(SERVER_CERTS["expired"], version), server_side=True
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _swallow(server.do_handshake()))
        with pytest.raises(trio.BrokenResourceError) as first:
            await client.do_handshake()
        sent = len(recorded)
        for operation in (lambda: client.send_all(b"x"), client.receive_some, client.do_handshake):
            with pytest.raises(trio.BrokenResourceError) as again:
                await operation()
            assert again.value.__cause__ is first.value.__cause__
        assert len(recorded) == sent
        await client.aclose()


async def _swallow(awaitable: Any) -> None:
    try:
        await awaitable
    except trio.BrokenResourceError:
        pass


async def test_good_certificates_control(autojump_clock: trio.testing.MockClock) -> None:
    """The same set-up with a good certificate works (the failures above are real)."""
    client, server, recorded = streams(
        _client_context(_CA, TLS13), _server_context(GOOD_CERT, TLS13)
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"hello")
            assert await server.receive_some() == b"hello"
    assert b"hello" not in recorded


# ---------------------------------------------------------------------------
# Mutual TLS: the server requires a client certificate.


def _mtls_server_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    context = _server_context(GOOD_CERT, version)
    context.verify_mode = ssl.CERT_REQUIRED
    _CA.configure_trust(context)
    return context


@pytest.mark.parametrize("via", ["do_handshake", "send_all"])
async def test_missing_client_certificate_tls12(
    via: str, autojump_clock: trio.testing.MockClock
) -> None:
    """TLS 1.2: the server refuses before its Finished, so both handshakes fail.

    Server: ``BrokenResourceError`` caused by ``ssl.SSLError`` "peer did not
    return a certificate". Client: ``BrokenResourceError`` caused by the
    server's alert (``ssl.SSLError``, "sslv3 alert handshake failure" or
    similar). No application data leaves the client.
    """
    client, server, recorded = streams(_client_context(_CA, TLS12), _mtls_server_context(TLS12))
    outcome = await converse(client, server, client_sends=SECRET if via == "send_all" else None)
    assert isinstance(outcome.server, trio.BrokenResourceError)
    assert isinstance(outcome.server.__cause__, ssl.SSLError)
    assert "CERTIFICATE" in str(outcome.server.__cause__).upper()
    assert isinstance(outcome.client, trio.BrokenResourceError)
    assert isinstance(outcome.client.__cause__, ssl.SSLError)
    assert not isinstance(outcome.client.__cause__, ssl.SSLCertVerificationError)
    assert_no_application_data(client, recorded, outcome)


async def test_missing_client_certificate_tls13(autojump_clock: trio.testing.MockClock) -> None:
    """TLS 1.3: the client's handshake *completes* before the server judges it.

    The client sends its (empty) Certificate and its Finished and is done;
    only then does the server reject it. So on the client ``do_handshake``
    succeeds, and the failure shows on the next ``receive_some``:
    ``BrokenResourceError`` caused by ``ssl.SSLError`` "tlsv13 alert
    certificate required". The server fails its handshake with
    ``BrokenResourceError`` caused by ``ssl.SSLError`` "peer did not return a
    certificate". Anything the client sent after its handshake reaches the
    server encrypted and is discarded: the server application never sees it.
    """
    client, server, recorded = streams(_client_context(_CA, TLS13), _mtls_server_context(TLS13))
    outcome = await converse(client, server, client_sends=None)
    assert isinstance(outcome.server, trio.BrokenResourceError)
    assert isinstance(outcome.server.__cause__, ssl.SSLError)
    assert "CERTIFICATE" in str(outcome.server.__cause__).upper()
    assert isinstance(outcome.client, trio.BrokenResourceError)
    assert isinstance(outcome.client.__cause__, ssl.SSLError)
    assert "CERTIFICATE REQUIRED" in str(outcome.client.__cause__).upper()
    assert outcome.server_received == b""
    assert client.statistics().plaintext_bytes_sent == 0
    assert b"TOP-SECRET" not in recorded


async def test_missing_client_certificate_tls13_data_is_discarded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """TLS 1.3, implicit handshake: send_all may succeed; the server gets nothing."""
    client, server, recorded = streams(_client_context(_CA, TLS13), _mtls_server_context(TLS13))
    outcome = await converse(client, server, client_sends=b"small request")
    assert isinstance(outcome.server, trio.BrokenResourceError)
    assert outcome.server_received == b""
    assert isinstance(outcome.client, trio.BrokenResourceError)
    assert b"small request" not in recorded  # encrypted if sent at all


@pytest.mark.parametrize("version", VERSIONS)
async def test_untrusted_client_certificate(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """The server's side of a verification failure: SSLCertVerificationError as cause."""
    client_context = _client_context(_CA, version)
    UNTRUSTED_CLIENT_CERT.configure_cert(client_context)
    client, server, _ = streams(client_context, _mtls_server_context(version))
    outcome = await converse(client, server, client_sends=None)
    assert isinstance(outcome.server, trio.BrokenResourceError)
    cause = outcome.server.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError), repr(cause)
    assert cause.verify_code == 20
    assert isinstance(outcome.client, trio.BrokenResourceError)
    assert isinstance(outcome.client.__cause__, ssl.SSLError)
    assert outcome.server_received == b""


@pytest.mark.parametrize("version", VERSIONS)
async def test_mutual_tls_control(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    client_context = _client_context(_CA, version)
    CLIENT_CERT.configure_cert(client_context)
    client, server, _ = streams(client_context, _mtls_server_context(version))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"hello")
            assert await server.receive_some() == b"hello"
    peer = server.getpeercert()
    assert peer["subjectAltName"] == (("email", "client@example.org"),)


@pytest.mark.parametrize("version", VERSIONS)
async def test_handshake_failure_alert_reaches_the_peer(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """The refusing side sends OpenSSL's alert, so the peer learns why."""
    client, server, _ = streams(
        _client_context(_CA, version), _server_context(SERVER_CERTS["untrusted-ca"], version)
    )
    outcome = await converse(client, server, client_sends=None)
    assert isinstance(outcome.client, trio.BrokenResourceError)
    assert isinstance(outcome.server, trio.BrokenResourceError)
    assert not isinstance(outcome.server.__cause__, ssl.SSLEOFError), outcome.server.__cause__
    assert "ALERT" in str(outcome.server.__cause__).upper()
