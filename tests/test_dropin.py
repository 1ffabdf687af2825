"""TLSStream behaves like trio.SSLStream where ordinary code can tell.

Each test runs the same code over ``trio.SSLStream`` (the installed trio, as
the reference) and over ``TLSStream``, and requires the same observable
result; a test that only holds for one of them says why. The behaviours are
the ones listed in docs/migrating.rst as "the same".
"""

from __future__ import annotations

import ssl
import typing
from typing import Any

import pytest
import trio
import trio.testing
from streamtools import handshake

from trio_tlsretry import TLSListener, TLSStream, encode_server_hostname
from trio_tlsretry.testing import TLSContexts

HOSTNAME = "example.org"

#: The reference and the replacement, constructed the same way.
IMPLEMENTATIONS = [
    pytest.param(trio.SSLStream, id="trio.SSLStream"),
    pytest.param(TLSStream, id="TLSStream"),
]
Impl = Any


@pytest.fixture(scope="module")
def contexts() -> TLSContexts:
    return TLSContexts(HOSTNAME)


class ProbeTransport(trio.abc.Stream):
    """A memory transport that counts what is sent and can fail its reads."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.bytes_sent = 0
        self.receive_error: BaseException | None = None
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.bytes_sent += len(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.receive_error is not None:
            await trio.lowlevel.checkpoint()
            raise self.receive_error
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


def streams(
    impl: Impl,
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    *,
    hostname: str = HOSTNAME,
    https_compatible: bool = False,
) -> tuple[Any, Any, ProbeTransport, ProbeTransport]:
    """``(client, server, client_transport, server_transport)`` over memory."""
    left, right = trio.testing.memory_stream_pair()
    client_transport, server_transport = ProbeTransport(left), ProbeTransport(right)
    client = impl(
        client_transport,
        client_context,
        server_hostname=hostname,
        https_compatible=https_compatible,
    )
    server = impl(
        server_transport, server_context, server_side=True, https_compatible=https_compatible
    )
    return client, server, client_transport, server_transport


def client_hello() -> bytes:
    """The bytes of a real ClientHello, from a bare SSLObject."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    client = context.wrap_bio(incoming, outgoing, server_hostname=HOSTNAME)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


# ------------------------------------------------------------- attributes


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_context_can_be_replaced_before_the_handshake(
    impl: Impl, contexts: TLSContexts
) -> None:
    # Forwarded to the SSLObject: a server picks the certificate to present.
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    contexts.ca.issue_cert("other.example").configure_cert(other)
    client, server, _, _ = streams(impl, contexts.client, contexts.server, hostname="other.example")
    server.context = other
    assert server.context is other
    await handshake(client, server)
    # Verified against "other.example": the replacement's certificate.
    assert ("DNS", "other.example") in client.getpeercert()["subjectAltName"]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_unwrap_hands_the_transport_back_and_forgets_it(
    impl: Impl, contexts: TLSContexts
) -> None:
    client, server, client_transport, _ = streams(impl, contexts.client, contexts.server)
    await handshake(client, server)
    results: dict[str, trio.abc.Stream] = {}

    async def unwrap(name: str, stream: Any) -> None:
        results[name], _ = await stream.unwrap()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(unwrap, "client", client)
        nursery.start_soon(unwrap, "server", server)
    assert results["client"] is client_transport
    assert client.transport_stream is None


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_generic_in_the_transport_type(impl: Impl) -> None:
    alias = impl[trio.SocketStream]
    assert typing.get_origin(alias) is impl
    assert typing.get_args(alias) == (trio.SocketStream,)


@pytest.mark.parametrize("listener", [trio.SSLListener, TLSListener])
def test_listener_generic_in_the_transport_type(listener: Any) -> None:
    alias = listener[trio.SocketStream]
    assert typing.get_origin(alias) is listener
    assert typing.get_args(alias) == (trio.SocketStream,)


# --------------------------------------------------------- server_hostname


def test_server_hostname_is_encoded_with_idna_2008(contexts: TLSContexts) -> None:
    # Python's own codec (IDNA 2003) maps "faß.de" to "fass.de", another domain.
    assert "faß.de".encode("idna") == b"fass.de"
    assert encode_server_hostname("faß.de") == "xn--fa-hia.de"
    stream = TLSStream(
        trio.testing.memory_stream_pair()[0], contexts.client, server_hostname="faß.de"
    )
    assert stream.server_hostname == "xn--fa-hia.de"
    assert encode_server_hostname("Example.ORG") == "Example.ORG"  # ASCII as given
    assert encode_server_hostname(b"xn--fa-hia.de") == "xn--fa-hia.de"


def test_server_hostname_matches_trios_own_encoding(contexts: TLSContexts) -> None:
    encode_hostname = getattr(trio.lowlevel, "encode_hostname", None)
    if encode_hostname is None:
        pytest.skip("this trio does not encode server_hostname itself")
    for name in ["faß.de", "bücher.example", "ÉCOLE.example", "example.org", "127.0.0.1"]:
        ours = TLSStream(
            trio.testing.memory_stream_pair()[0], contexts.client, server_hostname=name
        )
        theirs = trio.SSLStream(
            trio.testing.memory_stream_pair()[0], contexts.client, server_hostname=name
        )
        assert ours.server_hostname == theirs.server_hostname == encode_hostname(name).decode()


