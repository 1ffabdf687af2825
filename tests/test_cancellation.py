"""The cancellation contract (docs/cancellation.rst), one sweep per row.

Each test cancels an operation at checkpoint k = 0, 1, 2, ... (via
``trio_tlsretry.testing.cancellation_sweep``) on a fresh connection, then
finishes the conversation and checks what the peer received against the
contract. Over exact-progress transports (``trio.SocketStream``, the
in-memory exact-progress pair) every cancellation must leave the stream
usable. Over trio's memory and lockstep streams the only allowed failure is
the documented one: a cancellation inside the transport's own ``send_all``
breaks the stream loudly, never silently.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from streamtools import contexts_for, handshake, payload, transport_pair

from trio_tlsretry import StreamState, TLSStream
from trio_tlsretry._engine import DEFAULT_WRITE_CHUNK
from trio_tlsretry.testing import (
    cancel_at_checkpoint,
    cancellation_sweep,
    tls_stream_pair_over,
)

EXACT = ["exact", "socket"]
OPAQUE = ["memory", "lockstep"]
TRANSPORTS = EXACT + OPAQUE
UNRECOVERABLE = "cancelled part-way"


def make_pair(
    kind: str, version: ssl.TLSVersion, *, capacity: int = 8192
) -> tuple[TLSStream, TLSStream]:
    """A pair over ``kind``; socketpairs get tiny kernel buffers, so that sends
    block and complete partially."""
    c = contexts_for(version)
    a, b = transport_pair(kind, capacity=capacity, socket_buffer=4096)
    return tls_stream_pair_over(a, b, client_context=c.client, server_context=c.server)


@dataclass
class Peer:
    """Reads everything the stream under test sends, in a background task."""

    stream: TLSStream
    max_bytes: int | None = None
    received: bytearray = field(default_factory=bytearray)
    eof: bool = False
    error: BaseException | None = None
    changed: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)

    async def run(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(self.max_bytes)
                if not data:
                    self.eof = True
                    return
                self.received += data
                self.changed.unpark_all()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.error = exc
        finally:
            self.changed.unpark_all()

    @property
    def done(self) -> bool:
        return self.eof or self.error is not None

    async def wait_for(self, size: int) -> None:
        """Wait until ``size`` bytes arrived or the stream ended."""
        while len(self.received) < size and not self.done:
            await self.changed.park()

    async def wait_done(self) -> None:
        while not self.done:
            await self.changed.park()


@dataclass
class Tally:
    """Outcomes of one sweep, for the assertions and the docs table."""

    cancelled: int = 0
    usable: int = 0
    broken: int = 0

    def check(self, kind: str) -> None:
        assert self.cancelled > 0, "the sweep never cancelled anything"
        if kind in EXACT:
            assert self.broken == 0, f"{self.broken} cancellations broke an exact transport"
        assert self.usable + self.broken == self.cancelled


def assert_broken_loudly(stream: TLSStream) -> None:
    stats = stream.statistics()
    assert stats.state is StreamState.BROKEN
    assert stream._failure is not None and UNRECOVERABLE in stream._failure


async def sweep(
    kind: str,
    run_one: Callable[[int], Awaitable[str]],
) -> Tally:
    """Call ``run_one(k)`` for k = 0, 1, ... until it reports "completed"."""
    tally = Tally()
    for k in range(10_000):
        outcome = await run_one(k)
        if outcome == "completed":
            tally.check(kind)
            return tally
        tally.cancelled += 1
        if outcome == "usable":
            tally.usable += 1
        else:
            assert outcome == "broken"
            assert kind in OPAQUE
            tally.broken += 1
    raise AssertionError("sweep did not terminate")


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
version_param = pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
transport_param = pytest.mark.parametrize("kind", TRANSPORTS)


async def send_case(kind: str, version: ssl.TLSVersion, size: int, k: int) -> str:
    """Cancel send_all(msg) at checkpoint k; retry with the same object."""
    client, server = make_pair(kind, version)
    message = bytes(i % 253 for i in range(size))
    peer = Peer(server)
    outcome = "completed"
    async with trio.open_nursery() as nursery:
        await handshake(client, server)
        nursery.start_soon(peer.run)
        result = await cancel_at_checkpoint(k, lambda: client.send_all(message))
        if not result.completed:
            if client.statistics().state is StreamState.BROKEN:
                assert_broken_loudly(client)
                with pytest.raises(trio.BrokenResourceError):
                    await client.send_all(message)
                # Whatever reached the peer is a prefix of the message,
                # never other bytes (the peer may also see a torn record).
                assert message.startswith(bytes(peer.received))
                await trio.aclose_forcefully(client)
                nursery.cancel_scope.cancel()
                return "broken"
            outcome = "usable"
            assert client.statistics().pinned_bytes <= size
            await client.send_all(message)  # the same object: resume
        assert client.statistics().pinned_bytes == 0
        # Exactly once: a second, different message follows it directly.
        await client.send_all(b"<end>")
        await peer.wait_for(size + 5)
        assert bytes(peer.received) == message + b"<end>"
        nursery.cancel_scope.cancel()
    return outcome


@version_param
@transport_param
async def test_cancelled_small_send_all_resumes_exactly_once(
    kind: str, version: ssl.TLSVersion
) -> None:
    (await sweep(kind, lambda k: send_case(kind, version, 1000, k)))


@version_param
@transport_param
async def test_cancelled_multi_chunk_send_all_resumes_exactly_once(
    kind: str, version: ssl.TLSVersion
) -> None:
    size = 2 * DEFAULT_WRITE_CHUNK + 12345
    await sweep(kind, lambda k: send_case(kind, version, size, k))


async def other_send_case(kind: str, k: int) -> str:
    """A different send after a cancelled send_all completes the remainder first."""
    client, server = make_pair(kind, ssl.TLSVersion.TLSv1_3)
    first = b"A" * (DEFAULT_WRITE_CHUNK + 999)
    second = b"B" * 3000
    peer = Peer(server)
    async with trio.open_nursery() as nursery:
        await handshake(client, server)
        nursery.start_soon(peer.run)
        result = await cancel_at_checkpoint(k, lambda: client.send_all(first))
        outcome = "completed" if result.completed else "usable"
        if client.statistics().state is StreamState.BROKEN:
            assert_broken_loudly(client)
            nursery.cancel_scope.cancel()
            await trio.aclose_forcefully(client)
            return "broken"
        # Cancelled at its very first checkpoint, send_all did nothing and
        # pinned nothing; otherwise all of ``first`` must precede ``second``.
        started = result.completed or client.statistics().pinned_bytes > 0
        expected = (first if started else b"") + second
        await client.send_all(bytearray(second))  # another object
        await peer.wait_for(len(expected))
        assert bytes(peer.received) == expected
        nursery.cancel_scope.cancel()
    return outcome


@transport_param
async def test_other_send_completes_the_pinned_remainder_first(kind: str) -> None:
    await sweep(kind, lambda k: other_send_case(kind, k))


async def receive_case(kind: str, version: ssl.TLSVersion, k: int) -> str:
    """Cancel receive_some at checkpoint k; no decrypted byte may be lost."""
    client, server = make_pair(kind, version)
    message = bytes(i % 241 for i in range(100_000))
    got = bytearray()
    async with trio.open_nursery() as nursery:
        await handshake(client, server)
        nursery.start_soon(server.send_all, message)
        result = await cancel_at_checkpoint(k, client.receive_some)
        if result.completed:
            assert result.result is not None
            got += result.result
        assert client.statistics().state is StreamState.OPEN
        while len(got) < len(message):
            got += await client.receive_some()
    assert bytes(got) == message
    return "completed" if result.completed else "usable"


@version_param
@transport_param
async def test_cancelled_receive_some_loses_nothing(kind: str, version: ssl.TLSVersion) -> None:
    tally = await sweep(kind, lambda k: receive_case(kind, version, k))
    assert tally.broken == 0


async def handshake_case(kind: str, version: ssl.TLSVersion, k: int) -> str:
    """Cancel the client's handshake at checkpoint k; calling again resumes."""
    client, server = make_pair(kind, version)
    async with trio.open_nursery() as nursery:

        async def server_side() -> None:
            try:
                await server.do_handshake()
                data = await server.receive_some()
                await server.send_all(data.upper())
            except trio.BrokenResourceError:
                pass

        nursery.start_soon(server_side)
        result = await cancel_at_checkpoint(k, client.do_handshake)
        if not result.completed and client.statistics().state is StreamState.BROKEN:
            assert_broken_loudly(client)
            await trio.aclose_forcefully(client)
            nursery.cancel_scope.cancel()
            return "broken"
        await client.send_all(b"hello")  # implicit handshake resumes
        assert await client.receive_some() == b"HELLO"
    return "completed" if result.completed else "usable"


