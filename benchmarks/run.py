"""Run the TLS stream benchmarks and report medians, ratios and targets.

Usage::

    python benchmarks/run.py              # full run, 4-8 minutes
    python benchmarks/run.py --quick      # smoke run, about 1 minute
    python benchmarks/run.py --update-docs  # also rewrite the table in docs/performance.rst
    python benchmarks/run.py --fixed-peer   # old mode: every client against a blocking server

Each (repetition, case, implementation) runs in a fresh ``_worker.py`` process
that is the TLS client; it starts a fresh ``_peer.py`` process as the server,
running the *same* implementation (so bulk is e.g. trio.SSLStream sender ->
trio.SSLStream receiver, each in its own process). Rates are measured in the
client; the server's CPU time is reported too. Implementations are
interleaved and their order rotates between repetitions.

Outputs: ``benchmarks/results/latest.json`` (every sample), ``latest.txt``
(this script's report), ``latest.rst`` (the table for the docs) and
``docs/_static/performance.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import PERFORMANCE_PAGE, list_table, update_section
from _harness import (
    BASELINE,
    HERE,
    IMPLS,
    OURS,
    ROOT,
    machine_info,
    make_certs,
    run_child,
)
from _worker import CASES

CASE_LABELS = {
    "bulk": "bulk: 256 MiB in 64 KiB send_all",
    "onecall": "one-call: one 64 MiB send_all",
    "onecall_rss": "one-call: sender peak RSS growth",
    "pingpong": "ping-pong: 64 B round trips",
    "handshake": "handshakes: TCP+TLS connect, 1 B each way, close",
    "idle": "idle memory: client RSS per idle connection (1,000 open)",
    "bulk_cpu": "bulk: sender (client) CPU efficiency",
    "onecall_cpu": "one-call: sender (client) CPU efficiency",
    "pingpong_cpu": "ping-pong: client CPU per round trip",
    "handshake_cpu": "handshakes: client CPU per connection",
    "bulk_scpu": "bulk: receiver (server) CPU efficiency",
    "onecall_scpu": "one-call: receiver (server) CPU efficiency",
    "pingpong_scpu": "ping-pong: server CPU per round trip",
    "handshake_scpu": "handshakes: server CPU per connection",
    "idle_server": "idle memory: server RSS per idle connection",
}
CHART_TITLES = {
    "bulk": "bulk: 64 KiB send_all",
    "onecall": "one-call: 64 MiB send_all",
    "onecall_rss": "one-call: sender peak RSS growth",
    "pingpong": "ping-pong: 64 B round trips",
    "handshake": "handshakes",
    "idle": "idle memory per connection",
}
UNITS = {
    "bulk": "MB/s",
    "onecall": "MB/s",
    "onecall_rss": "MiB",
    "pingpong": "round trips/s",
    "handshake": "connections/s",
    "idle": "KiB/connection",
    "bulk_cpu": "MB per CPU-second",
    "onecall_cpu": "MB per CPU-second",
    "pingpong_cpu": "CPU us",
    "handshake_cpu": "CPU us",
    "bulk_scpu": "MB per CPU-second",
    "onecall_scpu": "MB per CPU-second",
    "pingpong_scpu": "CPU us",
    "handshake_scpu": "CPU us",
    "idle_server": "KiB/connection",
}
# Metrics where a smaller number is better.
LOWER_IS_BETTER = {
    "onecall_rss",
    "idle",
    "pingpong_cpu",
    "handshake_cpu",
    "pingpong_scpu",
    "handshake_scpu",
    "idle_server",
}
# Metrics shown in the main table and the chart, in order.
METRICS = ("bulk", "onecall", "onecall_rss", "pingpong", "handshake", "idle")
# CPU time of the client process (time.process_time()) and of the server
# process (/proc/PID/stat, 10 ms ticks): far less sensitive to other load on a
# shared machine than wall-clock rates. In bulk and one-call the client is the
# sender and the server the receiver.
CPU_METRICS = ("bulk_cpu", "onecall_cpu", "pingpong_cpu", "handshake_cpu")
SERVER_METRICS = ("bulk_scpu", "onecall_scpu", "pingpong_scpu", "handshake_scpu", "idle_server")
GROUP_HEADERS = {
    CPU_METRICS[0]: "client CPU time:",
    SERVER_METRICS[0]: "server CPU time and memory:",
}
METRIC_SPECS: dict[str, tuple[str, Any]] = {
    "bulk": ("bulk", lambda s: s["value"]),
    "onecall": ("onecall", lambda s: s["value"]),
    "onecall_rss": ("onecall", lambda s: s["rss_growth_mib"]),
    "pingpong": ("pingpong", lambda s: s["value"]),
    "handshake": ("handshake", lambda s: s["value"]),
    "idle": ("idle", lambda s: s["value"]),
    "bulk_cpu": ("bulk", lambda s: s["bytes"] / 1e6 / s["cpu_seconds"]),
    "onecall_cpu": ("onecall", lambda s: s["bytes"] / 1e6 / s["cpu_seconds"]),
    "pingpong_cpu": ("pingpong", lambda s: s["cpu_seconds"] / s["round_trips"] * 1e6),
    "handshake_cpu": ("handshake", lambda s: s["cpu_seconds"] / s["connections"] * 1e6),
    "bulk_scpu": ("bulk", lambda s: s["bytes"] / 1e6 / s["peer_cpu_seconds"]),
    "onecall_scpu": ("onecall", lambda s: s["bytes"] / 1e6 / s["peer_cpu_seconds"]),
    "pingpong_scpu": ("pingpong", lambda s: s["peer_cpu_seconds"] / s["round_trips"] * 1e6),
    "handshake_scpu": ("handshake", lambda s: s["peer_cpu_seconds"] / s["connections"] * 1e6),
    "idle_server": ("idle", lambda s: s["peer_kib_per_connection"]),
}


# ------------------------------------------------------------------ setup


def crypto_ceiling(seconds: int) -> dict[str, float | None]:
    """Single-core AES-256-GCM at 16 KiB blocks (one TLS record), in MB/s."""
    out: dict[str, float | None] = {}
    for direction, extra in (("encrypt", []), ("decrypt", ["-decrypt"])):
        cmd = ["openssl", "speed", *extra, "-evp", "aes-256-gcm", "-bytes", "16384"]
        cmd += ["-seconds", str(seconds)]
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            out[direction] = None
            continue
        match = re.search(r"^AES-256-GCM\s+([\d.]+)k\s*$", text, re.MULTILINE)
        out[direction] = float(match.group(1)) / 1000 if match else None
    return out


# ------------------------------------------------------------------- runs


def run_one(
    impl: str,
    case: str,
    certdir: Path,
    quick: bool,
    knobs: list[str],
    timeout: float,
    fixed_peer: bool = False,
) -> dict[str, Any]:
    args = ["--impl", impl, "--case", case, "--certdir", str(certdir)]
    if fixed_peer:
        args += ["--server-impl", "blocking"]
    if quick:
        args.append("--quick")
    if impl == OURS:
        for knob in knobs:
            args += ["--knob", knob]
    try:
        return run_child(f"{impl} {case}", "_worker.py", args, timeout)
    except RuntimeError as exc:
        return {"impl": impl, "case": case, "error": str(exc)}


def metric_values(samples: list[dict[str, Any]], impl: str, metric: str) -> list[float]:
    case, extract = METRIC_SPECS[metric]
    values = []
    for s in samples:
        if s["impl"] == impl and s["case"] == case and "error" not in s:
            # Missing in older results; zero server CPU ticks in very short runs.
            with contextlib.suppress(KeyError, ZeroDivisionError):
                values.append(extract(s))
    return values


def summarise(samples: list[dict[str, Any]], impls: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for metric in METRICS + CPU_METRICS + SERVER_METRICS:
        row: dict[str, Any] = {}
        for impl in impls:
            values = metric_values(samples, impl, metric)
            if values:
                row[impl] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
        base = row.get(BASELINE, {}).get("median")
        for stats in row.values():
            stats["ratio"] = stats["median"] / base if base else None
        if row:
            summary[metric] = row
    return summary


def evaluate_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    def ratio(metric: str) -> float | None:
        return summary.get(metric, {}).get(OURS, {}).get("ratio")

    def median(metric: str) -> float | None:
        return summary.get(metric, {}).get(OURS, {}).get("median")

    checks = [
        ("bulk >= 2x trio", ratio("bulk"), lambda v: v >= 2.0, "x"),
        ("one-call >= 5x trio", ratio("onecall"), lambda v: v >= 5.0, "x"),
        ("one-call peak RSS growth < 8 MiB", median("onecall_rss"), lambda v: v < 8.0, " MiB"),
        ("ping-pong >= 1.7x trio", ratio("pingpong"), lambda v: v >= 1.7, "x"),
        ("handshakes >= 1.4x trio", ratio("handshake"), lambda v: v >= 1.4, "x"),
        ("idle memory <= trio", ratio("idle"), lambda v: v <= 1.0, "x"),
    ]
    results = []
    for name, value, ok, unit in checks:
        if value is None:
            results.append({"target": name, "value": None, "pass": False, "shown": "n/a"})
        else:
            # Three decimals where two would print a failing 1.00x.
            shown = f"{value:.3f}{unit}" if round(value, 2) == 1.0 else f"{value:.2f}{unit}"
            results.append(
                {"target": name, "value": value, "pass": bool(ok(value)), "shown": shown}
            )
    return results


# --------------------------------------------------------------- reports


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def text_report(meta: dict[str, Any], summary: dict[str, Any], targets: list[dict]) -> str:
    out = io.StringIO()
    info = meta["machine"]
    print(f"Date: {info['date']}   nproc: {info['nproc']}   CPU: {info['cpu']}", file=out)
    print(
        f"Python {info['python']}, {info['openssl']}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        file=out,
    )
    print(f"Server: {meta.get('peer', 'n/a')}; rates measured in the client", file=out)
    print(
        f"Repetitions: {meta['reps']}{' (quick)' if meta['quick'] else ''}; "
        f"negotiated: {', '.join(meta['negotiated']) or 'n/a'}; knobs: {meta['knobs'] or 'none'}",
        file=out,
    )
    ceiling = meta["crypto_ceiling_mb_s"]
    if ceiling.get("encrypt"):
        print(
            f"Crypto ceiling (openssl speed, 1 core, AES-256-GCM, 16 KiB): "
            f"encrypt {ceiling['encrypt']:,.0f} MB/s, "
            f"decrypt {ceiling.get('decrypt') or 0:,.0f} MB/s",
            file=out,
        )
    print(file=out)
    impls = meta["impls"]
    width = 32
    print(f"{'metric':<{width}}" + "".join(f"{i:>22}" for i in impls), file=out)
    for metric, row in summary.items():
        if metric in GROUP_HEADERS:
            print(GROUP_HEADERS[metric], file=out)
        label = f"{metric} ({UNITS[metric]})"
        cells = []
        for impl in impls:
            stats = row.get(impl)
            if stats is None:
                cells.append(f"{'-':>22}")
                continue
            ratio = f" {stats['ratio']:.2f}x" if stats["ratio"] is not None else ""
            cells.append(f"{fmt(stats['median']) + ratio:>22}")
        print(f"{label:<{width}}" + "".join(cells), file=out)
        spread = "".join(
            f"{'[' + fmt(row[i]['min']) + '..' + fmt(row[i]['max']) + ']':>22}"
            if i in row
            else " " * 22
            for i in impls
        )
        print(f"{'  min..max':<{width}}" + spread, file=out)
    print(file=out)
    print(
        f"Targets for {IMPLS[OURS].label} (ratios vs {IMPLS[BASELINE].label}, same run):", file=out
    )
    for t in targets:
        print(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['target']:<36} {t['shown']}", file=out)
    return out.getvalue()


def is_fixed_peer(meta: dict[str, Any]) -> bool:
    """Whether every client ran against the blocking server (older JSON files too)."""
    return bool(meta.get("fixed_peer", str(meta.get("peer", "")).startswith("blocking")))


def rst_table(meta: dict[str, Any], summary: dict[str, Any], targets: list[dict]) -> str:
    impls = meta["impls"]
    info = meta["machine"]
    header = ["Case", "Unit", *(IMPLS[i].label for i in impls)]
    rows = []
    for metric, row in summary.items():
        cells = [CASE_LABELS[metric], UNITS[metric]]
        for impl in impls:
            stats = row.get(impl)
            if stats is None:
                cells.append("-")
            elif stats["ratio"] is None or impl == BASELINE:
                cells.append(fmt(stats["median"]))
            else:
                cells.append(f"{fmt(stats['median'])} ({stats['ratio']:.2f}x)")
        rows.append(cells)
    if is_fixed_peer(meta):
        setup = "every client against the blocking ``ssl.SSLSocket`` server"
    else:
        setup = "the same implementation as client and server, each in its own process"
    lines = [
        f"Run of {info['date']} on {info['nproc']} CPUs ({info['cpu']}), Python "
        f"{info['python']}, {info['openssl']}; {setup}; median of {meta['reps']} "
        f"fresh-process repetitions; ratios are against ``trio.SSLStream`` in the same run.",
        "",
        *list_table(header, rows),
    ]
    ceiling = meta["crypto_ceiling_mb_s"]
    if ceiling.get("encrypt"):
        lines += [
            "",
            f"Single-core crypto ceiling (``openssl speed -evp aes-256-gcm -bytes 16384``): "
            f"{ceiling['encrypt']:,.0f} MB/s encrypt, {ceiling.get('decrypt') or 0:,.0f} MB/s "
            "decrypt.",
        ]
    lines += ["", "Targets (``trio_tlsretry.TLSStream`` against ``trio.SSLStream``):", ""]
    lines += [
        f"- **{'PASS' if t['pass'] else 'FAIL'}** {t['target']}: {t['shown']}" for t in targets
    ]
    return "\n".join(lines) + "\n"


def draw_chart(meta: dict[str, Any], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = meta["impls"]
    metrics = [m for m in METRICS if m in summary]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, metric in zip(axes.flat, metrics, strict=False):
        row = summary[metric]
        names = [i for i in impls if i in row]
        medians = [row[i]["median"] for i in names]
        lo = [row[i]["median"] - row[i]["min"] for i in names]
        hi = [row[i]["max"] - row[i]["median"] for i in names]
        bars = ax.bar(
            range(len(names)),
            medians,
            yerr=[lo, hi],
            capsize=3,
            color=[IMPLS[i].color if i in IMPLS else "#777" for i in names],
        )
        for bar, name in zip(bars, names, strict=True):
            ratio = row[name]["ratio"]
            if ratio is not None:
                ax.annotate(
                    f"{ratio:.2f}x",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{CHART_TITLES[metric]} ({better})", fontsize=10)
        ax.set_ylabel(UNITS[metric], fontsize=9)
        ceiling = meta["crypto_ceiling_mb_s"].get("encrypt")
        if metric in ("bulk", "onecall") and ceiling:
            ax.axhline(ceiling, linestyle="--", color="#c00", linewidth=1)
            ax.text(
                len(names) - 0.5,
                ceiling,
                "AES-256-GCM 1-core ceiling",
                ha="right",
                va="bottom",
                fontsize=7,
                color="#c00",
            )
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    info = meta["machine"]
    who = (
        "clients vs a blocking ssl.SSLSocket server"
        if is_fixed_peer(meta)
        else "same implementation on both ends"
    )
    fig.suptitle(
        f"TLS 1.3 over loopback, {who}; median of {meta['reps']} runs, "
        f"bars = min..max; labels = ratio vs trio.SSLStream\n"
        f"{info['date']}, {info['nproc']} CPUs, {info['cpu']}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~1 minute)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument(
        "--knob",
        action="append",
        default=[],
        help="NAME=VALUE trio_tlsretry setting (see _harness.Knobs)",
    )
    parser.add_argument(
        "--fixed-peer",
        action="store_true",
        help="old mode: the server is always the blocking ssl.SSLSocket server",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--name", default="latest", help="base name of the result files")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "_static" / "performance.png")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--update-docs", action="store_true", help="rewrite the table in docs/performance.rst"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="do not measure: re-render the reports, chart and docs from a saved JSON",
    )
    args = parser.parse_args()
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        return report_and_save(args, saved["meta"], saved["samples"])

    reps = args.reps or (1 if args.quick else 3)
    impls = [i for i in args.impls.split(",") if i]
    cases = [c for c in args.cases.split(",") if c]
    for name in impls:
        if name not in IMPLS:
            parser.error(f"unknown implementation {name!r}; choose from {tuple(IMPLS)}")
    for name in cases:
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {CASES}")

    started = time.monotonic()
    meta: dict[str, Any] = {
        "machine": machine_info(),
        "reps": reps,
        "quick": args.quick,
        "impls": impls,
        "cases": cases,
        "knobs": args.knob,
        "fixed_peer": args.fixed_peer,
        "peer": (
            "blocking ssl.SSLSocket server in a separate process (benchmarks/_peer.py)"
            if args.fixed_peer
            else "the same implementation as the client, in a separate process "
            "(benchmarks/_peer.py)"
        ),
        "measured_side": "client (rates); server CPU and idle RSS also recorded",
    }
    print("Measuring the AES-256-GCM crypto ceiling ...", flush=True)
    meta["crypto_ceiling_mb_s"] = crypto_ceiling(1 if args.quick else 2)

    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tlsbench-") as tmp:
        certdir = Path(tmp)
        make_certs(certdir)
        total = reps * len(cases) * len(impls)
        done = 0
        for rep in range(reps):
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
            for case in cases:
                for impl in order:
                    result = run_one(
                        impl, case, certdir, args.quick, args.knob, 180, args.fixed_peer
                    )
                    result["rep"] = rep
                    samples.append(result)
                    done += 1
                    shown = result.get("error") or f"{fmt(result['value'])} {result['unit']}"
                    if case == "onecall" and "error" not in result:
                        shown += f", RSS +{result['rss_growth_mib']:.1f} MiB"
                    print(f"[{done:3}/{total}] rep {rep} {case:<9} {impl:<9} {shown}", flush=True)

    meta["negotiated"] = sorted(
        {f"{s['version']} {s['cipher']}" for s in samples if s.get("version")}
    )
    meta["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return report_and_save(args, meta, samples)


def report_and_save(args: argparse.Namespace, meta: dict[str, Any], samples: list[dict]) -> int:
    summary = summarise(samples, meta["impls"])
    targets = evaluate_targets(summary)
    report = text_report(meta, summary, targets)
    table = rst_table(meta, summary, targets)
    print()
    print(report)
    print(f"RST table (also in {args.out / args.name}.rst):")
    print()
    print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "summary": summary, "targets": targets, "samples": samples}
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out / f"{args.name}.txt").write_text(report)
    (args.out / f"{args.name}.rst").write_text(table)
    if not args.no_chart:
        draw_chart(meta, summary, args.chart)
        print(f"Chart: {args.chart}")
    if args.update_docs:
        if update_section("RESULTS", "run.py", table):
            print(f"Updated {PERFORMANCE_PAGE}")
        else:
            print(f"{PERFORMANCE_PAGE} has no result markers; not updated")
    errors = [s for s in samples if "error" in s]
    print(
        f"Wrote {args.out / args.name}.{{json,txt,rst}}; {len(errors)} failed runs; "
        f"{meta['elapsed_seconds']} s"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
