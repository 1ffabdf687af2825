"""Resident memory per idle TLS connection: TLSStream versus trio.SSLStream.

Each implementation runs in its own process. A process opens N loopback TLS
connections (both ends live in the process, so one "connection" is a client
stream plus a server stream), completes the handshakes, moves one byte each
way so that TLS 1.3 session tickets and every buffer have settled, and then
compares its resident set size with the size measured just before the
connections were opened (after a warm-up round, so imports and one-off
allocations are not counted). Kernel socket buffers are not part of RSS.

Usage::

    python benchmarks/idle_memory.py            # both, N=1000, and the ratio
    python benchmarks/idle_memory.py -n 5000
    python benchmarks/idle_memory.py --impl tlsretry   # one process, JSON out

The implementations are ``_harness.STREAM_IMPLS``.

Needs trustme (``pip install 'trio-tlsretry[testing]'``). Linux only (reads
``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import gc
import json
import ssl
from typing import Any

import trio

# Run as a script, so this directory is on sys.path.
from _harness import HOST, IMPLS, STREAM_IMPLS, raise_fd_limit, rss, run_child

BATCH = 100


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def open_connections(impl: str, count: int, keep: list[Any]) -> None:
    server_ctx, client_ctx = contexts()
    wrap: Any = IMPLS[impl].stream_class()
    (listener,) = await trio.open_tcp_listeners(0, host=HOST)
    port = listener.socket.getsockname()[1]

    async def one() -> None:
        client_tcp = await trio.open_tcp_stream(HOST, port)
        server_tcp = await listener.accept()
        client = wrap(client_tcp, client_ctx, server_hostname=HOST)
        server = wrap(server_tcp, server_ctx, server_side=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
        await client.send_all(b"c")
        assert await server.receive_some(1) == b"c"
        await server.send_all(b"s")
        assert await client.receive_some(1) == b"s"
        keep.append((client, server))

    async with listener:
        done = 0
        while done < count:
            batch = min(BATCH, count - done)
            # The accepts are serialised by the listener; one task per
            # connection still lets the handshakes overlap.
            for _ in range(batch):
                await one()
            done += batch


async def measure(impl: str, count: int) -> dict[str, Any]:
    warm: list[Any] = []
    await open_connections(impl, 20, warm)
    for client, server in warm:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)
    del warm
    gc.collect()
    before = rss()
    keep: list[Any] = []
    await open_connections(impl, count, keep)
    gc.collect()
    after = rss()
    result = {
        "impl": impl,
        "connections": count,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_connection": (after - before) / count,
        "version": keep[0][0].version(),
    }
    for client, server in keep:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="idle connections (default 1000)")
    parser.add_argument("--impl", choices=STREAM_IMPLS, help="run one implementation here")
    args = parser.parse_args()
    raise_fd_limit(2 * args.n + 200)
    if args.impl:
        print(json.dumps(trio.run(measure, args.impl, args.n)), flush=True)
        return
    results = {}
    for impl in STREAM_IMPLS:
        try:
            results[impl] = run_child(
                impl, "idle_memory.py", ["--impl", impl, "-n", str(args.n)], 600
            )
        except RuntimeError as exc:
            raise SystemExit(f"{impl} run failed: {exc}") from None
    print(f"{args.n} idle TLS connections over loopback (client + server stream each)")
    for impl, r in results.items():
        print(
            f"  {IMPLS[impl].label:<24} {r['version']}  "
            f"RSS +{(r['rss_after'] - r['rss_before']) / 2**20:7.1f} "
            f"MiB  = {r['bytes_per_connection'] / 1024:6.1f} KiB per connection"
        )
    ratio = results["tlsretry"]["bytes_per_connection"] / results["trio"]["bytes_per_connection"]
    print(f"  ratio TLSStream / SSLStream: {ratio:.2f}")


if __name__ == "__main__":
    main()
