"""Shared test configuration.

Every async test runs under a wall-clock limit. A watchdog *thread* cancels
the test through its trio token when the limit passes, so the limit works
under ``MockClock(autojump_threshold=0)`` too and a deadlock becomes a
failure instead of a hung CI run. (Signal-based pytest-timeout leaves trio's
run state corrupted for later tests.)
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import trio
from hypothesis import settings

# The default profile draws the same examples on every run, so a CI result
# is reproducible; HYPOTHESIS_PROFILE=thorough explores new ones.
settings.register_profile("default", deadline=None, max_examples=100, derandomize=True)
settings.register_profile("thorough", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TEST_TIME_LIMIT = float(os.environ.get("TRIO_TLSRETRY_TEST_TIME_LIMIT", "60"))

AsyncTest = Callable[..., Coroutine[Any, Any, None]]


def _with_time_limit(fn: AsyncTest) -> AsyncTest:
    @functools.wraps(fn)
    async def limited(*args: Any, **kwargs: Any) -> None:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:

            def expire() -> None:
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass

            timer = threading.Timer(TEST_TIME_LIMIT, expire)
            timer.daemon = True
            timer.start()
            try:
                await fn(*args, **kwargs)
            finally:
                timer.cancel()
        if scope.cancelled_caught:
            pytest.fail(f"test did not finish within {TEST_TIME_LIMIT:g} s (deadlock?)")

    return limited


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        obj = item.obj
        hypothesis = getattr(obj, "hypothesis", None)
        if hypothesis is not None:
            if inspect.iscoroutinefunction(hypothesis.inner_test):
                hypothesis.inner_test = _with_time_limit(hypothesis.inner_test)
        elif inspect.iscoroutinefunction(obj):
            item.obj = _with_time_limit(obj)
