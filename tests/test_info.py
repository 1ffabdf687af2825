"""``TLSStream.connection_info()`` and ``ConnectionInfo``.

Also backs the rows of the comparison table in ``docs/beyond.rst`` that are
not about half-close or post-handshake authentication: typed connection
details and cancellation-safe ``send_all``.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
import textwrap
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from streamtools import handshake

from trio_tlsretry import NeedHandshakeError, StreamState, TLSStream
from trio_tlsretry._info import ConnectionInfo
from trio_tlsretry.testing import (
    TLSContexts,
    make_tls_contexts,
    tls_memory_stream_pair,
)

HOSTNAME = "example.org"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "beyond.rst"


async def connect(contexts: TLSContexts, **kwargs: Any) -> tuple[TLSStream, TLSStream]:
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server, **kwargs
    )
    await handshake(client, server)
    return client, server


def server_der(contexts: TLSContexts) -> bytes:
    pem = contexts.server_cert.cert_chain_pems[0].bytes().decode("ascii")
    return ssl.PEM_cert_to_DER_cert(pem)


# ------------------------------------------------------------ before handshake


async def test_need_handshake_error_before_the_handshake() -> None:
    client, server = tls_memory_stream_pair()
    for stream in (client, server):
        with pytest.raises(NeedHandshakeError, match="do_handshake"):
            stream.connection_info()
    await handshake(client, server)
    assert client.connection_info().server_side is False
    assert server.connection_info().server_side is True


def test_from_ssl_object_refuses_an_unfinished_handshake() -> None:
    contexts = make_tls_contexts()
    ssl_object = contexts.client.wrap_bio(
        ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=HOSTNAME
    )
    with pytest.raises(NeedHandshakeError):
        ConnectionInfo.from_ssl_object(ssl_object)


# ----------------------------------------------------------------- the fields


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_fields_on_both_ends(version: ssl.TLSVersion) -> None:
    contexts = make_tls_contexts(maximum_version=version)
    contexts.client.set_alpn_protocols(["h2", "http/1.1"])
    contexts.server.set_alpn_protocols(["http/1.1", "h2"])
    client, server = await connect(contexts)
    client_info = client.connection_info()
    server_info = server.connection_info()
    name = version.name.replace("v1_", "v1.")

    for stream, info in ((client, client_info), (server, server_info)):
        assert info.version == name == stream.version()
        assert info.tls_version is version
        assert (info.cipher_name, info.cipher_protocol, info.cipher_secret_bits) == stream.cipher()
        assert info.cipher_secret_bits >= 128
        assert info.alpn_protocol == stream.selected_alpn_protocol()
        assert info.session_reused is False
        assert info.server_side is stream.server_side
    # CPython's server picks by its own order of preference.
    assert client_info.alpn_protocol == "http/1.1"

    # SNI: the client's server_hostname; the server cannot read it back.
    assert client_info.server_name == HOSTNAME
    assert server_info.server_name is None

    # The server's certificate, seen by the client; no client certificate.
    assert client_info.peer_certificate_der == server_der(contexts)
    assert client_info.peer_certificate is not None
    assert client_info.peer_certificate["subjectAltName"] == (("DNS", HOSTNAME),)
    assert client_info.peer_certificate == client.getpeercert()
    assert server_info.peer_certificate is None
    assert server_info.peer_certificate_der is None

    # tls-unique: the same bytes on both ends on TLS 1.2; withheld on TLS 1.3
    # although CPython/OpenSSL return bytes for it there.
    if version is ssl.TLSVersion.TLSv1_2:
        assert client_info.tls_unique is not None
        assert client_info.tls_unique == server_info.tls_unique
        assert client_info.tls_unique == client.get_channel_binding("tls-unique")
    else:
        assert client_info.tls_unique is None is server_info.tls_unique
        assert isinstance(client.get_channel_binding("tls-unique"), bytes)


async def test_no_alpn_gives_none() -> None:
    client, _server = await connect(make_tls_contexts())
    assert client.connection_info().alpn_protocol is None


def test_connection_info_carries_every_channel_binding_cpython_offers() -> None:
    # A field per binding type SSLObject.get_channel_binding accepts: a
    # CPython that adds one (tls-exporter, RFC 9266) makes this fail until
    # ConnectionInfo carries it too.
    fields = {field.name for field in dataclasses.fields(ConnectionInfo)}
    assert {kind.replace("-", "_") for kind in ssl.CHANNEL_BINDING_TYPES} <= fields


async def test_unverified_certificate_is_an_empty_dict_with_der() -> None:
    contexts = make_tls_contexts()
    contexts.client.check_hostname = False
    contexts.client.verify_mode = ssl.CERT_NONE
    client, _server = await connect(contexts)
    info = client.connection_info()
    assert info.peer_certificate == {}
    assert info.peer_certificate_der == server_der(contexts)


async def test_client_certificate_on_the_server() -> None:
    contexts = make_tls_contexts()
    contexts.server.verify_mode = ssl.CERT_REQUIRED
    contexts.ca.configure_trust(contexts.server)
    contexts.ca.issue_cert("client@example.org").configure_cert(contexts.client)
    _client, server = await connect(contexts)
    info = server.connection_info()
    assert info.peer_certificate is not None
    assert info.peer_certificate["subjectAltName"] == (("email", "client@example.org"),)
    assert info.peer_certificate_der == server.getpeercert(binary_form=True)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_session_reused(version: ssl.TLSVersion) -> None:
    contexts = make_tls_contexts(maximum_version=version)
    client, server = await connect(contexts)
    # TLS 1.3 tickets come after the handshake, with the server's first send.
    await server.send_all(b"ticket")
    assert await client.receive_some() == b"ticket"
    session = client.session
    assert session is not None

    again_client, again_server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server
    )
    again_client.session = session
    await handshake(again_client, again_server)
    assert again_client.connection_info().session_reused is True
    assert again_server.connection_info().session_reused is True
    assert client.connection_info().session_reused is False


# --------------------------------------------------------- value semantics


async def test_frozen_hashable_and_comparable() -> None:
    client, server = await connect(make_tls_contexts())
    info = client.connection_info()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.version = "TLSv1.2"  # type: ignore[misc]
    assert info == client.connection_info()
    assert info != server.connection_info()
    assert hash(info) == hash(client.connection_info())
    assert len({info, client.connection_info(), server.connection_info()}) == 2
    assert dataclasses.replace(info, version="TLSv1.2").tls_version is ssl.TLSVersion.TLSv1_2
    # A snapshot: still readable once the stream is closed.
    await client.aclose()
    assert info.server_name == HOSTNAME
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()


def test_field_names() -> None:
    assert [field.name for field in dataclasses.fields(ConnectionInfo)] == [
        "version",
        "cipher_name",
        "cipher_protocol",
        "cipher_secret_bits",
        "alpn_protocol",
        "server_name",
        "peer_certificate",
        "peer_certificate_der",
        "session_reused",
        "tls_unique",
        "server_side",
    ]


# ------------------------------------------------------- the docs' examples


def docs_code_block(caption: str) -> str:
    """The body of the ``code-block`` with ``:caption: caption`` in beyond.rst."""
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(
        rf"^( *)\.\. code-block:: python\n\1   :caption: {re.escape(caption)}\n\n"
        r"((?:\1   .*\n|\n)+)",
        text,
        re.MULTILINE,
    )
    assert match is not None, f"no code block captioned {caption!r} in {DOCS}"
    return textwrap.dedent(match.group(2))


def load_docs_function(caption: str, name: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {}
    exec(compile(docs_code_block(caption), str(DOCS), "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function


async def test_docs_describe_example() -> None:
    describe: Callable[[TLSStream], Awaitable[str]] = load_docs_function(
        "Describing a connection", "describe"
    )
    contexts = make_tls_contexts()
    contexts.client.set_alpn_protocols(["h2"])
    contexts.server.set_alpn_protocols(["h2"])
    client, server = tls_memory_stream_pair(
        client_context=contexts.client, server_context=contexts.server
    )
    results: dict[str, str] = {}

    async def run(label: str, stream: TLSStream) -> None:
        results[label] = await describe(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "client", client)
        nursery.start_soon(run, "server", server)
    cipher = client.connection_info().cipher_name
    # The output the page shows, with this machine's cipher suite.
    shown = "TLSv1.3 TLS_AES_256_GCM_SHA384 (256 bits), ALPN h2, SNI example.org, peer example.org"
    assert shown in DOCS.read_text(encoding="utf-8")
    assert results["client"] == shown.replace("TLS_AES_256_GCM_SHA384", cipher)
    assert results["server"] == (
        f"TLSv1.3 {cipher} (256 bits), ALPN h2, SNI None, peer anonymous"
    ).replace("(256 bits)", f"({client.connection_info().cipher_secret_bits} bits)")


async def test_docs_sni_recipe() -> None:
    """The page's recipe for reading the client's SNI on the server."""
    namespace: dict[str, Any] = {}
    exec(compile(docs_code_block("Remembering the SNI"), str(DOCS), "exec"), namespace)
    requested: ContextVar[str | None] = namespace["requested_server_name"]
    remember = namespace["remember_server_name"]
    contexts = make_tls_contexts("tenant.example.org")
    contexts.server.sni_callback = remember
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        server_hostname="tenant.example.org",
    )
    seen: list[str | None] = []

    async def serve() -> None:
        await server.do_handshake()  # the callback runs in here, in this task
        seen.append(requested.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(client.do_handshake)
    assert seen == ["tenant.example.org"]
    assert server.connection_info().server_name is None
    # Other tasks never see this connection's value.
    assert requested.get() is None


# ------------------------------------ other libraries (docs/beyond.rst table)


async def test_trio_ssl_stream_cancelled_send_all_breaks_it() -> None:
    contexts = make_tls_contexts()
    left, right = trio.testing.lockstep_stream_pair()
    client = trio.SSLStream(left, contexts.client, server_hostname=HOSTNAME)
    server = trio.SSLStream(right, contexts.server, server_side=True)
    await handshake(client, server)
    async with trio.open_nursery() as nursery:
        # Over lockstep, the send waits until the server reads, which it
        # never does: the send is parked inside the transport.
        nursery.start_soon(client.send_all, b"x" * 100_000)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"y")


@pytest.mark.parametrize("transport", ["exact-progress", "socket"])
async def test_tls_stream_cancelled_send_all_resumes(transport: str) -> None:
    """The same situation for TLSStream: the retry sends the rest exactly once."""
    contexts = make_tls_contexts()
    if transport == "socket":
        a, b = socket.socketpair()
        client_transport: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        server_transport: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(b))
        client = TLSStream(client_transport, contexts.client, server_hostname=HOSTNAME)
        server = TLSStream(server_transport, contexts.server, server_side=True)
        await handshake(client, server)
    else:
        client, server = await connect(contexts, exact_progress=True, capacity=4096)
    data = bytes(range(256)) * 32_768  # 8 MiB: more than any socket buffer
    sent_before = client.statistics().ciphertext_bytes_sent
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, data)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    stats = client.statistics()
    assert stats.state is StreamState.OPEN
    assert stats.pinned_bytes > 0
    assert stats.ciphertext_bytes_sent > sent_before  # cancelled part-way

    received = bytearray()

    async def receive_all() -> None:
        while len(received) < len(data):
            received.extend(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_all)
        await client.send_all(data)  # the same object: resume
    assert received == data
    await client.aclose()
    await server.aclose()
