"""Post-handshake client authentication (TLS 1.3): ``verify_client_post_handshake``.

The server asks an already connected client for its certificate (RFC 8446
section 4.6.2). Both contexts need ``post_handshake_auth = True``; the server
context also a ``verify_mode`` that asks for certificates. The client answers
from inside its own ``receive_some``: OpenSSL only processes the
CertificateRequest in ``SSL_read``, so every test keeps the client receiving.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from openssl_tool import (
    OpenSSLTool,
    needs_openssl,
    server_stream_for_s_client,
)
from streamtools import handshake, receive_exactly, receive_until_eof

from trio_tlsretry import StreamState, TLSStream
from trio_tlsretry._errors import PostHandshakeAuthError
from trio_tlsretry.testing import (
    TLSContexts,
    cancellation_sweep,
    make_tls_contexts,
    tls_memory_stream_pair,
)

HOSTNAME = "example.org"
CLIENT_EMAIL = "client@example.org"


class PHAContexts:
    """Contexts for post-handshake authentication, with a client certificate."""

    def __init__(
        self,
        *,
        client_cert: bool = True,
        client_pha: bool = True,
        server_pha: bool = True,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> None:
        self.base: TLSContexts = make_tls_contexts(maximum_version=maximum_version)
        self.server = self.base.server
        self.client = self.base.client
        self.server.verify_mode = ssl.CERT_REQUIRED
        self.server.post_handshake_auth = server_pha
        self.base.ca.configure_trust(self.server)
        self.client.post_handshake_auth = client_pha
        self.client_cert: trustme.LeafCert = self.base.ca.issue_cert(CLIENT_EMAIL)
        if client_cert:
            self.client_cert.configure_cert(self.client)

    def client_der(self) -> bytes:
        pem = self.client_cert.cert_chain_pems[0].bytes().decode("ascii")
        return ssl.PEM_cert_to_DER_cert(pem)


async def connected(contexts: PHAContexts, **kwargs: object) -> tuple[TLSStream, TLSStream]:
    client, server = tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        **kwargs,  # type: ignore[arg-type]
    )
    await handshake(client, server)
    return client, server


def assert_client_certificate(server: TLSStream, contexts: PHAContexts) -> None:
    certificate = server.getpeercert()
    assert certificate["subjectAltName"] == (("email", CLIENT_EMAIL),)
    assert server.getpeercert(binary_form=True) == contexts.client_der()
    assert server.connection_info().peer_certificate_der == contexts.client_der()


async def assert_usable(client: TLSStream, server: TLSStream) -> None:
    """Data still flows both ways, and both ends close cleanly."""
    await server.send_all(b"from server")
    assert await receive_exactly(client, 11) == b"from server"
    await client.send_all(b"from client")
    assert await receive_exactly(server, 11) == b"from client"
    assert server.statistics().state is client.statistics().state is StreamState.OPEN
    if server.version() == "TLSv1.3":
        await server.send_eof()
        assert await receive_until_eof(client) == b""
        await client.send_eof()
        assert await receive_until_eof(server) == b""
    await server.aclose()
    assert await client.receive_some() == b""
    await client.aclose()


# ----------------------------------------------------------------- success


#: Sent by the client while the server waits for its certificate.
CHUNKS = [bytes([byte]) * 50_000 for byte in range(0x80, 0x88)]


@pytest.mark.parametrize("server_receiving", [False, True], ids=["verify-only", "concurrent"])
async def test_certificate_arrives_and_concurrent_data_is_kept(server_receiving: bool) -> None:
    """The certificate arrives; client data sent meanwhile is all delivered, in order.

    ``verify-only``: nothing else reads on the server during the wait, so the
    data is decrypted by ``verify_client_post_handshake`` and buffered for
    ``receive_some``. ``concurrent``: another server task is in
    ``receive_some`` the whole time.
    """
    contexts = PHAContexts()
    client, server = await connected(contexts)
    assert server.getpeercert() is None
    assert server.connection_info().peer_certificate is None
    expected = b"".join(CHUNKS)
    received = bytearray()
    from_server = bytearray()

    async def client_side() -> None:
        async with trio.open_nursery() as nursery:

            async def client_reader() -> None:
                from_server.extend(await receive_until_eof(client))

            nursery.start_soon(client_reader)
            for chunk in CHUNKS:
                await client.send_all(chunk)
            await client.send_eof()

    async def server_reader() -> None:
        received.extend(await receive_until_eof(server))  # up to the client's EOF

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        if server_receiving:
            async with trio.open_nursery() as receiving:
                receiving.start_soon(server_reader)
                await server.verify_client_post_handshake()
                assert_client_certificate(server, contexts)
        else:
            await server.verify_client_post_handshake()
            assert_client_certificate(server, contexts)
            await server_reader()
        await server.send_all(b"welcome")
        await server.send_eof()
    assert bytes(received) == expected
    assert from_server == b"welcome"


@pytest.mark.parametrize(
    "capacity",
    [
        16,
        4096,
    ],
)
async def test_cancelled_at_every_checkpoint_then_completes(capacity: int) -> None:
    """Cancel the wait at checkpoint k = 0, 1, 2, ...; each retry resumes it.

    Over an exact-progress transport every cancellation is recoverable. With a
    16-byte capacity the client's certificate flight arrives in many pieces,
    so the sweep cancels between them.
    """
    contexts = PHAContexts()
    client, server = await connected(contexts, exact_progress=True, capacity=capacity)
    from_server = bytearray()

    async with trio.open_nursery() as nursery:

        async def client_reader() -> None:
            from_server.extend(await receive_until_eof(client))

        nursery.start_soon(client_reader)
        report = await cancellation_sweep(lambda k: server.verify_client_post_handshake())
        assert report.cancelled >= 2
        assert_client_certificate(server, contexts)
        await server.send_all(b"after the sweep")
        await server.send_eof()
    assert from_server == b"after the sweep"
    # The transport holds only ``capacity`` bytes: send and receive at once.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"still open")
        assert await receive_exactly(server, 10) == b"still open"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_eof)
        assert await receive_until_eof(server) == b""


async def test_a_second_call_after_success_is_refused() -> None:
    contexts = PHAContexts()
    client, server = await connected(contexts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.receive_some)
        await server.verify_client_post_handshake()
        with pytest.raises(PostHandshakeAuthError, match="already sent"):
            await server.verify_client_post_handshake()
        await server.send_all(b"x")


# ----------------------------------------------------------------- failure


async def test_client_without_certificate_breaks_both_ends() -> None:
    """A client with PHA on but no certificate answers with an empty Certificate.

    Server: OpenSSL rejects it (``CERT_REQUIRED``), the call raises
    ``BrokenResourceError`` whose ``__cause__`` is the ``ssl.SSLError``
    (``PEER_DID_NOT_RETURN_A_CERTIFICATE``), and the stream is broken. Client:
    its ``receive_some`` raises ``BrokenResourceError`` with an
    ``ssl.SSLError`` cause: the server's ``certificate_required`` alert if it
    got through, an unexpected-EOF error if the server closed first.
    """
    contexts = PHAContexts(client_cert=False)
    client, server = await connected(contexts)
    client_errors: list[BaseException] = []

    async def client_reader() -> None:
        try:
            await receive_until_eof(client)
        except trio.BrokenResourceError as exc:
            client_errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_reader)
        with pytest.raises(trio.BrokenResourceError) as server_error:
            await server.verify_client_post_handshake()
        assert isinstance(server_error.value.__cause__, ssl.SSLError)
        assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(server_error.value.__cause__)
        assert server.statistics().state is StreamState.BROKEN
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()
        await server.aclose()
    assert len(client_errors) == 1
    assert isinstance(client_errors[0].__cause__, ssl.SSLError)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tls12", r"needs TLS 1\.3"),
        ("client-without-pha", "EXTENSION_NOT_RECEIVED"),
        ("server-without-pha", "already sent"),
        ("client-side", "only the server"),
    ],
)
async def test_refused_without_sending_anything(case: str, message: str) -> None:
    """``PostHandshakeAuthError``: nothing is sent and the stream stays usable.

    ``server-without-pha``: without ``post_handshake_auth`` the server asks
    for the certificate during the handshake already.
    """
    contexts = PHAContexts(
        maximum_version=ssl.TLSVersion.TLSv1_2 if case == "tls12" else None,
        client_pha=case != "client-without-pha",
        server_pha=case != "server-without-pha",
    )
    client, server = await connected(contexts)
    asker = client if case == "client-side" else server
    before = asker.statistics()
    with pytest.raises(PostHandshakeAuthError, match=message) as refused:
        await asker.verify_client_post_handshake()
    if case == "client-without-pha":
        assert isinstance(refused.value.__cause__, ssl.SSLError)
    after = asker.statistics()
    assert after.ciphertext_bytes_sent == before.ciphertext_bytes_sent
    # (A TLS 1.3 server's session tickets may still wait in the queue.)
    assert after.outgoing_ciphertext_bytes == before.outgoing_ciphertext_bytes
    await assert_usable(client, server)


# ------------------------------------------------------- openssl s_client


@asynccontextmanager
async def s_client_for(
    contexts: PHAContexts, tmp_path: Path, *, with_cert: bool = True
) -> AsyncIterator[tuple[TLSStream, OpenSSLTool]]:
    """Our server stream, connected to ``openssl s_client -enable_pha``.

    ``-quiet`` makes s_client's stdout exactly the data it received (and
    turns its stdin commands off, so any byte may be sent).
    """
    paths = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}
    contexts.base.ca.cert_pem.write_to_path(paths["ca"])
    contexts.client_cert.cert_chain_pems[0].write_to_path(paths["cert"])
    contexts.client_cert.private_key_pem.write_to_path(paths["key"])
    args = ["-quiet", "-CAfile", paths["ca"], "-verify_hostname", HOSTNAME]
    args += ["-verify_return_error", "-tls1_3", "-enable_pha"]
    if with_cert:
        args += ["-cert", paths["cert"], "-key", paths["key"]]
    async with server_stream_for_s_client(contexts.server, *args) as (server, tool):
        yield server, tool


@needs_openssl
async def test_openssl_s_client_sends_its_certificate(tmp_path: Path) -> None:
    contexts = PHAContexts()
    async with s_client_for(contexts, tmp_path) as (server, tool):
        assert server.getpeercert() is None
        assert tool.process.stdin is not None
        payload = bytes(range(256)) * 16
        # In flight while the server asks for the certificate.
        await tool.process.stdin.send_all(payload)
        await server.verify_client_post_handshake()
        assert_client_certificate(server, contexts)
        assert await receive_exactly(server, len(payload)) == payload
        await server.send_all(b"authenticated\n")
        await server.send_eof()
        assert await receive_until_eof(server) == b""
        assert await tool.wait() == 0
        await server.aclose()
    assert tool.stdout == b"authenticated\n"


@needs_openssl
async def test_openssl_s_client_without_certificate(tmp_path: Path) -> None:
    contexts = PHAContexts()
    async with s_client_for(contexts, tmp_path, with_cert=False) as (server, tool):
        with pytest.raises(trio.BrokenResourceError) as error:
            await server.verify_client_post_handshake()
        assert isinstance(error.value.__cause__, ssl.SSLError)
        await server.aclose()
        assert await tool.wait() != 0


# ------------------------------------ other libraries (docs/beyond.rst table)


def test_trio_ssl_stream_has_no_post_handshake_auth() -> None:
    contexts = PHAContexts()
    left, _right = trio.testing.memory_stream_pair()
    stream = trio.SSLStream(left, contexts.server, server_side=True)
    assert not hasattr(stream, "verify_client_post_handshake")


def test_anyio_tls_stream_has_no_post_handshake_auth() -> None:
    tls = pytest.importorskip("anyio.streams.tls")
    assert not hasattr(tls.TLSStream, "verify_client_post_handshake")
    # Only the raw ssl.SSLObject is reachable, as an extra attribute.
    assert hasattr(tls.TLSAttribute, "ssl_object")
