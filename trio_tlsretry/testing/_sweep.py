"""Cancel an operation at every checkpoint in turn.

A cancellation bug hides at one particular await. Timeouts find it by luck;
this module finds it by construction: attempt ``k`` of an operation is
cancelled at the ``k``-th point where the calling task yields to the
scheduler, for ``k = 0, 1, 2, ...`` until an attempt completes without being
cancelled. A callback runs after each cancelled attempt so the test can check
that the state left behind is still what the contract promises.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

__all__ = ["CancelOutcome", "SweepReport", "cancel_at_checkpoint", "cancellation_sweep"]

T = TypeVar("T")


class _StepCounter(trio.abc.Instrument):
    """Cancels ``scope`` once ``task`` has yielded ``limit`` times."""

    def __init__(self, task: trio.lowlevel.Task, limit: int, scope: trio.CancelScope) -> None:
        self.task = task
        self.limit = limit
        self.scope = scope
        self.yields = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.yields += 1
            if self.yields == self.limit:
                # The task is now suspended at its k-th yield point; cancelling
                # aborts that wait if it is abortable, which is exactly what a
                # timeout expiring at that moment would do.
                self.scope.cancel()


@dataclass(frozen=True)
class CancelOutcome(Generic[T]):
    """What happened to one attempt run by :func:`cancel_at_checkpoint`."""

    #: ``True`` if the operation returned normally.
    completed: bool
    #: Its return value (``None`` unless ``completed``).
    result: T | None
    #: How many times the task yielded before the operation ended.
    yields: int


async def cancel_at_checkpoint(k: int, operation: Callable[[], Awaitable[T]]) -> CancelOutcome[T]:
    """Run ``operation()`` and cancel it at its ``k``-th yield to the scheduler.

    ``k = 0`` cancels before the operation starts (its first checkpoint
    raises ``Cancelled``). If the operation finishes before yielding ``k``
    times, it is not cancelled at all and ``completed`` is ``True``. A
    cancellation that the operation absorbs (returning normally) also counts
    as completed. Exceptions other than the cancellation propagate.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    task = trio.lowlevel.current_task()
    with trio.CancelScope() as scope:
        if k == 0:
            scope.cancel()
        counter = _StepCounter(task, k, scope)
        trio.lowlevel.add_instrument(counter)
        try:
            result = await operation()
        finally:
            trio.lowlevel.remove_instrument(counter)
        return CancelOutcome(True, result, counter.yields)
    return CancelOutcome(False, None, counter.yields)


@dataclass
class SweepReport:
    """The result of :func:`cancellation_sweep`."""

    #: Attempts that were cancelled (``k = 0 .. cancelled - 1``).
    cancelled: int = 0
    #: How many yields the final, uncancelled attempt made.
    final_yields: int = 0
    #: The ``k`` values whose attempt was cancelled, in order.
    cancelled_at: list[int] = field(default_factory=list)


async def cancellation_sweep(
    attempt: Callable[[int], Awaitable[object]],
    *,
    after_cancel: Callable[[int], Awaitable[None]] | None = None,
    limit: int = 100_000,
) -> SweepReport:
    """Cancel ``attempt(k)`` at checkpoint ``k`` for ``k = 0, 1, 2, ...``.

    Stops at the first attempt that completes. ``attempt`` receives ``k`` so
    it can either build fresh state for each attempt or keep retrying on the
    same object (which is how retry semantics are tested). ``after_cancel(k)``
    runs after each cancelled attempt, outside the cancelled scope, and is
    where a test finishes the conversation and checks what the peer got.

    Raises:
      RuntimeError: no attempt completed within ``limit`` checkpoints.
    """
    report = SweepReport()
    for k in range(limit):
        outcome = await cancel_at_checkpoint(k, functools.partial(attempt, k))
        if outcome.completed:
            report.final_yields = outcome.yields
            return report
        report.cancelled += 1
        report.cancelled_at.append(k)
        if after_cancel is not None:
            await after_cancel(k)
    raise RuntimeError(f"the operation was still being cancelled after {limit} checkpoints")
