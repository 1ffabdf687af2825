"""TLSStream over faulty transports: resets, early EOF, failing sends, chunked,
slow, corrupted and injected bytes, transports closed under blocked tasks.
Every fault ends in a documented exception, never in a hang. (The fault
wrappers themselves are tested in ``test_faults.py``.)

Hangs are caught with ``trio.fail_after`` under ``MockClock(autojump_threshold=0)``
(the ``autojump_clock`` fixture): when every task is blocked the clock jumps
to the deadline at once, so a deadlock fails the test in no real time.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import pytest
import trio
import trio.testing
from streamtools import contexts_for, handshake, leaves, payload, receive_exactly, transport_pair

from trio_tlsretry import StreamState, TLSStream
from trio_tlsretry.testing import (
    AbruptEOFStream,
    ChunkedStream,
    CorruptingStream,
    DelayedStream,
    FailingStream,
    InjectingStream,
    exact_progress_stream_pair,
    make_tls_contexts,
)

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [TLS12, TLS13]
#: Virtual seconds; under the autojump clock only a deadlock gets there.
DEADLINE = 100


_W = TypeVar("_W", bound=trio.abc.Stream)


class Recorder(Generic[_W]):
    """A ``wrap_client``/``wrap_server`` for :func:`pair` that keeps the wrapper it made."""

    def __init__(self, make: Callable[[trio.abc.Stream], _W]) -> None:
        self._make = make
        self._stream: _W | None = None

    def __call__(self, stream: trio.abc.Stream) -> trio.abc.Stream:
        self._stream = self._make(stream)
        return self._stream

    @property
    def stream(self) -> _W:
        assert self._stream is not None, "pair() has not wrapped a transport yet"
        return self._stream


def pair(
    version: ssl.TLSVersion,
    wrap_client: Callable[[trio.abc.Stream], trio.abc.Stream] = lambda s: s,
    wrap_server: Callable[[trio.abc.Stream], trio.abc.Stream] = lambda s: s,
    *,
    transport: str = "memory",
    capacity: int = 4096,
    https_compatible: bool = False,
) -> tuple[TLSStream, TLSStream]:
    """Client and server over a ``transport`` pair, each end wrapped as given."""
    client_transport, server_transport = transport_pair(transport, capacity=capacity)
    contexts = contexts_for(version)
    client = TLSStream(
        wrap_client(client_transport),
        contexts.client,
        server_hostname=contexts.hostname,
        https_compatible=https_compatible,
    )
    server = TLSStream(
        wrap_server(server_transport),
        contexts.server,
        server_side=True,
        https_compatible=https_compatible,
    )
    return client, server


async def outcome_of(operation: Callable[[], Awaitable[object]]) -> BaseException | None:
    try:
        await operation()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        return exc
    return None


def transport_cause(exc: BaseException) -> BaseException:
    """The transport's own exception behind a BrokenResourceError."""
    assert isinstance(exc, trio.BrokenResourceError)
    cause = exc.__cause__
    assert cause is not None
    return cause


# ---------------------------------------------------------------------------
# Resets.