@version_param
@transport_param
async def test_cancelled_handshake_resumes(kind: str, version: ssl.TLSVersion) -> None:
    await sweep(kind, lambda k: handshake_case(kind, version, k))


async def wait_case(kind: str, k: int) -> str:
    """Cancel wait_send_all_might_not_block at checkpoint k."""
    client, server = make_pair(kind, ssl.TLSVersion.TLSv1_3)
    peer = Peer(server)
    async with trio.open_nursery() as nursery:
        # The peer reads from the start (its first receive_some does its
        # handshake): over lockstep, wait_send_all_might_not_block returns
        # only once the peer is waiting to receive.
        nursery.start_soon(peer.run)
        result = await cancel_at_checkpoint(k, client.wait_send_all_might_not_block)
        if not result.completed and client.statistics().state is StreamState.BROKEN:
            assert_broken_loudly(client)
            await trio.aclose_forcefully(client)
            nursery.cancel_scope.cancel()
            return "broken"
        await client.wait_send_all_might_not_block()
        await client.send_all(b"after")
        await peer.wait_for(5)
        assert bytes(peer.received) == b"after"
        nursery.cancel_scope.cancel()
    return "completed" if result.completed else "usable"


@transport_param
async def test_cancelled_wait_send_all_might_not_block(kind: str) -> None:
    await sweep(kind, lambda k: wait_case(kind, k))


