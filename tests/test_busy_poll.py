"""Busy polling before a blocking receive (``TLSStream.busy_poll``).

The rule (``BusyPollBudget``) is tested on its own, without I/O. The stream
tests run over a real socketpair, where polling applies, and tell a polling
receiver from a blocked one by Trio's own count of tasks in its I/O wait.
Where a test needs a poll that cannot run out while it looks, it gives the
connection a budget of seconds directly instead of teaching it one through
timed waits.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from streamtools import handshake

from trio_tlsretry import TLSStream, _busy_poll, _transport
from trio_tlsretry._busy_poll import DEFAULT_BUSY_POLL, BusyPollBudget, default_busy_poll
from trio_tlsretry.testing import make_tls_contexts, tls_stream_pair_over

CONTEXTS = make_tls_contexts()


# ----------------------------------------------------------------- the rule


def test_a_new_connection_does_not_poll() -> None:
    poll = BusyPollBudget()
    assert poll.limit == default_busy_poll()
    assert poll.budget == 0.0


def test_the_default_limit_is_zero_on_one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_busy_poll, "_MULTIPROCESSOR", True)
    assert BusyPollBudget().limit == DEFAULT_BUSY_POLL
    monkeypatch.setattr(_busy_poll, "_MULTIPROCESSOR", False)
    assert BusyPollBudget().limit == 0.0


def test_a_short_wait_sets_the_next_poll_a_little_longer() -> None:
    poll = BusyPollBudget(limit=1.0)
    poll.record_wait(0.2)
    assert poll.budget == pytest.approx(0.3)
    poll.record_wait(0.9)
    assert poll.budget == 1.0  # capped at the limit


def test_a_long_wait_stops_polling() -> None:
    poll = BusyPollBudget(limit=1.0)
    poll.record_wait(0.5)
    poll.record_wait(1.5)
    assert poll.budget == 0.0


def test_lowering_the_limit_lowers_the_budget() -> None:
    poll = BusyPollBudget(limit=1.0)
    poll.record_wait(0.5)
    poll.set_limit(0.1)
    assert poll.budget == 0.1
    poll.set_limit(0)
    assert poll.budget == 0.0
    poll.record_wait(0.0)
    assert poll.budget == 0.0


@given(
    limit=st.floats(min_value=0, max_value=1),
    waits=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=20),
)
def test_the_budget_follows_the_last_wait_within_the_limit(
    limit: float, waits: list[float]
) -> None:
    poll = BusyPollBudget(limit)
    for wait in waits:
        poll.record_wait(wait)
        assert 0 <= poll.budget <= limit
    last = waits[-1]
    expected = min(1.5 * last, limit) if last <= limit else 0.0
    assert poll.budget == expected


@pytest.mark.parametrize("bad", [-1e-6, math.inf, math.nan])
def test_limit_out_of_range_is_a_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match="busy_poll"):
        BusyPollBudget(bad)


@pytest.mark.parametrize("bad", ["0.001", None, True])
def test_limit_that_is_not_a_number_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="busy_poll"):
        BusyPollBudget().set_limit(bad)  # type: ignore[arg-type]


# ------------------------------------------------------- over a socketpair


@asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[TLSStream, TLSStream]]:
    """A handshaken client/server pair over a socketpair; the server never polls."""
    a, b = trio.socket.socketpair()
    client, server = tls_stream_pair_over(
        trio.SocketStream(a),
        trio.SocketStream(b),
        client_context=CONTEXTS.client,
        server_context=CONTEXTS.server,
    )
    server.busy_poll = 0
    async with client, server:
        await handshake(client, server)
        yield client, server


def tasks_in_io_wait_for_reading() -> int:
    stats = trio.lowlevel.current_statistics().io_statistics
    if not hasattr(stats, "tasks_waiting_read"):  # pragma: no cover - not epoll
        pytest.skip("needs the epoll backend's statistics")
    return int(stats.tasks_waiting_read)


def receivers_in_io_wait(baseline: int) -> int:
    """Tasks in Trio's I/O wait for reading, beyond ``baseline`` (Trio's own)."""
    return tasks_in_io_wait_for_reading() - baseline


def give_budget(stream: TLSStream, seconds: float) -> None:
    """As if the last wait had been short; private, to keep the poll from ending."""
    stream.busy_poll = seconds
    stream._transport_io.busy_poll.budget = seconds


async def yield_a_few_times() -> None:
    for _ in range(5):
        await trio.lowlevel.checkpoint()


async def test_busy_poll_attribute() -> None:
    async with socket_pair() as (client, _server):
        assert client.busy_poll == default_busy_poll()
        client.busy_poll = 0.5
        assert client.busy_poll == 0.5
        with pytest.raises(ValueError, match="busy_poll"):
            client.busy_poll = -1
        with pytest.raises(TypeError, match="busy_poll"):
            client.busy_poll = "1"  # type: ignore[assignment]
        stats = client.statistics()
        assert (stats.busy_poll_hits, stats.busy_poll_misses) == (0, 0)


async def test_a_short_wait_teaches_the_next_receive_to_poll() -> None:
    async with socket_pair() as (client, server):
        baseline = tasks_in_io_wait_for_reading()
        # Forget what the handshake's waits taught it, then allow polls far
        # longer than any real wait in this test.
        client.busy_poll = 0
        client.busy_poll = 10.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            # No short wait seen yet: it blocks at once.
            assert receivers_in_io_wait(baseline) == 1
            await server.send_all(b"reply")
        assert 0 < client._transport_io.busy_poll.budget <= 10.0
        assert client.statistics().busy_poll_misses == 0


async def test_polling_receiver_gets_data_without_entering_the_io_wait() -> None:
    async with socket_pair() as (client, server):
        baseline = tasks_in_io_wait_for_reading()
        give_budget(client, 30.0)
        received: list[bytes] = []

        async def receive() -> None:
            received.append(await client.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await yield_a_few_times()
            assert receivers_in_io_wait(baseline) == 0  # polling, not blocked
            await server.send_all(b"ping")
        assert received == [b"ping"]
        stats = client.statistics()
        assert (stats.busy_poll_hits, stats.busy_poll_misses) == (1, 0)
        # Learned again from this (short) wait: 1.5 times it, far below 30 s.
        assert 0 < client._transport_io.busy_poll.budget < 30.0


async def test_each_poll_step_offers_the_cpu_to_other_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yields: list[None] = []
    monkeypatch.setattr(_transport, "_yield_cpu", lambda: yields.append(None))
    async with socket_pair() as (client, server):
        give_budget(client, 30.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await yield_a_few_times()
            assert len(yields) >= 2  # the receiver has polled, yielding each time
            await server.send_all(b"ping")
        assert client.statistics().busy_poll_hits == 1


async def test_with_busy_poll_zero_the_receiver_blocks_at_once() -> None:
    async with socket_pair() as (client, server):
        baseline = tasks_in_io_wait_for_reading()
        give_budget(client, 30.0)
        client.busy_poll = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await yield_a_few_times()
            assert receivers_in_io_wait(baseline) == 1
            await server.send_all(b"ping")
        assert client._transport_io.busy_poll.budget == 0
        stats = client.statistics()
        assert (stats.busy_poll_hits, stats.busy_poll_misses) == (0, 0)


async def test_a_poll_that_finds_nothing_ends_in_a_blocking_wait() -> None:
    async with socket_pair() as (client, server):
        baseline = tasks_in_io_wait_for_reading()
        # A 1 ms poll: wait_all_tasks_blocked returns only once it has given up.
        give_budget(client, 0.001)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            assert receivers_in_io_wait(baseline) == 1
            assert client.statistics().busy_poll_misses == 1
            await server.send_all(b"late")
        # The wait outlasted the limit: the quiet connection stops polling.
        assert client._transport_io.busy_poll.budget == 0
        assert client.statistics().busy_poll_hits == 0


async def test_cancelling_a_polling_receive_loses_nothing() -> None:
    async with socket_pair() as (client, server):
        baseline = tasks_in_io_wait_for_reading()
        give_budget(client, 30.0)
        cancelled = trio.CancelScope()

        async def receive() -> None:
            with cancelled:
                await client.receive_some()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await yield_a_few_times()
            assert receivers_in_io_wait(baseline) == 0
            cancelled.cancel()
        assert cancelled.cancelled_caught
        await server.send_all(b"after the cancel")
        assert await client.receive_some() == b"after the cancel"
        await client.send_all(b"and back")
        assert await server.receive_some() == b"and back"


async def test_other_transports_never_poll() -> None:
    a, b = trio.testing.memory_stream_pair()
    client, server = tls_stream_pair_over(
        a, b, client_context=CONTEXTS.client, server_context=CONTEXTS.server
    )
    client.busy_poll = 10.0
    await handshake(client, server)
    for message in (b"one", b"two"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            await server.send_all(message)
    stats = client.statistics()
    assert (stats.busy_poll_hits, stats.busy_poll_misses) == (0, 0)
    assert client.busy_poll == 10.0
