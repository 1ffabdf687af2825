"""One server, many concurrent TLS clients over real loopback TCP."""

from __future__ import annotations

import functools
import hashlib
import resource
import time

import pytest
import trio

from trio_tlsretry import TLSStream
from trio_tlsretry._tcp import open_tls_over_tcp_stream, serve_tls_over_tcp
from trio_tlsretry.testing import make_tls_contexts

HOST = "127.0.0.1"
CLIENTS = 500
#: Both ends of every connection live in this process, plus some slack.
FDS_NEEDED = 2 * CLIENTS + 200


@pytest.fixture
def enough_fds() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FDS_NEEDED:
        if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
            pytest.skip(f"needs {FDS_NEEDED} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (FDS_NEEDED, hard))


def payload_for(index: int) -> bytes:
    """A distinct payload per client (1-8 KiB), so mixed-up streams would show."""
    return hashlib.shake_256(index.to_bytes(4, "big")).digest(1024 + (index * 37) % 7168)


async def test_500_concurrent_clients(enough_fds: None) -> None:
    contexts = make_tls_contexts(HOST)
    connected = 0
    all_connected = trio.Event()
    peak_open = 0
    open_now = 0
    echoed: dict[int, bool] = {}

    async def echo(stream: TLSStream) -> None:
        nonlocal open_now, peak_open
        open_now += 1
        peak_open = max(peak_open, open_now)
        try:
            async with stream:
                while True:
                    data = await stream.receive_some()
                    if not data:
                        break
                    await stream.send_all(data)
        finally:
            open_now -= 1

    async def client(index: int, port: int) -> None:
        nonlocal connected
        stream = await open_tls_over_tcp_stream(HOST, port, ssl_context=contexts.client)
        async with stream:
            await stream.do_handshake()
            connected += 1
            if connected == CLIENTS:
                all_connected.set()
            # Every client holds its connection open until all have
            # handshaken, so all CLIENTS connections are live at once.
            await all_connected.wait()
            payload = payload_for(index)
            await stream.send_all(payload)
            await stream.send_eof()
            got = bytearray()
            while True:
                data = await stream.receive_some()
                if not data:
                    break
                got.extend(data)
            echoed[index] = bytes(got) == payload

    started = time.monotonic()
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_tls_over_tcp, host=HOST)
            listeners = await nursery.start(serve, echo, 0, contexts.server)
            port = listeners[0].transport_listener.socket.getsockname()[1]
            async with trio.open_nursery() as clients:
                for index in range(CLIENTS):
                    clients.start_soon(client, index, port)
            nursery.cancel_scope.cancel()
    elapsed = time.monotonic() - started
    print(f"\n{CLIENTS} concurrent TLS clients (handshake + echo) in {elapsed:.2f} s")

    assert len(echoed) == CLIENTS
    assert all(echoed.values()), sorted(i for i, ok in echoed.items() if not ok)[:10]
    assert peak_open == CLIENTS
