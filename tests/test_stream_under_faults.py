"""Transport faults: resets, early EOF, failing sends, transports closed under
blocked tasks. Every one ends in a documented exception, never in a hang.

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
from streamtools import handshake

from trio_tlsretry import StreamState, TLSStream
from trio_tlsretry.testing import (
    AbruptEOFStream,
    FailingStream,
    TLSContexts,
    exact_progress_stream_pair,
    make_tls_contexts,
    tls_stream_pair_over,
)

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [TLS12, TLS13]
#: Virtual seconds; under the autojump clock only a deadlock gets there.
DEADLINE = 100

_CONTEXTS: dict[ssl.TLSVersion, TLSContexts] = {}


_W = TypeVar("_W", bound=trio.abc.Stream)


def contexts_for(version: ssl.TLSVersion) -> TLSContexts:
    if version not in _CONTEXTS:
        _CONTEXTS[version] = make_tls_contexts(maximum_version=version)
    return _CONTEXTS[version]


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
) -> tuple[TLSStream, TLSStream]:
    maker: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]
    if transport == "memory":
        maker = trio.testing.memory_stream_pair
    elif transport == "lockstep":
        maker = trio.testing.lockstep_stream_pair
    elif transport == "socket":

        def maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
            a, b = trio.socket.socketpair()
            return trio.SocketStream(a), trio.SocketStream(b)

    else:
        maker = lambda: exact_progress_stream_pair(capacity)  # noqa: E731
    client_transport, server_transport = maker()
    contexts = contexts_for(version)
    return tls_stream_pair_over(
        wrap_client(client_transport),
        wrap_server(server_transport),
        client_context=contexts.client,
        server_context=contexts.server,
    )


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
