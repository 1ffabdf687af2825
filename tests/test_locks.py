"""The stream's internal transport lock."""

from __future__ import annotations

import trio
import trio.testing

from trio_tlsretry._locks import FastLock


async def test_release_hands_the_lock_to_the_first_waiter() -> None:
    lock = FastLock()
    order: list[str] = []
    assert lock.try_acquire()

    async def waiter(name: str) -> None:
        await lock.acquire()
        order.append(name)
        lock.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter, "second")
        await trio.testing.wait_all_tasks_blocked()
        lock.release()
        # The releaser cannot barge back in: the first waiter owns it now.
        assert not lock.try_acquire()
    assert order == ["first", "second"]
    assert not lock.locked


async def test_cancelled_waiter_leaves_the_queue() -> None:
    lock = FastLock()
    assert lock.try_acquire()
    with trio.move_on_after(0) as scope:
        await lock.acquire()
    assert scope.cancelled_caught
    lock.release()
    assert not lock.locked and lock.try_acquire()
