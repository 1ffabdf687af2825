"""One benchmark case for one implementation, in a fresh process.

Started by ``run.py`` (or by hand)::

    python benchmarks/_worker.py --impl tlsretry --case bulk --certdir DIR

This process is the TLS client. It starts the server (``_peer.py``) as a
child process running the same implementation (``--server-impl`` picks
another one, e.g. ``blocking`` for the old fixed-peer mode), runs the case,
and prints one JSON object on its stdout (see ``_harness``). Rates are
measured here; the server's CPU time (``/proc/PID/stat``) and, for the idle
case, its RSS are reported alongside.

``--knob NAME=VALUE`` sets a trio_tlsretry setting in both processes
(``WRITE_CHUNK``, ``TRANSPORT_RECEIVE_SIZE``, ``DEFAULT_RECEIVE_SIZE``,
``BUSY_POLL_US``; see ``_harness.Knobs``), so that a change can be measured
without editing the library. ``--profile FILE`` writes a cProfile of the
measured part; ``--profile-server FILE`` one of the server.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script, so this directory is on sys.path.
from _harness import (
    HOST,
    IMPLS,
    SERVER_NAME,
    Child,
    Conn,
    Knobs,
    MiB,
    StepCounter,
    asyncio_conn,
    client_context,
    cpu_seconds,
    raise_fd_limit,
    rss,
)

CASES = ("bulk", "onecall", "pingpong", "handshake", "idle")
PEER_MODE = {
    "bulk": "sink",
    "onecall": "sink",
    "pingpong": "echo",
    "handshake": "hs",
    "idle": "echo",
}

# Case sizes: (full, quick).
SIZES: dict[str, tuple[int, int]] = {
    "bulk_total": (256 * MiB, 64 * MiB),
    "bulk_chunk": (64 * 1024, 64 * 1024),
    "onecall_total": (64 * MiB, 64 * MiB),
    "pingpong_seconds": (3, 1),
    "handshake_seconds": (3, 1),
    "idle_connections": (1000, 200),
}


# ------------------------------------------------------------------ memory


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class RSSSampler:
    """Fallback peak-RSS probe when VmHWM cannot be reset: sample every 1 ms."""

    def __init__(self) -> None:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


# ------------------------------------------------------------ connections


def make_connector(
    impl: str, ctx: ssl.SSLContext, port: int, knobs: Knobs
) -> Callable[[], Awaitable[Conn]]:
    # Each library's own "TLS over TCP" helper, as an application would use
    # it. All verify the server's certificate against SERVER_NAME.
    if impl == "tlsretry":
        from trio_tlsretry import open_tls_over_tcp_stream

        async def connect_tlsretry() -> Conn:
            stream = await open_tls_over_tcp_stream(SERVER_NAME, port, ssl_context=ctx)
            knobs.apply_to_stream(stream)
            await stream.do_handshake()
            return Conn(stream.send_all, stream.receive_some, stream.aclose, stream)

        return connect_tlsretry

    if impl == "trio":
        import trio

        async def connect_trio() -> Conn:
            stream = await trio.open_ssl_over_tcp_stream(SERVER_NAME, port, ssl_context=ctx)
            await stream.do_handshake()
            return Conn(stream.send_all, stream.receive_some, stream.aclose, stream)

        return connect_trio

    if impl == "anyio":
        import anyio

        async def connect_anyio() -> Conn:
            stream = await anyio.connect_tcp(
                SERVER_NAME, port, ssl_context=ctx, tls_standard_compatible=True
            )
            return Conn(stream.send, stream.receive, stream.aclose, stream)

        return connect_anyio

    if impl == "asyncio":
        import asyncio

        async def connect_asyncio() -> Conn:
            reader, writer = await asyncio.open_connection(
                HOST, port, ssl=ctx, server_hostname=SERVER_NAME
            )
            return asyncio_conn(reader, writer)

        return connect_asyncio

    if impl == "blocking":
        # Reference only: a plain blocking ssl.SSLSocket, no event loop. The
        # coroutines below never suspend; they only give the cases one shape.
        import socket

        async def connect_blocking() -> Conn:
            raw = socket.create_connection((HOST, port))
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = ctx.wrap_socket(raw, server_hostname=SERVER_NAME)

            async def send(data: bytes) -> None:
                sock.sendall(data)

            async def recv(n: int) -> bytes:
                return sock.recv(n)

            async def close() -> None:
                sock.close()

            return Conn(send, recv, close, sock)

        return connect_blocking

    raise ValueError(f"unknown implementation {impl!r}")


def negotiated(conn: Conn) -> tuple[str | None, str | None]:
    stream = conn.stream
    if hasattr(stream, "get_extra_info"):  # asyncio writer
        obj = stream.get_extra_info("ssl_object")
        return obj.version(), obj.cipher()[0]
    if hasattr(stream, "extra"):  # anyio
        from anyio.streams.tls import TLSAttribute

        obj = stream.extra(TLSAttribute.ssl_object)
        return obj.version(), obj.cipher()[0]
    return stream.version(), stream.cipher()[0]


async def recv_exact(conn: Conn, n: int) -> bytes:
    recv = conn.recv
    data = await recv(n)
    while len(data) < n:
        more = await recv(n - len(data))
        if not more:
            raise EOFError("peer closed")
        data += more
    return data


async def sink_round(conn: Conn, chunks: list[bytes]) -> None:
    """Send ``chunks`` (one ``send`` call each) and wait for the peer's ack."""
    send = conn.send
    await send(struct.pack("!Q", sum(map(len, chunks))))
    for chunk in chunks:
        await send(chunk)
    if await recv_exact(conn, 1) != b"k":
        raise RuntimeError("bad ack")


