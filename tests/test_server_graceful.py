"""GracefulStop, closing after the handler, and certificate renewal, over the fake network.

Deterministic: ``FakeTCPNetwork`` under ``MockClock(autojump_threshold=0)``.
The same behaviour through the command line, over real loopback, is tested
in test_server_cli.py.
"""

from __future__ import annotations

import functools
import math
import ssl
from typing import Any

import pytest
import trio
import trio.testing

import trio_tlsretry
from trio_tlsretry import GracefulStop, TLSListener, TLSStream
from trio_tlsretry.testing import FakeTCPNetwork, TLSContexts, make_tls_contexts

HOSTNAME = "example.org"
ADDRESS = "192.0.2.10"

Stream = TLSStream[trio.SocketStream]
Listeners = list[TLSListener[trio.SocketStream]]


@pytest.fixture
def contexts() -> TLSContexts:
    return make_tls_contexts(HOSTNAME)


@pytest.fixture
def network(fake_tcp_network: FakeTCPNetwork) -> FakeTCPNetwork:
    fake_tcp_network.add_host(HOSTNAME, ADDRESS)
    return fake_tcp_network


async def echo(stream: Stream) -> None:
    """Echo until the client's EOF; leave the closing to the server."""
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def connect(contexts: TLSContexts) -> Stream:
    stream = await trio_tlsretry.open_tls_over_tcp_stream(
        HOSTNAME, 443, ssl_context=contexts.client
    )
    await stream.do_handshake()
    return stream


async def echo_once(stream: Stream, message: bytes) -> None:
    await stream.send_all(message)
    got = bytearray()
    while len(got) < len(message):
        got += await stream.receive_some()
    assert got == message


async def start(
    nursery: trio.Nursery, contexts: TLSContexts, stop: GracefulStop | None, **kwargs: Any
) -> Listeners:
    serve = functools.partial(
        trio_tlsretry.serve_tls_over_tcp, graceful_stop=stop, host=ADDRESS, **kwargs
    )
    listeners: Listeners = await nursery.start(serve, echo, 443, contexts.server)
    return listeners


# ----------------------------------------------------------- graceful stop


