"""How long a wait for incoming data should poll before it blocks.

A process that blocks in ``epoll_wait`` lets its CPU go idle. Waking it when
data arrives costs far more than the wait itself when the wait is short: on a
virtual machine an idle vCPU halts and has to be woken through the host (tens
of microseconds), and on any machine the code that then runs finds caches
that other work has cooled. Over loopback, a 64-byte TLS request/response
measured about 100 us of CPU per round trip on each side when both ends
blocked, about 55 us when both ends stayed busy; polling briefly before
blocking took the round-trip rate from about 7,300/s to about 13,000/s
(``docs/performance.rst``). Linux's ``SO_BUSY_POLL`` and KVM's halt polling
make the same trade for the same reason.

Polling costs CPU whenever the data does *not* come soon, so the budget is
learned from the connection's own recent waits: this module is the rule,
free of I/O, and ``_transport`` applies it.
"""

from __future__ import annotations

import math
import os
from typing import Final

__all__ = ["DEFAULT_BUSY_POLL", "BusyPollBudget", "check_busy_poll", "default_busy_poll"]

#: The default longest poll, in seconds. Replies over loopback or a fast
#: local network arrive well within it; anything slower is not polled for.
DEFAULT_BUSY_POLL = 100e-6


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# With one CPU, whatever will send us data (the peer process, the network
# stack) needs the CPU we would poll on: polling can only delay it.
_MULTIPROCESSOR: Final = _usable_cpus() > 1


def default_busy_poll() -> float:
    """:data:`DEFAULT_BUSY_POLL`, or 0 if this process may use only one CPU."""
    return DEFAULT_BUSY_POLL if _MULTIPROCESSOR else 0.0


# The next poll may last this many times the last wait, so that a wait a
# little longer than the last one is still caught.
_GROWTH: Final = 1.5


def check_busy_poll(seconds: float) -> float:
    """Validate a busy-poll limit: a finite number of seconds, 0 or more."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"busy_poll must be a number of seconds, not {type(seconds).__name__}")
    if not (0 <= seconds < math.inf):
        raise ValueError(f"busy_poll must be finite and >= 0, not {seconds!r}")
    return float(seconds)


class BusyPollBudget:
    """The poll budget of one connection, learned from how long its waits took.

    After a wait of ``w`` seconds, the next wait polls for up to
    ``min(1.5 * w, limit)`` seconds if ``w <= limit``, and not at all if the
    wait took longer: a connection that goes quiet stops costing CPU after
    one wait, and one that is in a quick request/response rhythm polls just
    a little longer than its replies take. A new connection does not poll
    until it has seen one short wait.
    """

    __slots__ = ("budget", "hits", "limit", "misses")

    def __init__(self, limit: float | None = None) -> None:
        #: The longest any poll may last (seconds); 0 disables polling.
        self.limit = default_busy_poll() if limit is None else check_busy_poll(limit)
        #: How long the next wait polls before blocking (seconds).
        self.budget = 0.0
        #: Polls that found data (a sleep and wake-up saved).
        self.hits = 0
        #: Polls that found nothing and ended in a blocking wait.
        self.misses = 0

    def set_limit(self, seconds: float) -> None:
        """Change the limit; the current budget never exceeds it."""
        self.limit = check_busy_poll(seconds)
        self.budget = min(self.budget, self.limit)

    def record_wait(self, seconds: float) -> None:
        """A wait for data (polled, blocked or both) took ``seconds``."""
        if seconds <= self.limit:
            self.budget = min(_GROWTH * seconds, self.limit)
        else:
            self.budget = 0.0