# ------------------------------------------------------------------ cases


@dataclass
class Timing:
    """Wall, CPU and server CPU seconds of a timed part."""

    seconds: float = 0.0
    cpu: float = 0.0
    peer_cpu: float = 0.0


@dataclass
class Measure:
    """What a case is told: its size, the server process, what to profile and count."""

    quick: bool
    peer_pid: int
    profile: str | None = None
    steps: StepCounter | None = None

    def size(self, name: str) -> int:
        full, small = SIZES[name]
        return small if self.quick else full

    @contextlib.contextmanager
    def timed(self) -> Iterator[Timing]:
        """Time the block: wall clock, this process's CPU and the server's CPU.

        Profiled (if asked for) with this process's CPU time as the timer, so
        time spent descheduled (waiting for the peer, or preempted on a busy
        machine) is not charged to whatever function happened to be running.
        """
        timing = Timing()
        prof: Any = None
        if self.steps is not None:
            self.steps.steps = 0
            self.steps.enabled = True
        if self.profile:
            import cProfile

            prof = cProfile.Profile(time.process_time)
            prof.enable()
        p0 = cpu_seconds(self.peer_pid)
        c0 = time.process_time()
        t0 = time.perf_counter()
        yield timing
        timing.seconds = time.perf_counter() - t0
        timing.cpu = time.process_time() - c0
        timing.peer_cpu = cpu_seconds(self.peer_pid) - p0
        if self.steps is not None:
            self.steps.enabled = False
        if prof is not None:
            prof.disable()
            prof.dump_stats(self.profile)


def timed_result(
    value: float,
    unit: str,
    timing: Timing,
    info: tuple[str | None, str | None],
    **extra: object,
) -> dict[str, object]:
    """The JSON record of one timed case: rate, both processes' CPU, the cipher."""
    return {
        "value": value,
        "unit": unit,
        "seconds": timing.seconds,
        "cpu_seconds": timing.cpu,
        "peer_cpu_seconds": timing.peer_cpu,
        **extra,
        "version": info[0],
        "cipher": info[1],
    }


async def repeat_for(
    m: Measure, seconds: float, batch: Callable[[], Awaitable[None]], per_batch: int
) -> tuple[int, Timing]:
    """Run ``batch`` until ``seconds`` have passed: how many operations, and their timing."""
    count = 0
    with m.timed() as timing:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            await batch()
            count += per_batch
    return count, timing


