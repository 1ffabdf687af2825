"""The limit on handshakes in progress (``max_handshakes``), over the fake network.

Deterministic: ``FakeTCPNetwork`` and ``MockClock(autojump_threshold=0)``.
Each client sends through a ``DelayedStream`` (one second per send), so a
server-side handshake lasts from its ClientHello (sent at +1 s) to the
client's Finished (one second after the server's flight): a handshake that
starts when its ClientHello is already there holds its token for 1 s, the
first wave (which waits for its ClientHello) for 2 s.

"In progress" is counted independently of the limiter: a handshake starts
when the server's context sees its ClientHello (``sni_callback``, which runs
only once the stream holds a token) and ends when the handler is called.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import trio
import trio.testing

import trio_tlsretry
from trio_tlsretry import TLSListener, TLSStream
from trio_tlsretry.testing import DelayedStream, FakeTCPNetwork, TLSContexts, make_tls_contexts

HOSTNAME = "example.org"
ADDRESS = "192.0.2.10"

Stream = TLSStream[trio.SocketStream]

#: Virtual time between two clients' connections (and so their ClientHellos).
STAGGER = 0.001


def near(expected: Any) -> Any:
    """``expected`` within the clients' stagger (a few milliseconds)."""
    return pytest.approx(expected, abs=10 * STAGGER)


@pytest.fixture
def contexts() -> TLSContexts:
    return make_tls_contexts(HOSTNAME)


@pytest.fixture
def network(fake_tcp_network: FakeTCPNetwork) -> FakeTCPNetwork:
    fake_tcp_network.add_host(HOSTNAME, ADDRESS)
    return fake_tcp_network


