"""Soak test: many TLS connections on 127.0.0.1 doing random sends, receives
and cancellations, with retries of the same object as the contract allows.

Every connection carries a deterministic pseudo-random byte stream in each
direction; both ends check every byte they receive against the stream they
expect, so a lost, duplicated, reordered or corrupted byte is caught at once.
Cancelled ``send_all`` calls are retried with the *same* object (over a
``trio.SocketStream`` that must resume at the exact byte); sometimes the next
message is sent instead, which must first complete the pinned remainder.
Cancelled ``receive_some`` calls must lose nothing.

At the end it checks that no byte was lost or corrupted, that no TLSStream
is still alive once the connections are closed, and that the resident memory
did not grow between the end of a warm-up period and the end of the run.

Usage::

    python benchmarks/soak.py                 # about 60 s
    python benchmarks/soak.py --seconds 600 --connections 64

Exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import random
import struct
import sys
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field

import trio

# Run as a script, so this directory is on sys.path.
from _harness import rss

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import make_tls_contexts

HEADER = struct.Struct("!QQQ")  # seed, client->server bytes, server->client bytes
BLOCK = 4096


def stream_bytes(seed: int, offset: int, size: int) -> bytes:
    """Bytes ``offset .. offset+size`` of the deterministic stream for ``seed``."""
    out = bytearray()
    block = offset // BLOCK
    skip = offset - block * BLOCK
    while len(out) < skip + size:
        out += hashlib.blake2b(struct.pack("!QQ", seed, block), digest_size=64).digest() * (
            BLOCK // 64
        )
        block += 1
    return bytes(out[skip : skip + size])


class Verifier:
    """Checks received bytes against the expected stream, incrementally."""

    def __init__(self, seed: int, total: int) -> None:
        self.seed = seed
        self.total = total
        self.offset = 0
        self.corrupted = 0

    def feed(self, data: bytes | bytearray) -> None:
        if self.offset + len(data) > self.total:
            self.corrupted += self.offset + len(data) - self.total
            data = data[: self.total - self.offset]
        expected = stream_bytes(self.seed, self.offset, len(data))
        if expected != data:
            self.corrupted += sum(1 for a, b in zip(expected, data, strict=True) if a != b)
        self.offset += len(data)

    @property
    def done(self) -> bool:
        return self.offset >= self.total


@dataclass
class Stats:
    counts: Counter[str] = field(default_factory=Counter)
    corrupted: int = 0
    lost: int = 0
    failures: list[str] = field(default_factory=list)


LIVE: weakref.WeakSet[TLSStream] = weakref.WeakSet()


async def chaotic_sender(
    stream: TLSStream, seed: int, total: int, rng: random.Random, stats: Stats, side: str
) -> None:
    offset = 0
    pending: bytes | None = None
    # Whether a message we abandoned still has a pinned remainder (completed
    # by the next send_all that returns normally).
    abandoned_remainder = False
    while offset < total or pending is not None:
        if pending is None:
            size = min(total - offset, rng.choice([1, 100, 1000, 16384, 65536, 300_000]))
            pending = stream_bytes(seed, offset, size)
            offset += size
        message = pending
        roll = rng.random()
        with trio.CancelScope() as scope:
            if roll < 0.05:
                scope.cancel()  # cancelled before the first checkpoint
            elif roll < 0.4:
                scope.deadline = trio.current_time() + rng.uniform(0, 0.002)
            await stream.send_all(message)
        stats.counts[f"{side}.send_all"] += 1
        if scope.cancelled_caught:
            stats.counts[f"{side}.send_all.cancelled"] += 1
            # A cancelled send_all either pinned its message (the remainder is
            # completed by the next send operation) or sent none of it. The
            # caller can only tell the two apart through pinned_bytes, and
            # only if no older remainder is outstanding: so move on only then.
            mine = not abandoned_remainder and stream.statistics().pinned_bytes > 0
            if mine and rng.random() < 0.2 and offset < total:
                stats.counts[f"{side}.send_all.abandoned_retry"] += 1
                abandoned_remainder = True
                pending = None
            # else: retry with the very same object on the next iteration.
        else:
            abandoned_remainder = False
            pending = None


async def chaotic_receiver(
    stream: TLSStream, verifier: Verifier, rng: random.Random, stats: Stats, side: str
) -> None:
    while True:
        roll = rng.random()
        with trio.CancelScope() as scope:
            if roll < 0.05:
                scope.cancel()
            elif roll < 0.3:
                scope.deadline = trio.current_time() + rng.uniform(0, 0.002)
            data = await stream.receive_some(rng.choice([1, 7, 1000, 16384, None]))
        stats.counts[f"{side}.receive_some"] += 1
        if scope.cancelled_caught:
            stats.counts[f"{side}.receive_some.cancelled"] += 1
            continue
        if not data:
            if not verifier.done:
                stats.lost += verifier.total - verifier.offset
                stats.failures.append(f"{side}: EOF after {verifier.offset}/{verifier.total}")
            return
        verifier.feed(data)
        stats.counts[f"{side}.bytes_received"] += len(data)
        if rng.random() < 0.01:
            await trio.sleep(rng.uniform(0, 0.005))  # a slow reader now and then


async def serve_one(transport: trio.SocketStream, contexts: object, stats: Stats) -> None:
    stream = TLSStream(transport, contexts.server, server_side=True)  # type: ignore[attr-defined]
    LIVE.add(stream)
    try:
        header = b""
        while len(header) < HEADER.size:
            piece = await stream.receive_some(HEADER.size - len(header))
            if not piece:
                raise RuntimeError("EOF in header")
            header += piece
        seed, up, down = HEADER.unpack(header)
        rng = random.Random(seed ^ 0x5EED)
        verifier = Verifier(seed, up)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaotic_receiver, stream, verifier, rng, stats, "server")
            await chaotic_sender(
                stream, seed + 1, down, random.Random(seed ^ 0xD00D), stats, "server"
            )
        stats.corrupted += verifier.corrupted
        stats.counts["server.connections"] += 1
    except Exception as exc:  # report, don't crash the soak
        stats.failures.append(f"server: {exc!r}")
    finally:
        await stream.aclose()


async def client_one(port: int, contexts: object, seed: int, stats: Stats) -> None:
    rng = random.Random(seed)
    up = rng.choice([10_000, 200_000, 1_000_000, 4_000_000])
    down = rng.choice([10_000, 200_000, 1_000_000, 4_000_000])
    transport = await trio.open_tcp_stream("127.0.0.1", port)
    stream = TLSStream(
        transport,
        contexts.client,  # type: ignore[attr-defined]
        server_hostname="example.org",
    )
    LIVE.add(stream)
    try:
        await stream.send_all(HEADER.pack(seed, up, down))
        verifier = Verifier(seed + 1, down)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaotic_sender, stream, seed, up, rng, stats, "client")
            while not verifier.done:
                data = await stream.receive_some()
                if not data:
                    break
                verifier.feed(data)
                stats.counts["client.receive_some"] += 1
        if not verifier.done:
            stats.lost += verifier.total - verifier.offset
            stats.failures.append(f"client: EOF after {verifier.offset}/{verifier.total}")
        stats.corrupted += verifier.corrupted
        stats.counts["client.bytes_received"] += verifier.offset
        stats.counts["client.connections"] += 1
    except Exception as exc:
        stats.failures.append(f"client: {exc!r}")
    finally:
        # The server receives b"" only after every byte we sent: it checks
        # its totals against the header before it closes.
        await stream.aclose()


async def soak(seconds: float, connections: int, seed: int) -> int:
    contexts = make_tls_contexts()
    stats = Stats()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    start = time.monotonic()
    warmup_end = start + min(10.0, seconds / 4)
    rss_after_warmup: int | None = None
    rss_start = rss() // 1024
    next_seed = seed * 1_000_000

    async def worker(index: int) -> None:
        nonlocal next_seed
        while time.monotonic() - start < seconds:
            next_seed += 1
            await client_one(port, contexts, next_seed, stats)

    samples: list[int] = []

    async def sampler() -> None:
        nonlocal rss_after_warmup
        await trio.sleep(max(0.0, warmup_end - time.monotonic()))
        gc.collect()
        rss_after_warmup = rss() // 1024
        # Then a sample every tenth of the run, to tell a plateau (allocator
        # high-water mark) from steady growth.
        while time.monotonic() - start < seconds:
            await trio.sleep(seconds / 10)
            samples.append(rss() // 1024)

    # The outer nursery holds the server's connection handlers: leaving it
    # waits until the server has finished (and checked) every connection.
    async with trio.open_nursery() as handlers:
        handlers.start_soon(sampler)
        async with trio.open_nursery() as listening:
            listening.start_soon(
                functools.partial(
                    trio.serve_listeners,
                    lambda t: serve_one(t, contexts, stats),
                    listeners,
                    handler_nursery=handlers,
                )
            )
            async with trio.open_nursery() as clients:
                for index in range(connections):
                    clients.start_soon(worker, index)
            listening.cancel_scope.cancel()

    elapsed = time.monotonic() - start
    gc.collect()
    rss_end = rss() // 1024
    live = len(LIVE)
    counts = stats.counts
    moved = counts["server.bytes_received"] + counts["client.bytes_received"]
    print(f"soak: {elapsed:.1f} s, {connections} concurrent connections, seed {seed}")
    print(
        f"  connections completed: client {counts['client.connections']}, "
        f"server {counts['server.connections']}"
    )
    print(f"  plaintext verified: {moved / 1e6:.1f} MB ({moved / elapsed / 1e6:.1f} MB/s)")
    operations = sum(v for k, v in counts.items() if k.endswith(("send_all", "receive_some")))
    print(f"  operations completed or cancelled: {operations}")
    for key in sorted(counts):
        if not key.endswith(("connections", "bytes_received")):
            print(f"    {key:40s} {counts[key]}")
    print(f"  corrupted bytes: {stats.corrupted}, lost bytes: {stats.lost}")
    print(f"  failures: {len(stats.failures)}")
    for failure in stats.failures[:10]:
        print(f"    {failure}")
    print(f"  live TLSStream objects after close: {live}")
    print(
        f"  RSS: start {rss_start / 1024:.1f} MiB, after warm-up "
        f"{(rss_after_warmup or 0) / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB"
    )
    print("  RSS during the run (MiB): " + " ".join(f"{kib / 1024:.0f}" for kib in samples))
    ok = True
    if stats.corrupted or stats.lost or stats.failures:
        print("FAIL: corrupted or lost bytes, or connection failures")
        ok = False
    if counts["client.connections"] == 0:
        print("FAIL: no connection completed")
        ok = False
    if live:
        print("FAIL: TLSStream objects still alive after every connection closed")
        ok = False
    # Growth after warm-up beyond allocator noise means something accumulates.
    if rss_after_warmup is not None and rss_end - rss_after_warmup > 32 * 1024:
        print("FAIL: resident memory grew by more than 32 MiB after the warm-up")
        ok = False
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="run time (default 60)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parser.parse_args()
    sys.exit(trio.run(soak, args.seconds, args.connections, args.seed))


if __name__ == "__main__":
    main()
