"""Helpers for testing code that uses :class:`~trio_tlsretry.TLSStream`.

Needs the ``testing`` extra (``pip install 'trio-tlsretry[testing]'``) for
its throw-away certificates.
"""

from __future__ import annotations

try:
    import trustme as _trustme  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trio_tlsretry.testing needs trustme: pip install 'trio-tlsretry[testing]'"
    ) from None

from ._exact import ExactProgressMemoryStream, exact_progress_stream_pair
from ._pairs import TLSContexts, make_tls_contexts, tls_memory_stream_pair, tls_stream_pair_over
from ._sweep import CancelOutcome, SweepReport, cancel_at_checkpoint, cancellation_sweep

__all__ = [
    "CancelOutcome",
    "ExactProgressMemoryStream",
    "SweepReport",
    "TLSContexts",
    "cancel_at_checkpoint",
    "cancellation_sweep",
    "exact_progress_stream_pair",
    "make_tls_contexts",
    "tls_memory_stream_pair",
    "tls_stream_pair_over",
]
