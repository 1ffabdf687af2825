"""The ``pytest11`` entry point: TLS fixtures for code that uses trio_tlsretry.

This module sits outside :mod:`trio_tlsretry.testing` on purpose. That
package refuses to import without trustme, and pytest turns an ImportError in
any installed plugin into an error of every test run in the environment. So
trustme is checked here first: with it, the fixtures come from
``trio_tlsretry.testing._fixtures``; without it, fixtures of the same names
fail with the install hint, and test suites that do not use them are
unaffected.
"""

from __future__ import annotations

from typing import Any

import pytest

try:
    from trio_tlsretry.testing._fixtures import (
        fake_tcp_network,
        hang_guard,
        tls_ca,
        tls_client_context,
        tls_contexts,
        tls_exact_stream_pair,
        tls_server_context,
        tls_stream_pair,
    )
except ImportError as exc:
    if exc.name != "trustme":
        raise
    _REASON = str(exc)

    def _unavailable(name: str) -> Any:
        @pytest.fixture(name=name)
        def fixture() -> None:
            pytest.fail(_REASON, pytrace=False)

        return fixture

    fake_tcp_network = _unavailable("fake_tcp_network")
    hang_guard = _unavailable("hang_guard")
    tls_exact_stream_pair = _unavailable("tls_exact_stream_pair")
    tls_contexts = _unavailable("tls_contexts")
    tls_ca = _unavailable("tls_ca")
    tls_server_context = _unavailable("tls_server_context")
    tls_client_context = _unavailable("tls_client_context")
    tls_stream_pair = _unavailable("tls_stream_pair")

__all__ = [
    "fake_tcp_network",
    "hang_guard",
    "tls_ca",
    "tls_client_context",
    "tls_contexts",
    "tls_exact_stream_pair",
    "tls_server_context",
    "tls_stream_pair",
]
