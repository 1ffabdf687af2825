"""Helpers for testing code that uses :class:`~trio_tlsretry.TLSStream`.

Needs the ``testing`` extra (``pip install 'trio-tlsretry[testing]'``) for
the throw-away certificates made by trustme. ``import trio_tlsretry`` never
imports this package or trustme.

* TLS pairs over memory: :func:`tls_memory_stream_pair`,
  :func:`tls_stream_pair_over`, :func:`make_tls_contexts`.
* An in-memory transport with exact send progress:
  :func:`exact_progress_stream_pair`.
* Transport fault injection: :class:`ChunkedStream`, :class:`DelayedStream`,
  :class:`FailingStream`, :class:`CorruptingStream`,
  :class:`InjectingStream`, :class:`AbruptEOFStream`.
* Systematic cancellation: :func:`cancel_at_checkpoint`,
  :func:`cancellation_sweep`.
* A fake TCP network behind Trio's socket and resolver hooks:
  :class:`FakeTCPNetwork` (with :class:`FakeTCPSocket`,
  :class:`FakeTCPConnection`, :class:`FakeHost`, :class:`ConnectAttempt`).

The pytest fixtures (``tls_ca``, ``tls_server_context``,
``tls_client_context``, ``tls_contexts``, ``tls_stream_pair``,
``fake_tcp_network``) are installed as a pytest plugin; see :doc:`/testing`.
"""

from . import _requires_trustme  # noqa: F401  (first: a clear error without trustme)
from ._exact import ExactProgressMemoryStream, exact_progress_stream_pair
from ._fakenet import (
    ConnectAttempt,
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
    FailingStream,
    FaultStream,
    InjectingStream,
)
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
    "CorruptingStream",
    "DelayedStream",
    "ExactProgressMemoryStream",
    "FailingStream",
    "FakeHost",
    "FakeTCPConnection",
    "FakeTCPNetwork",
    "FakeTCPSocket",
    "FaultStream",
    "InjectingStream",
    "SweepReport",
    "TLSContexts",
    "cancel_at_checkpoint",
    "cancellation_sweep",
    "exact_progress_stream_pair",
    "make_tls_contexts",
    "tls_memory_stream_pair",
    "tls_stream_pair_over",
]
