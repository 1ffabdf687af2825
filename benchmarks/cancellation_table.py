"""Side by side: what a cancellation does to trio.SSLStream and to TLSStream.

For each case the operation is cancelled at checkpoint k = 0, 1, 2, ... on a
fresh connection (until an attempt completes uncancelled), then the
conversation is finished the way a user would: retry the operation, send one
more message, read everything on the other side. Each cancelled attempt is
classified as

* usable:  the retry worked and the peer received exactly the bytes sent;
* broken:  a later call raised ``trio.BrokenResourceError`` (loud failure);
* corrupt: the peer received other bytes (lost or duplicated data) or the
  conversation hung.

Run: ``python benchmarks/cancellation_table.py`` (about a minute). Prints a
table in reStructuredText for docs/cancellation.rst.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

# Run as a script, so this directory is on sys.path.
from _harness import BASELINE, IMPLS, OURS

from trio_tlsretry.testing import make_tls_contexts

CONTEXTS = make_tls_contexts()
CONTEXTS_12 = make_tls_contexts(maximum_version=ssl.TLSVersion.TLSv1_2)
# Column label -> stream class, the baseline first.
IMPLEMENTATIONS: dict[str, Any] = {
    IMPLS[name].short: IMPLS[name].stream_class() for name in (BASELINE, OURS)
}


def transports(kind: str) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    if kind == "memory":
        return trio.testing.memory_stream_pair()
    a, b = trio.socket.socketpair()
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return trio.SocketStream(a), trio.SocketStream(b)


def make_pair(impl: str, kind: str) -> tuple[Any, Any]:
    cls = IMPLEMENTATIONS[impl]
    a, b = transports(kind)
    client = cls(a, CONTEXTS.client, server_hostname="example.org")
    server = cls(b, CONTEXTS.server, server_side=True)
    return client, server


async def read_until(stream: Any, size: int, sink: bytearray) -> None:
    while len(sink) < size:
        data = await stream.receive_some(65536)
        if not data:
            return
        sink += data


async def cancel_at(k: int, fn: Callable[[], Awaitable[object]]) -> bool:
    """Run fn, cancelled at its k-th yield; True if it completed."""
    from trio_tlsretry.testing import cancel_at_checkpoint

    return (await cancel_at_checkpoint(k, fn)).completed


async def case_send(impl: str, kind: str, size: int, k: int) -> str | None:
    client, server = make_pair(impl, kind)
    message = bytes(i % 253 for i in range(size))
    received = bytearray()
    try:
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.do_handshake)
                await client.do_handshake()
                nursery.start_soon(read_until, server, size + 5, received)
                if await cancel_at(k, lambda: client.send_all(message)):
                    nursery.cancel_scope.cancel()
                    return None
                try:
                    await client.send_all(message)  # the natural retry
                    await client.send_all(b"<end>")
                except trio.BrokenResourceError:
                    nursery.cancel_scope.cancel()
                    return "broken"
        return "usable" if received == message + b"<end>" else "corrupt"
    except trio.TooSlowError:
        return "corrupt"
    except Exception as exc:  # report it in the table rather than crash
        return f"error: {type(exc).__name__}"
    finally:
        for stream in (client, server):
            await trio.aclose_forcefully(stream.transport_stream)


async def case_receive(impl: str, kind: str, k: int) -> str | None:
    client, server = make_pair(impl, kind)
    message = bytes(i % 241 for i in range(100_000))
    got = bytearray()
    try:
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.do_handshake)
                await client.do_handshake()
                nursery.start_soon(server.send_all, message)

                async def receive_once() -> None:
                    got.extend(await client.receive_some(65536))

                completed = await cancel_at(k, receive_once)
                try:
                    await read_until(client, len(message), got)
                except trio.BrokenResourceError:
                    nursery.cancel_scope.cancel()
                    return "broken"
        if completed:
            return None
        return "usable" if got == message else "corrupt"
    except trio.TooSlowError:
        return "corrupt"
    finally:
        for stream in (client, server):
            await trio.aclose_forcefully(stream.transport_stream)


async def case_handshake(impl: str, kind: str, k: int) -> str | None:
    client, server = make_pair(impl, kind)
    try:
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    try:
                        data = await server.receive_some(100)
                        await server.send_all(data.upper())
                    except trio.BrokenResourceError:
                        pass

                nursery.start_soon(serve)
                completed = await cancel_at(k, client.do_handshake)
                try:
                    await client.send_all(b"hello")
                    reply = await client.receive_some(100)
                except trio.BrokenResourceError:
                    nursery.cancel_scope.cancel()
                    return "broken"
        if completed:
            return None
        return "usable" if reply == b"HELLO" else "corrupt"
    except trio.TooSlowError:
        return "corrupt"
    finally:
        for stream in (client, server):
            await trio.aclose_forcefully(stream.transport_stream)


CASES: dict[str, Callable[[str, str, int], Awaitable[str | None]]] = {
    "do_handshake": case_handshake,
    "send_all, 1 KB": lambda impl, kind, k: case_send(impl, kind, 1000, k),
    "send_all, 300 KB": lambda impl, kind, k: case_send(impl, kind, 300_000, k),
    "receive_some": case_receive,
}


async def sweep(impl: str, kind: str, case: str, limit: int) -> Counter[str]:
    tally: Counter[str] = Counter()
    for k in range(limit):
        outcome = await CASES[case](impl, kind, k)
        if outcome is None:
            break
        tally[outcome] += 1
    return tally


def fmt(tally: Counter[str]) -> str:
    total = sum(tally.values())
    parts = [f"{tally[name]} {name}" for name in ("usable", "broken", "corrupt") if tally[name]]
    parts += [f"{n} {name}" for name, n in tally.items() if name.startswith("error")]
    return f"{total}: " + ", ".join(parts) if total else "0"


async def main(limit: int) -> None:
    rows = []
    for kind in ("socket", "memory"):
        for case in CASES:
            row = [case, kind]
            for impl in IMPLEMENTATIONS:
                row.append(fmt(await sweep(impl, kind, case, limit)))
            rows.append(row)
            print(" | ".join(row), file=sys.stderr, flush=True)
    header = ["operation cancelled", "transport", *IMPLEMENTATIONS]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("=" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(line)
    print(
        "\nEach cell: cancelled attempts (one per checkpoint k), then how the "
        "conversation ended after the natural retry.",
        file=sys.stderr,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="largest k to try")
    args = parser.parse_args()
    trio.run(main, args.limit)
