"""Fatal alerts after the handshake.

When OpenSSL fails a connection it queues the fatal alert that RFC 8446
section 6.2 and RFC 5246 section 7.2.2 require; ``TLSStream`` sends it before
the stream breaks, on every operation, during the handshake or after it
(``trio.SSLStream`` only does during the handshake). The peer here is another
``TLSStream``: OpenSSL on the receiving end names the alert it got
(``SSLV3_ALERT_BAD_RECORD_MAC`` and the like). ``tests/test_adversarial_peer.py``
checks each alert against ``openssl s_server`` with an independent peer.
"""

from __future__ import annotations

import os
import ssl

import pytest
import trio
import trio.testing
from streamtools import contexts_for, handshake, handshaken_socket_pair

from trio_tlsretry import (
    StreamState,
    TLSStream,
)
from trio_tlsretry._stream import ALERT_TIMEOUT
from trio_tlsretry.testing import tls_stream_pair_over

HOSTNAME = "example.org"
TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [pytest.param(TLS12, id="TLS1.2"), pytest.param(TLS13, id="TLS1.3")]


def forged_record(body_length: int = 64) -> bytes:
    """An application-data record whose contents no key produced."""
    return b"\x17\x03\x03" + body_length.to_bytes(2, "big") + os.urandom(body_length)


async def tls_failure_of(stream: TLSStream, operation: str) -> ssl.SSLError:
    """Run ``operation`` on ``stream``; return the SSLError it broke with."""
    with pytest.raises(trio.BrokenResourceError) as info:
        if operation == "receive_some":
            await stream.receive_some()
        elif operation == "unwrap":
            await stream.unwrap()
        else:  # pragma: no cover - a typo in a parametrisation
            raise AssertionError(operation)
    cause = info.value.__cause__
    assert isinstance(cause, ssl.SSLError), repr(cause)
    assert stream.statistics().state is StreamState.BROKEN
    return cause


async def alert_received_by(stream: TLSStream) -> str:
    """The reason OpenSSL gives for the alert ``stream``'s peer sent it."""
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as info:
        while await stream.receive_some():
            pass
    cause = info.value.__cause__
    assert isinstance(cause, ssl.SSLError), repr(cause)
    return str(cause.reason)


def pair_over(transports: tuple[trio.abc.Stream, trio.abc.Stream]) -> tuple[TLSStream, TLSStream]:
    """A TLS 1.3 ``(client, server)`` pair over the two given transports."""
    contexts = contexts_for(TLS13)
    return tls_stream_pair_over(
        *transports, client_context=contexts.client, server_context=contexts.server
    )


# ---------------------------------------------- a failure after the handshake


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("operation", ["receive_some", "unwrap"])
async def test_a_forged_record_gets_bad_record_mac(version: ssl.TLSVersion, operation: str) -> None:
    async with handshaken_socket_pair(contexts_for(version)) as (client, server):
        await client.transport_stream.send_all(forged_record())
        failure = await tls_failure_of(server, operation)
        assert failure.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
        # The alert went out before the error was raised.
        assert server.statistics().outgoing_ciphertext_bytes == 0
        if operation == "unwrap":
            # unwrap sent its close_notify before it read the forged record,
            # so the client sees a clean close first; the alert follows it.
            assert await client.receive_some() == b""
        else:
            assert await alert_received_by(client) == "SSLV3_ALERT_BAD_RECORD_MAC"


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_oversized_record_gets_record_overflow(version: ssl.TLSVersion) -> None:
    # RFC 8446 section 5.2 / RFC 5246 section 6.2.3: at most 2^14 + 256 (TLS
    # 1.3) or 2^14 + 2048 (TLS 1.2) bytes of ciphertext per record.
    async with handshaken_socket_pair(contexts_for(version)) as (client, server):
        await client.transport_stream.send_all(forged_record(2**14 + 2049))
        failure = await tls_failure_of(server, "receive_some")
        assert failure.reason == "PACKET_LENGTH_TOO_LONG"
        assert await alert_received_by(client) == "TLSV1_ALERT_RECORD_OVERFLOW"


