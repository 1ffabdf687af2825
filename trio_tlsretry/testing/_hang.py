"""Turn a hung test into a failure that says what every task is waiting for.

Under ``MockClock(autojump_threshold=0)`` a test whose tasks all wait for
something that never happens (a client without a timeout, a server that
never answers) does not time out: with no timer pending, the clock has
nowhere to jump and the run waits for I/O forever, silently. A guard adds one
timer far in the (virtual) future. When nothing else can run the clock jumps
to it at once, and the guard cancels the test and reports where each task
was blocked. A wall-clock limit, run from a thread that cancels through the
run's ``TrioToken``, also catches tasks that keep each other busy without
end. (A signal-based timeout such as pytest-timeout's ``signal`` method
interrupts Trio's scheduler itself and can leave the run unusable for the
tests after it.)
"""

from __future__ import annotations

import linecache
import math
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import trio
import trio.testing

__all__ = [
    "DEFAULT_HANG_SECONDS",
    "DEFAULT_REAL_SECONDS",
    "HangError",
    "describe_tasks",
    "fail_on_hang",
]

#: The default limit on Trio's clock, in seconds (virtual ones under a
#: :class:`trio.testing.MockClock`). Longer than any timeout a test is likely
#: to wait for on purpose (Linux's 127-second connect timeout, say).
DEFAULT_HANG_SECONDS = 600.0

#: The default wall-clock limit, in seconds.
DEFAULT_REAL_SECONDS = 60.0

# Frames in these packages say nothing about the test: leave them out.
_LIBRARY_DIRS = tuple(
    str(Path(module.__file__).resolve().parent)
    for module in (trio, sys.modules["outcome"])
    if module.__file__ is not None
)
_THIS_FILE = str(Path(__file__).resolve())
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
_FRAMES_PER_TASK = 4


class HangError(AssertionError):
    """A guarded test did not finish in time.

    Raised by :func:`fail_on_hang` and by the ``hang_guard`` fixture. The
    message says which limit passed and, from :func:`describe_tasks`, where
    every task of the run was waiting at that moment.
    """


def _interesting(filename: str) -> bool:
    path = str(Path(filename).resolve()) if filename and not filename.startswith("<") else filename
    if path == _THIS_FILE or "pytest_trio" in path:
        return False
    return not path.startswith(_LIBRARY_DIRS)


def _ours(filename: str) -> bool:
    return str(Path(filename).resolve()).startswith(_PACKAGE_DIR)


def _walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _walk(child)


def _format_frame(frame: FrameType, lineno: int) -> str:
    filename = frame.f_code.co_filename
    source = linecache.getline(filename, lineno).strip()
    return f"    {filename}:{lineno} in {frame.f_code.co_name}: {source}"


def describe_tasks() -> str:
    """Where every task of the current ``trio.run`` is waiting, as text.

    One entry per task: its name, then its innermost await frames outside
    trio_tlsretry (file, line, function and source line; innermost last),
    then the frame inside trio_tlsretry where it waits, if it does. Frames
    inside Trio itself, tasks that run only Trio's own code, and the task
    that calls this function are left out. Call it from a watchdog, or from
    a debugger, when a test does not finish.
    """
    current = trio.lowlevel.current_task()
    root = trio.lowlevel.current_root_task()
    entries: list[str] = []
    for task in _walk(root) if root is not None else ():
        if task is current:
            continue
        frames = [
            (frame, lineno)
            for frame, lineno in task.iter_await_frames()
            if _interesting(frame.f_code.co_filename)
        ]
        if not frames:
            continue
        outside = [entry for entry in frames if not _ours(entry[0].f_code.co_filename)]
        shown = outside[-_FRAMES_PER_TASK:]
        if not shown or frames[-1] is not shown[-1]:
            shown.append(frames[-1])
        lines = [f"  task {task.name}:"]
        lines.extend(_format_frame(frame, lineno) for frame, lineno in shown)
        entries.append("\n".join(lines))
    return "\n".join(entries) if entries else "  (no task outside Trio's own code)"


def _autojumps() -> bool:
    clock = trio.lowlevel.current_clock()
    return isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold != math.inf


def _check_limits(seconds: float, real_seconds: float | None) -> None:
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    if real_seconds is not None and not real_seconds > 0:
        raise ValueError("real_seconds must be None or > 0")


async def _wait_for_hang(seconds: float, real_seconds: float | None) -> str:
    """Wait until a limit passes; return the report (the caller acts on it)."""
    deadline = trio.current_time() + seconds
    token = trio.lowlevel.current_trio_token()
    timer: threading.Timer | None = None
    with trio.CancelScope() as real_limit:
        if real_seconds is not None:

            def expire() -> None:
                try:
                    token.run_sync_soon(real_limit.cancel)
                except trio.RunFinishedError:  # pragma: no cover - a race at the run's end
                    pass

            timer = threading.Timer(real_seconds, expire)
            timer.daemon = True
            timer.start()
        try:
            await trio.sleep_until(deadline)
        finally:
            if timer is not None:
                timer.cancel()
    if real_limit.cancelled_caught:
        what = f"the test did not finish within {real_seconds:g} s of real time"
    elif _autojumps():
        what = (
            f"nothing could run for {seconds:g} s of the autojump clock: every task was "
            "blocked, waiting for something that never happened (a missing timeout, or a "
            "peer that never answers?)"
        )
    else:
        what = f"the test did not finish within {seconds:g} s of Trio's clock"
    return f"{what}. Where the tasks were waiting:\n{describe_tasks()}"


@contextmanager
def fail_on_hang(
    seconds: float = DEFAULT_HANG_SECONDS, *, real_seconds: float | None = DEFAULT_REAL_SECONDS
) -> Iterator[None]:
    """Fail the code in the ``with`` block with :exc:`HangError` if it does not finish.

    A ``with`` block inside a running ``trio.run`` (a test body, say):
    ``with fail_on_hang(): ...``. When ``seconds`` pass on Trio's clock, or
    ``real_seconds`` of wall-clock time, the block is cancelled and
    :exc:`HangError` is raised, its message listing where every task was
    waiting (:func:`describe_tasks`, taken before the cancellation).

    Under ``MockClock(autojump_threshold=0)`` (pytest-trio's
    ``autojump_clock`` fixture) the clock jumps to the limit as soon as no
    task can run, so a test that would hang fails at once, in no real time.
    Choose ``seconds`` longer than any virtual time the test spends on
    purpose; the default is ten minutes. Over the real clock the two limits
    are both wall-clock limits.

    Args:
      seconds: the limit on Trio's clock.
      real_seconds: the wall-clock limit (``None``: none).

    Raises:
      HangError: a limit passed.
      ValueError: a limit is not positive.
    """
    _check_limits(seconds, real_seconds)
    reports: list[str] = []
    with trio.CancelScope() as body:
        watcher = trio.CancelScope()

        async def watch() -> None:
            with watcher:
                reports.append(await _wait_for_hang(seconds, real_seconds))
                body.cancel()

        trio.lowlevel.spawn_system_task(watch, name="trio_tlsretry.testing.fail_on_hang")
        try:
            yield
        finally:
            watcher.cancel()
    if reports and body.cancelled_caught:
        raise HangError(reports[0])
