"""Cancel an operation at every checkpoint in turn.

A cancellation bug hides at one particular await. Timeouts find it by luck;
this module finds it by construction: attempt ``k`` of an operation is
cancelled at the ``k``-th point where the calling task yields to the
scheduler, for ``k = 0, 1, 2, ...`` until an attempt completes without being
cancelled. A callback runs after each cancelled attempt so the test can check
that the state left behind is still what the contract promises.

What ``k`` means, precisely:

* ``k = 0``: the cancel scope is cancelled before the operation is called.
  The operation's code runs up to its first checkpoint, which raises
  ``Cancelled`` (this exercises the "already cancelled on entry" path, e.g. a
  ``checkpoint_if_cancelled()`` at the top of a method).
* ``k >= 1``: the scope is cancelled right after the task's ``k``-th yield,
  while it is suspended there. If that wait can be aborted (a blocked
  receive, a sleep, a lock), it is aborted, exactly as when a timeout expires
  at that moment; otherwise (the wait already finished, or it was a shielded
  schedule point) the next checkpoint raises. So ``k`` counts the yields of
  an *uncancelled* run: an operation that yields ``n`` times in total is
  cancelled in attempts ``k = 0 .. n`` at most, and attempt ``n + 1``
  completes. ``trio.lowlevel.checkpoint()`` yields first and then checks for
  cancellation, so for an operation made of plain checkpoints ``k = 0`` and
  ``k = 1`` both raise in the first one.

Only yields of the task that calls :func:`cancel_at_checkpoint` count; tasks
the operation starts in a nursery are cancelled with it but do not advance
``k``. Everything is deterministic: the same operation over the same
in-memory transports yields at the same points every run, so a failure
reports a reproducible ``k``.

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
    #: How many times the task yielded before the operation ended (for a
    #: cancelled attempt this includes the yields spent delivering the
    #: cancellation, so it can exceed ``k``).
    yields: int


async def cancel_at_checkpoint(k: int, operation: Callable[[], Awaitable[T]]) -> CancelOutcome[T]:
    """Run ``operation()`` and cancel it at its ``k``-th yield to the scheduler.

    ``k = 0`` cancels before the operation starts (its first checkpoint
    raises ``Cancelled``); ``k >= 1`` cancels while the task is suspended at
    its ``k``-th yield (see the module notes above). If the operation
    finishes before yielding ``k`` times, it is not cancelled at all and
    ``completed`` is ``True``. A cancellation that the operation absorbs
    (returning normally, e.g. from inside a shielded scope) also counts as
    completed.

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

    Each attempt runs under :func:`cancel_at_checkpoint`. The sweep stops at
    the first attempt that completes, so it terminates whenever the
    operation yields finitely often: at the latest when ``k`` exceeds the
    number of yields of an uncancelled run.

    ``attempt`` receives ``k`` so it can either build fresh state for each
    attempt (a new stream pair: "does a cancellation at ``k`` leave a usable
    stream?") or keep retrying on the same object (the retry contract: "does
    calling ``send_all`` again with the same data resume exactly?").
    ``after_cancel(k)`` runs after each cancelled attempt, outside the
    cancelled scope (it may await freely), and is where a test checks the
    state left behind or finishes the conversation and checks what the peer
    got. An exception from ``attempt`` or ``after_cancel`` ends the sweep.

    Args:
      attempt: makes and awaits one attempt of the operation.
      after_cancel: called after each cancelled attempt.
      limit: the highest ``k`` tried, a guard against operations that never
        finish.

    Returns:
      A :class:`SweepReport`.

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