async def aclose_case(kind: str, k: int) -> str:
    """Cancel a graceful aclose (with a pinned remainder to flush) at k."""
    client, server = make_pair(kind, ssl.TLSVersion.TLSv1_3)
    message = b"m" * (DEFAULT_WRITE_CHUNK + 5000)
    peer = Peer(server)
    async with trio.open_nursery() as nursery:
        await handshake(client, server)
        if kind in EXACT:
            # Leave a pinned remainder for aclose to flush: cancel the send
            # once it has started.
            await cancel_at_checkpoint(1, lambda: client.send_all(message))
            assert client.statistics().pinned_bytes > 0
        else:
            # Over these transports that cancellation could break the stream
            # (the documented case), so the message goes out in full first.
            nursery.start_soon(peer.run)
            await client.send_all(message)
            await peer.wait_for(len(message))
        if kind in EXACT:
            nursery.start_soon(peer.run)
        result = await cancel_at_checkpoint(k, client.aclose)
        # Closed in every case, cancelled or not.
        assert client.statistics().state is StreamState.CLOSED
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")
        if result.completed:
            # The remainder and then close_notify arrived.
            await peer.wait_for(len(message) + 1)
            assert bytes(peer.received) == message and peer.eof
        else:
            # The transport was closed forcefully: the peer sees a prefix.
            await peer.wait_done()
            assert message.startswith(bytes(peer.received))
    return "completed" if result.completed else "usable"


@transport_param
async def test_cancelled_aclose_still_closes(kind: str) -> None:
    await sweep(kind, lambda k: aclose_case(kind, k))


async def unwrap_case(kind: str, k: int) -> str:
    """Cancel the client's unwrap at checkpoint k; calling again completes it."""
    client, server = make_pair(kind, ssl.TLSVersion.TLSv1_3)
    client_transport = client.transport_stream
    async with trio.open_nursery() as nursery:
        await handshake(client, server)
        server_result: list[tuple[trio.abc.Stream, bytes | bytearray]] = []

        async def server_unwrap() -> None:
            # Wait for the client's close_notify before answering: two
            # simultaneous unwraps over lockstep would both block sending.
            try:
                assert await server.receive_some() == b""
                server_result.append(await server.unwrap())
            except trio.BrokenResourceError:
                pass  # the client broke (the documented case) and was closed

        nursery.start_soon(server_unwrap)
        result = await cancel_at_checkpoint(k, client.unwrap)
        if not result.completed:
            if client.statistics().state is StreamState.BROKEN:
                assert_broken_loudly(client)
                await trio.aclose_forcefully(client)
                nursery.cancel_scope.cancel()
                return "broken"
            transport, _ = await client.unwrap()
        else:
            assert result.result is not None
            transport, _ = result.result
    assert transport is client_transport
    server_transport, _ = server_result[0]
    async with trio.open_nursery() as nursery:  # lockstep: send waits for the read
        nursery.start_soon(transport.send_all, b"plain")
        assert await server_transport.receive_some() == b"plain"
    return "completed" if result.completed else "usable"


@transport_param
async def test_cancelled_unwrap_resumes(kind: str) -> None:
    await sweep(kind, lambda k: unwrap_case(kind, k))