async def case_bulk(connect: Callable[[], Awaitable[Conn]], m: Measure) -> dict:
    total = m.size("bulk_total")
    chunk_size = m.size("bulk_chunk")
    block = b"\xa5" * chunk_size
    conn = await connect()
    info = negotiated(conn)
    await sink_round(conn, [block] * (8 * MiB // chunk_size))  # warm-up
    chunks = [block] * (total // chunk_size)
    with m.timed() as timing:
        await sink_round(conn, chunks)
    await conn.close()
    return timed_result(total / timing.seconds / 1e6, "MB/s", timing, info, bytes=total)


async def case_onecall(connect: Callable[[], Awaitable[Conn]], m: Measure) -> dict:
    total = m.size("onecall_total")
    payload = b"\x5a" * total  # resident before the baseline is taken
    conn = await connect()
    info = negotiated(conn)
    await sink_round(conn, [b"\x5a" * MiB])  # warm-up: buffers allocated, tickets read
    gc.collect()
    baseline = rss()
    exact = reset_peak_rss()
    sampler = contextlib.nullcontext() if exact else RSSSampler()
    with sampler, m.timed() as timing:
        await sink_round(conn, [payload])
    peak = rss(field="VmHWM") if exact else sampler.peak  # type: ignore[union-attr]
    await conn.close()
    return timed_result(
        total / timing.seconds / 1e6,
        "MB/s",
        timing,
        info,
        bytes=total,
        rss_growth_mib=(peak - baseline) / MiB,
        rss_method="VmHWM after clear_refs" if exact else "1 ms RSS sampling",
    )


async def case_pingpong(connect: Callable[[], Awaitable[Conn]], m: Measure) -> dict:
    seconds = m.size("pingpong_seconds")
    message = b"\x77" * 64
    conn = await connect()
    info = negotiated(conn)
    send, recv = conn.send, conn.recv

    async def rounds(n: int) -> None:
        for _ in range(n):
            await send(message)
            data = await recv(64)
            if len(data) != 64:
                data += await recv_exact(conn, 64 - len(data))

    await rounds(500)  # warm-up
    count, timing = await repeat_for(m, seconds, functools.partial(rounds, 200), 200)
    await conn.close()
    rate = count / timing.seconds
    return timed_result(rate, "round trips/s", timing, info, round_trips=count)


async def case_handshake(connect: Callable[[], Awaitable[Conn]], m: Measure) -> dict:
    seconds = m.size("handshake_seconds")
    info: tuple[str | None, str | None] = (None, None)

    async def one() -> None:
        nonlocal info
        conn = await connect()
        info = negotiated(conn)
        await conn.send(b"x")
        if await conn.recv(1) != b"y":
            raise RuntimeError("bad reply")
        await conn.close()

    async def ten() -> None:
        for _ in range(10):
            await one()

    for _ in range(20):  # warm-up
        await one()
    count, timing = await repeat_for(m, seconds, ten, 10)
    rate = count / timing.seconds
    return timed_result(rate, "connections/s", timing, info, connections=count)


async def case_idle(connect: Callable[[], Awaitable[Conn]], m: Measure) -> dict:
    n = m.size("idle_connections")

    async def open_one() -> Conn:
        conn = await connect()
        await conn.send(b"i")  # also reads the TLS 1.3 session tickets
        await recv_exact(conn, 1)
        return conn

    warm = [await open_one() for _ in range(10)]
    info = negotiated(warm[0])
    for conn in warm:
        await conn.close()
    del warm, conn
    gc.collect()
    baseline = rss()
    peer_baseline = rss(m.peer_pid)
    conns = [await open_one() for _ in range(n)]
    gc.collect()
    after = rss()
    peer_after = rss(m.peer_pid)
    for conn in conns:
        await conn.close()
    return {
        "value": (after - baseline) / n / 1024,
        "unit": "KiB/connection",
        "connections": n,
        "rss_baseline_mib": baseline / MiB,
        "rss_after_mib": after / MiB,
        "peer_kib_per_connection": (peer_after - peer_baseline) / n / 1024,
        "version": info[0],
        "cipher": info[1],
    }


CASE_FUNCS = {
    "bulk": case_bulk,
    "onecall": case_onecall,
    "pingpong": case_pingpong,
    "handshake": case_handshake,
    "idle": case_idle,
}


# -------------------------------------------------------------------- main


def apply_knobs(items: list[str]) -> dict[str, int]:
    """Apply ``--knob`` settings to a process that never holds its streams; the values.

    For ``https_server.py``'s server: every setting process-wide, and
    ``BUSY_POLL_US`` as the default of new streams (see ``_harness.Knobs``).
    """
    knobs = Knobs.parse(items)
    knobs.apply_to_process(default_busy_poll=True)
    return knobs.values


def start_peer(
    impl: str, mode: str, certdir: Path, knobs: Knobs, profile: str | None
) -> tuple[Child, int]:
    """The server process, and the port it listens on."""
    args = ["--impl", impl, "--mode", mode, "--certdir", str(certdir)]
    if impl == "tlsretry":
        args += knobs.args()
    if profile:
        args += ["--profile", profile]
    peer = Child(f"{impl} server", "_peer.py", args)
    try:
        port = peer.read(60)["port"]
    except RuntimeError:
        peer.terminate()
        raise RuntimeError("the peer did not start") from None
    return peer, port


def wait_for_server_profile(path: str, timeout: float = 10.0) -> None:
    """Give the server time to see the last close and write its profile."""
    info = Path(f"{path}.json")
    deadline = time.monotonic() + timeout
    while not info.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=IMPLS, required=True)
    parser.add_argument(
        "--server-impl", choices=IMPLS, default=None, help="default: the same as --impl"
    )
    parser.add_argument("--case", choices=CASES, required=True)
    parser.add_argument("--certdir", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--knob", action="append", default=[])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--profile-server", default=None)
    parser.add_argument(
        "--count-steps", action="store_true", help="count Trio task steps in the timed part"
    )
    opts = parser.parse_args()
    server_impl = opts.server_impl or opts.impl
    steps = StepCounter() if opts.count_steps else None
    raise_fd_limit()
    knobs = Knobs.parse(opts.knob)
    knobs.apply_to_process()
    ctx = client_context(opts.certdir)
    make_connector(opts.impl, ctx, 0, knobs)  # imports it before any baseline is taken
    if opts.profile_server:
        Path(f"{opts.profile_server}.json").unlink(missing_ok=True)
    peer, port = start_peer(
        server_impl, PEER_MODE[opts.case], opts.certdir, knobs, opts.profile_server
    )
    measure = Measure(opts.quick, peer.pid, opts.profile, steps)
    connect = make_connector(opts.impl, ctx, port, knobs)

    async def run_case() -> dict:
        return await CASE_FUNCS[opts.case](connect, measure)

    try:
        result = IMPLS[opts.impl].run(run_case, [steps] if steps is not None else [])
        if opts.profile_server:
            wait_for_server_profile(opts.profile_server)
    finally:
        peer.terminate()
    result.update(
        impl=opts.impl, server_impl=server_impl, case=opts.case, knobs=knobs.values, pid=os.getpid()
    )
    if steps is not None:
        result["task_steps"] = steps.steps
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
