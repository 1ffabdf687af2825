"""TLS stream pairs and contexts from ``trio_tlsretry/testing/_pairs.py``."""

from __future__ import annotations

import ssl
import sys

import pytest
import trio
import trio.testing
import trustme
from streamtools import contexts_for, handshake, leaves, payload, receive_exactly

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found]

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import (
    ExactProgressMemoryStream,
    TLSContexts,
    exact_progress_stream_pair,
    make_tls_contexts,
    tls_memory_stream_pair,
    tls_stream_pair_over,
)

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture
def contexts() -> TLSContexts:
    return contexts_for()


@pytest.fixture(params=VERSIONS, ids=lambda v: v.name)
def versioned_contexts(request: pytest.FixtureRequest) -> TLSContexts:
    version: ssl.TLSVersion = request.param
    return contexts_for(version)


async def test_tls_memory_stream_pair_defaults_talk_to_each_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = tls_memory_stream_pair()
    assert isinstance(client, TLSStream)
    assert isinstance(server, TLSStream)
    assert not client.server_side
    assert server.server_side
    assert client.server_hostname == "example.org"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"ping")
        assert await receive_exactly(server, 4) == b"ping"
    await server.send_all(b"pong")
    assert await receive_exactly(client, 4) == b"pong"
    names = dict(item[0] for item in client.getpeercert()["subject"])
    alt_names = client.getpeercert()["subjectAltName"]
    assert ("DNS", "example.org") in alt_names
    assert str(names.get("organizationName")).startswith("trustme")


@pytest.mark.parametrize(
    ("options", "transport_type"),
    [
        ({}, trio.StapledStream),
        ({"lockstep": True}, trio.StapledStream),
        ({"exact_progress": True, "capacity": 10}, ExactProgressMemoryStream),
    ],
    ids=["memory", "lockstep", "exact"],
)
async def test_tls_memory_stream_pair_transports(
    autojump_clock: trio.testing.MockClock,
    contexts: TLSContexts,
    options: dict[str, object],
    transport_type: type,
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        **options,  # type: ignore[arg-type]
    )
    assert isinstance(client.transport_stream, transport_type)
    assert isinstance(server.transport_stream, transport_type)
    data = payload(20_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, data)
        assert await receive_exactly(server, len(data)) == data
    if options.get("exact_progress"):
        assert isinstance(client.transport_stream, ExactProgressMemoryStream)
        assert client.transport_stream.capacity == 10


def test_tls_memory_stream_pair_rejects_two_transports() -> None:
    with pytest.raises(ValueError, match="not both"):
        tls_memory_stream_pair(lockstep=True, exact_progress=True)


async def test_make_tls_contexts_for_another_host(autojump_clock: trio.testing.MockClock) -> None:
    contexts = make_tls_contexts("service.test")
    assert contexts.hostname == "service.test"
    assert isinstance(contexts.ca, trustme.CA)
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        server_hostname="service.test",
    )
    await handshake(client, server)
    assert ("DNS", "service.test") in client.getpeercert()["subjectAltName"]


async def test_wrong_hostname_fails_verification(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        server_hostname="not-example.org",
    )
    with pytest.raises(BaseExceptionGroup) as caught:
        await handshake(client, server)
    # The client fails verification; the server sees the client's alert.
    causes = [exc.__cause__ for exc in leaves(caught.value)]
    assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes)


async def test_maximum_version_is_applied(
    autojump_clock: trio.testing.MockClock, versioned_contexts: TLSContexts
) -> None:
    client, server = tls_memory_stream_pair(
        client_context=versioned_contexts.client, server_context=versioned_contexts.server
    )
    await handshake(client, server)
    expected = versioned_contexts.client.maximum_version.name.replace("v1_", "v1.")
    assert client.version() == server.version() == expected


async def test_tls_stream_pair_over_uses_given_transports(
    autojump_clock: trio.testing.MockClock, contexts: TLSContexts
) -> None:
    left, right = exact_progress_stream_pair(64)
    client, server = tls_stream_pair_over(
        left, right, client_context=contexts.client, server_context=contexts.server
    )
    assert client.transport_stream is left
    assert server.transport_stream is right
    await handshake(client, server)
