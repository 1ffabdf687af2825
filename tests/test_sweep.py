"""Cancellation at a chosen checkpoint, and sweeps over all of them
(``trio_tlsretry/testing/_sweep.py``), on operations made of plain
checkpoints, and the resuming sweep over a ``TLSStream.send_all``. (Other
sweeps over TLSStream operations are in ``test_cancellation.py``.)
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trio_tlsretry.testing import cancel_at_checkpoint, cancellation_sweep, tls_memory_stream_pair


def checkpoints(count: int, log: list[int]) -> Callable[[], Awaitable[str]]:
    """An operation with ``count`` plain checkpoints that logs where it was cancelled."""

    async def operation() -> str:
        for index in range(count):
            try:
                await trio.lowlevel.checkpoint()
            except trio.Cancelled:
                log.append(index)
                raise
        return "done"

    return operation


class YieldCounter(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def count_yields(operation: Callable[[], Awaitable[object]]) -> int:
    counter = YieldCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        await operation()
    finally:
        trio.lowlevel.remove_instrument(counter)
    return counter.count


async def test_k0_cancels_at_the_first_checkpoint_without_yielding(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[str] = []

    async def operation() -> None:
        ran.append("started")
        await trio.lowlevel.checkpoint_if_cancelled()
        ran.append("passed the first checkpoint")

    outcome = await cancel_at_checkpoint(0, operation)
    assert not outcome.completed
    assert outcome.result is None
    # Code before the first checkpoint runs; the checkpoint itself raises.
    assert ran == ["started"]


@pytest.mark.parametrize("count", [0, 1, 2, 5])
async def test_k_is_the_kth_yield_of_the_uncancelled_run(
    autojump_clock: trio.testing.MockClock, count: int
) -> None:
    log: list[int] = []
    operation = checkpoints(count, log)
    assert await count_yields(operation) == count
    for k in range(count + 3):
        log.clear()
        outcome = await cancel_at_checkpoint(k, operation)
        if k > count or (count == 0 and k == 0):
            # Never yielded k times (or nothing to cancel): not cancelled.
            assert outcome.completed
            assert outcome.result == "done"
            assert outcome.yields == count
        else:
            # k = 0: cancelled from the start, so the first checkpoint raises.
            # k >= 1: the task was suspended at yield k, i.e. in checkpoint
            # k - 1, when the scope was cancelled, and that checkpoint raised.
            assert not outcome.completed
            assert log == [max(k - 1, 0)]


async def test_cancellation_aborts_a_blocking_wait_at_yield_k(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Yield 1 is the wait itself: cancelling there aborts it, as a timeout
    # that expires while the task is blocked would.
    events: list[str] = []

    async def operation() -> None:
        try:
            await trio.sleep_forever()
        finally:
            events.append("aborted")

    outcome = await cancel_at_checkpoint(1, operation)
    assert not outcome.completed
    assert events == ["aborted"]
    assert trio.current_time() == 0


async def test_sweep_terminates_after_one_attempt_per_yield(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[int] = []
    seen: list[int] = []

    async def after_cancel(k: int) -> None:
        # Runs outside the cancelled scope: awaiting here is fine.
        await trio.lowlevel.checkpoint()
        seen.append(k)

    report = await cancellation_sweep(lambda k: checkpoints(4, log)(), after_cancel=after_cancel)
    assert report.cancelled == 5
    assert report.cancelled_at == seen == [0, 1, 2, 3, 4]
    assert report.final_yields == 4
    assert log == [0, 0, 1, 2, 3]


async def test_sweep_of_an_operation_without_checkpoints(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def instant() -> int:
        return 42

    report = await cancellation_sweep(lambda k: instant())
    assert report.cancelled == 0
    assert report.final_yields == 0


async def test_sweep_gives_up_after_limit(autojump_clock: trio.testing.MockClock) -> None:
    async def forever() -> None:
        while True:
            await trio.lowlevel.checkpoint()

    with pytest.raises(RuntimeError, match="after 7 attempts"):
        await cancellation_sweep(lambda k: forever(), limit=7)


async def test_sweep_passes_k_and_propagates_errors(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[int] = []

    async def attempt(k: int) -> None:
        seen.append(k)
        await trio.lowlevel.checkpoint()
        if k == 2:
            raise KeyError("boom")
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()

    with pytest.raises(KeyError, match="boom"):
        await cancellation_sweep(attempt)
    assert seen == [0, 1, 2]


async def test_absorbed_cancellation_counts_as_completed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stubborn() -> str:
        with trio.CancelScope(shield=True):
            await trio.sleep(1)
        return "finished anyway"

    outcome = await cancel_at_checkpoint(1, stubborn)
    assert outcome.completed
    assert outcome.result == "finished anyway"


async def test_only_the_calling_task_counts(autojump_clock: trio.testing.MockClock) -> None:
    async def busy_child() -> None:
        for _ in range(50):
            await trio.lowlevel.checkpoint()

    async def operation() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy_child)

    # The caller yields only while waiting for the nursery to finish.
    yields = await count_yields(operation)
    assert yields < 50
    report = await cancellation_sweep(lambda k: operation())
    assert report.final_yields == yields


async def test_an_outer_cancellation_is_not_swallowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.CancelScope() as outer:
        outer.cancel()
        await cancel_at_checkpoint(5, trio.sleep_forever)
        pytest.fail("the outer cancellation was swallowed")  # pragma: no cover
    assert outer.cancelled_caught


@pytest.mark.parametrize("k", [-1])
async def test_negative_k_is_rejected(autojump_clock: trio.testing.MockClock, k: int) -> None:
    with pytest.raises(ValueError):
        await cancel_at_checkpoint(k, trio.lowlevel.checkpoint)


class Resumable:
    """An operation of ``steps`` checkpoints that a retry resumes where the last attempt stopped.

    ``cancelled_in`` records the step each cancellation hit.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.done = 0
        self.cancelled_in: list[int] = []

    async def run(self) -> str:
        while self.done < self.steps:
            try:
                await trio.lowlevel.checkpoint()
            except trio.Cancelled:
                self.cancelled_in.append(self.done)
                raise
            self.done += 1
        return "done"


