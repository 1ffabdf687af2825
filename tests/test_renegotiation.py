"""TLS 1.2 renegotiation started by an independent (pyOpenSSL) server while
our client is inside a large send_all and data flows both ways."""

from __future__ import annotations

import hashlib
import os

import pytest
import trio
import trio.testing
import trustme
from pyopenssl_peer import ManualPeer, PyOpenSSLPeer, client_context, server_context
from streamtools import transport_pair

from trio_tlsretry import StreamState, TLSStream
from trio_tlsretry._engine import Step, TLSEngine
from trio_tlsretry.testing import cancel_at_checkpoint

SIZE = 6 * 1024 * 1024


def digest(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# Transports with back-pressure, so the renegotiation lands while send_all is
# still writing (over an unbounded memory pair send_all would finish first).
# trio.SSLStream hangs or breaks in this test over the socket pair; see
# benchmarks/cancellation_table.py for the side-by-side run.
@pytest.mark.parametrize("transport", ["lockstep", "exact", "socket"])
@pytest.mark.parametrize("renegotiations", [1, 3])
async def test_renegotiation_during_two_way_transfer(transport: str, renegotiations: int) -> None:
    ca = trustme.CA()
    upload = os.urandom(SIZE)
    download = os.urandom(SIZE)
    a, b = transport_pair(transport, capacity=32 * 1024)
    client = TLSStream(a, client_context(ca), server_hostname="example.org")
    peer = PyOpenSSLPeer(
        b,
        server_context(ca),
        to_send=download,
        expect=SIZE,
        renegotiate_after=SIZE // (renegotiations + 1),
        renegotiations=renegotiations,
    )
    got = bytearray()

    async def receive_all() -> None:
        # Until the peer's close_notify: it sends that only once its last
        # renegotiation has completed, which needs us to keep reading.
        while data := await client.receive_some():
            got.extend(data)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.run)
            nursery.start_soon(receive_all)
            await client.send_all(upload)  # one call: the renegotiation lands inside it
    assert peer.total_renegotiations() == renegotiations
    assert len(peer.received) == SIZE and digest(peer.received) == digest(upload)
    assert len(got) == SIZE and digest(got) == digest(download)
    assert client.version() == "TLSv1.2"
    await trio.aclose_forcefully(client)  # the peer no longer reads


@pytest.mark.parametrize("transport", ["lockstep", "exact"])
async def test_a_chunk_is_encrypted_only_into_an_empty_queue(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/design.rst, point 1 of the loop: the pinned write encrypts its next
    # chunk only once every queued byte has reached the transport, which is
    # what makes the count of delivered bytes exact. A renegotiation during a
    # two-way transfer is where other tasks queue bytes while the sender
    # waits: the reader answers the peer's handshake, and a flush that only
    # sends what the peer waits for leaves application data behind. (With
    # the loop stepping straight after a wait, every lockstep run broke
    # this, and about 1 run in 100 then hung.)
    steps_into_a_full_queue = 0
    advance = TLSEngine.advance_pinned_write

    def checked(engine: TLSEngine) -> Step:
        nonlocal steps_into_a_full_queue
        steps_into_a_full_queue += engine.has_outgoing()
        return advance(engine)

    monkeypatch.setattr(TLSEngine, "advance_pinned_write", checked)
    await test_renegotiation_during_two_way_transfer(transport, 3)
    assert steps_into_a_full_queue == 0


@pytest.mark.parametrize("transport", ["exact", "socket"])
async def test_renegotiation_while_sends_and_receives_are_cancelled(transport: str) -> None:
    # The peer renegotiates twice while our send_all and receive_some are
    # being cancelled at varying checkpoints and retried (send_all with the
    # very same object, as the contract allows). Both directions must stay
    # byte-exact and the stream must stay usable throughout.
    ca = trustme.CA()
    size = 3 * 1024 * 1024
    upload, download = os.urandom(size), os.urandom(size)
    a, b = transport_pair(transport, capacity=16 * 1024)
    client = TLSStream(a, client_context(ca), server_hostname="example.org")
    peer = PyOpenSSLPeer(
        b,
        server_context(ca),
        to_send=download,
        expect=size,
        renegotiate_after=size // 3,
        renegotiations=2,
    )
    got = bytearray()
    cancellations = {"send": 0, "receive": 0}

    async def receive_all() -> None:
        k = 1
        while True:
            outcome = await cancel_at_checkpoint(k, client.receive_some)
            if outcome.completed:
                assert outcome.result is not None
                if not outcome.result:
                    return  # the peer's close_notify, after its renegotiations
                got.extend(outcome.result)
            else:
                cancellations["receive"] += 1
            k = k % 7 + 1

    async def send_all_with_retries() -> None:
        k = 1
        while True:
            outcome = await cancel_at_checkpoint(k, lambda: client.send_all(upload))
            if outcome.completed:
                return
            cancellations["send"] += 1
            assert client.statistics().state is StreamState.OPEN
            k = k % 11 + 2

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.run)
            nursery.start_soon(receive_all)
            nursery.start_soon(send_all_with_retries)
    # The exact numbers depend on how the kernel splits socket writes.
    assert cancellations["send"] > 0 and cancellations["receive"] > 0
    assert peer.total_renegotiations() == 2
    assert digest(peer.received) == digest(upload) and len(peer.received) == size
    assert digest(got) == digest(download) and len(got) == size
    await trio.aclose_forcefully(client)


