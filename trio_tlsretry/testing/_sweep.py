"""Cancel an operation at every checkpoint in turn.

A cancellation bug hides at one particular await. Timeouts find it by luck;
this module finds it by construction: attempt ``k`` of an operation is
cancelled at the ``k``-th point where the calling task yields to the
scheduler (:func:`cancel_at_checkpoint` says exactly what ``k`` means), and
:func:`cancellation_sweep` runs attempts until one completes without being
cancelled. A callback runs after each cancelled attempt so the test can
check that the state left behind is still what the contract promises.
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
    """What happened to one attempt run by :func:`cancel_at_checkpoint`.

    Attributes:
      completed: ``True`` if the operation returned normally (it was not
        cancelled, or it absorbed the cancellation).
      result: its return value (``None`` unless ``completed``).
      yields: how many times the calling task yielded to the scheduler
        before the operation ended. For a cancelled attempt this includes
        the yields spent delivering the cancellation, so it can exceed ``k``.
    """

    completed: bool
    result: T | None
    yields: int


async def cancel_at_checkpoint(k: int, operation: Callable[[], Awaitable[T]]) -> CancelOutcome[T]:
    """Run ``operation()`` and cancel it at its ``k``-th yield to the scheduler.

    What ``k`` means, precisely:

    * ``k = 0``: the cancel scope is cancelled before the operation is
      called. The operation's code runs up to its first checkpoint, which
      raises ``Cancelled`` (the "already cancelled on entry" path, e.g. a
      ``checkpoint_if_cancelled()`` at the top of a method).
    * ``k >= 1``: the scope is cancelled right after the calling task's
      ``k``-th yield, while it is suspended there. If that wait can be
      aborted (a blocked receive, a sleep, a lock), it is aborted, exactly
      as when a timeout expires at that moment; otherwise (the wait already
      finished, or it was a shielded schedule point) the next checkpoint
      raises. So ``k`` counts the yields of an *uncancelled* run: an
      operation that yields ``n`` times is cancelled for ``k = 0 .. n`` and
      completes for ``k > n``. ``trio.lowlevel.checkpoint()`` yields first
      and then checks for cancellation, so for an operation made of plain
      checkpoints ``k = 0`` and ``k = 1`` both raise in the first one.

    Only yields of the calling task count; tasks the operation starts in a
    nursery are cancelled with it but do not advance ``k``. The same
    operation over the same in-memory transports yields at the same points
    every run, so a failure reports a reproducible ``k``.

    If the operation finishes before yielding ``k`` times, it is not
    cancelled at all and ``completed`` is ``True``. A cancellation that the
    operation absorbs (returning normally, e.g. from inside a shielded scope)
    also counts as completed.

    Only the cancellation this function requested is caught: exceptions
    raised by the operation, and cancellations of enclosing scopes,
    propagate.

    Raises:
      ValueError: ``k`` is negative.
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
    """The result of :func:`cancellation_sweep`: every cancellation it made.

    Attributes:
      cancelled: how many attempts were cancelled.
      final_yields: how many yields the final, uncancelled attempt made.
      cancelled_at: the ``k`` of each cancelled attempt, in order (see
        :func:`cancel_at_checkpoint`). Without ``progress`` this is
        ``[0, 1, ..., cancelled - 1]``.
      progress_at: with ``progress``, what ``progress()`` returned before
        each cancelled attempt, in order; empty without it. Attempt ``i``
        started where the operation had got to ``progress_at[i]`` and was
        cancelled at its ``cancelled_at[i]``-th yield: together the two
        lists name every cancellation point the sweep reached.
    """

    cancelled: int = 0
    final_yields: int = 0
    cancelled_at: list[int] = field(default_factory=list)
    progress_at: list[object] = field(default_factory=list)


async def cancellation_sweep(
    attempt: Callable[[int], Awaitable[object]],
    *,
    after_cancel: Callable[[int], Awaitable[None]] | None = None,
    progress: Callable[[], object] | None = None,
    limit: int = 100_000,
) -> SweepReport:
    """Cancel attempts of an operation at each of its checkpoints in turn.

    Each attempt runs under :func:`cancel_at_checkpoint`; the sweep stops at
    the first attempt that completes. ``attempt(k)`` receives the ``k`` it
    will be cancelled at. There are two ways to use it.

    **Fresh state for each attempt** (no ``progress``): ``attempt(k)``
    builds new state (a new stream pair) and runs the operation on it. The
    sweep tries ``k = 0, 1, 2, ...``, so it reaches every cancellation point
    of the operation, one per attempt, and ends at ``k = n + 1`` for an
    operation that yields ``n`` times: "does a cancellation at ``k`` leave a
    usable stream?".

    **Retries that resume** (pass ``progress``): ``attempt(k)`` retries the
    operation on the same object (``stream.send_all(message)`` again), and
    each retry resumes where the cancelled one stopped. Cancelling attempt
    ``k`` at its ``k``-th yield would then skip most points (a retry starts
    where the last attempt stopped, so attempts ``0, 1, 2, 3, ...`` are
    cancelled at the operation's points ``0, 1, 3, 6, ...``). With
    ``progress``, a function that says how far the operation has got (for a
    send, the bytes the transport accepted), the sweep instead cancels the
    attempts from each value of ``progress()`` at ``k = 0, 1, 2, ...`` until
    one leaves ``progress()`` changed, then starts again at ``k = 0`` from
    the new value. So every yield a retry makes until the operation
    progresses is a cancellation point, and no point between two values of
    ``progress()`` is skipped. ``report.progress_at`` and
    ``report.cancelled_at`` list them all.

    ``after_cancel(k)`` runs after each cancelled attempt, outside the
    cancelled scope (it may await freely): check the state left behind
    there, or finish the conversation and check what the peer got. An
    exception from ``attempt`` or ``after_cancel`` ends the sweep.

    Args:
      attempt: makes and awaits one attempt of the operation.
      after_cancel: called after each cancelled attempt.
      progress: for retries that resume: returns a value (compared with
        ``==``) that changes whenever the operation moves forward.
      limit: the most attempts made, a guard against operations that never
        finish.

    Returns:
      A :class:`SweepReport`.

    Raises:
      RuntimeError: no attempt completed within ``limit`` attempts.
    """
    report = SweepReport()
    k = 0
    for _ in range(limit):
        before = progress() if progress is not None else None
        outcome = await cancel_at_checkpoint(k, functools.partial(attempt, k))
        if outcome.completed:
            report.final_yields = outcome.yields
            return report
        report.cancelled += 1
        report.cancelled_at.append(k)
        if progress is not None:
            report.progress_at.append(before)
            k = k + 1 if progress() == before else 0
        else:
            k += 1
        if after_cancel is not None:
            await after_cancel(report.cancelled_at[-1])
    raise RuntimeError(f"the operation was still being cancelled after {limit} attempts")