async def test_natural_retry_loop_delivers_exactly_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The documented idiom. The peer reads 4 KiB per second of (mock) time
    # and each attempt has half a second, so the 1 MiB message needs many
    # attempts; each resumes where the last stopped.
    client, server = make_pair("exact", ssl.TLSVersion.TLSv1_3)
    message = bytes(range(256)) * 4096
    received = bytearray()

    async def slow_peer() -> None:
        while len(received) < len(message) + 1:
            received.extend(await server.receive_some(4096))
            await trio.sleep(1)

    attempts = 0
    async with trio.open_nursery() as nursery:
        await handshake(client, server)
        nursery.start_soon(slow_peer)
        while True:
            attempts += 1
            with trio.move_on_after(0.5):
                await client.send_all(message)
                break
        await client.send_all(b"!")
    assert attempts > 10
    assert bytes(received) == message + b"!"


async def both_cancelled_mid_send(
    kind: str, version: ssl.TLSVersion
) -> tuple[TLSStream, TLSStream, dict[TLSStream, bytes]]:
    """Row 9's situation: a handshaken pair whose ends both timed out in a
    large ``send_all`` while neither read, each with part of a record on the
    wire and the rest queued. Returns the pair and each end's message.
    (Run under the autojump clock: the timeouts pass once both are blocked.)"""
    client, server = make_pair(kind, version)
    await handshake(client, server)
    # Distinct, several write chunks each, far more than the transports hold.
    messages = {
        client: payload(3 * DEFAULT_WRITE_CHUNK),
        server: payload(3 * DEFAULT_WRITE_CHUNK + 1)[1:],
    }
    assert messages[client] != messages[server]

    async def send_until_timeout(stream: TLSStream) -> None:
        sent_before = stream.statistics().ciphertext_bytes_sent
        with trio.move_on_after(1):
            await stream.send_all(messages[stream])
        stats = stream.statistics()
        assert stats.pinned_bytes > 0, "cancelled mid-send"
        assert stats.ciphertext_bytes_sent > sent_before, "part of it on the wire"
        assert stats.outgoing_ciphertext_bytes > 0, "the rest queued"

    async with trio.open_nursery() as nursery:
        for stream in (client, server):
            nursery.start_soon(send_until_timeout, stream)
    return client, server, messages


async def finish_both_ways(
    client: TLSStream,
    server: TLSStream,
    messages: dict[TLSStream, bytes],
    received: dict[TLSStream, bytearray],
) -> None:
    """Each end retries its ``send_all`` (the same object) while it reads the
    rest of the other's message; then each got the other's, every byte once."""
    peers = {client: server, server: client}

    async def finish(stream: TLSStream) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, messages[stream])
            while len(received[stream]) < len(messages[peers[stream]]):
                received[stream] += await stream.receive_some()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for stream in (client, server):
                nursery.start_soon(finish, stream)
    for stream in (client, server):
        assert received[stream] == messages[peers[stream]], "each byte exactly once"
        assert stream.statistics().state is StreamState.OPEN