def test_invalid_server_hostname_is_a_value_error(contexts: TLSContexts) -> None:
    with pytest.raises(ValueError, match="server_hostname"):
        TLSStream(
            trio.testing.memory_stream_pair()[0], contexts.client, server_hostname="a\u200db.de"
        )


@pytest.mark.parametrize(
    ("certificate_for", "accepted"), [("xn--fa-hia.de", True), ("fass.de", False)]
)
async def test_the_certificate_is_checked_against_the_idna_2008_name(
    certificate_for: str, accepted: bool
) -> None:
    contexts = TLSContexts(certificate_for)
    sni: list[str | None] = []
    contexts.server.sni_callback = lambda obj, name, ctx: sni.append(name)  # type: ignore[assignment]
    client, server, _, _ = streams(TLSStream, contexts.client, contexts.server, hostname="faß.de")
    outcome: dict[str, BaseException] = {}

    async def run(name: str, stream: TLSStream) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            outcome[name] = exc
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "client", client)
        nursery.start_soon(run, "server", server)
    assert sni == ["xn--fa-hia.de"]
    if accepted:
        assert not outcome
    else:
        assert isinstance(outcome["client"].__cause__, ssl.SSLCertVerificationError)


# ----------------------------------------------------------------- aclose


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_aclose_before_the_handshake_closes_cleanly(
    impl: Impl, contexts: TLSContexts
) -> None:
    client, server, client_transport, _ = streams(impl, contexts.client, contexts.server)
    seen: list[bytes] = []

    async def peer() -> None:
        seen.append(await server.receive_some())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            await client.aclose()
    # close_notify after a completed handshake, not a dropped connection.
    assert seen == [b""]
    assert client_transport.closed


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_aclose_reports_a_failed_handshake(impl: Impl, contexts: TLSContexts) -> None:
    stranger = TLSContexts(HOSTNAME)  # a CA the client does not trust
    client, server, client_transport, _ = streams(impl, contexts.client, stranger.server)

    async def peer() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            with pytest.raises(trio.BrokenResourceError) as info:
                await client.aclose()
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert client_transport.closed
    await client.aclose()  # closed now: a no-op


# ------------------------------------------------- https_compatible EOFs


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("sent_first", [b"", b"hello"], ids=["before", "during"])
async def test_https_compatible_eof_in_the_handshake_is_an_eof(
    impl: Impl, contexts: TLSContexts, sent_first: bytes
) -> None:
    # A port scanner or a load balancer's probe: connects, maybe starts a
    # handshake, and hangs up.
    _, server, client_transport, _ = streams(
        impl, contexts.client, contexts.server, https_compatible=True
    )
    if sent_first:
        hello = client_hello()
        await client_transport.send_all(hello[: len(hello) // 2])
    await client_transport.aclose()
    with trio.fail_after(10):
        assert await server.receive_some() == b""


async def test_https_compatible_eof_in_the_handshake_stays_an_eof(contexts: TLSContexts) -> None:
    # Beyond trio.SSLStream, whose next receive_some raises
    # BrokenResourceError: an EOF is reported as often as it is asked for,
    # as trio.abc.ReceiveStream says; sending still fails.
    _, server, client_transport, _ = streams(
        TLSStream, contexts.client, contexts.server, https_compatible=True
    )
    await client_transport.aclose()
    assert await server.receive_some() == b""
    assert await server.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"late")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_eof_in_the_handshake_is_broken_without_https_compatible(
    impl: Impl, contexts: TLSContexts
) -> None:
    _, server, client_transport, _ = streams(impl, contexts.client, contexts.server)
    await client_transport.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()


# ----------------------------------------- a transport that raises oddly


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_a_transport_exception_in_the_handshake_propagates_once(
    impl: Impl, contexts: TLSContexts
) -> None:
    client, _, client_transport, _ = streams(impl, contexts.client, contexts.server)
    client_transport.receive_error = KeyError("custom transport bug")
    with pytest.raises(KeyError, match="custom transport bug"):
        await client.do_handshake()
    with pytest.raises(trio.BrokenResourceError):
        await client.do_handshake()
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()


# ------------------------------------------ wait_send_all_might_not_block


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_wait_send_all_might_not_block_does_not_start_the_handshake(
    impl: Impl, contexts: TLSContexts
) -> None:
    client, _, client_transport, _ = streams(impl, contexts.client, contexts.server)
    with trio.fail_after(10):
        await client.wait_send_all_might_not_block()
    assert client_transport.bytes_sent == 0


def test_every_public_name_of_trio_sslstream_exists(contexts: TLSContexts) -> None:
    # trio.SSLStream lists the SSLObject attributes it forwards in its dir().
    client, _, _, _ = streams(trio.SSLStream, contexts.client, contexts.server)
    ours, _, _, _ = streams(TLSStream, contexts.client, contexts.server)
    theirs = {name for name in dir(client) if not name.startswith("_")}
    assert "getpeercert" in theirs  # a forwarded name: the listing is the real one
    assert sorted(theirs - set(dir(ours))) == []
