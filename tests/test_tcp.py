"""The TLS-over-TCP helpers of ``trio_tlsretry/_tcp.py``: open_tls_over_tcp_stream
and serve_tls_over_tcp, over real loopback sockets. (Over the fake network:
``test_tcp_fakenet.py``.)

The handshake-timeout tests run real loopback sockets under
``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``): the
clock only jumps when every task is blocked, and on Linux loopback a
``send()`` has queued its bytes at the receiver before it returns, so a
waiting reader is runnable before the clock can move. The only deadlines in
those tests are the server's handshake timeouts and the dribbling client's
one-second ticks, so even a spurious jump could only advance the clock to the
next tick, never past the timeout of a client that is being served.
Assertions on the virtual clock are lower bounds (a timeout cannot fire
early) or generous upper bounds.
"""

from __future__ import annotations

import functools
import socket
import ssl
from typing import Any

import pytest
import trio
import trio.testing
from streamtools import contexts_for, leaves, port_of

from trio_tlsretry import TLSStream
from trio_tlsretry._listener import TLSListener, handshake_or_drop
from trio_tlsretry._tcp import (
    open_tls_over_tcp_listeners,
    open_tls_over_tcp_stream,
    serve_tls_over_tcp,
)
from trio_tlsretry.testing import TLSContexts, make_tls_contexts

HOST = "127.0.0.1"


TIMEOUT = 10.0


@pytest.fixture
def contexts() -> TLSContexts:
    return contexts_for(hostname=HOST)