@version_param
@pytest.mark.parametrize("kind", EXACT)
async def test_both_ends_cancelled_mid_send_then_only_receiving(
    kind: str, version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """Row 9: after both ends timed out in a large send_all, both only
    receive. Each holds the rest of a torn record the other needs, and each
    transport is full; a receive that flushed before reading would wait for
    ever on both sides. ``do_handshake`` on the finished handshake returns
    at once too (it sends only handshake bytes)."""
    client, server, messages = await both_cancelled_mid_send(kind, version)
    received: dict[TLSStream, bytearray] = {client: bytearray(), server: bytearray()}

    async def receive_once(stream: TLSStream) -> None:
        await stream.do_handshake()
        received[stream] += await stream.receive_some()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for stream in (client, server):
                nursery.start_soon(receive_once, stream)
    await finish_both_ways(client, server, messages, received)


@pytest.mark.parametrize("kind", EXACT)
async def test_a_receive_that_flushes_and_reads_cancelled_at_every_checkpoint(
    kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Row 9's receive waits on two things at once. Cancelled at each of its
    checkpoints in turn (while the other end receives too), it raises
    ``trio.Cancelled`` itself, never wrapped in an ExceptionGroup, and loses
    nothing: the conversation then completes, every byte once, both ways."""
    cancelled = 0
    for k in range(200):
        client, server, messages = await both_cancelled_mid_send(kind, ssl.TLSVersion.TLSv1_3)
        received: dict[TLSStream, bytearray] = {client: bytearray(), server: bytearray()}
        raised: list[BaseException] = []

        async def receive() -> bytes | bytearray:
            try:
                return await client.receive_some()  # noqa: B023 - awaited in this iteration
            except BaseException as exc:
                raised.append(exc)  # noqa: B023
                raise

        async def server_receives_once() -> None:
            received[server] += await server.receive_some()  # noqa: B023

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server_receives_once)
                outcome = await cancel_at_checkpoint(k, receive)
                # The server needs the rest of the client's torn record,
                # which a client cancelled early never sent: stop waiting
                # (a cancelled receive loses nothing either).
                nursery.cancel_scope.cancel()
        if outcome.completed:
            assert not raised
            received[client] += outcome.result or b""
        else:
            cancelled += 1
            assert [type(exc) for exc in raised] == [trio.Cancelled], raised
            assert client.statistics().state is StreamState.OPEN
        await finish_both_ways(client, server, messages, received)
        if outcome.completed:
            break
    assert outcome.completed
    # Over the exact pair the receive always has to wait on both at k = 1;
    # over a socketpair the kernel may already hold a whole record of the
    # peer's, and the receive may complete without waiting.
    assert cancelled >= (2 if kind == "exact" else 1)


@pytest.mark.parametrize("kind", ["exact", "socket", "memory"])
async def test_every_operation_is_a_checkpoint_and_a_cancelled_start_does_nothing(
    kind: str,
) -> None:
    client, server = make_pair(kind, ssl.TLSVersion.TLSv1_3)
    peer = Peer(server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.run)
        operations: list[Callable[[], Awaitable[object]]] = [
            client.do_handshake,
            lambda: client.send_all(b"x" * 10),
            client.wait_send_all_might_not_block,
            lambda: client.send_all(b""),
        ]
        for operation in operations:
            # A checkpoint even on the fast path (nothing to wait for) ...
            with trio.testing.assert_checkpoints():
                await operation()
            # ... and cancelled before it starts, it raises at once, sends
            # nothing and leaves the stream usable.
            sent = client.statistics().ciphertext_bytes_sent
            with trio.CancelScope() as scope:
                scope.cancel()
                await operation()
            assert scope.cancelled_caught
            assert client.statistics().ciphertext_bytes_sent == sent
            assert client.statistics().state is StreamState.OPEN
        await peer.wait_for(10)
        async with trio.open_nursery() as inner:
            inner.start_soon(server.send_all, b"reply")
            with trio.testing.assert_checkpoints():
                assert await client.receive_some() == b"reply"
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.receive_some()
        assert scope.cancelled_caught
        with trio.testing.assert_checkpoints():
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert bytes(peer.received) == b"x" * 10


# ------------------------------------------ the toolkit's sweep over TLSStream


async def test_k0_cancels_a_tls_receive_before_it_touches_anything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = make_pair("memory", ssl.TLSVersion.TLSv1_3)
    outcome = await cancel_at_checkpoint(0, client.receive_some)
    assert not outcome.completed
    # Not even the ClientHello was produced.
    assert client.statistics().ciphertext_bytes_sent == 0
    assert client.statistics().outgoing_ciphertext_bytes == 0
    await handshake(client, server)


async def test_sweep_tls_send_all_retry_delivers_exactly_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = make_pair("exact", ssl.TLSVersion.TLSv1_3, capacity=2000)
    await handshake(client, server)
    data = payload(30_000)
    received = bytearray()

    async def drain() -> None:
        while True:
            chunk = await server.receive_some()
            if not chunk:
                return
            received.extend(chunk)

    async def after_cancel(k: int) -> None:
        state = client.statistics().state
        assert state is StreamState.OPEN, f"stream {state.name} after cancel at {k}"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        # Every attempt retries the same object: the stream must resume.
        report = await cancellation_sweep(
            lambda k: client.send_all(data), after_cancel=after_cancel
        )
        await client.aclose()
    # Each retry resumes where the last attempt stopped, so a handful of
    # cancellations reach the end of the data.
    assert report.cancelled >= 3
    assert received == data


@version_param
async def test_sweep_tls_handshake_resumes(
    autojump_clock: trio.testing.MockClock, version: ssl.TLSVersion
) -> None:
    client, server = make_pair("exact", version, capacity=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        report = await cancellation_sweep(lambda k: client.do_handshake())
    assert report.cancelled > 2
    assert client.version() == server.version()
