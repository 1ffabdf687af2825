"""Established connections under a flood of new TLS handshakes.

A TLS echo server runs in its own process. This process keeps a few
established connections (``--probes``, default 4) echoing 64 bytes every
10 ms and records each round trip. After ``--before`` seconds of quiet, a
third process floods the server with new TLS 1.3 connections from
``--tasks`` (default 200) concurrent tasks, each connecting, completing
the handshake and closing, again and again, for ``--flood`` seconds; then
``--after`` seconds of quiet again. Reported per server:

* the probes' echo latency, p50 / p99 / max, before, during and after the
  flood;
* the handshakes per second the flood completed;
* ratios: p99 during / p99 before (target < 3) and handshakes per second
  / those of the unlimited ``TLSStream`` server (target >= 0.9).

Servers (all run the same echo handler):

``tlsstream-unlimited``
    :func:`trio_tlsretry.serve_tls_over_tcp` with ``max_handshakes=None``.
``tlsstream-N``
    the same with ``max_handshakes=N`` (``--limits``, default: the library's
    default, :data:`trio_tlsretry.DEFAULT_MAX_HANDSHAKES`).
``trio-sslstream``
    :func:`trio.serve_ssl_over_tcp` (no limit exists there).

The whole set is run ``--repeat`` times, the servers' order rotated from
one repetition to the next; the table gives the median of each figure over
the repetitions. Usage::

    python benchmarks/handshake_flood.py                      # about 2 minutes
    python benchmarks/handshake_flood.py --limits 2,4,8,16,32 --repeat 5
    python benchmarks/handshake_flood.py --rst                # the docs table

The machine must not be busy with anything else for the figures to mean
much; the script cannot tell, so say so when you quote them.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

import trio_tlsretry
from trio_tlsretry import TLSStream

HOST = "127.0.0.1"
MESSAGE = b"x" * 64
PHASES = ("before", "during", "after")


# ------------------------------------------------------------ server process


def server_context(certdir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certdir / "server.pem")
    return ctx


def client_context(certdir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certdir / "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


async def echo(stream: trio.abc.Stream) -> None:
    try:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def run_server(impl: str, max_handshakes: int | None, certdir: Path) -> None:
    ctx = server_context(certdir)

    async def started(listeners: Sequence[Any]) -> None:
        sock = listeners[0].transport_listener.socket
        print(sock.getsockname()[1], flush=True)

    async with trio.open_nursery() as nursery:
        if impl == "trio":
            serve: Any = functools.partial(trio.serve_ssl_over_tcp, host=HOST, backlog=4096)
        else:
            serve = functools.partial(
                trio_tlsretry.serve_tls_over_tcp,
                host=HOST,
                backlog=4096,
                max_handshakes=max_handshakes,
            )
        listeners = await nursery.start(serve, echo, 0, ctx)
        await started(listeners)
        # Runs until this process is killed.


# ------------------------------------------------------------- flood process


async def run_flood(port: int, tasks: int, seconds: float, certdir: Path) -> None:
    ctx = client_context(certdir)
    done = failed = 0

    async def one_client() -> None:
        nonlocal done, failed
        while True:
            try:
                tcp = await trio.open_tcp_stream(HOST, port)
            except OSError:
                failed += 1
                await trio.sleep(0.01)  # a full backlog: back off a little
                continue
            stream = TLSStream(tcp, ctx, server_hostname="localhost")
            try:
                await stream.do_handshake()
                done += 1
            except trio.BrokenResourceError:
                failed += 1
            finally:
                await trio.aclose_forcefully(stream)

    print("started", flush=True)
    started = time.perf_counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(one_client)
    elapsed = time.perf_counter() - started
    print(json.dumps({"done": done, "failed": failed, "seconds": elapsed}), flush=True)


# ----------------------------------------------------------- probe (main) side


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[max(index, 0)]


async def measure(
    impl: str,
    max_handshakes: int | None,
    certdir: Path,
    opts: argparse.Namespace,
) -> dict[str, Any]:
    """One server: probes before, during and after one flood."""
    cmd = [sys.executable, __file__, "_server", "--impl", impl, "--certdir", str(certdir)]
    if max_handshakes is not None:
        cmd += ["--max-handshakes", str(max_handshakes)]
    server = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE)
    flood: trio.Process | None = None
    try:
        assert server.stdout is not None
        port = int((await server.stdout.receive_some()).decode().split()[0])
        ctx = client_context(certdir)
        phase = ["warm-up"]
        samples: dict[str, list[float]] = {name: [] for name in PHASES}

        async def probe() -> None:
            tcp = await trio.open_tcp_stream(HOST, port)
            stream = TLSStream(tcp, ctx, server_hostname="localhost")
            stream.busy_poll = 0  # the probe's own CPU use stays the same everywhere
            await stream.do_handshake()
            next_send = trio.current_time()
            while True:
                started = time.perf_counter()
                await stream.send_all(MESSAGE)
                got = 0
                while got < len(MESSAGE):
                    got += len(await stream.receive_some())
                rtt = time.perf_counter() - started
                if phase[0] in samples:
                    samples[phase[0]].append(rtt)
                next_send += opts.interval
                await trio.sleep_until(max(next_send, trio.current_time()))

        async with trio.open_nursery() as nursery:
            for _ in range(opts.probes):
                nursery.start_soon(probe)
            await trio.sleep(0.5)
            phase[0] = "before"
            await trio.sleep(opts.before)
            flood = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    __file__,
                    "_flood",
                    "--port",
                    str(port),
                    "--tasks",
                    str(opts.tasks),
                    "--seconds",
                    str(opts.flood),
                    "--certdir",
                    str(certdir),
                ],
                stdout=subprocess.PIPE,
            )
            assert flood.stdout is not None
            output = bytearray()
            while b"started" not in output:
                output += await flood.stdout.receive_some()
            phase[0] = "during"
            while output.count(b"\n") < 2:
                chunk = await flood.stdout.receive_some()
                if not chunk:
                    break
                output += chunk
            phase[0] = "between"
            await flood.wait()
            await trio.sleep(0.5)  # let the server finish the flood's leftovers
            phase[0] = "after"
            await trio.sleep(opts.after)
            nursery.cancel_scope.cancel()
        result = json.loads(output.decode().splitlines()[1])
    finally:
        for process in (flood, server):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    row: dict[str, Any] = {
        "handshakes_per_s": result["done"] / result["seconds"],
        "failed": result["failed"],
    }
    for name in PHASES:
        values = sorted(samples[name])
        row[name] = {
            "n": len(values),
            "p50": percentile(values, 0.50),
            "p99": percentile(values, 0.99),
            "max": values[-1] if values else math.nan,
        }
    return row


def make_certs(directory: Path) -> None:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    leaf = ca.issue_cert("localhost", HOST)
    leaf.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))


def server_label(impl: str, limit: int | None) -> str:
    if impl == "trio":
        return "trio-sslstream"
    return "tlsstream-unlimited" if limit is None else f"tlsstream-{limit}"


def summarise(runs: list[dict[str, dict[str, Any]]], labels: list[str]) -> dict[str, Any]:
    """The median of each figure over the repetitions."""
    table: dict[str, Any] = {}
    for label in labels:
        rows = [run[label] for run in runs]
        entry: dict[str, Any] = {
            "handshakes_per_s": statistics.median(r["handshakes_per_s"] for r in rows),
            "failed": statistics.median(r["failed"] for r in rows),
        }
        for name in PHASES:
            entry[name] = {
                key: statistics.median(r[name][key] for r in rows) for key in ("p50", "p99", "max")
            }
        entry["p99_ratio"] = statistics.median(
            r["during"]["p99"] / r["before"]["p99"] for r in rows
        )
        table[label] = entry
    base = table.get("tlsstream-unlimited")
    for entry in table.values():
        entry["rate_ratio"] = (
            entry["handshakes_per_s"] / base["handshakes_per_s"] if base else math.nan
        )
    return table


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def print_text(table: dict[str, Any]) -> None:
    head = (
        f"{'server':<21}{'before p50/p99/max ms':>24}{'during p50/p99/max ms':>26}"
        f"{'after p50/p99/max ms':>24}{'hs/s':>8}{'p99 x':>7}{'rate x':>8}"
    )
    print(head)
    for label, e in table.items():
        cells = ["/".join(ms(e[name][key]) for key in ("p50", "p99", "max")) for name in PHASES]
        print(
            f"{label:<21}{cells[0]:>24}{cells[1]:>26}{cells[2]:>24}"
            f"{e['handshakes_per_s']:>8.0f}{e['p99_ratio']:>7.1f}{e['rate_ratio']:>8.2f}"
        )


def print_rst(table: dict[str, Any]) -> None:
    header = [
        "Server",
        "p50 / p99 / max before (ms)",
        "p50 / p99 / max during (ms)",
        "p50 / p99 / max after (ms)",
        "Handshakes/s",
        "p99 during / before",
        "Handshakes/s vs unlimited",
    ]
    rows = [header]
    for label, e in table.items():
        rows.append(
            [
                f"``{label}``",
                *(" / ".join(ms(e[n][k]) for k in ("p50", "p99", "max")) for n in PHASES),
                f"{e['handshakes_per_s']:.0f}",
                f"{e['p99_ratio']:.1f}x",
                f"{e['rate_ratio']:.2f}",
            ]
        )
    print(".. list-table::\n   :header-rows: 1\n")
    for row in rows:
        print(f"   * - {row[0]}")
        for cell in row[1:]:
            print(f"     - {cell}")


async def run_all(opts: argparse.Namespace) -> dict[str, Any]:
    limits: list[int] = [int(x) for x in opts.limits.split(",") if x]
    configs: list[tuple[str, int | None]] = [("tlsstream", None)]
    configs += [("tlsstream", n) for n in limits]
    configs += [("trio", None)]
    labels = [server_label(impl, n) for impl, n in configs]
    runs: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        certdir = Path(tmp)
        make_certs(certdir)
        for repetition in range(opts.repeat):
            shift = repetition % len(configs)
            order = configs[shift:] + configs[:shift]
            run: dict[str, dict[str, Any]] = {}
            for impl, limit in order:
                label = server_label(impl, limit)
                run[label] = await measure(impl, limit, certdir, opts)
                r = run[label]
                print(
                    f"# run {repetition + 1}/{opts.repeat} {label}: "
                    f"p99 before {ms(r['before']['p99'])} ms, during {ms(r['during']['p99'])} ms, "
                    f"after {ms(r['after']['p99'])} ms; {r['handshakes_per_s']:.0f} handshakes/s",
                    file=sys.stderr,
                    flush=True,
                )
            runs.append(run)
    table = summarise(runs, labels)
    load = os.getloadavg()
    print(
        f"# {opts.repeat} repetitions, medians; {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end"
    )
    print_text(table)
    if opts.rst:
        print()
        print_rst(table)
    return {"runs": runs, "median": table}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    server = sub.add_parser("_server")
    server.add_argument("--impl", choices=["tlsstream", "trio"], required=True)
    server.add_argument("--max-handshakes", type=int, default=None)
    server.add_argument("--certdir", type=Path, required=True)
    flood = sub.add_parser("_flood")
    flood.add_argument("--port", type=int, required=True)
    flood.add_argument("--tasks", type=int, required=True)
    flood.add_argument("--seconds", type=float, required=True)
    flood.add_argument("--certdir", type=Path, required=True)
    parser.add_argument(
        "--limits",
        default=str(trio_tlsretry.DEFAULT_MAX_HANDSHAKES),
        help="comma-separated max_handshakes values to measure (default: the library's default)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--probes", type=int, default=4, help="established connections (4)")
    parser.add_argument("--interval", type=float, default=0.010, help="seconds between echoes")
    parser.add_argument("--tasks", type=int, default=200, help="concurrent flood tasks (200)")
    parser.add_argument("--before", type=float, default=3.0, help="seconds before the flood")
    parser.add_argument("--flood", type=float, default=5.0, help="seconds of flood")
    parser.add_argument("--after", type=float, default=3.0, help="seconds after the flood")
    parser.add_argument("--rst", action="store_true", help="also print the docs table")
    parser.add_argument("--json", help="write every run and the medians to this file")
    opts = parser.parse_args(argv)
    if opts.role == "_server":
        trio.run(run_server, opts.impl, opts.max_handshakes, opts.certdir)
    elif opts.role == "_flood":
        trio.run(run_flood, opts.port, opts.tasks, opts.seconds, opts.certdir)
    else:
        results = trio.run(run_all, opts)
        if opts.json:
            Path(opts.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