# Over the socket the receiver waits on the raw socket, over the exact-progress
# pair in the transport's receive_some; both waits must be woken.
@pytest.mark.parametrize("transport", ["exact", "socket"])
async def test_receiver_sends_its_handshake_answer_when_the_blocked_sender_is_cancelled(
    transport: str,
) -> None:
    # The receiver reads a HelloRequest and OpenSSL queues our ClientHello
    # behind a send_all that holds the transport (the peer is not reading).
    # The receiver must not wait for that send_all (it may wait for ever), so
    # it waits for the peer instead. When the send_all is then cancelled,
    # nobody is left to send the ClientHello, and this peer, like OpenSSL's
    # SSL_write mid-renegotiation, answers nothing until it has one: the
    # receiver has to be woken to send it itself, or both ends wait for ever.
    ca = trustme.CA()
    client_transport, peer_transport = transport_pair(transport, capacity=4096, socket_buffer=4096)
    client = TLSStream(client_transport, client_context(ca), server_hostname="example.org")
    peer = ManualPeer(peer_transport, server_context(ca))
    message = os.urandom(200_000)  # one write chunk, far more than 4 KiB
    reply = bytearray()

    async def receive_reply() -> None:
        reply.extend(await client.receive_some())

    async def peer_renegotiates_then_replies() -> None:
        while peer.conn.renegotiate_pending():
            await peer.pump()
        peer.conn.send(b"pong")
        await peer.flush()

    # Real time, for the socket: a missed wake-up is a deadlock, and fails here.
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.handshake)
            await client.do_handshake()
        after_handshake = client.statistics().ciphertext_bytes_sent
        async with trio.open_nursery() as nursery:
            send_scope = trio.CancelScope()

            async def send() -> None:
                with send_scope:
                    await client.send_all(message)

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()  # send_all holds the transport
            await peer.request_renegotiation()
            nursery.start_soon(receive_reply)
            await trio.testing.wait_all_tasks_blocked()
            sent_before_cancel = client.statistics().ciphertext_bytes_sent - after_handshake
            send_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(peer_renegotiates_then_replies)
    assert send_scope.cancelled_caught and 0 < sent_before_cancel < len(message)
    assert reply == b"pong"
    assert peer.conn.total_renegotiations() == 1
    # The cancelled send_all's encrypted chunk went out whole (no torn record);
    # retrying it delivers the rest.
    assert message.startswith(bytes(peer.received)) and peer.received
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def peer_receives_the_rest() -> None:
                while len(peer.received) < len(message):
                    await peer.pump()

            nursery.start_soon(peer_receives_the_rest)
            await client.send_all(message)
    assert peer.received == message
    await trio.aclose_forcefully(client)


async def test_small_send_during_a_renegotiation_is_retried_whole() -> None:
    # Over a socket, a small send_all takes the unpinned fast path. Here the
    # peer's HelloRequest has been answered, so OpenSSL refuses the write
    # until the peer's ServerHello arrives: the message must be pinned,
    # retried and delivered exactly once.
    ca = trustme.CA()
    client_transport, peer_transport = transport_pair("socket")
    client = TLSStream(client_transport, client_context(ca), server_hostname="example.org")
    peer = ManualPeer(peer_transport, server_context(ca))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.handshake)
            await client.do_handshake()
        await peer.request_renegotiation()
        # Our receiver reads the HelloRequest and answers with a ClientHello;
        # nothing else comes, so stop it once it waits for more.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        retries_before = client.statistics().write_retries
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"hello")
            while peer.received != b"hello" or peer.conn.renegotiate_pending():
                await peer.pump()
    assert peer.received == b"hello"
    assert client.statistics().write_retries > retries_before
    assert client.statistics().state is StreamState.OPEN
    assert peer.conn.total_renegotiations() == 1
    await trio.aclose_forcefully(client)
