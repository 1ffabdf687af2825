"""pytest plugin: TLS fixtures for code that uses trio_tlsretry.

Registered through the ``pytest11`` entry point. If trustme is not installed
the fixtures are simply not defined, so installing trio_tlsretry never breaks
an unrelated test suite.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("trustme") is not None:
    from ._fixtures import (  # noqa: F401
        tls_ca,
        tls_client_context,
        tls_contexts,
        tls_server_context,
        tls_stream_pair,
    )