@pytest.mark.parametrize("side", ["client", "server"])
async def test_both_ends_send_the_alert_over_memory_streams(side: str) -> None:
    client, server = pair_over(trio.testing.memory_stream_pair())
    await handshake(client, server)
    victim, peer = (client, server) if side == "client" else (server, client)
    await peer.transport_stream.send_all(forged_record())
    failure = await tls_failure_of(victim, "receive_some")
    assert failure.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
    assert await alert_received_by(peer) == "SSLV3_ALERT_BAD_RECORD_MAC"


async def test_the_alert_flush_is_bounded_when_the_peer_does_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Over a lockstep transport a send waits for the peer to read; this peer
    # never does. The error still comes, ALERT_TIMEOUT later, unmasked.
    client, server = pair_over(trio.testing.lockstep_stream_pair())
    async with trio.open_nursery() as nursery:
        await handshake(client, server)
        nursery.start_soon(client.transport_stream.send_all, forged_record())
        started = trio.current_time()
        failure = await tls_failure_of(server, "receive_some")
        assert failure.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
        assert trio.current_time() - started == pytest.approx(ALERT_TIMEOUT)
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(server)


async def test_a_cancelled_alert_flush_leaves_the_stream_broken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = pair_over(trio.testing.lockstep_stream_pair())
    async with trio.open_nursery() as nursery:
        await handshake(client, server)
        nursery.start_soon(client.transport_stream.send_all, forged_record())
        with trio.move_on_after(ALERT_TIMEOUT / 2) as scope:
            await server.receive_some()
        assert scope.cancelled_caught
        assert server.statistics().state is StreamState.BROKEN
        with pytest.raises(trio.BrokenResourceError) as info:
            await server.receive_some()
        cause = info.value.__cause__
        assert isinstance(cause, ssl.SSLError)
        assert cause.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
        nursery.cancel_scope.cancel()
    await server.aclose()
    assert server.statistics().state is StreamState.CLOSED


async def test_trio_sslstream_sends_no_alert_after_the_handshake() -> None:
    # The comparison row of docs/beyond.rst: over the same forged record,
    # trio.SSLStream breaks without telling the peer why; the peer only
    # learns of the end of the transport.
    contexts = contexts_for(TLS13)
    left, right = trio.testing.memory_stream_pair()
    client = trio.SSLStream(left, contexts.client, server_hostname=HOSTNAME)
    server = trio.SSLStream(right, contexts.server, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    await left.send_all(forged_record())
    with pytest.raises(trio.BrokenResourceError) as info:
        await server.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert info.value.__cause__.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
    await server.aclose()
    with pytest.raises(trio.BrokenResourceError) as info:
        await client.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert "ALERT" not in str(info.value.__cause__.reason)


async def test_an_alert_to_a_peer_that_has_gone_does_not_hide_the_error() -> None:
    async with handshaken_socket_pair(contexts_for(TLS13)) as (client, server):
        await client.transport_stream.send_all(forged_record())
        # The peer's socket is gone: the alert cannot be delivered.
        client.transport_stream.socket.close()
        failure = await tls_failure_of(server, "receive_some")
        assert failure.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"


async def test_a_failure_met_by_send_all_sends_the_alert() -> None:
    # TLS 1.2: before a write, records already received are decrypted (a
    # renegotiation may be under way); a forged one among them fails the
    # connection from send_all, which sends the alert too.
    contexts = contexts_for(TLS12)
    left, right = trio.testing.memory_stream_pair()
    client = TLSStream(left, contexts.client, server_hostname=HOSTNAME)
    server = TLSStream(right, contexts.server, server_side=True)
    await handshake(client, server)
    await client.send_all(b"hello")
    await left.send_all(forged_record())
    # One transport read takes both records; the first byte is returned.
    assert await server.receive_some(1) == b"h"
    with pytest.raises(trio.BrokenResourceError) as info:
        await server.send_all(b"reply")
    cause = info.value.__cause__
    assert isinstance(cause, ssl.SSLError)
    assert server.statistics().outgoing_ciphertext_bytes == 0
    assert await alert_received_by(client) == "SSLV3_ALERT_BAD_RECORD_MAC"