def client_hello() -> bytes:
    """The first flight of a real TLS client, for clients that never finish."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def wait_dropped(stream: trio.SocketStream) -> None:
    """Read until the server closes (FIN or RST) the raw TCP connection."""
    while True:
        try:
            data = await stream.receive_some()
        except trio.BrokenResourceError:
            return
        if not data:
            return


async def echo_once(stream: TLSStream) -> None:
    async with stream:
        data = await stream.receive_some()
        await stream.send_all(data)


# ---------------------------------------------- open_tls_over_tcp_stream


async def test_open_stream_default_context_verifies(contexts: TLSContexts) -> None:
    (listener,) = await open_tls_over_tcp_listeners(0, contexts.server, host=HOST)

    async def accept_one() -> None:
        stream = await listener.accept()
        assert not await handshake_or_drop(stream, 30.0)

    async with listener, trio.open_nursery() as nursery:
        nursery.start_soon(accept_one)
        # No ssl_context: the system's CAs, which do not include the test CA.
        client = await open_tls_over_tcp_stream(HOST, port_of([listener]))
        assert client.context.check_hostname
        assert client.context.verify_mode is ssl.CERT_REQUIRED
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.do_handshake()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        await client.aclose()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", b"127.0.0.1", "::1"])
async def test_open_stream_by_name_or_address(host: str | bytes) -> None:
    # A name goes through trio.open_tcp_stream (resolution, happy eyeballs);
    # an address is connected to directly. Both verify the certificate
    # against what was asked for.
    name = host.decode() if isinstance(host, bytes) else host
    if name == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    contexts = make_tls_contexts(name)
    bind = "::1" if name == "::1" else HOST
    try:
        (listener,) = await open_tls_over_tcp_listeners(0, contexts.server, host=bind)
    except OSError:
        pytest.skip(f"cannot listen on {bind}")
    async with listener, trio.open_nursery() as nursery:

        async def echo_one() -> None:
            async with await listener.accept() as server:
                await server.send_all(await server.receive_some())

        nursery.start_soon(echo_one)
        async with await open_tls_over_tcp_stream(
            host, port_of([listener]), ssl_context=contexts.client
        ) as client:
            assert client.server_hostname == name
            await client.send_all(b"ping")
            assert await client.receive_some() == b"ping"
            assert client.transport_stream.socket.getpeername()[0] in ("127.0.0.1", "::1")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("host", "resolved"), [(HOST, False), ("localhost", True)])
async def test_open_stream_resolves_names_only(
    host: str, resolved: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An IP address is connected to directly; only a name goes through
    # trio.open_tcp_stream (resolution and happy eyeballs).
    calls: list[object] = []
    real_open_tcp_stream = trio.open_tcp_stream

    async def spy(*args: Any, **kwargs: Any) -> trio.SocketStream:
        calls.append(args[0])
        return await real_open_tcp_stream(*args, **kwargs)

    monkeypatch.setattr(trio, "open_tcp_stream", spy)
    tcp = (await trio.open_tcp_listeners(0, host=HOST))[0]
    async with tcp:
        stream = await open_tls_over_tcp_stream(host, tcp.socket.getsockname()[1])
        await trio.aclose_forcefully(stream)
    assert calls == ([host] if resolved else [])


@pytest.mark.parametrize("host", [HOST, "localhost"])
async def test_open_stream_refused(host: str) -> None:
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(OSError):
        await open_tls_over_tcp_stream(host, port)


# ---------------------------------------------------- serve_tls_over_tcp


async def test_serve_returns_listeners_and_serves(contexts: TLSContexts) -> None:
    versions: list[str | None] = []

    async def handler(stream: TLSStream) -> None:
        # The handshake is done before the handler runs.
        versions.append(stream.version())
        await echo_once(stream)

    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_tls_over_tcp, host=HOST)
        listeners = await nursery.start(serve, handler, 0, contexts.server)
        assert all(isinstance(listener, TLSListener) for listener in listeners)
        port = port_of(listeners)
        for _ in range(3):
            client = await open_tls_over_tcp_stream(HOST, port, ssl_context=contexts.client)
            async with client:
                await client.send_all(b"ping")
                assert await client.receive_some() == b"ping"
                assert await client.receive_some() == b""
        nursery.cancel_scope.cancel()
    assert versions == ["TLSv1.3"] * 3
    # serve_tls_over_tcp closed its listeners on the way out.
    with pytest.raises(OSError):
        await trio.open_tcp_stream(HOST, port)


async def test_slow_clients_dropped_without_delaying_others(
    contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    handled = 0
    dropped_after: dict[str, float] = {}
    hello = client_hello()

    async def handler(stream: TLSStream) -> None:
        nonlocal handled
        handled += 1
        await echo_once(stream)

    async def slow_client(name: str, port: int, dribble: bool) -> None:
        start = trio.current_time()
        tcp = await trio.open_tcp_stream(HOST, port)
        async with tcp, trio.open_nursery() as nursery:
            if dribble:

                async def send_one_byte_a_second() -> None:
                    for i in range(len(hello)):
                        try:
                            await tcp.send_all(hello[i : i + 1])
                        except trio.BrokenResourceError:
                            return
                        await trio.sleep(1)

                nursery.start_soon(send_one_byte_a_second)
            await wait_dropped(tcp)
            dropped_after[name] = trio.current_time() - start
            nursery.cancel_scope.cancel()

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_tls_over_tcp, host=HOST, handshake_timeout=TIMEOUT)
            listeners = await nursery.start(serve, handler, 0, contexts.server)
            port = port_of(listeners)
            async with trio.open_nursery() as clients:
                clients.start_soon(slow_client, "silent", port, False)
                clients.start_soon(slow_client, "dribbler", port, True)
                await trio.testing.wait_all_tasks_blocked()
                # A well-behaved client is served while both slow ones are
                # still hanging in their handshakes.
                start = trio.current_time()
                client = await open_tls_over_tcp_stream(HOST, port, ssl_context=contexts.client)
                async with client:
                    await client.send_all(b"ping")
                    assert await client.receive_some() == b"ping"
                assert trio.current_time() - start < TIMEOUT / 2
                assert dropped_after == {}
            nursery.cancel_scope.cancel()

    assert handled == 1
    assert set(dropped_after) == {"silent", "dribbler"}
    for elapsed in dropped_after.values():
        assert TIMEOUT <= elapsed < TIMEOUT + 2


async def test_failed_handshakes_never_reach_handler(contexts: TLSContexts) -> None:
    handled = 0
    untrusting = ssl.create_default_context()  # does not trust the test CA

    async def handler(stream: TLSStream) -> None:
        nonlocal handled
        handled += 1
        await echo_once(stream)

    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_tls_over_tcp, host=HOST)
        listeners = await nursery.start(serve, handler, 0, contexts.server)
        port = port_of(listeners)

        # 1. A client that rejects the server's certificate.
        bad = await open_tls_over_tcp_stream(HOST, port, ssl_context=untrusting)
        with pytest.raises(trio.BrokenResourceError) as info:
            await bad.do_handshake()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        await bad.aclose()

        # 2. Plain text instead of TLS.
        plain = await trio.open_tcp_stream(HOST, port)
        async with plain:
            await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
            await wait_dropped(plain)

        # 3. A client that hangs up half-way through its ClientHello.
        quitter = await trio.open_tcp_stream(HOST, port)
        async with quitter:
            await quitter.send_all(client_hello()[:20])

        # 4. A client offering only TLS 1.2 to a TLS 1.3-only server.
        old = ssl.create_default_context()
        contexts.ca.configure_trust(old)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        strict = make_tls_contexts(HOST)
        strict.server.minimum_version = ssl.TLSVersion.TLSv1_3
        serve_strict = functools.partial(serve_tls_over_tcp, host=HOST)
        strict_listeners = await nursery.start(serve_strict, handler, 0, strict.server)
        strict.ca.configure_trust(old)
        mismatch = await open_tls_over_tcp_stream(HOST, port_of(strict_listeners), ssl_context=old)
        with pytest.raises(trio.BrokenResourceError):
            await mismatch.do_handshake()
        await mismatch.aclose()

        # The server is still up and serving.
        good = await open_tls_over_tcp_stream(HOST, port, ssl_context=contexts.client)
        async with good:
            await good.send_all(b"still here")
            assert await good.receive_some() == b"still here"
        nursery.cancel_scope.cancel()
    assert handled == 1


async def test_handler_exception_propagates(contexts: TLSContexts) -> None:
    async def handler(stream: TLSStream) -> None:
        raise RuntimeError("handler bug")

    with pytest.raises(BaseException) as info:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_tls_over_tcp, host=HOST)
            listeners = await nursery.start(serve, handler, 0, contexts.server)
            client = await open_tls_over_tcp_stream(
                HOST, port_of(listeners), ssl_context=contexts.client
            )
            async with client:
                await client.do_handshake()
                await trio.sleep_forever()
    assert [type(exc) for exc in leaves(info.value)] == [RuntimeError]
