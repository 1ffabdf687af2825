"""One benchmark case for one implementation, in a fresh process.

Started by ``run.py`` (or by hand)::

    python benchmarks/_worker.py --impl tlsretry --case bulk --certdir DIR

This process is the TLS client. It starts the server (``_peer.py``) as a
child process running the same implementation (``--server-impl`` picks
another one, e.g. ``blocking`` for the old fixed-peer mode), runs the case,
and prints one JSON object on its last stdout line. Rates are measured here;
the server's CPU time (``/proc/PID/stat``) and, for the idle case, its RSS
are reported alongside.

``--knob NAME=VALUE`` sets a trio_tlsretry tuning constant before the case runs
(``WRITE_CHUNK``, ``TRANSPORT_RECEIVE_SIZE``, ``DEFAULT_RECEIVE_SIZE``,
``BUSY_POLL_US``: module-level settings of the library, read when used), so
that a change can be measured without editing the
library; it applies to both processes. ``--profile FILE`` writes a cProfile
of the measured part; ``--profile-server FILE`` one of the server.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import resource
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
# The certificate's IP address entry: every implementation connects to it and
# verifies it (no name resolution, no SNI, for all of them alike).
SERVER_NAME = HOST
MiB = 1024 * 1024

IMPLS = ("tlsretry", "trio", "anyio", "asyncio", "blocking")
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


def size(name: str, quick: bool) -> int:
    full, small = SIZES[name]
    return small if quick else full


# ------------------------------------------------------------------ memory


def proc_status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


PEER_PID: int | None = None
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def peer_cpu() -> float:
    """CPU seconds (user + system, all threads) used so far by the server process."""
    if PEER_PID is None:
        return 0.0
    with open(f"/proc/{PEER_PID}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def peer_rss() -> int:
    """The server process's ``VmRSS`` in bytes."""
    with open(f"/proc/{PEER_PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


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
        self.peak = proc_status("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, proc_status("VmRSS"))

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status("VmRSS"))


# ------------------------------------------------------------ connections


@dataclass
class Conn:
    """The three operations a case needs, bound as directly as possible."""

    send: Callable[[bytes], Awaitable[Any]]
    recv: Callable[[int], Awaitable[bytes]]
    close: Callable[[], Awaitable[None]]
    stream: Any


def client_context(certdir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certdir / "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def asyncio_conn(reader: Any, writer: Any) -> Conn:
    """A ``Conn`` over asyncio's streams (sending is ``write()`` + ``drain()``)."""

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def close() -> None:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()

    return Conn(send, reader.read, close, writer)


def make_connector(impl: str, ctx: ssl.SSLContext, port: int) -> Callable[[], Awaitable[Conn]]:
    # Each library's own "TLS over TCP" helper, as an application would use
    # it. All verify the server's certificate against SERVER_NAME.
    if impl == "tlsretry":
        from trio_tlsretry import open_tls_over_tcp_stream

        async def connect_tlsretry() -> Conn:
            stream = await open_tls_over_tcp_stream(SERVER_NAME, port, ssl_context=ctx)
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


class StepCounter:
    """A Trio instrument counting task steps (scheduler passes) while enabled."""

    def __init__(self) -> None:
        self.enabled = False
        self.steps = 0

    def before_task_step(self, task: object) -> None:
        if self.enabled:
            self.steps += 1


STEPS: StepCounter | None = None


class Profiler:
    """cProfile around the measured part, if asked for.

    The timer is this process's CPU time, so time spent descheduled (waiting
    for the peer, or preempted on a busy machine) is not charged to whatever
    function happened to be running.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.prof: Any = None

    def __enter__(self) -> None:
        if STEPS is not None:
            STEPS.steps = 0
            STEPS.enabled = True
        if self.path:
            import cProfile

            self.prof = cProfile.Profile(time.process_time)
            self.prof.enable()

    def __exit__(self, *exc: object) -> None:
        if STEPS is not None:
            STEPS.enabled = False
        if self.prof is not None:
            self.prof.disable()
            self.prof.dump_stats(self.path)


def timed_result(
    value: float,
    unit: str,
    elapsed: float,
    cpu: float,
    peer_cpu_seconds: float,
    info: tuple[str | None, str | None],
    **extra: object,
) -> dict[str, object]:
    """The JSON record of one timed case: rate, both processes' CPU, the cipher."""
    return {
        "value": value,
        "unit": unit,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "peer_cpu_seconds": peer_cpu_seconds,
        **extra,
        "version": info[0],
        "cipher": info[1],
    }


async def repeat_for(
    seconds: float, batch: Callable[[], Awaitable[None]], per_batch: int, profile: str | None
) -> tuple[int, float, float, float]:
    """Run ``batch`` until ``seconds`` have passed: operations, wall, CPU and peer CPU seconds."""
    count = 0
    with Profiler(profile):
        p0 = peer_cpu()
        c0 = time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            await batch()
            count += per_batch
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        pcpu = peer_cpu() - p0
    return count, elapsed, cpu, pcpu


async def case_bulk(connect: Callable[[], Awaitable[Conn]], opts: argparse.Namespace) -> dict:
    total = size("bulk_total", opts.quick)
    chunk_size = size("bulk_chunk", opts.quick)
    block = b"\xa5" * chunk_size
    conn = await connect()
    info = negotiated(conn)
    await sink_round(conn, [block] * (8 * MiB // chunk_size))  # warm-up
    chunks = [block] * (total // chunk_size)
    with Profiler(opts.profile):
        p0 = peer_cpu()
        c0 = time.process_time()
        t0 = time.perf_counter()
        await sink_round(conn, chunks)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        pcpu = peer_cpu() - p0
    await conn.close()
    return timed_result(total / elapsed / 1e6, "MB/s", elapsed, cpu, pcpu, info, bytes=total)


async def case_onecall(connect: Callable[[], Awaitable[Conn]], opts: argparse.Namespace) -> dict:
    total = size("onecall_total", opts.quick)
    payload = b"\x5a" * total  # resident before the baseline is taken
    conn = await connect()
    info = negotiated(conn)
    await sink_round(conn, [b"\x5a" * MiB])  # warm-up: buffers allocated, tickets read
    gc.collect()
    baseline = proc_status("VmRSS")
    exact = reset_peak_rss()
    sampler = contextlib.nullcontext() if exact else RSSSampler()
    with sampler, Profiler(opts.profile):
        p0 = peer_cpu()
        c0 = time.process_time()
        t0 = time.perf_counter()
        await sink_round(conn, [payload])
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        pcpu = peer_cpu() - p0
    peak = proc_status("VmHWM") if exact else sampler.peak  # type: ignore[union-attr]
    await conn.close()
    return timed_result(
        total / elapsed / 1e6,
        "MB/s",
        elapsed,
        cpu,
        pcpu,
        info,
        bytes=total,
        rss_growth_mib=(peak - baseline) / MiB,
        rss_method="VmHWM after clear_refs" if exact else "1 ms RSS sampling",
    )


async def case_pingpong(connect: Callable[[], Awaitable[Conn]], opts: argparse.Namespace) -> dict:
    seconds = size("pingpong_seconds", opts.quick)
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
    count, elapsed, cpu, pcpu = await repeat_for(
        seconds, functools.partial(rounds, 200), 200, opts.profile
    )
    await conn.close()
    rate = count / elapsed
    return timed_result(rate, "round trips/s", elapsed, cpu, pcpu, info, round_trips=count)


async def case_handshake(connect: Callable[[], Awaitable[Conn]], opts: argparse.Namespace) -> dict:
    seconds = size("handshake_seconds", opts.quick)
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
    count, elapsed, cpu, pcpu = await repeat_for(seconds, ten, 10, opts.profile)
    rate = count / elapsed
    return timed_result(rate, "connections/s", elapsed, cpu, pcpu, info, connections=count)


async def case_idle(connect: Callable[[], Awaitable[Conn]], opts: argparse.Namespace) -> dict:
    n = size("idle_connections", opts.quick)

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
    baseline = proc_status("VmRSS")
    peer_baseline = peer_rss()
    conns = [await open_one() for _ in range(n)]
    gc.collect()
    after = proc_status("VmRSS")
    peer_after = peer_rss()
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


# ------------------------------------------------------------------- knobs


def apply_knobs(knobs: list[str]) -> dict[str, int]:
    """Override trio_tlsretry tuning constants in this process only."""
    if not knobs:
        return {}
    from trio_tlsretry import _busy_poll, _engine, _stream

    applied = {}
    for item in knobs:
        name, _, raw = item.partition("=")
        value = int(raw, 0)
        # Each is a documented module-level setting, read when used.
        if name == "WRITE_CHUNK":
            _engine.DEFAULT_WRITE_CHUNK = value
        elif name == "BUSY_POLL_US":
            # The limit new streams start with (microseconds here, seconds there).
            _busy_poll.DEFAULT_BUSY_POLL = value / 1e6
        elif name in ("TRANSPORT_RECEIVE_SIZE", "DEFAULT_RECEIVE_SIZE"):
            setattr(_stream, name, value)
        else:
            raise SystemExit(f"unknown knob {name!r}")
        applied[name] = value
    return applied


# -------------------------------------------------------------------- main


def start_peer(
    impl: str, mode: str, certdir: Path, knobs: list[str], profile: str | None
) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, str(HERE / "_peer.py"), "--impl", impl, "--mode", mode]
    cmd += ["--certdir", str(certdir)]
    if impl == "tlsretry":
        for knob in knobs:
            cmd += ["--knob", knob]
    if profile:
        cmd += ["--profile", profile]
    peer = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert peer.stdout is not None
    line = peer.stdout.readline()
    if not line:
        peer.wait()
        raise RuntimeError("the peer did not start")
    return peer, int(line)


def wait_for_server_profile(path: str, timeout: float = 10.0) -> None:
    """Give the server time to see the last close and write its profile."""
    info = Path(f"{path}.json")
    deadline = time.monotonic() + timeout
    while not info.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)


def run_case(impl: str, case: str, ctx: ssl.SSLContext, port: int, opts: argparse.Namespace) -> Any:
    connect = make_connector(impl, ctx, port)

    async def main() -> dict:
        return await CASE_FUNCS[case](connect, opts)

    instruments = [STEPS] if STEPS is not None else []
    if impl in ("tlsretry", "trio"):
        import trio

        return trio.run(main, instruments=instruments)
    if impl == "anyio":
        import anyio

        return anyio.run(main, backend="trio", backend_options={"instruments": instruments})
    import asyncio

    return asyncio.run(main())  # "asyncio" and "blocking"


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
    global STEPS, PEER_PID
    server_impl = opts.server_impl or opts.impl
    if opts.count_steps:
        STEPS = StepCounter()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    knobs = apply_knobs(opts.knob)
    ctx = client_context(opts.certdir)
    # Import the implementation before any baseline is taken.
    make_connector(opts.impl, ctx, 0)
    if opts.profile_server:
        Path(f"{opts.profile_server}.json").unlink(missing_ok=True)
    peer, port = start_peer(
        server_impl, PEER_MODE[opts.case], opts.certdir, opts.knob, opts.profile_server
    )
    PEER_PID = peer.pid
    try:
        result = run_case(opts.impl, opts.case, ctx, port, opts)
        if opts.profile_server:
            wait_for_server_profile(opts.profile_server)
    finally:
        peer.terminate()
        peer.wait()
    result.update(
        impl=opts.impl, server_impl=server_impl, case=opts.case, knobs=knobs, pid=os.getpid()
    )
    if STEPS is not None:
        result["task_steps"] = STEPS.steps
    print(json.dumps(result))


if __name__ == "__main__":
    main()