@pytest.mark.parametrize("fails", ["receive", "send"])
async def test_reset_while_a_receive_both_flushes_and_reads(
    fails: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A receive that must flush a torn record while it also reads (see
    ``test_cancellation.py::test_both_ends_cancelled_mid_send_then_only_receiving``):
    a reset on either side of the transport ends it with one plain
    BrokenResourceError carrying the reset, never an ExceptionGroup."""
    failing = Recorder(FailingStream)
    client, server = pair(TLS13, wrap_client=failing, transport="exact")
    with trio.fail_after(DEADLINE):
        await handshake(client, server)
        with trio.move_on_after(1):
            await client.send_all(payload(200_000))  # the server does not read
        assert client.statistics().outgoing_ciphertext_bytes > 0
        if fails == "receive":
            failing.stream.fail_after_received = failing.stream.bytes_received
        else:
            failing.stream.fail_after_sent = failing.stream.bytes_sent
        caught = None
        try:
            await client.receive_some()
        except BaseException as exc:
            caught = exc
    assert type(caught) is trio.BrokenResourceError
    assert isinstance(transport_cause(caught).__cause__, ConnectionResetError)
    assert client.statistics().state is StreamState.BROKEN


@pytest.mark.parametrize("version", VERSIONS)
async def test_reset_mid_record_on_receive(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """Complete records before the reset are delivered; then BrokenResourceError."""
    failing = Recorder(FailingStream)

    client, server = pair(version, wrap_server=failing)
    with trio.fail_after(DEADLINE):
        await handshake(client, server)
        before = client.statistics().ciphertext_bytes_sent
        await client.send_all(b"A" * 100)
        first_record = client.statistics().ciphertext_bytes_sent - before
        await client.send_all(b"B" * 100)
        # The reset comes 10 bytes into the second record.
        failing.stream.fail_after_received = failing.stream.bytes_received + first_record + 10
        assert await server.receive_some() == b"A" * 100
        with pytest.raises(trio.BrokenResourceError) as info:
            await server.receive_some()
        cause = transport_cause(info.value)
        assert isinstance(cause, trio.BrokenResourceError)
        assert isinstance(cause.__cause__, ConnectionResetError)
        assert server.statistics().state is StreamState.BROKEN
        # Broken for good, with the same cause, without touching the transport.
        with pytest.raises(trio.BrokenResourceError) as again:
            await server.send_all(b"reply")
        assert again.value.__cause__ is cause
        await server.aclose()
        assert server.statistics().state is StreamState.CLOSED


@pytest.mark.parametrize("version", VERSIONS)
async def test_reset_mid_record_on_send(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """A send that dies half-way breaks the sender; the peer never gets torn plaintext."""
    failing = Recorder(FailingStream)

    client, server = pair(version, wrap_client=failing)
    with trio.fail_after(DEADLINE):
        await handshake(client, server)
        await client.send_all(b"whole")
        assert await server.receive_some() == b"whole"
        failing.stream.fail_after_sent = failing.stream.bytes_sent + 50
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.send_all(b"x" * 1000)
        assert isinstance(transport_cause(info.value).__cause__, ConnectionResetError)
        assert client.statistics().state is StreamState.BROKEN
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
        await client.aclose()  # no close_notify from a broken stream
        # The peer has 50 bytes of a record and then EOF: an error, no data.
        with pytest.raises(trio.BrokenResourceError) as peer_info:
            await server.receive_some()
        assert isinstance(peer_info.value.__cause__, ssl.SSLEOFError)
        assert server.statistics().plaintext_bytes_received == len(b"whole")


@pytest.mark.parametrize("version", VERSIONS)
async def test_transport_send_raising_broken_during_the_handshake(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    client, _ = pair(version, wrap_client=lambda s: FailingStream(s, fail_after_sent=0))
    with trio.fail_after(DEADLINE):
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.do_handshake()
        assert isinstance(transport_cause(info.value), trio.BrokenResourceError)
        stats = client.statistics()
        assert stats.state is StreamState.BROKEN
        assert stats.ciphertext_bytes_sent == 0
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"secret")
        assert client.statistics().plaintext_bytes_sent == 0


@pytest.mark.parametrize("version", VERSIONS)
async def test_transport_send_raising_oserror(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """A raw OSError from a transport (e.g. a custom socket wrapper) is a broken stream."""
    raising = Recorder(
        functools.partial(FailingStream, error=lambda: ConnectionResetError(104, "reset"))
    )

    client, server = pair(version, wrap_client=raising)
    with trio.fail_after(DEADLINE):
        await handshake(client, server)
        # Fail half-way through the next record.
        raising.stream.fail_after_sent = raising.stream.bytes_sent + 500
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.send_all(b"x" * 1000)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        assert client.statistics().state is StreamState.BROKEN


@pytest.mark.parametrize("version", VERSIONS)
async def test_unexpected_transport_exception_does_not_resend(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    raising = Recorder(
        functools.partial(FailingStream, error=lambda: RuntimeError("buggy transport"))
    )

    client, server = pair(version, wrap_client=raising)
    with trio.fail_after(DEADLINE):
        await handshake(client, server)
        raising.stream.fail_after_sent = raising.stream.bytes_sent + 500
        with pytest.raises(RuntimeError):
            await client.send_all(b"x" * 1000)
        raising.stream.fail_after_sent = None
        # Half a record may be on the wire: the stream must refuse to go on.
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"y" * 10)


# ---------------------------------------------------------------------------
# EOF in the middle of the handshake, at every offset.


def _handshake_bytes(version: ssl.TLSVersion) -> tuple[int, int]:
    """Bytes server->client and client->server in a clean handshake."""

    async def measure() -> tuple[int, int]:
        client, server = pair(version)
        await handshake(client, server)
        return (
            server.statistics().ciphertext_bytes_sent,
            client.statistics().ciphertext_bytes_sent,
        )

    return trio.run(measure)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("side", ["client", "server"])
async def test_eof_mid_handshake_at_every_offset(
    version: ssl.TLSVersion, side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Cut the transport after ``k`` handshake bytes: BrokenResourceError, never a hang.

    Offsets run over the whole flight in steps (every offset costs a full
    handshake); each side sees either a completed handshake (the cut came
    after everything it needed) or ``BrokenResourceError`` caused by
    ``ssl.SSLEOFError``, and the side whose EOF came early always fails.
    """
    to_client, to_server = await trio.to_thread.run_sync(_handshake_bytes, version)
    total = to_client if side == "client" else to_server
    # ECDSA signatures vary by a few bytes between handshakes: stop short of
    # the end so every cut falls inside the last flight.
    last = total - 10
    offsets = sorted({*range(0, last, max(1, last // 200)), last})
    for k in offsets:
        wrap = functools.partial(AbruptEOFStream, eof_after=k)
        if side == "client":
            client, server = pair(version, wrap_client=wrap)
            cut, other = client, server
        else:
            client, server = pair(version, wrap_server=wrap)
            cut, other = server, client
        results: dict[str, BaseException | None] = {}

        async def run(
            name: str, stream: TLSStream, results: dict[str, BaseException | None] = results
        ) -> None:
            results[name] = await outcome_of(stream.do_handshake)
            if results[name] is not None:
                # A failed side closes its transport, as an application would.
                await stream.aclose()

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "cut", cut)
                nursery.start_soon(run, "other", other)
        failure = results["cut"]
        assert isinstance(failure, trio.BrokenResourceError), (k, failure)
        assert isinstance(failure.__cause__, ssl.SSLEOFError), (k, failure.__cause__)
        assert cut.statistics().state is StreamState.CLOSED
        if results["other"] is None:
            # The other side finished its handshake; its first read meets EOF.
            with trio.fail_after(DEADLINE):
                error = await outcome_of(other.receive_some)
            assert isinstance(error, trio.BrokenResourceError)
        else:
            assert isinstance(results["other"], trio.BrokenResourceError)


# ---------------------------------------------------------------------------
# Transports that close or fail while tasks are blocked.


async def while_send_and_receive_block(
    client: TLSStream,
    server: TLSStream,
    action: Callable[[], Awaitable[object]],
    send_size: int,
) -> dict[str, BaseException | None]:
    """Handshake, block one client task in send_all and one in receive_some
    (the server neither reads nor writes), run ``action``; how each ended."""
    results: dict[str, BaseException | None] = {}

    async def sender() -> None:
        results["send"] = await outcome_of(lambda: client.send_all(b"x" * send_size))

    async def receiver() -> None:
        results["receive"] = await outcome_of(client.receive_some)

    with trio.fail_after(DEADLINE):
        await handshake(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            assert not results  # both stuck
            await action()
    return results


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", ["exact", "lockstep", "socket"])
async def test_aclose_from_another_task_wakes_blocked_tasks(
    version: ssl.TLSVersion, transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    """aclose() while one task is stuck in send_all and another in receive_some."""
    client, server = pair(version, transport=transport, capacity=1000)
    # Big enough to fill a socketpair's kernel buffers too.
    results = await while_send_and_receive_block(client, server, client.aclose, 20_000_000)
    assert isinstance(results["send"], trio.ClosedResourceError), results
    assert isinstance(results["receive"], trio.ClosedResourceError), results
    assert client.statistics().state is StreamState.CLOSED
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"more")
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()


@pytest.mark.parametrize("version", VERSIONS)
async def test_transport_failing_under_blocked_tasks(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """The transport breaks while tasks wait in send_all and receive_some."""
    failing = Recorder(FailingStream)

    client, server = pair(version, wrap_client=failing, transport="exact", capacity=1000)

    async def fail() -> None:
        failing.stream.fail_now()

    results = await while_send_and_receive_block(client, server, fail, 200_000)
    assert isinstance(results["send"], trio.BrokenResourceError), results
    assert isinstance(results["receive"], trio.BrokenResourceError), results
    assert client.statistics().state is StreamState.BROKEN


@pytest.mark.parametrize("version", VERSIONS)
async def test_peer_closing_its_transport_under_blocked_tasks(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """The peer vanishes (transport closed, no close_notify) while we wait."""
    client, server = pair(version, transport="exact", capacity=1000)
    results = await while_send_and_receive_block(
        client, server, server.transport_stream.aclose, 200_000
    )
    assert isinstance(results["send"], trio.BrokenResourceError), results
    assert isinstance(results["receive"], trio.BrokenResourceError), results
    assert client.statistics().state is StreamState.BROKEN


@pytest.mark.parametrize("version", VERSIONS)
async def test_eof_triggered_under_a_blocked_receive(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    eofs = Recorder(AbruptEOFStream)

    client, server = pair(version, wrap_client=eofs)
    with trio.fail_after(DEADLINE):
        await handshake(client, server)
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                with pytest.raises(trio.BrokenResourceError) as info:
                    await client.receive_some()
                assert isinstance(info.value.__cause__, ssl.SSLEOFError)

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            eofs.stream.trigger_eof()


@pytest.mark.parametrize("version", VERSIONS)
async def test_aclose_that_cannot_flush_is_cancellable(
    version: ssl.TLSVersion, autojump_clock: trio.testing.MockClock
) -> None:
    """A graceful aclose() blocked on a full transport: cancel it and it still closes."""
    client, server = pair(version, transport="exact", capacity=1)
    with trio.fail_after(DEADLINE):
        await handshake(client, server)
        # Fill the one byte of buffer so close_notify cannot go out.
        with trio.move_on_after(1):
            await client.send_all(b"x" * 100)
        assert client.statistics().state is StreamState.OPEN
        with trio.move_on_after(1) as scope:
            await client.aclose()
        assert scope.cancelled_caught
        assert client.statistics().state is StreamState.CLOSED
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")
        await client.aclose()  # idempotent


# ---------------------------------------------------------------------------
# A handshake that fails while its alert cannot be delivered.


async def _client_failing_verification_with_stuck_alert(
    outer_timeout: float,
) -> tuple[TLSStream, dict[str, object]]:
    """A client whose certificate check fails while the peer has stopped reading.

    The "server" is a synchronous ``SSLObject`` with a certificate from a CA
    the client does not trust; once its flight is delivered, the client's
    transport has room for one more byte only, so the client's alert cannot
    be flushed.
    """
    untrusted = make_tls_contexts()
    client_transport, server_transport = exact_progress_stream_pair(100_000)
    client = TLSStream(client_transport, contexts_for(TLS13).client, server_hostname="example.org")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = untrusted.server.wrap_bio(incoming, outgoing, server_side=True)
    result: dict[str, object] = {}

    async def run() -> None:
        with trio.move_on_after(outer_timeout) as scope:
            result["error"] = await outcome_of(client.do_handshake)
        result["cancelled"] = scope.cancelled_caught

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        incoming.write(await server_transport.receive_some())
        with pytest.raises(ssl.SSLWantReadError):
            server.do_handshake()
        client_transport.capacity = 1
        await server_transport.send_all(outgoing.read())
    return client, result


async def test_failed_handshake_with_a_peer_that_does_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The alert cannot go out: the error still arrives (after a bounded wait)."""
    with trio.fail_after(DEADLINE):
        client, result = await _client_failing_verification_with_stuck_alert(DEADLINE)
    error = result["error"]
    assert isinstance(error, trio.BrokenResourceError)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert client.statistics().state is StreamState.BROKEN


async def test_cancelled_while_sending_the_alert_still_breaks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE):
        # The caller's deadline (0.5 s) falls inside the alert's 1 s budget.
        client, result = await _client_failing_verification_with_stuck_alert(0.5)
        assert result["cancelled"]
        assert client.statistics().state is StreamState.BROKEN
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.do_handshake()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


# ---------------------------------------------------------------------------
# Chunked, delayed, corrupted and injected transports.


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", ["memory", "exact"])
async def test_tls_over_one_byte_chunks_is_byte_exact(
    autojump_clock: trio.testing.MockClock, version: ssl.TLSVersion, transport: str
) -> None:
    client, server = pair(
        version,
        wrap_client=lambda s: ChunkedStream(s, receive_size=1, send_size=7),
        wrap_server=lambda s: ChunkedStream(s, receive_size=1, send_size=5),
        transport=transport,
        capacity=100,
    )
    up, down = payload(6_000), payload(5_000)[::-1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, up)
        nursery.start_soon(server.send_all, down)
        assert await receive_exactly(server, len(up)) == up
        assert await receive_exactly(client, len(down)) == down
    assert client.statistics().plaintext_bytes_received == len(down)


async def test_tls_send_cancelled_during_transport_delay_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A timeout that fires while the slow transport is between sends, over an
    # exact-progress transport, leaves the TLSStream usable; the retry with the
    # same object delivers every byte exactly once.
    client, server = pair(
        TLS13,
        wrap_client=lambda s: DelayedStream(s, send_delay=1.0),
        transport="exact",
        capacity=1000,
    )
    await handshake(client, server)
    data = payload(200_000)
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(data):
            received.extend(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        attempts = 0
        while True:
            attempts += 1
            with trio.move_on_after(10.5):
                await client.send_all(data)
                break
    assert attempts > 5
    assert received == data
    assert client.statistics().state is StreamState.OPEN


@pytest.mark.parametrize("fail_after", [0, 1, 100, 400])
async def test_tls_handshake_over_failing_transport(
    autojump_clock: trio.testing.MockClock, fail_after: int
) -> None:
    client, _server = pair(
        TLS13, wrap_client=lambda s: FailingStream(s, fail_after_sent=fail_after)
    )
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.do_handshake()
    transport_error = caught.value.__cause__
    assert isinstance(transport_error, trio.BrokenResourceError)
    assert isinstance(transport_error.__cause__, ConnectionResetError)
    # The stream stays broken.
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")


async def test_tls_receive_breaks_when_connection_resets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failing = Recorder(FailingStream)
    client, server = pair(TLS13, wrap_client=failing)
    await handshake(client, server)
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await client.receive_some()

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        failing.stream.fail_now()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("side", ["receive", "send"])
async def test_tls_detects_corrupted_record(
    autojump_clock: trio.testing.MockClock, version: ssl.TLSVersion, side: str
) -> None:
    # Damage the server's transport: what it receives, or what it sends.
    corrupt = Recorder(
        lambda s: CorruptingStream(s, offset=10**9, side=side)  # type: ignore[arg-type]
    )
    client, server = pair(version, wrap_server=corrupt)
    await handshake(client, server)
    # Let TLS 1.3 session tickets pass first, then hit application data.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"warm-up")
        assert await receive_exactly(server, 7) == b"warm-up"
    await server.send_all(b"warm-up")
    assert await receive_exactly(client, 7) == b"warm-up"
    damaged = corrupt.stream
    damaged.offset = (damaged.bytes_received if side == "receive" else damaged.bytes_sent) + 10
    victim, sender = (server, client) if side == "receive" else (client, server)
    await sender.send_all(b"attack at dawn")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await victim.receive_some()
    assert isinstance(caught.value.__cause__, ssl.SSLError)


@pytest.mark.parametrize("offset", [0, 5, 60, 300])
async def test_tls_handshake_detects_corruption(
    autojump_clock: trio.testing.MockClock, offset: int
) -> None:
    client, server = pair(TLS13, wrap_client=lambda s: CorruptingStream(s, offset=offset, xor=0x55))
    with pytest.raises(BaseException) as caught:
        await handshake(client, server)
    errors = leaves(caught.value)
    assert errors
    assert all(isinstance(exc, trio.BrokenResourceError) for exc in errors)
    # The side that reads the damage reports the TLS error.
    assert any(isinstance(exc.__cause__, ssl.SSLError) for exc in errors)


@pytest.mark.parametrize("version", VERSIONS)
async def test_tls_detects_injected_bytes(
    autojump_clock: trio.testing.MockClock, version: ssl.TLSVersion
) -> None:
    inject = Recorder(lambda s: InjectingStream(s, offset=10**9, data=b"\x17\x03\x03\x00\x05hello"))
    client, server = pair(version, wrap_client=inject)
    await handshake(client, server)
    await server.send_all(b"first")
    assert await receive_exactly(client, 5) == b"first"
    inject.stream.offset = inject.stream.bytes_received
    await server.send_all(b"second")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await receive_exactly(client, 6)
    assert isinstance(caught.value.__cause__, ssl.SSLError)


# ---------------------------------------------------------------------------
# The transport's EOF without a close_notify.


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("https_compatible", [False, True])
async def test_tls_eof_without_close_notify(
    autojump_clock: trio.testing.MockClock, version: ssl.TLSVersion, https_compatible: bool
) -> None:
    eof = Recorder(AbruptEOFStream)
    client, server = pair(version, wrap_client=eof, https_compatible=https_compatible)
    await handshake(client, server)
    await server.send_all(b"last words")
    assert await receive_exactly(client, 10) == b"last words"
    eof.stream.trigger_eof()
    if https_compatible:
        assert await client.receive_some() == b""
        assert await client.receive_some() == b""
    else:
        with pytest.raises(trio.BrokenResourceError) as caught:
            await client.receive_some()
        assert isinstance(caught.value.__cause__, ssl.SSLEOFError)
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()


@pytest.mark.parametrize("https_compatible", [False, True])
async def test_tls_eof_in_mid_record(
    autojump_clock: trio.testing.MockClock, https_compatible: bool
) -> None:
    # The connection ends inside a record. No plaintext of the partial record
    # may come out. OpenSSL reports this with the same SSLEOFError as an EOF
    # between records, so an https_compatible stream reports a plain EOF, as
    # trio.SSLStream does: HTTPS relies on its own framing to spot truncation.
    eof = Recorder(AbruptEOFStream)
    client, server = pair(TLS13, wrap_client=eof, https_compatible=https_compatible)
    await handshake(client, server)
    await server.send_all(b"x")
    assert await client.receive_some() == b"x"
    eof.stream.eof_after = eof.stream.bytes_received + 10
    await server.send_all(b"this record is cut short")
    if https_compatible:
        assert await client.receive_some() == b""
    else:
        with pytest.raises(trio.BrokenResourceError) as caught:
            await client.receive_some()
        assert isinstance(caught.value.__cause__, ssl.SSLEOFError)
    assert client.statistics().plaintext_bytes_received == 1
