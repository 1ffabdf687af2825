"""Swapping trio's TLS names for this library's (``trio_tlsretry/_inject.py``).

Each test undoes the injection whatever its outcome, so no other test sees an
injected ``trio``. The third-party software run while injected is in
``test_integration_*.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from trio_tlsretry import (
    TLSListener,
    TLSStream,
    extract_from_trio,
    inject_into_trio,
    injected_into_trio,
    open_tls_over_tcp_listeners,
    open_tls_over_tcp_stream,
    serve_tls_over_tcp,
)

TRIO_NAMES = [
    "SSLStream",
    "SSLListener",
    "open_ssl_over_tcp_stream",
    "open_ssl_over_tcp_listeners",
    "serve_ssl_over_tcp",
]
OURS = [
    TLSStream,
    TLSListener,
    open_tls_over_tcp_stream,
    open_tls_over_tcp_listeners,
    serve_tls_over_tcp,
]


def trio_names() -> list[object]:
    return [getattr(trio, name) for name in TRIO_NAMES]


@pytest.fixture
def trios_own() -> Iterator[list[object]]:
    """trio's own objects; extracts after the test whatever happened."""
    assert not injected_into_trio(), "an earlier test left trio injected"
    originals = trio_names()
    try:
        yield originals
    finally:
        extract_from_trio()
    assert trio_names() == originals


def test_inject_then_extract(trios_own: list[object]) -> None:
    inject_into_trio()
    assert injected_into_trio()
    assert trio_names() == OURS
    extract_from_trio()
    assert not injected_into_trio()
    assert trio_names() == trios_own


def test_injecting_twice_keeps_trios_originals(trios_own: list[object]) -> None:
    inject_into_trio()
    inject_into_trio()
    assert trio_names() == OURS
    extract_from_trio()
    assert trio_names() == trios_own


def test_extracting_without_an_injection_does_nothing(trios_own: list[object]) -> None:
    extract_from_trio()
    extract_from_trio()
    assert not injected_into_trio()
    assert trio_names() == trios_own
