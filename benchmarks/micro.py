"""The micro-measurements quoted in docs/performance.rst ("Small-message work").

Usage::

    python benchmarks/micro.py

Prints, for this machine, the CPU cost of the building blocks that the
small-message changes were about: ``os.read`` of a socket at several sizes
with 64 bytes waiting, raising and catching ``SSLWantReadError``, entering and
leaving a ``trio.CancelScope``, a Trio scheduler pass, and a 64-byte
``send_all`` of ``TLSStream`` against a bare ``write`` + ``os.write`` +
checkpoint (``os.write`` stubbed out, so only the Python and TLS work
counts). Each figure is the best of several repetitions, to keep other load
on a shared machine out of it; they are costs, not targets, and no test
depends on them.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import trio

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import make_tls_contexts

REPEAT = 7


def best_us(loop: Callable[[int], None], n: int) -> float:
    """Best of REPEAT runs of ``loop(n)``, in microseconds per iteration."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        loop(n)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


async def best_us_async(loop: Callable[[int], Awaitable[None]], n: int) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        await loop(n)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def socket_reads() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    message = b"x" * 64
    for size in (64, 64 * 1024, 256 * 1024):

        def loop(n: int, size: int = size) -> None:
            for _ in range(n):
                os.write(b.fileno(), message)
                os.read(a.fileno(), size)

        print(f"  os.read({size:>6})                      {best_us(loop, 20_000):6.2f} us")
    a.close()
    b.close()


def want_read() -> None:
    contexts = make_tls_contexts()
    ssl_object = contexts.client.wrap_bio(
        ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=contexts.hostname
    )

    def loop(n: int) -> None:
        for _ in range(n):
            try:
                ssl_object.read(16)
            except ssl.SSLWantReadError:
                pass

    print(f"SSLWantReadError raised and caught      {best_us(loop, 50_000):6.2f} us")


async def trio_costs() -> None:
    async def scopes(n: int) -> None:
        for _ in range(n):
            with trio.CancelScope():  # noqa: ASYNC100 - its cost is what we measure
                pass

    async def passes(n: int) -> None:
        for _ in range(n):
            await trio.lowlevel.cancel_shielded_checkpoint()

    print(f"trio.CancelScope enter + exit           {await best_us_async(scopes, 50_000):6.2f} us")
    print(f"Trio scheduler pass                     {await best_us_async(passes, 50_000):6.2f} us")


async def send_all_cost() -> None:
    contexts = make_tls_contexts()
    sock_a, sock_b = trio.socket.socketpair()
    client = TLSStream(
        trio.SocketStream(sock_a), contexts.client, server_hostname=contexts.hostname
    )
    server = TLSStream(trio.SocketStream(sock_b), contexts.server, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    message = b"w" * 64
    real_write = os.write
    os.write = lambda fd, data: len(data)  # type: ignore[assignment]
    try:

        async def ours(n: int) -> None:
            for _ in range(n):
                await client.send_all(message)

        async def minimal(n: int) -> None:
            # The same TLS work with nothing around it: the stream's own
            # SSLObject and outgoing BIO, used directly.
            engine = client._engine  # type: ignore[attr-defined]
            for _ in range(n):
                engine.ssl_object.write(message)
                os.write(0, engine.outgoing.read())
                await trio.lowlevel.cancel_shielded_checkpoint()

        ours_us = await best_us_async(ours, 20_000)
        minimal_us = await best_us_async(minimal, 20_000)
        print(f"TLSStream.send_all(64 B), no syscall    {ours_us:6.2f} us")
        print(f"bare write + os.write + checkpoint      {minimal_us:6.2f} us")
    finally:
        os.write = real_write
    await trio.aclose_forcefully(client)
    await trio.aclose_forcefully(server)


_FRESH = """
import os, socket, time
a, b = socket.socketpair()
a.setblocking(False)
b.setblocking(False)
for size in (64, 65536, 262144):
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(20000):
            os.write(b.fileno(), b"x" * 64)
            os.read(a.fileno(), size)
        best = min(best, (time.perf_counter() - start) / 20000 * 1e6)
    print(f"  fresh process: os.read({size:>6})        {best:6.2f} us")
"""


def main() -> None:
    # glibc serves allocations above its mmap threshold (128 KiB at start)
    # with a fresh mapping each time, and only raises the threshold after
    # free() meets a larger mapped block; importing Trio and friends does
    # that here, so the same read costs differently in a bare process.
    print("socket reads with 64 bytes waiting, in a process with only os and socket:")
    subprocess.run([sys.executable, "-c", _FRESH], check=True)
    print("and in this process (trio, trio_tlsretry imported):")
    socket_reads()
    want_read()
    trio.run(trio_costs)
    trio.run(send_all_cost)


if __name__ == "__main__":
    main()
