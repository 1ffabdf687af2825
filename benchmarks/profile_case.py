"""Profile one benchmark case (CPU-time cProfile) and count Trio scheduler passes.

Usage::

    python benchmarks/profile_case.py bulk                  # trio_tlsretry
    python benchmarks/profile_case.py pingpong --impl trio  # the baseline
    python benchmarks/profile_case.py bulk --knob WRITE_CHUNK=262144
    python benchmarks/profile_case.py bulk --impl trio --side server  # the receiver

The server runs the same implementation as the client (``--server-impl``
picks another). With ``--side client`` (default) it prints the CPU time and
Trio task steps per operation of the client's timed part; with ``--side
server`` the server's CPU time and task steps over the whole connection
(warm-up included) per 16 KiB record received or per round trip. Then the
functions with the most CPU time of their own. The profile is written to
``benchmarks/results/tmp/<impl>-<case>[-server].prof`` for ``snakeviz``/``pstats``.
"""

from __future__ import annotations

import argparse
import json
import pstats
import tempfile
from pathlib import Path

# Run as a script, so this directory is on sys.path.
from _harness import HERE, IMPLS, make_certs, run_child
from _worker import CASES


def operations(result: dict) -> tuple[int, str]:
    if result["case"] == "bulk":
        return result["bytes"] // (64 * 1024), "send_all"
    if result["case"] == "pingpong":
        return result["round_trips"], "round trip"
    if result["case"] == "handshake":
        return result["connections"], "connection"
    return 1, "call"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=[c for c in CASES if c != "idle"])
    parser.add_argument("--impl", choices=IMPLS, default="tlsretry")
    parser.add_argument("--server-impl", choices=IMPLS, default=None)
    parser.add_argument("--side", choices=("client", "server"), default="client")
    parser.add_argument("--knob", action="append", default=[])
    parser.add_argument("--full", action="store_true", help="full-size case (default: --quick)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    out_dir = HERE / "results" / "tmp"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-server" if args.side == "server" else ""
    prof_path = out_dir / f"{args.impl}-{args.case}{suffix}.prof"
    with tempfile.TemporaryDirectory(prefix="tlsbench-") as tmp:
        make_certs(Path(tmp))
        cmd = ["--impl", args.impl, "--case", args.case, "--certdir", tmp]
        if args.server_impl:
            cmd += ["--server-impl", args.server_impl]
        if args.side == "server":
            cmd += ["--profile-server", str(prof_path)]
        else:
            cmd += ["--profile", str(prof_path)]
            if IMPLS[args.impl].loop in ("trio", "anyio"):
                cmd.append("--count-steps")
        if not args.full:
            cmd.append("--quick")
        for knob in args.knob:
            cmd += ["--knob", knob]
        result = run_child(f"{args.impl} {args.case}", "_worker.py", cmd, timeout=600)
    ops, what = operations(result)
    if args.side == "server":
        server = json.loads(prof_path.with_name(prof_path.name + ".json").read_text())
        stats = pstats.Stats(str(prof_path))
        cpu = stats.total_tt  # type: ignore[attr-defined]
        if result["case"] in ("bulk", "onecall"):
            ops = max(1, server["bytes_received"] // (16 * 1024))
            what = "16 KiB record received"
        elif result["case"] == "pingpong":
            ops = max(1, server["bytes_received"] // 64)  # warm-up included
        print(
            f"{result.get('server_impl', args.impl)} server, {args.case}: "
            f"CPU {cpu / ops * 1e6:.1f} us per {what} "
            f"(profiled, whole connection; not the timed part only)"
            + (
                f"; {server['task_steps'] / ops:.2f} Trio task steps per {what}"
                if server["task_steps"]
                else ""
            )
        )
        stats.sort_stats("tottime").print_stats(args.top)
        return
    print(
        f"{args.impl} {args.case} {result['knobs'] or ''}: {result['value']:.1f} {result['unit']} "
        f"(profiled); CPU {result['cpu_seconds'] / ops * 1e6:.1f} us per {what}"
        + (
            f"; {result['task_steps'] / ops:.2f} Trio task steps per {what}"
            if "task_steps" in result
            else ""
        )
    )
    stats = pstats.Stats(str(prof_path))
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