async def test_a_resuming_sweep_cancels_every_step(autojump_clock: trio.testing.MockClock) -> None:
    operation = Resumable(10)
    report = await cancellation_sweep(lambda k: operation.run(), progress=lambda: operation.done)
    assert operation.done == 10
    # Every step was hit by a cancellation, in order, none skipped.
    assert sorted(set(operation.cancelled_in)) == list(range(10))
    # From each step: k = 0 and 1 raise in that step's checkpoint (no
    # progress), k = 2 lets it finish and cancels the next one.
    assert report.progress_at == [step for step in range(10) for _ in range(3)][:-1]
    assert report.cancelled_at == [0, 1, 2] * 9 + [0, 1]
    assert report.cancelled == len(report.cancelled_at) == len(report.progress_at)


async def test_without_progress_retries_reach_only_some_steps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The same resumable operation, swept as if each attempt started afresh:
    # attempt k resumes where attempt k - 1 stopped and is cancelled k yields
    # later, so the steps reached are 0, 0, 1, 3, 6, 10, ... (what the
    # docstring of cancellation_sweep says).
    operation = Resumable(30)
    report = await cancellation_sweep(lambda k: operation.run())
    assert operation.cancelled_in == [0, 0, 1, 3, 6, 10, 15, 21, 28]
    assert report.progress_at == []
    assert report.cancelled_at == list(range(9))


async def test_progress_changed_by_after_cancel_does_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # progress() is read before and right after each attempt, so what
    # after_cancel does cannot make the sweep skip ahead.
    operation = Resumable(3)
    calls: list[int] = []

    async def after_cancel(k: int) -> None:
        calls.append(k)

    report = await cancellation_sweep(
        lambda k: operation.run(), after_cancel=after_cancel, progress=lambda: operation.done
    )
    assert calls == report.cancelled_at
    assert sorted(set(operation.cancelled_in)) == [0, 1, 2]


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "unexpected EOF"
        data += chunk
    return bytes(data)


async def test_a_resuming_sweep_reaches_every_transport_send_of_send_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    capacity = 1000
    client, server = tls_memory_stream_pair(exact_progress=True, capacity=capacity)
    message = bytes(range(256)) * 100
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def reader() -> None:
            got.append(await receive_exactly(server, len(message)))

        nursery.start_soon(reader)
        await client.do_handshake()
        transport = client.transport_stream
        start = transport.bytes_sent
        report = await cancellation_sweep(
            lambda k: client.send_all(message), progress=lambda: transport.bytes_sent
        )
    assert got == [message]
    # Consecutive progress values are one transport send apart: every send
    # of the operation was a place where some attempt was cancelled.
    values = sorted(set(report.progress_at))
    assert values[0] == start
    assert len(values) > 20
    assert all(0 < b - a <= capacity for a, b in itertools.pairwise(values))
    # Every value was tried from k = 0 up to the first k that progressed.
    for value in set(report.progress_at):
        ks = [k for k, p in zip(report.cancelled_at, report.progress_at, strict=True) if p == value]
        assert ks == list(range(len(ks)))
