"""A minimal fair lock for the uncontended fast path.

``trio.Lock`` records its owner task and registers it for deadlock
detection on every acquisition; that bookkeeping costs more than the TLS
work of a small record. The stream's transport locks are only ever held
across one transport operation by the task that took them, so a flag plus a
parking lot is enough.
"""

from __future__ import annotations

import trio
from trio.lowlevel import ParkingLot

__all__ = ["ConflictDetector", "FastLock"]


class ConflictDetector:
    """Turns overlapping calls of one operation into ``BusyResourceError``."""

    __slots__ = ("held", "message")

    def __init__(self, message: str) -> None:
        self.message = message
        self.held = False

    def __enter__(self) -> None:
        if self.held:
            raise trio.BusyResourceError(self.message)
        self.held = True

    def __exit__(self, *exc_info: object) -> None:
        self.held = False


class FastLock:
    """A non-reentrant, FIFO-fair lock.

    Fairness matters: ``release`` hands the lock straight to the longest
    waiter. Without the handoff, a task that releases and immediately takes
    the lock again (a receiver looping over transport reads) could starve a
    parked sender forever, and that sender may be the only task able to
    send what the peer is waiting for.
    """

    __slots__ = ("_lot", "locked")

    def __init__(self) -> None:
        self.locked = False
        self._lot: ParkingLot | None = None  # created at the first contention

    def try_acquire(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    async def acquire(self) -> None:
        """Wait for the lock and take it. Cancellable while waiting."""
        if not self.locked:
            self.locked = True
            return
        # Returns once ``release`` handed the lock to us. A cancellation
        # before that removes us from the queue; after it, none can arrive
        # (the task is already rescheduled).
        if self._lot is None:
            self._lot = ParkingLot()
        await self._lot.park()

    def release(self) -> None:
        lot = self._lot
        if lot is not None and len(lot):
            lot.unpark()  # ownership passes to the first waiter
        else:
            self.locked = False
