"""Helpers for testing code that uses :class:`~trio_tlsretry.TLSStream`.

Needs the ``testing`` extra (``pip install 'trio-tlsretry[testing]'``) for
the throw-away certificates made by trustme. ``import trio_tlsretry`` never
imports this package or trustme.

* TLS pairs over memory: :func:`tls_memory_stream_pair` (with
  ``exact_progress=True`` for testing cancellation and retries),
  :func:`tls_stream_pair_over`, :func:`make_tls_contexts`.
* An in-memory transport with exact send progress:
  :func:`exact_progress_stream_pair`.
* Transport fault injection: :class:`ChunkedStream`, :class:`DelayedStream`,
  :class:`FailingStream`, :class:`CorruptingStream`,
  :class:`InjectingStream`, :class:`AbruptEOFStream`.
* Systematic cancellation: :func:`cancel_at_checkpoint`,
  :func:`cancellation_sweep`.
* No silent hangs: :func:`fail_on_hang` (:exc:`HangError`),
  :func:`describe_tasks`.
* A fake TCP network behind Trio's socket and resolver hooks:
  :class:`FakeTCPNetwork` (with :class:`FakeTCPSocket`,
  :class:`FakeTCPConnection`, :class:`FakeHost`, :class:`ConnectAttempt`).

The pytest fixtures (``tls_exact_stream_pair``, ``tls_stream_pair``,
``tls_contexts``, ``tls_ca``, ``tls_server_context``, ``tls_client_context``,
``fake_tcp_network``, ``hang_guard``) are installed as a pytest plugin; see
:doc:`/testing`.
"""

from . import _requires_trustme  # noqa: F401  (first: a clear error without trustme)
from ._exact import ExactProgressMemoryStream, exact_progress_stream_pair
from ._fakenet import (
    ConnectAttempt,
    ConnectionSide,
    FakeHost,
    FakeTCPConnection,
    FakeTCPNetwork,
    FakeTCPSocket,
)
from ._faults import (
    AbruptEOFStream,
    ChunkedStream,
    CorruptingStream,
    DelayedStream,
    Direction,
    FailingStream,
    FaultStream,
    InjectingStream,
)
from ._hang import HangError, describe_tasks, fail_on_hang
from ._pairs import (
    DEFAULT_HOSTNAME,
    TLSContexts,
    make_tls_contexts,
    tls_memory_stream_pair,
    tls_stream_pair_over,
)
from ._sweep import CancelOutcome, SweepReport, cancel_at_checkpoint, cancellation_sweep

__all__ = [
    "DEFAULT_HOSTNAME",
    "AbruptEOFStream",
    "CancelOutcome",
    "ChunkedStream",
    "ConnectAttempt",
    "ConnectionSide",
    "CorruptingStream",
    "DelayedStream",
    "Direction",
    "ExactProgressMemoryStream",
    "FailingStream",
    "FakeHost",
    "FakeTCPConnection",
    "FakeTCPNetwork",
    "FakeTCPSocket",
    "FaultStream",
    "HangError",
    "InjectingStream",
    "SweepReport",
    "TLSContexts",
    "cancel_at_checkpoint",
    "cancellation_sweep",
    "describe_tasks",
    "exact_progress_stream_pair",
    "fail_on_hang",
    "make_tls_contexts",
    "tls_memory_stream_pair",
    "tls_stream_pair_over",
]
