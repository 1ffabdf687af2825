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

Needs trustme (``pip install 'trio-tlsretry[testing]'``). Linux only (reads
``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import ssl
import subprocess
import sys
from typing import Any

import trio

IMPLS = ("tlsretry", "sslstream")
BATCH = 100


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"needs {needed} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def open_connections(impl: str, count: int, keep: list[Any]) -> None:
    from trio_tlsretry import TLSStream

    server_context, client_context = contexts()
    wrap: Any = TLSStream if impl == "tlsretry" else trio.SSLStream
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]

    async def one() -> None:
        client_tcp = await trio.open_tcp_stream("127.0.0.1", port)
        server_tcp = await listener.accept()
        client = wrap(client_tcp, client_context, server_hostname="127.0.0.1")
        server = wrap(server_tcp, server_context, server_side=True)
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
    before = rss_bytes()
    keep: list[Any] = []
    await open_connections(impl, count, keep)
    gc.collect()
    after = rss_bytes()
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


def run_child(impl: str, count: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--impl", impl, "-n", str(count)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{impl} run failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="idle connections (default 1000)")
    parser.add_argument("--impl", choices=IMPLS, help="run one implementation in this process")
    args = parser.parse_args()
    raise_fd_limit(2 * args.n + 200)
    if args.impl:
        print(json.dumps(trio.run(measure, args.impl, args.n)))
        return
    results = {impl: run_child(impl, args.n) for impl in IMPLS}
    print(f"{args.n} idle TLS connections over loopback (client + server stream each)")
    for impl, label in (("tlsretry", "trio_tlsretry.TLSStream"), ("sslstream", "trio.SSLStream")):
        r = results[impl]
        print(
            f"  {label:<24} {r['version']}  RSS +{(r['rss_after'] - r['rss_before']) / 2**20:7.1f} "
            f"MiB  = {r['bytes_per_connection'] / 1024:6.1f} KiB per connection"
        )
    ratio = (
        results["tlsretry"]["bytes_per_connection"] / results["sslstream"]["bytes_per_connection"]
    )
    print(f"  ratio TLSStream / SSLStream: {ratio:.2f}")


if __name__ == "__main__":
    main()
