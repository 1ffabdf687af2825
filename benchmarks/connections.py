"""Server memory per TLS connection, state by state: TLSStream vs trio.SSLStream vs anyio.

For each connection state and each server implementation, a fresh server
process (``_conn_server.py``) listens on 127.0.0.1 and a separate client
process (``_conn_client.py``, plain stdlib ``ssl``, not measured) drives N
connections into the state. The server measures its own resident set size;
the figure is ``(RSS with N connections in the state - baseline) / N``.

The states:

idle after the handshake
    One byte each way (the client also reads its TLS 1.3 session tickets),
    then the server waits in ``receive_some()``.
mid-handshake
    The client sent its ClientHello and never answers the server's flight;
    the server waits for the client's Finished.
sender blocked
    An echo server (``receive_some()`` then ``send_all(data)``) whose client
    keeps sending and never reads, until every echo is stuck in ``send_all``.
    The client sends while the server process is stopped (SIGSTOP), as much
    as the kernel takes, so that each server read finds all of it, and it
    stops sending on a connection once that echo is stuck (more would only
    fill kernel buffers). The same state on every run.
receiver behind
    The client sends a 64-byte header and 1 MiB; once the kernel holds what
    it can, the server application reads the header with one
    ``receive_some(64)`` and nothing after it. On a fresh connection the
    kernel holds about one receive window (64 KiB on Linux by default) at
    that moment, so a stream's transport read takes at most that much here;
    on a connection whose window has grown it would take its full read size.
idle after a transfer
    The client sends 1 MiB, the server reads it all with ``receive_some()``
    and answers 1 MiB in one ``send_all``; then it waits in ``receive_some()``.

Each state is checked on counters before the RSS is read, never assumed after
a delay: every handler's phase (e.g. inside ``send_all``), the kernel queues
of every server socket (``SIOCINQ``/``SIOCOUTQ``: empty when idle, unsent
echo data when the sender is blocked, unread data when the receiver is
behind), TLSStream's ``statistics()``, what the client could still send, and
two consecutive identical readings with the server's tasks all blocked.

The baseline: the server process is started with its listener up, a warm-up
round of ``WARMUP`` connections is taken through the same state and dropped,
then ``gc.collect()`` and ``malloc_trim(0)`` run and the RSS is read. The
state's RSS is read after ``gc.collect()`` only, so heap fragmentation counts.
Kernel socket buffers are not part of RSS, but they are what makes large N
heavy for the machine: at 2,000 connections the sender-blocked row needs up
to about 1.5 GB of kernel TCP memory for anyio (whose server socket send
queues grow to megabytes), which reaches the default ``net.ipv4.tcp_mem``
pressure threshold of a 24 GB machine; the other rows stay far below it.
At 10,000 the receiver-behind row alone holds about 1.6 GB in kernel queues
(a receive window on the server plus the client's send buffer per
connection), over that threshold, so expect the kernel to throttle there.

Usage::

    python benchmarks/connections.py                 # 2,000 connections, ~2.5 minutes
    python benchmarks/connections.py -n 10000        # 10,000, ~12 minutes (estimated, see below)
    python benchmarks/connections.py -n 200 --states idle,behind --impls tlsretry,trio
    python benchmarks/connections.py -n 200 --tracemalloc   # top allocation sites too
    python benchmarks/connections.py --json results.json
    python benchmarks/connections.py --update-docs   # also rewrite docs/performance.rst's table
    python benchmarks/connections.py --from-json benchmarks/results/connections.json --update-docs

``--update-docs`` saves the results to ``benchmarks/results/connections.json``
unless ``--json`` names another file; ``--from-json`` re-renders the table of a
saved run without measuring.

Needs trustme and anyio (the ``test`` extra). Linux only (``/proc``, socket
``ioctl``\\ s). File descriptors: the soft limit is raised to what N needs, up
to the hard limit.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _conn_common import (
    BEHIND,
    HANDSHAKING,
    HEADER_SIZE,
    IDLE,
    SENDING,
    STATE_LABELS,
    STATES,
    WAITING,
)
from _docs import PERFORMANCE_PAGE, list_table, update_section
from _harness import (
    HERE,
    IMPLS,
    TRIO_IMPLS,
    Child,
    KiB,
    machine_info,
    make_certs,
    raise_fd_limit,
    versions,
)

WARMUP = 20
#: Where ``--update-docs`` saves the run whose table it puts in the docs.
DOCS_JSON = HERE / "results" / "connections.json"
PUSH_STATES = ("send_blocked", "behind")


def reached(
    state: str, count: int, status: dict[str, Any], push: dict[str, Any] | None, before_go: bool
) -> bool:
    """Do the counters show ``count`` connections in ``state``?

    ``before_go``: the "behind" handlers have not made their one receive yet.
    """
    phases: dict[str, int] = status["phases"]
    if status["connections"] != count:
        return False
    if push is not None and push["pushed"]:
        return False  # the client could still send: not settled
    if state in ("idle", "after_transfer"):
        quiet = status["inq_nonzero"] == 0 and status["outq_nonzero"] == 0
        return phases.get(IDLE) == count and quiet
    if state == "handshake":
        return (
            phases.get(HANDSHAKING) == count
            and status["inq_nonzero"] == 0  # every ClientHello consumed
            and status.get("received_nonzero", count) == count
        )
    if state == "send_blocked":
        assert push is not None
        return (
            phases.get(SENDING) == count  # every handler inside send_all
            and status["outq_nonzero"] == count  # with unsent data in the kernel
            and status.get("send_pending_nonzero", count) == count  # and in the stream
            and push["held"] == count  # so the client no longer sends
        )
    if state == "behind":
        assert push is not None
        if before_go:
            return phases.get(WAITING) == count  # and the client sent all it could
        return (
            phases.get(BEHIND) == count  # one receive_some(64) done, no more
            and status["first_read_total"] == count * HEADER_SIZE
            and status["inq_nonzero"] == count  # unread data waiting in the kernel
        )
    raise ValueError(state)


def settle(
    server: Child, client: Child, state: str, count: int, timeout: float, before_go: bool = False
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Poll until the state is reached and two consecutive readings agree."""
    deadline = time.monotonic() + timeout
    previous = None
    pause = 0.01
    blocked_peers: list[int] = []
    while True:
        push = None
        if state in PUSH_STATES:
            # The server is stopped while the client sends, so each of its
            # reads finds everything the kernel could take (not whatever
            # part had arrived when it woke): the same state on every run.
            with server.stopped():
                push = client.request({"cmd": "push", "skip": blocked_peers})
        status = server.request({"cmd": "status"})
        blocked_peers = status["blocked_peers"]
        ok = reached(state, count, status, push, before_go)
        reading = json.dumps([status, push], sort_keys=True)
        if ok and reading == previous:
            return status, push
        previous = reading if ok else None
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{state}: not reached within {timeout:.0f} s; last server status "
                f"{status}, client {push}"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def bring_up(
    server: Child, client: Child, state: str, count: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Open ``count`` connections into ``state``; the client's answers to open and push."""
    timeout = 60 + count * 0.05
    opened = client.request({"cmd": "open", "count": count, "timeout": timeout}, timeout + 30)
    if opened["open"] != count:
        raise RuntimeError(f"{state}: the client has {opened['open']} connections, not {count}")
    if state == "handshake" and opened["readable"] != opened["open"]:
        raise RuntimeError(f"only {opened['readable']} connections saw the server's flight")
    settle_timeout = 60 + count * 0.02
    if state == "behind":
        settle(server, client, state, count, settle_timeout, before_go=True)
        server.request({"cmd": "go"})
    _status, push = settle(server, client, state, count, settle_timeout)
    return opened, push


def measure(impl: str, state: str, count: int, certdir: Path, trace: bool) -> dict[str, Any]:
    common = ["--state", state, "--certdir", str(certdir), "--max-connections", str(count)]
    server_args = ["--impl", impl, *common]
    if trace:
        server_args.append("--tracemalloc")
    server = Child(f"{impl} server", "_conn_server.py", server_args)
    client = None
    try:
        port = server.read(60)["port"]
        client = Child(f"{impl} client", "_conn_client.py", ["--port", str(port), *common])
        warmup = min(WARMUP, count)
        bring_up(server, client, state, warmup)
        client.request({"cmd": "close"})
        server.request({"cmd": "drop"})
        baseline = server.request({"cmd": "baseline"})["rss"]
        started = time.monotonic()
        opened, push = bring_up(server, client, state, count)
        seconds = time.monotonic() - started
        result = server.request({"cmd": "measure"}, timeout=300)
    finally:
        if client is not None:
            client.stop()
        server.stop()
    per_connection = (result["rss"] - baseline) / count
    evidence = {
        k: v / count
        for k, v in result.items()
        if isinstance(v, int)
        and not k.endswith("_nonzero")
        and k not in ("rss", "rss_baseline", "connections")
    }
    if push is not None:
        evidence.update(
            client_ciphertext_sent=push["ciphertext_sent"] / count,
            client_unsent=push["unsent"] / count,
        )
    record = {
        "impl": impl,
        "state": state,
        "connections": count,
        "kib_per_connection": per_connection / KiB,
        "rss_baseline_mib": baseline / KiB / KiB,
        "rss_mib": result["rss"] / KiB / KiB,
        "seconds_to_reach": seconds,
        "client_open_seconds": opened["seconds"],
        "phases": result["phases"],
        "per_connection_counters": evidence,
    }
    if "tracemalloc" in result:
        record["tracemalloc"] = result["tracemalloc"]
    return record


RATIO_LABEL = "ratio TLSStream/trio"


def table_cells(
    results: dict[str, dict[str, dict[str, Any]]], impls: list[str]
) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the results table, as text cells.

    One column per implementation (KiB per connection), and the ratio of
    TLSStream to trio.SSLStream next to trio's column when both were measured.
    """
    header = ["state", *(f"{IMPLS[impl].short} KiB/conn" for impl in impls)]
    with_ratio = "tlsretry" in impls and "trio" in impls
    if with_ratio:
        header.insert(impls.index("trio") + 2, RATIO_LABEL)
    rows = []
    for state, by_impl in results.items():
        cells = [STATE_LABELS[state]]
        for impl in impls:
            cells.append(f"{by_impl[impl]['kib_per_connection']:,.1f}")
            if with_ratio and impl == "trio":
                ratio = by_impl["tlsretry"]["kib_per_connection"] / max(
                    by_impl["trio"]["kib_per_connection"], 0.1
                )
                cells.append(f"{ratio:.2f}x")
        rows.append(cells)
    return header, rows


def table(results: dict[str, dict[str, dict[str, Any]]], impls: list[str], count: int) -> str:
    header, rows = table_cells(results, impls)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        f"Server RSS per connection, {count:,} connections per state "
        "(KiB = 1024 bytes; baseline: listener up after a dropped warm-up round)",
    ]
    for row in [header, *rows]:
        first, *numbers = row
        lines.append(
            "  ".join(
                [
                    f"{first:<{widths[0]}}",
                    *(f"{c:>{w}}" for c, w in zip(numbers, widths[1:], strict=True)),
                ]
            )
        )
    return "\n".join(lines)


def measured_impls(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The implementations a saved run measured, in table order."""
    return [impl for impl in TRIO_IMPLS if impl in next(iter(results.values()))]


def command_line(payload: dict[str, Any]) -> str:
    """The command that measures what ``payload`` holds."""
    words = ["python", "benchmarks/connections.py", "-n", str(payload["connections"])]
    states = list(payload["results"])
    impls = measured_impls(payload["results"])
    if states != list(STATES):
        words += ["--states", ",".join(states)]
    if impls != list(TRIO_IMPLS):
        words += ["--impls", ",".join(impls)]
    return " ".join(words)


def rst_table(payload: dict[str, Any]) -> str:
    """The results of ``payload`` (a saved run) as the RST for docs/performance.rst."""
    results = payload["results"]
    impls = measured_impls(results)
    header, rows = table_cells(results, impls)
    versions = payload.get("versions", {})
    # Files saved before the date and the CPUs were recorded lack them.
    when = payload.get("date", "an unrecorded date")
    cpus = (
        f"{payload['cpus']} CPUs ({payload.get('cpu', 'unknown')})"
        if "cpus" in payload
        else payload.get("machine", "an unrecorded machine")
    )
    lines = [
        f"Run of {when} on {cpus}, Python {versions.get('python', '?')}, "
        f"{versions.get('openssl', '?')}, trio {versions.get('trio', '?')}, "
        f"anyio {versions.get('anyio', '?')}; {payload['connections']:,} connections per "
        "state; server RSS growth per connection in KiB (1,024 bytes); ratios are against "
        "``trio.SSLStream`` in the same run. Measured with:",
        "",
        "::",
        "",
        f"    {command_line(payload)}",
        "",
        *list_table(header, rows),
    ]
    return "\n".join(lines) + "\n"


def tracemalloc_report(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for state, by_impl in results.items():
        for impl, record in by_impl.items():
            trace = record.get("tracemalloc")
            if not trace:
                continue
            lines.append(
                f"\n{IMPLS[impl].short}, {STATE_LABELS[state]}: "
                f"{record['kib_per_connection']:.1f} KiB/conn RSS, "
                f"{trace['traced_bytes_per_connection'] / KiB:.1f} KiB/conn traced by tracemalloc"
            )
            for site in trace["sites"]:
                if abs(site["bytes_per_connection"]) < 256:
                    continue
                lines.append(
                    f"  {site['bytes_per_connection'] / KiB:8.1f} KiB "
                    f"{site['blocks_per_connection']:5.1f} blocks  {site['where']}"
                )
    return "\n".join(lines)


def parse_list(text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
    return [item for item in allowed if item in items]  # table order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="connections per state (default 2000)")
    parser.add_argument(
        "--impls",
        type=lambda s: parse_list(s, TRIO_IMPLS),
        default=list(TRIO_IMPLS),
        help=f"comma-separated subset of {','.join(TRIO_IMPLS)}",
    )
    parser.add_argument(
        "--states",
        type=lambda s: parse_list(s, STATES),
        default=list(STATES),
        help=f"comma-separated subset of {','.join(STATES)}",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace Python allocations in the server (inflates RSS: use a small -n)",
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite the table in docs/performance.rst (and save the results to "
        f"{DOCS_JSON.relative_to(HERE.parent)} unless --json is given)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="do not measure: print (and with --update-docs, put in the docs) a saved run's table",
    )
    args = parser.parse_args()
    if args.n < 1:
        parser.error("-n must be at least 1")
    if args.update_docs and args.tracemalloc:
        parser.error("--tracemalloc inflates RSS: its figures do not belong in the docs")
    if args.from_json is not None:
        payload = json.loads(args.from_json.read_text())
        impls = measured_impls(payload["results"])
        print(table(payload["results"], impls, payload["connections"]))
    else:
        payload = measure_all(args)
        if args.json is None and args.update_docs:
            args.json = DOCS_JSON
        if args.json:
            args.json.write_text(json.dumps(payload, indent=1) + "\n")
            print(f"Wrote {args.json}")
    if args.update_docs:
        if update_section("CONNECTIONS", "connections.py", rst_table(payload)):
            print(f"Updated {PERFORMANCE_PAGE}")
        else:
            print(f"{PERFORMANCE_PAGE} has no connection-table markers; not updated")


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every state and implementation asked for; print the table; the results."""
    # Fails here, with the limits in the message, rather than in a child.
    # The children raise their own soft limit the same way.
    raise_fd_limit(args.n + 100)
    machine = machine_info()
    started = time.monotonic()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        certdir = Path(tmp)
        make_certs(certdir)
        for state in args.states:
            results[state] = {}
            for impl in args.impls:
                record = measure(impl, state, args.n, certdir, args.tracemalloc)
                results[state][impl] = record
                print(
                    f"  {IMPLS[impl].short:<16} {STATE_LABELS[state]:<42} "
                    f"{record['kib_per_connection']:8.1f} KiB/conn "
                    f"(reached in {record['seconds_to_reach']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    report = table(results, args.impls, args.n)
    if args.tracemalloc:
        report += "\n" + tracemalloc_report(results)
    print(report)
    elapsed = time.monotonic() - started
    print(f"({elapsed:.0f} s)")
    return {
        "connections": args.n,
        "warmup": WARMUP,
        "seconds": elapsed,
        "date": machine["date"],
        "cpus": machine["nproc"],
        "cpu": machine["cpu"],
        "machine": platform.platform(),
        "versions": versions(),
        "tracemalloc": args.tracemalloc,
        "results": results,
    }


if __name__ == "__main__":
    main()