class HandshakeCounter:
    """Handshakes in progress at the server, from ClientHello seen to handler called."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.in_progress = 0
        self.most = 0
        self.hellos: list[float] = []
        context.sni_callback = self._hello

    def _hello(self, _obj: Any, _name: str | None, _ctx: ssl.SSLContext) -> None:
        self.hellos.append(trio.current_time())
        self.in_progress += 1
        self.most = max(self.most, self.in_progress)

    def finished(self) -> None:
        self.in_progress -= 1


async def delayed_client(contexts: TLSContexts, index: int, results: dict[int, Any]) -> None:
    """Connect (in no time), then handshake over a transport that delays each send 1 s."""
    tcp = await trio.open_tcp_stream(HOSTNAME, 443)
    results[index] = tcp.socket.getsockname()
    stream = TLSStream(
        DelayedStream(tcp, send_delay=1.0), contexts.client, server_hostname=HOSTNAME
    )
    try:
        await stream.do_handshake()
        results[index] = (results[index], "served", trio.current_time())
        # Wait for the server's goodbye: the handler closes at once.
        assert await stream.receive_some() == b""
    except trio.BrokenResourceError:
        results[index] = (results[index], "dropped", trio.current_time())
    finally:
        await trio.aclose_forcefully(stream)


async def run_clients(
    contexts: TLSContexts, clients: int, **serve_kwargs: Any
) -> tuple[dict[int, Any], list[tuple[Any, float]], HandshakeCounter]:
    counter = HandshakeCounter(contexts.server)
    handled: list[tuple[Any, float]] = []

    async def handler(stream: Stream) -> None:
        counter.finished()
        handled.append((stream.transport_stream.socket.getpeername(), trio.current_time()))
        await stream.aclose()

    results: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: trio_tlsretry.serve_tls_over_tcp(
                handler, 443, contexts.server, task_status=task_status, **serve_kwargs
            )
        )
        async with trio.open_nursery() as clients_nursery:
            for i in range(clients):
                clients_nursery.start_soon(delayed_client, contexts, i, results)
                # Connected (no latency) before the next one starts, and a
                # millisecond of virtual time apart: the server accepts them,
                # and their ClientHellos arrive, in this order.
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(STAGGER)
        nursery.cancel_scope.cancel()
    return results, handled, counter


async def test_at_most_n_handshakes_run_and_the_rest_are_served_in_order(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    limit, extra = 3, 4
    results, handled, counter = await run_clients(contexts, limit + extra, max_handshakes=limit)
    assert all(result[1] == "served" for result in results.values())
    # Never more than the limit at once, and the limit was reached.
    assert counter.most == limit
    # Served in waves of ``limit``: the first needs 2 s (its ClientHellos
    # arrive at +1 s), each later one 1 s (its ClientHellos wait at the
    # server) ...
    assert [when for _, when in handled] == near([2, 2, 2, 3, 3, 3, 4])
    # ... in the order they connected (within a wave, in the order Trio
    # happens to schedule them).
    order = [results[i][0] for i in range(limit + extra)]
    waves = [{peer for peer, when in handled if when == near(t)} for t in (2, 3, 4)]
    assert waves == [set(order[0:3]), set(order[3:6]), {order[6]}]
    # A waiting handshake had not started: its ClientHello was processed
    # only when a token was free.
    assert counter.hellos == near([1, 1, 1, 2, 2, 2, 3])


async def test_without_the_limit_every_handshake_runs_at_once(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    results, handled, counter = await run_clients(contexts, 7, max_handshakes=None)
    assert all(result[1] == "served" for result in results.values())
    assert counter.most == 7
    assert [when for _, when in handled] == near([2] * 7)


async def test_the_wait_for_a_turn_counts_against_the_handshake_timeout(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    # The last client's own handshake would take 1 s, but it waits 3 s for
    # its turn: with 3.5 s in all it is dropped at 3.5 s, half-way through.
    results, handled, counter = await run_clients(
        contexts, 7, max_handshakes=3, handshake_timeout=3.5
    )
    assert [results[i][1] for i in range(7)] == ["served"] * 6 + ["dropped"]
    assert len(handled) == 6
    # Its turn came at 3 s; its Finished would have arrived at 4 s, within
    # 3.5 s of its turn but not of its connection.
    assert counter.hellos[6] == near(3)


async def test_a_connection_can_time_out_while_waiting_for_its_turn(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    # 2.5 s: the first wave is served (2 s), the second is dropped half-way
    # (it would end at 3 s). The last spends all but the last few
    # milliseconds of its 2.5 s waiting for a turn (the second wave, which
    # connected just before it, times out just before it), and is dropped
    # too.
    results, _, counter = await run_clients(contexts, 7, max_handshakes=3, handshake_timeout=2.5)
    assert [results[i][1] for i in range(7)] == ["served"] * 3 + ["dropped"] * 4
    assert counter.hellos == near([1, 1, 1, 2, 2, 2, 2.5])


async def test_the_limit_applies_to_lazy_handshakes_of_accepted_streams(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    """``TLSListener.accept()`` streams handshake in their first receive: limited too."""
    counter = HandshakeCounter(contexts.server)
    (listener,) = await trio_tlsretry.open_tls_over_tcp_listeners(
        443, contexts.server, host=ADDRESS, max_handshakes=1
    )
    results: dict[int, Any] = {}
    received: list[tuple[bytes, float]] = []

    async def serve_one(stream: Stream) -> None:
        # No do_handshake: the first receive_some runs the handshake.
        data = await stream.receive_some()
        counter.finished()
        received.append((bytes(data), trio.current_time()))
        await stream.aclose()

    async def client(index: int) -> None:
        tcp = await trio.open_tcp_stream(HOSTNAME, 443)
        stream = TLSStream(
            DelayedStream(tcp, send_delay=1.0), contexts.client, server_hostname=HOSTNAME
        )
        async with stream:
            await stream.send_all(b"client %d" % index)
            results[index] = await stream.receive_some()

    async with listener, trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(client, i)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(STAGGER)
            nursery.start_soon(serve_one, await listener.accept())
    # Each ClientHello waited for the handshake before it to end (its
    # client's Finished): one after another. (Without a limit: all at 1 s.)
    assert [data for data, _ in received] == [b"client 0", b"client 1", b"client 2"]
    assert counter.hellos == near([1, 2, 3])
    assert results == {0: b"", 1: b"", 2: b""}


async def test_open_tls_over_tcp_listeners_share_one_limiter(
    network: FakeTCPNetwork, contexts: TLSContexts
) -> None:
    listeners = await trio_tlsretry.open_tls_over_tcp_listeners(
        443, contexts.server, max_handshakes=5
    )
    try:
        assert len(listeners) == 2  # IPv4 and IPv6
        limiter = listeners[0].handshake_limiter
        assert limiter is not None and limiter.total_tokens == 5
        assert all(listener.handshake_limiter is limiter for listener in listeners)
    finally:
        for listener in listeners:
            await listener.aclose()
    unlimited = await trio_tlsretry.open_tls_over_tcp_listeners(
        443, contexts.server, max_handshakes=None
    )
    for listener in unlimited:
        assert listener.handshake_limiter is None
        await listener.aclose()


async def test_default_limit_and_a_limiter_of_your_own(
    network: FakeTCPNetwork, contexts: TLSContexts
) -> None:
    (listener,) = await trio_tlsretry.open_tls_over_tcp_listeners(
        443, contexts.server, host=ADDRESS
    )
    async with listener:
        assert listener.handshake_limiter is not None
        assert listener.handshake_limiter.total_tokens == trio_tlsretry.DEFAULT_MAX_HANDSHAKES
        shared = trio.CapacityLimiter(2)
        other = TLSListener(listener.transport_listener, contexts.server, max_handshakes=shared)
        assert other.handshake_limiter is shared


@pytest.mark.parametrize(
    ("bad", "error"),
    [(0, ValueError), (-3, ValueError), (True, TypeError), (2.5, TypeError), ("4", TypeError)],
)
async def test_bad_max_handshakes_is_refused_before_binding(
    network: FakeTCPNetwork, contexts: TLSContexts, bad: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="max_handshakes"):
        await trio_tlsretry.open_tls_over_tcp_listeners(443, contexts.server, max_handshakes=bad)
    # Nothing was left bound.
    (listener,) = await trio_tlsretry.open_tls_over_tcp_listeners(
        443, contexts.server, host=ADDRESS
    )
    await listener.aclose()


async def test_clients_that_say_nothing_hold_no_token(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    # Two clients connect and send nothing; with one token, a third client is
    # served as if they were not there, and the silent ones are dropped at
    # their own timeout.
    results: dict[int, Any] = {}

    async def handler(stream: Stream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: trio_tlsretry.serve_tls_over_tcp(
                handler,
                443,
                contexts.server,
                max_handshakes=1,
                handshake_timeout=5,
                task_status=task_status,
            )
        )
        silent = [await trio.open_tcp_stream(HOSTNAME, 443) for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        await delayed_client(contexts, 0, results)
        assert results[0][1:] == ("served", near(2))
        for stream in silent:
            with trio.fail_after(10):
                assert await stream.receive_some() == b""  # dropped at 5 s
            assert trio.current_time() == near(5)
            await stream.aclose()
        nursery.cancel_scope.cancel()