async def test_stop_refuses_new_connections_and_lets_open_ones_finish(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    stop = GracefulStop()
    returned_at: list[float] = []

    async def server() -> None:
        await trio_tlsretry.serve_tls_over_tcp(
            echo, 443, contexts.server, host=ADDRESS, graceful_stop=stop
        )
        returned_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        client = await connect(contexts)
        await echo_once(client, b"before")
        assert stop.open_connections == 1 and stop.accepting
        stop.stop(grace=60)
        assert stop.stop_requested and stop.deadline == pytest.approx(trio.current_time() + 60)
        await stop.wait_accepting_stopped()
        assert not stop.accepting
        with pytest.raises(ConnectionRefusedError):
            await trio_tlsretry.open_tls_over_tcp_stream(ADDRESS, 443)
        # The open connection carries on, 10 s into the grace period.
        await trio.sleep(10)
        await echo_once(client, b"after" * 10000)
        await client.send_eof()  # done: the handler returns, the server closes
        assert await client.receive_some() == b""  # close_notify: a clean end
        await client.aclose()
    # serve_tls_over_tcp returned as soon as the last connection ended.
    assert returned_at == [pytest.approx(10)]
    assert stop.open_connections == 0


async def test_connections_still_open_at_the_end_of_the_grace_period_are_closed_cleanly(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    stop = GracefulStop()
    async with trio.open_nursery() as nursery:
        await start(nursery, contexts, stop)
        idle = await connect(contexts)
        await echo_once(idle, b"hello")
        started = trio.current_time()
        stop.stop(grace=5)
        # The handler, waiting for data, is cancelled at 5 s; the server then
        # closes its stream with close_notify.
        assert await idle.receive_some() == b""
        assert trio.current_time() - started == pytest.approx(5)
        await idle.aclose()
    assert network.connections[0].server_closed


async def test_a_second_stop_shortens_the_grace_period_never_lengthens_it(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    stop = GracefulStop()
    async with trio.open_nursery() as nursery:
        await start(nursery, contexts, stop)
        client = await connect(contexts)
        await echo_once(client, b"hello")
        started = trio.current_time()
        stop.stop(grace=30)
        stop.stop(grace=100)  # longer: ignored
        assert stop.deadline == pytest.approx(started + 30)
        await trio.sleep(1)
        stop.stop(grace=0)  # "now"
        assert await client.receive_some() == b""
        assert trio.current_time() - started == pytest.approx(1)
        await client.aclose()


async def test_a_handshake_in_progress_gets_the_grace_period_too(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    network.latency = 1.0  # a handshake takes a few seconds
    stop = GracefulStop()
    handled: list[float] = []

    async def handler(stream: Stream) -> None:
        handled.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(trio_tlsretry.serve_tls_over_tcp, host=ADDRESS, graceful_stop=stop),
            handler,
            443,
            contexts.server,
        )
        tcp = await trio.open_tcp_stream(HOSTNAME, 443)
        client = TLSStream(tcp, contexts.client, server_hostname=HOSTNAME)
        stop.stop(grace=60)  # after the connection, before its handshake
        await client.do_handshake()
        # Served (the handler returns at once: the stream is closed).
        assert await client.receive_some() == b""
        await client.aclose()
    assert len(handled) == 1


async def test_stop_before_the_server_starts_stops_it_at_once(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    stop = GracefulStop()
    stop.stop()
    async with trio.open_nursery() as nursery:
        listeners = await start(nursery, contexts, stop)
        assert len(listeners) == 1
    # Returned by itself; nothing listens any more.
    with pytest.raises(OSError, match="failed"):
        await trio.open_tcp_stream(HOSTNAME, 443)
    await stop.wait_accepting_stopped()


async def test_with_a_handler_nursery_of_your_own(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    stop = GracefulStop()
    async with trio.open_nursery() as handlers:
        async with trio.open_nursery() as nursery:
            await start(nursery, contexts, stop, handler_nursery=handlers)
            client = await connect(contexts)
            await echo_once(client, b"hello")
            started = trio.current_time()
            stop.stop(grace=7)
        # serve_tls_over_tcp returned once the listener closed ...
        assert trio.current_time() == pytest.approx(started)
        # ... and the handler, in our nursery, is cancelled at the deadline.
        assert await client.receive_some() == b""
        assert trio.current_time() - started == pytest.approx(7)
        await client.aclose()


async def test_an_outer_cancellation_still_ends_everything_at_once(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    stop = GracefulStop()
    async with trio.open_nursery() as nursery:
        await start(nursery, contexts, stop)
        client = await connect(contexts)
        await echo_once(client, b"hello")
        stop.stop(grace=100)
        nursery.cancel_scope.cancel()
    # The handler was cancelled; the server still said goodbye.
    assert await client.receive_some() == b""
    assert trio.current_time() < 1
    await client.aclose()


async def test_the_stream_is_closed_with_close_notify_when_the_handler_returns(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    async def greet(stream: Stream) -> None:
        await stream.send_all(b"hi")  # and return without closing

    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(trio_tlsretry.serve_tls_over_tcp, host=ADDRESS),
            greet,
            443,
            contexts.server,
        )
        client = await connect(contexts)
        assert await client.receive_some() == b"hi"
        assert await client.receive_some() == b""  # close_notify, not a dropped connection
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_a_client_that_does_not_read_cannot_hold_the_close_up(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    network.send_buffer = 4096
    stop = GracefulStop(close_timeout=3)

    async def flood(stream: Stream) -> None:
        while True:
            await stream.send_all(b"x" * 65536)

    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(trio_tlsretry.serve_tls_over_tcp, host=ADDRESS, graceful_stop=stop),
            flood,
            443,
            contexts.server,
        )
        client = await connect(contexts)
        await client.receive_some(1)  # the handler runs; the client then reads no more
        started = trio.current_time()
        stop.stop(grace=2)
        await stop.wait_accepting_stopped()
    # grace, then at most close_timeout for the pinned rest and close_notify.
    assert trio.current_time() - started == pytest.approx(2 + 3)
    await trio.aclose_forcefully(client)


@pytest.mark.parametrize(
    ("grace", "error"),
    [(-1, ValueError), (math.nan, ValueError), ("5", TypeError), (None, TypeError)],
)
async def test_bad_grace_is_refused(grace: Any, error: type[Exception]) -> None:
    stop = GracefulStop()
    with pytest.raises(error, match="grace"):
        stop.stop(grace)
    assert not stop.stop_requested


def test_bad_close_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="close_timeout"):
        GracefulStop(close_timeout=-1)
    assert GracefulStop(close_timeout=0).close_timeout == 0


def test_stop_outside_trio_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        GracefulStop().stop(1)


async def test_wait_stop_requested(autojump_clock: trio.testing.MockClock) -> None:
    stop = GracefulStop()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop.wait_stop_requested)
        await trio.sleep(3)
        stop.stop(0)
    assert trio.current_time() == pytest.approx(3)


# --------------------------------------------------------- certificate renewal


async def test_a_new_context_is_used_by_new_handshakes_only(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    renewed = make_tls_contexts(HOSTNAME)  # another CA: tell the certificates apart
    async with trio.open_nursery() as nursery:
        (listener,) = await start(nursery, contexts, None)
        old_client = await connect(contexts)
        old_cert = old_client.getpeercert(binary_form=True)
        listener.ssl_context = renewed.server
        assert listener.ssl_context is renewed.server
        new_client = await connect(renewed)
        assert new_client.getpeercert(binary_form=True) != old_cert
        # The renewed CA is the only one new_client trusts: it verified.
        # Old and new connections both keep working.
        await echo_once(old_client, b"old")
        await echo_once(new_client, b"new")
        # A client that trusts only the old CA now fails to verify.
        with pytest.raises(trio.BrokenResourceError) as info:
            await connect(contexts)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        await old_client.aclose()
        await new_client.aclose()
        nursery.cancel_scope.cancel()


async def test_an_accepted_stream_keeps_the_context_it_was_accepted_with(
    network: FakeTCPNetwork, contexts: TLSContexts, autojump_clock: trio.testing.MockClock
) -> None:
    """A stream accepted before the swap, its lazy handshake after it: the old certificate."""
    renewed = make_tls_contexts(HOSTNAME)
    (listener,) = await trio_tlsretry.open_tls_over_tcp_listeners(
        443, contexts.server, host=ADDRESS
    )
    async with listener:
        tcp = await trio.open_tcp_stream(HOSTNAME, 443)
        accepted = await listener.accept()
        listener.ssl_context = renewed.server
        client = TLSStream(tcp, contexts.client, server_hostname=HOSTNAME)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accepted.do_handshake)
            await client.do_handshake()  # verified against the old CA
        await client.aclose()
        await accepted.aclose()


async def test_assigning_a_context_that_cannot_serve_keeps_the_old_one(
    contexts: TLSContexts,
) -> None:
    listener = TLSListener(trio.testing.memory_stream_pair()[0], contexts.server)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="server-side"):
        listener.ssl_context = contexts.client
    with pytest.raises(TypeError, match="SSLContext"):
        listener.ssl_context = "cert.pem"  # type: ignore[assignment]
    assert listener.ssl_context is contexts.server


async def test_per_host_certificates_through_sni_callback(
    network: FakeTCPNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    """The context's ``sni_callback`` picks a certificate per host name, with TLSStream."""
    network.add_host("other.example", "192.0.2.20")
    first = make_tls_contexts(HOSTNAME)
    second = make_tls_contexts("other.example")
    by_name = {HOSTNAME: first.server, "other.example": second.server}
    seen: list[str | None] = []

    def pick(ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
        seen.append(server_name)
        if server_name in by_name:
            ssl_object.context = by_name[server_name]

    first.server.sni_callback = pick
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(trio_tlsretry.serve_tls_over_tcp, host=None),
            echo,
            443,
            first.server,
        )
        for name, client_context in [(HOSTNAME, first.client), ("other.example", second.client)]:
            stream = await trio_tlsretry.open_tls_over_tcp_stream(
                name, 443, ssl_context=client_context
            )
            await stream.do_handshake()  # each verifies against its own CA
            subject = dict(item for rdn in stream.getpeercert()["subjectAltName"] for item in [rdn])
            assert subject["DNS"] == name
            await echo_once(stream, name.encode())
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert seen == [HOSTNAME, "other.example"]
