"""Trio's generic stream conformance suite, run against TLSStream pairs."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from streamtools import handshake

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import make_tls_contexts, tls_memory_stream_pair

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
# The unclogged stream maker's transports. Lockstep pairs are exercised as the
# "clogged" maker below: over lockstep, a graceful aclose() waits for the peer
# to read the close_notify, and check_one_way_stream closes one end while the
# other only sends (trio's own SSLStream tests make the same split).
TRANSPORTS = ["memory", "exact"]

Maker = Callable[[], Awaitable[tuple[TLSStream, TLSStream]]]


def pair_maker(transport: str, version: ssl.TLSVersion) -> Maker:
    contexts = make_tls_contexts(maximum_version=version)

    async def make() -> tuple[TLSStream, TLSStream]:
        client, server = tls_memory_stream_pair(
            client_context=contexts.client,
            server_context=contexts.server,
            lockstep=transport == "lockstep",
            exact_progress=transport == "exact",
            capacity=4096,
        )
        return client, server

    return make


def clogged_maker(version: ssl.TLSVersion) -> Maker:
    """Lockstep pairs whose handshake is already done.

    On a lockstep transport every send waits for the peer to receive, which is
    what trio's checks mean by "clogged". The handshake is done up front, as
    trio's own SSLStream tests do, because otherwise a receive_some that
    starts the handshake would itself get stuck sending.
    """
    contexts = make_tls_contexts(maximum_version=version)

    async def make() -> tuple[TLSStream, TLSStream]:
        client, server = tls_memory_stream_pair(
            client_context=contexts.client, server_context=contexts.server, lockstep=True
        )
        await handshake(client, server)
        return client, server

    return make


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_check_two_way_stream(transport: str, version: ssl.TLSVersion) -> None:
    await trio.testing.check_two_way_stream(pair_maker(transport, version), clogged_maker(version))


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
async def test_negotiates_requested_version(version: ssl.TLSVersion) -> None:
    client, server = await pair_maker("memory", version)()
    await handshake(client, server)
    assert client.version() == server.version() == version.name.replace("v1_", "v1.")
