"""TLS inside a real Trio HTTPS server: hypercorn's trio worker under h2load and s_time.

Usage::

    python benchmarks/https_server.py             # 3 repetitions of 5 s loads, about 6 minutes
    python benchmarks/https_server.py --quick     # smoke run: 1 repetition of 2 s loads, ~1 minute
    python benchmarks/https_server.py --profile   # where the server's CPU goes, 5-10 minutes
    python benchmarks/https_server.py --variant B=/path/to/worktree   # A/B against a checkout
    python benchmarks/https_server.py --variant nopoll=BUSY_POLL_US=0  # A/B against a knob
    python benchmarks/https_server.py --from-json benchmarks/results/https_server.json  # re-render

The library measured is the ``trio_tlsretry`` that Python imports: set
``PYTHONPATH`` to measure another checkout (the report names its commit).
Details and results: ``docs/performance-https.rst``.

The servers, each hypercorn 0.18 serving a 1 KiB response from a minimal ASGI
app on 127.0.0.1:

``trio``
    hypercorn's trio worker over ``trio.SSLStream`` (what it uses by default);
``tlsretry``
    the same worker after ``trio_tlsretry.inject_into_trio()``;
``trio-plain``
    the same worker on plain HTTP (the cost of TLS is the difference);
``uvloop``, ``uvloop-plain``
    hypercorn's asyncio worker on uvloop, with TLS and on plain HTTP.

The loads:

``h2``
    ``h2load``, HTTP/2, 16 connections x 8 concurrent streams;
``h1``
    ``h2load --h1``, HTTP/1.1 keep-alive, 32 connections (h2load counts
    hypercorn 0.18's HTTP/1.1 responses as "failed" because their status line
    has no reason phrase: the rate counts every completed ("done") request);
``new``
    ``openssl s_time -new -www /``: a new TLS connection per request, one at
    a time (TLS servers only).

Each (repetition, load, server) starts a fresh server process (hypercorn's
trio worker stops answering HTTP/1.1 after an h2c load), warms it up with a
short load, then measures. Servers are interleaved and their order rotates
between repetitions. Reported: the median rate, its ratio to ``trio`` in the
same run, the server process's CPU time per request (``/proc``, 10 ms
ticks; less sensitive to a busy machine than rates) and each TLS worker's
rate as a fraction of its plain-HTTP rate. The load average is printed
and saved.

``--profile`` runs each load once more per server (``trio``, ``tlsretry``,
``trio-plain`` and any ``--variant``; ``--servers`` picks) with a fixed
amount of work, three times (``--passes`` picks): with ``py-spy`` sampling
the server (the share of its CPU spent under the TLS stream's frames, times
its CPU per request, gives the TLS layer's CPU per request) and a Trio
instrument counting task steps and scheduler rounds; under ``strace -c -f``
(system calls per request); and under ``cProfile`` (calls per request,
CPU-time timer). Each is skipped with a message if its tool is missing.

Needs: ``pip install hypercorn trustme`` (and ``uvloop`` for the asyncio
servers, ``py-spy`` for ``--profile``); Debian/Ubuntu: ``apt-get install
nghttp2-client openssl strace`` (``h2load``, ``openssl s_time``, ``strace``).
What is missing is skipped with a message. Linux only (``/proc``). Not part
of the test suite.

Outputs: ``benchmarks/results/https_server.json`` (every sample, machine,
commit, load average) and ``https_server.txt`` (the printed report);
``--profile`` writes ``https_server.profile.json`` and
``https_server.profile.txt``. ``--name`` changes the base name.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
BODY_SIZE = 1024

SERVERS = ("trio", "tlsretry", "trio-plain", "uvloop", "uvloop-plain")
LOADS = ("h2", "h1", "new")
LABELS = {
    "trio": "trio.SSLStream",
    "tlsretry": "TLSStream",
    "trio-plain": "trio plain",
    "uvloop": "uvloop TLS",
    "uvloop-plain": "uvloop plain",
}
LOAD_LABELS = {
    "h2": "HTTP/2, 16 conn x 8 streams",
    "h1": "HTTP/1.1 keep-alive, 32 conn",
    "new": "new TLS connection/request",
}
UNITS = {"h2": "req/s", "h1": "req/s", "new": "conn/s"}
# Which plain server gives each TLS server's cost of TLS.
PLAIN_OF = {"trio": "trio-plain", "tlsretry": "trio-plain", "uvloop": "uvloop-plain"}
# Files whose frames are "the TLS layer" in a py-spy stack or a cProfile entry.
TLS_FILES = ("trio_tlsretry/", "trio/_ssl.py", "/ssl.py")
# Frames that are a socket read or write (the system call, and Trio's or this
# library's thin wrapper around it).
SOCKET_IO_FRAMES = (
    "trio/_socket.py",
    "trio/_highlevel_socket.py",
    "try_send (trio_tlsretry/_transport.py",
    "try_receive (trio_tlsretry/_transport.py",
    "_fileno (trio_tlsretry/_transport.py",
)
# (full, quick) sizes.
SECONDS = (5, 2)
WARMUP_REQUESTS = (400, 100)
PROFILE_REQUESTS = {"h2": (20000, 3000), "h1": (10000, 1500)}
PROFILE_NEW_SECONDS = (5, 2)
# 250 samples a second of the server's busy threads, without stopping it to read each stack.
PYSPY = ("py-spy", "record", "-r", "250", "-f", "raw", "--nonblocking")


# ================================================================ server side


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal ASGI app: 1 KiB of text for every request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(BODY_SIZE).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"x" * BODY_SIZE})


class SchedulerCounter:
    """A Trio instrument: task steps and scheduler rounds (one per I/O wait)."""

    def __init__(self) -> None:
        self.task_steps = 0
        self.rounds = 0

    def before_task_step(self, task: object) -> None:
        self.task_steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.rounds += 1


def serve_main(opts: argparse.Namespace) -> None:
    """The server process: ``--serve NAME``; stops on SIGTERM."""
    if opts.knob:
        sys.path.insert(0, str(HERE))
        from _worker import apply_knobs

        apply_knobs(opts.knob)
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{HOST}:{opts.port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    # hypercorn closes a connection after 1,000 requests by default, and
    # h2load does not reconnect: a fast server would run out of connections.
    config.keep_alive_max_requests = 10**9
    if not opts.serve.endswith("-plain"):
        config.certfile = config.keyfile = str(Path(opts.certdir) / "server.pem")
    worker = "uvloop" if opts.serve.startswith("uvloop") else "trio"
    profiler = None
    if opts.cprofile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
    counter = SchedulerCounter()
    if worker == "trio":
        import trio

        if opts.serve.startswith("tlsretry"):
            import trio_tlsretry

            trio_tlsretry.inject_into_trio()
        from hypercorn.trio import serve

        async def main() -> None:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            stop.set()
                            return

                nursery.start_soon(on_signal)
                await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
                nursery.cancel_scope.cancel()

        if profiler:
            profiler.enable()
        trio.run(main, instruments=[counter])
    else:
        import asyncio

        import uvloop
        from hypercorn.asyncio import serve as aserve

        async def amain() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            await aserve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

        if profiler:
            profiler.enable()
        uvloop.run(amain())
    if profiler:
        profiler.disable()
        profiler.dump_stats(opts.cprofile)
    if opts.stats_file:
        impl = None
        if worker == "trio":
            import trio

            impl = f"{trio.SSLStream.__module__}.{trio.SSLStream.__qualname__}"
            if "trio_tlsretry" in sys.modules:
                impl += " from " + str(Path(sys.modules["trio_tlsretry"].__file__).parent)
        Path(opts.stats_file).write_text(
            json.dumps({"task_steps": counter.task_steps, "rounds": counter.rounds, "stream": impl})
        )


# ================================================================ client side


def tool_status() -> dict[str, str | None]:
    """What is missing, with how to get it (``None``: available)."""
    missing: dict[str, str | None] = {}

    def module(name: str, how: str) -> None:
        try:
            __import__(name)
            missing[name] = None
        except ImportError:
            missing[name] = how

    module("hypercorn", "pip install hypercorn")
    module("trustme", "pip install trustme")
    module("uvloop", "pip install uvloop")
    for exe, how in (
        ("h2load", "apt-get install nghttp2-client"),
        ("openssl", "apt-get install openssl"),
        ("py-spy", "pip install py-spy"),
        ("strace", "apt-get install strace"),
    ):
        missing[exe] = None if shutil.which(exe) else how
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One fresh server process."""

    def __init__(
        self,
        name: str,
        certdir: Path,
        variants: dict[str, dict[str, Any]],
        *,
        cprofile: Path | None = None,
        stats_file: Path | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.tls = not name.endswith("-plain")
        base = "tlsretry" if name in variants else name
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", base]
        cmd += ["--port", str(self.port), "--certdir", str(certdir)]
        env = dict(os.environ)
        variant = variants.get(name, {})
        for knob in variant.get("knobs", []):
            cmd += ["--knob", knob]
        if variant.get("path"):
            env["PYTHONPATH"] = os.pathsep.join(
                [variant["path"], *filter(None, [env.get("PYTHONPATH")])]
            )
        if cprofile:
            cmd += ["--cprofile", str(cprofile)]
        if stats_file:
            cmd += ["--stats-file", str(stats_file)]
        # The server's stderr: hypercorn's shutdown tracebacks would bury the
        # report; the last line is kept with the sample.
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited with {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} server did not listen within {timeout:.0f} s")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}/"

    def stop(self) -> str:
        """Stop the server; return the last line of its stderr (hypercorn's complaints)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.seek(0)
        lines = [line.strip() for line in self.stderr.read().splitlines() if line.strip()]
        self.stderr.close()
        return lines[-1][:200] if lines else ""


def h2load_cmd(load: str, url: str, *, seconds: float | None, requests: int | None) -> list[str]:
    cmd = ["h2load", "-t", "1"]
    if load == "h2":
        cmd += ["-c", "16", "-m", "8"]
    else:
        cmd += ["--h1", "-c", "32", "-m", "1"]
    if requests is not None:
        cmd += ["-n", str(requests)]
    else:
        cmd += ["-D", str(max(1, round(seconds or 1)))]
    return [*cmd, url]


def parse_h2load(text: str) -> dict[str, Any]:
    finished = re.search(r"finished in ([\d.]+)(m?s)", text)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    if not finished or not counts:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise RuntimeError(f"h2load output not understood: {tail}")
    elapsed = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    done, errored, timeout = int(counts.group(3)), int(counts.group(6)), int(counts.group(7))
    status = re.search(r"status codes: (\d+) 2xx", text)
    return {
        "requests": done,
        "seconds": elapsed,
        "value": done / elapsed,
        "errored": errored,
        "timeout": timeout,
        "status_2xx": int(status.group(1)) if status else None,
    }


def s_time_cmd(port: int, seconds: float) -> list[str]:
    seconds_arg = str(max(1, round(seconds)))
    return [
        "openssl",
        "s_time",
        "-connect",
        f"{HOST}:{port}",
        "-new",
        "-www",
        "/",
        "-time",
        seconds_arg,
    ]


def parse_s_time(text: str) -> dict[str, Any]:
    match = re.search(r"(\d+) connections in (\d+) real seconds, (\d+) bytes read", text)
    if not match:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise RuntimeError(f"s_time output not understood: {tail}")
    conns, real, per = (int(g) for g in match.groups())
    if per < BODY_SIZE:
        raise RuntimeError(f"s_time read only {per} bytes per connection")
    return {"requests": conns, "seconds": real, "value": conns / real, "bytes_per_conn": per}


def run_load(server: Server, load: str, *, seconds: float, requests: int | None = None) -> Any:
    """Run one load against a ready server; returns the parsed result and the raw output."""
    if load == "new":
        cmd = s_time_cmd(server.port, seconds)
    else:
        cmd = h2load_cmd(load, server.url, seconds=seconds, requests=requests)
    # Generous: a profiled server on a busy machine may take 10 ms a request.
    limit = 120 + 4 * seconds + 0.02 * (requests or 0)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    text = proc.stdout + proc.stderr
    result = parse_s_time(text) if load == "new" else parse_h2load(text)
    return result


def warm_up(server: Server, load: str, quick: bool) -> None:
    if load == "new":
        subprocess.run(s_time_cmd(server.port, 1), capture_output=True, timeout=60)
    else:
        n = WARMUP_REQUESTS[quick]
        cmd = h2load_cmd(load, server.url, seconds=None, requests=n)
        subprocess.run(cmd, capture_output=True, timeout=60)


def applicable(server: str, load: str) -> bool:
    return not (load == "new" and server.endswith("-plain"))


def library_commit() -> str:
    """Where the ``trio_tlsretry`` the servers import lives, and its git commit."""
    try:
        import trio_tlsretry
    except ImportError:
        return "trio_tlsretry not importable"
    package = Path(trio_tlsretry.__file__).resolve().parent
    where = str(package.parent)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", where, *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("log", "-1", "--format=%h %cI %s")
        dirty = git("status", "--porcelain", "--", str(package))
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "", ""
    if not commit:
        return f"{where} (not a git checkout)"
    return f"{commit[:100]} ({where}{', with uncommitted changes' if dirty else ''})"


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    sys.path.insert(0, str(HERE))
    from _harness import cpu_model

    cpu = cpu_model()
    versions = {}
    for name in ("trio", "hypercorn", "h11", "h2", "uvloop", "trio-tlsretry"):
        with contextlib.suppress(Exception):
            versions[name] = version(name)
    h2load = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        h2load = subprocess.run(
            ["h2load", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": library_commit(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "h2load": h2load,
        "versions": versions,
    }


def make_certs(directory: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", HOST)
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))


def parse_variants(items: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME=SPEC``: SPEC is a comma list of a directory (PYTHONPATH) and KNOB=VALUEs."""
    variants: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, spec = item.partition("=")
        if not name or not spec:
            raise SystemExit(f"--variant wants NAME=PATH or NAME=KNOB=VALUE, not {item!r}")
        variant: dict[str, Any] = {"path": None, "knobs": []}
        for part in spec.split(","):
            if "=" in part:
                variant["knobs"].append(part)
            else:
                variant["path"] = str(Path(part).resolve())
        variants[f"tlsretry-{name}"] = variant
    return variants


# ================================================================== measuring


def measure(opts: argparse.Namespace, servers: list[str], loads: list[str], certdir: Path) -> Any:
    variants = opts.variants
    seconds = opts.seconds
    samples: list[dict[str, Any]] = []
    loadavg = [os.getloadavg()]
    total = sum(applicable(s, load) for s in servers for load in loads) * opts.reps
    done = 0
    for rep in range(opts.reps):
        order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
        for load in loads:
            for name in order:
                if not applicable(name, load):
                    continue
                done += 1
                sample: dict[str, Any] = {"rep": rep, "load": load, "server": name}
                server = Server(name, certdir, variants)
                try:
                    server.wait_ready()
                    warm_up(server, load, opts.quick)
                    cpu0 = cpu_seconds(server.pid)
                    sample.update(run_load(server, load, seconds=seconds))
                    cpu = cpu_seconds(server.pid) - cpu0
                    sample["server_cpu_seconds"] = cpu
                    sample["cpu_us_per_request"] = cpu / max(1, sample["requests"]) * 1e6
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    sample["error"] = str(exc)
                finally:
                    complaint = server.stop()
                if complaint:
                    sample["server_stderr"] = complaint
                sample["loadavg"] = os.getloadavg()[0]
                samples.append(sample)
                shown = (
                    f"{sample['value']:,.0f} {UNITS[load]}, "
                    f"{sample['cpu_us_per_request']:.0f} us CPU/req"
                    if "error" not in sample
                    else f"ERROR {sample['error']}"
                )
                print(
                    f"  [{done}/{total}] rep {rep + 1} {load:<3} {name:<16} {shown}"
                    f"  (load avg {sample['loadavg']:.2f})",
                    flush=True,
                )
    loadavg.append(os.getloadavg())
    return samples, loadavg


def summarise(samples: list[dict[str, Any]], servers: list[str], loads: list[str]) -> Any:
    summary: dict[str, dict[str, Any]] = {}
    for load in loads:
        row: dict[str, Any] = {}
        for name in servers:
            mine = [s for s in samples if s["load"] == load and s["server"] == name]
            good = [s for s in mine if "error" not in s]
            if not good:
                if mine:
                    row[name] = {"error": mine[-1]["error"]}
                continue
            values = [s["value"] for s in good]
            cpus = [s["cpu_us_per_request"] for s in good]
            row[name] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "n": len(values),
                "cpu_us": statistics.median(cpus),
            }
        base = row.get("trio", {}).get("median")
        for stats in row.values():
            if "median" in stats:
                stats["ratio"] = stats["median"] / base if base else None
        for name, stats in row.items():
            plain = row.get(PLAIN_OF.get(name, name.startswith("tlsretry") and "trio-plain"), {})
            if "median" in stats and plain.get("median"):
                stats["tls_over_plain"] = stats["median"] / plain["median"]
                # The same from the server's CPU time per request, which a
                # busy machine disturbs far less than the rates.
                stats["cpu_plain_over_tls"] = plain["cpu_us"] / stats["cpu_us"]
        summary[load] = row
    return summary


def targets(summary: dict[str, Any]) -> list[tuple[str, float | None, bool]]:
    out = []
    for load in ("h2", "h1"):
        stats = summary.get(load, {}).get("tlsretry", {})
        value = stats.get("tls_over_plain")
        out.append(
            (f"TLSStream rate / plain rate, {load} >= 0.95", value, bool(value and value >= 0.95))
        )
        value = stats.get("cpu_plain_over_tls")
        out.append(
            (f"  the same from CPU/req, {load} >= 0.95", value, bool(value and value >= 0.95))
        )
    new = summary.get("new", {})
    ours, uv = new.get("tlsretry", {}).get("median"), new.get("uvloop", {}).get("median")
    value = ours / uv if ours and uv else None
    out.append(("new TLS connections/s >= uvloop's", value, bool(value and value >= 1.0)))
    return out


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def report(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    servers, lines = meta["servers"], []
    info = meta["machine"]
    lines.append(
        f"Date: {info['date']}   commit: {info['commit']}   nproc: {info['nproc']}   "
        f"CPU: {info['cpu']}"
    )
    lines.append(
        f"Python {info['python']}, {info['openssl']}, {info['h2load'] or 'no h2load'}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    )
    la0, la1 = meta["loadavg"][0], meta["loadavg"][-1]
    lines.append(
        f"Repetitions: {meta['reps']}{' (quick)' if meta['quick'] else ''}, "
        f"{meta['seconds']} s per load, fresh server per load; load average (1/5/15 min) "
        f"before {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, after {la1[0]:.2f}/{la1[1]:.2f}/"
        f"{la1[2]:.2f}"
    )
    for name, variant in meta.get("variants", {}).items():
        lines.append(
            f"Variant {name}: TLSStream from {variant['path'] or 'this checkout'}"
            f"{', knobs ' + ' '.join(variant['knobs']) if variant['knobs'] else ''}"
        )
    lines.append(
        "Cells: median rate (ratio to trio.SSLStream in this run); second line: server CPU "
        "us per request (median) and min..max of the rate"
    )
    lines.append("")
    width, cell = 34, 22
    header = f"{'load':<{width}}" + "".join(f"{LABELS.get(s, s):>{cell}}" for s in servers)
    lines.append(header)
    for load, row in summary.items():
        first, second = [], []
        for name in servers:
            stats = row.get(name)
            if stats is None:
                first.append(f"{'-':>{cell}}")
                second.append(" " * cell)
            elif "error" in stats:
                first.append(f"{'error':>{cell}}")
                second.append(" " * cell)
            else:
                ratio = f" ({stats['ratio']:.2f}x)" if stats.get("ratio") else ""
                first.append(f"{fmt(stats['median']) + ratio:>{cell}}")
                spread = f"{stats['cpu_us']:.0f}us [{fmt(stats['min'])}..{fmt(stats['max'])}]"
                second.append(f"{spread:>{cell}}")
        lines.append(f"{LOAD_LABELS[load] + ' ' + UNITS[load]:<{width}}" + "".join(first))
        lines.append(f"{'  CPU/req [min..max]':<{width}}" + "".join(second))
    for key, label in (
        ("tls_over_plain", "TLS rate / plain rate, "),
        ("cpu_plain_over_tls", "plain CPU/req / TLS CPU/req, "),
    ):
        for load in ("h2", "h1"):
            row = summary.get(load, {})
            cells = []
            for name in servers:
                value = row.get(name, {}).get(key)
                shown = "1" if name.endswith("-plain") and name in row else "-"
                cells.append(f"{(f'{value:.2f}' if value else shown):>{cell}}")
            lines.append(f"{label + load:<{width}}" + "".join(cells))
    lines.append("")
    lines.append("Targets (TLSStream, same run):")
    for name, value, ok in targets(summary):
        shown = f"{value:.2f}" if value is not None else "n/a"
        lines.append(f"  {'PASS' if ok else 'FAIL'}  {name:<40} {shown}")
    errors = [s for s in meta.get("samples", []) if "error" in s]
    if errors:
        lines.append(f"{len(errors)} failed sample(s), e.g. {errors[0]['error']}")
    return "\n".join(lines) + "\n"


# ================================================================= profiling


def frame_layer(frame: str) -> str | None:
    """Which layer a py-spy frame (``function (file:line)``) belongs to, if any."""
    if any(k in frame for k in SOCKET_IO_FRAMES):
        return "socket"
    if any(k in frame for k in TLS_FILES):
        return "tls"
    if "trio/_core/" in frame or "trio/lowlevel" in frame:
        return "trio"
    return None


def pyspy_shares(raw: Path) -> dict[str, Any]:
    """From py-spy's raw (collapsed) stacks: where the server's samples went.

    ``tls_share``: samples with a TLS-layer frame anywhere on the stack (the
    TLS stream and everything it calls). Those are split by the layer of
    their deepest classified frame: the TLS code itself and the OpenSSL work
    it calls (``tls_own``), the socket system calls it makes (``tls_socket``:
    a plain server makes these too), Trio's scheduler primitives
    (``tls_trio``). ``socket_share``: every sample whose deepest classified
    frame is a socket read or write, TLS or not.
    """
    total = tls = 0
    parts: Counter[str] = Counter()
    socket_io = 0
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        layers = [(frame_layer(f), f) for f in frames]
        layers = [(layer, f) for layer, f in layers if layer]
        deepest = layers[-1][0] if layers else None
        if deepest == "socket":
            socket_io += count
        tls_frames = [f for layer, f in layers if layer == "tls"]
        if tls_frames:
            tls += count
            parts[deepest or "other"] += count
            leaf = layers[-1][1] if deepest != "tls" else tls_frames[-1]
            leaves[re.sub(r":\d+\)$", ")", leaf)] += count
    share = (lambda n: n / total) if total else (lambda n: None)
    return {
        "samples": total,
        "tls_share": share(tls),
        "tls_own_share": share(parts["tls"]),
        "tls_socket_share": share(parts["socket"]),
        "tls_trio_share": share(parts["trio"]),
        "socket_share": share(socket_io),
        "tls_leaves": [(name, n / total) for name, n in leaves.most_common(12)] if total else [],
    }


def parse_strace(path: Path) -> dict[str, int]:
    calls: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
            with contextlib.suppress(ValueError):
                calls[parts[-1]] = int(parts[3])
    return calls


def cprofile_calls(path: Path, requests: int) -> dict[str, Any]:
    import pstats

    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total_tt = sum(v[2] for v in entries.values())
    rows = []
    tls_tt = 0.0
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in entries.items():
        is_tls = any(k in filename for k in TLS_FILES) or (
            filename == "~" and ("_ssl." in func or "posix.readv" in func or "posix.write" in func)
        )
        if not is_tls:
            continue
        tls_tt += tt
        short = (
            func
            if filename == "~"
            else f"{Path(filename).parent.name}/" + (f"{Path(filename).name}:{line}({func})")
        )
        rows.append((short, nc / requests, tt / requests * 1e6, ct / requests * 1e6))
    rows.sort(key=lambda r: -r[2])
    return {
        "total_us_per_request": total_tt / requests * 1e6,
        "tls_self_us_per_request": tls_tt / requests * 1e6,
        "functions": rows[:25],
    }


def profile(opts: argparse.Namespace, loads: list[str], certdir: Path, tools: dict) -> Any:
    # Trio servers only: the instrument and the TLS frames are Trio's.
    servers = [s for s in opts.server_list if not s.startswith("uvloop")]
    results: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="https-profile-"))
    passes = [p for p in opts.passes.split(",") if p in ("sample", "strace", "cprofile")]
    if tools.get("strace") and "strace" in passes:
        print(f"strace missing ({tools['strace']}): no system call counts")
        passes.remove("strace")
    for load in loads:
        for name in servers:
            if not applicable(name, load):
                continue
            for kind in passes:
                tag = f"{name}-{load}-{kind}"
                stats_file = tmp / f"{tag}.json"
                prof = tmp / f"{tag}.prof" if kind == "cprofile" else None
                server = Server(name, certdir, opts.variants, cprofile=prof, stats_file=stats_file)
                entry: dict[str, Any] = {"server": name, "load": load, "pass": kind}
                helper = None
                out = tmp / f"{tag}.out"
                try:
                    server.wait_ready()
                    if kind == "sample" and not tools.get("py-spy"):
                        helper = subprocess.Popen(
                            [*PYSPY, "-p", str(server.pid), "-o", str(out)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    elif kind == "strace":
                        tids = os.listdir(f"/proc/{server.pid}/task")
                        cmd = ["strace", "-c", "-f", "-o", str(out)]
                        for tid in tids:
                            cmd += ["-p", tid]
                        helper = subprocess.Popen(
                            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                        )
                    time.sleep(1.0)  # let the tracer attach
                    cpu0 = cpu_seconds(server.pid)
                    if load == "new":
                        seconds = PROFILE_NEW_SECONDS[opts.quick]
                        result = run_load(server, load, seconds=seconds)
                    else:
                        n = PROFILE_REQUESTS[load][opts.quick]
                        result = run_load(server, load, seconds=0, requests=n)
                    entry.update(result)
                    entry["cpu_us_per_request"] = (
                        (cpu_seconds(server.pid) - cpu0) / max(1, result["requests"]) * 1e6
                    )
                    if kind == "strace" and helper is not None:
                        helper.send_signal(signal.SIGINT)
                        helper.wait(30)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    entry["error"] = str(exc)
                finally:
                    server.stop()
                    if helper is not None:
                        try:
                            helper.wait(30)
                        except subprocess.TimeoutExpired:
                            helper.kill()
                if "error" in entry:
                    results.append(entry)
                    print(f"  profile {tag}: {short_entry(entry)}", flush=True)
                    continue
                requests = max(1, entry.get("requests", 0))
                if stats_file.exists():
                    counts = json.loads(stats_file.read_text())
                    entry["stream"] = counts["stream"]
                    if kind == "sample":
                        entry["task_steps_per_request"] = counts["task_steps"] / requests
                        entry["rounds_per_request"] = counts["rounds"] / requests
                if kind == "sample" and out.exists():
                    entry.update(pyspy_shares(out))
                    cpu = entry.get("cpu_us_per_request")
                    for key in ("tls", "tls_own", "tls_socket", "tls_trio", "socket"):
                        if entry.get(f"{key}_share") is not None and cpu is not None:
                            entry[f"{key}_cpu_us_per_request"] = entry[f"{key}_share"] * cpu
                if kind == "strace" and out.exists():
                    calls = parse_strace(out)
                    entry["syscalls_per_request"] = {
                        k: v / requests for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                    }
                    entry["syscalls_total_per_request"] = sum(calls.values()) / requests
                if kind == "cprofile" and prof and prof.exists():
                    entry.update(cprofile_calls(prof, requests))
                results.append(entry)
                print(f"  profile {tag}: {short_entry(entry)}", flush=True)
    if opts.keep_profiles:
        opts.keep_profiles.mkdir(parents=True, exist_ok=True)
        for path in tmp.iterdir():
            shutil.move(str(path), opts.keep_profiles / path.name)
        print(f"raw profiles in {opts.keep_profiles}")
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def short_entry(entry: dict[str, Any]) -> str:
    if "error" in entry:
        return f"ERROR {entry['error']}"
    parts = [
        f"{entry.get('requests', 0)} requests",
        f"{entry['cpu_us_per_request']:.0f} us CPU/req",
    ]
    if "tls_cpu_us_per_request" in entry:
        parts.append(f"TLS layer {entry['tls_cpu_us_per_request']:.0f} us/req")
    if "task_steps_per_request" in entry:
        parts.append(
            f"{entry['task_steps_per_request']:.2f} task steps, "
            f"{entry['rounds_per_request']:.3f} rounds /req"
        )
    if "syscalls_total_per_request" in entry:
        parts.append(f"{entry['syscalls_total_per_request']:.2f} syscalls/req")
    if "tls_self_us_per_request" in entry:
        parts.append(f"cProfile TLS self {entry['tls_self_us_per_request']:.0f} us/req")
    return ", ".join(parts)


def profile_report(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = []
    info = meta["machine"]
    la0, la1 = meta["loadavg"][0], meta["loadavg"][-1]
    lines.append(
        f"Profile of {info['date']}, commit {info['commit']}; load average before "
        f"{la0[0]:.2f}, after {la1[0]:.2f}. 'per req' is per request (per connection "
        "for 'new')."
    )
    lines.append(
        "sample pass: server CPU from /proc, py-spy share of samples under TLS frames "
        "(trio_tlsretry/, trio/_ssl.py, ssl.py), Trio task steps and scheduler rounds."
    )
    lines.append(
        "(*) cProfile's self time of the TLS files and _ssl calls; for TLSStream it includes "
        "its os.write/os.readv, for trio.SSLStream the socket calls are Trio's."
    )
    by = {(e["server"], e["load"], e["pass"]): e for e in results}
    servers = list(dict.fromkeys(e["server"] for e in results))
    for load in dict.fromkeys(e["load"] for e in results):
        lines.append("")
        lines.append(f"== {LOAD_LABELS[load]}")
        head = f"{'':<34}" + "".join(f"{LABELS.get(s, s):>18}" for s in servers)
        lines.append(head)

        def row(label: str, kind: str, key: str, form: str, load: str = load) -> None:
            cells = []
            for s in servers:
                value = by.get((s, load, kind), {}).get(key)
                cells.append(f"{(format(value, form) if value is not None else '-'):>18}")
            lines.append(f"{label:<34}" + "".join(cells))

        row("server CPU us/req", "sample", "cpu_us_per_request", ".0f")
        row("TLS layer share of CPU (py-spy)", "sample", "tls_share", ".2f")
        row("TLS layer CPU us/req, all", "sample", "tls_cpu_us_per_request", ".0f")
        row("  its own code and OpenSSL", "sample", "tls_own_cpu_us_per_request", ".0f")
        row("  its socket reads and writes", "sample", "tls_socket_cpu_us_per_request", ".0f")
        row("  Trio primitives under it", "sample", "tls_trio_cpu_us_per_request", ".0f")
        row("socket reads+writes us/req, all", "sample", "socket_cpu_us_per_request", ".0f")
        row("Trio task steps/req", "sample", "task_steps_per_request", ".2f")
        row("Trio scheduler rounds/req", "sample", "rounds_per_request", ".3f")
        row("syscalls/req (strace -c -f)", "strace", "syscalls_total_per_request", ".2f")
        row("cProfile total CPU us/req", "cprofile", "total_us_per_request", ".0f")
        # For TLSStream this includes its own socket calls (os.write/os.readv);
        # trio.SSLStream's are in trio/_socket.py, outside the TLS files.
        row("cProfile TLS self us/req (*)", "cprofile", "tls_self_us_per_request", ".0f")
        for s in servers:
            entry = by.get((s, load, "strace"), {})
            calls = entry.get("syscalls_per_request")
            if calls:
                top = ", ".join(f"{k} {v:.2f}" for k, v in list(calls.items())[:8])
                lines.append(f"  {LABELS.get(s, s)} syscalls/req: {top}")
        for s in servers:
            entry = by.get((s, load, "sample"), {})
            if entry.get("tls_leaves"):
                lines.append(
                    f"  {LABELS.get(s, s)} under TLS frames, by deepest frame, share of samples:"
                )
                for name, share in entry["tls_leaves"][:8]:
                    lines.append(f"    {share:6.3f}  {name}")
        for s in servers:
            entry = by.get((s, load, "cprofile"), {})
            if entry.get("functions"):
                lines.append(
                    f"  {LABELS.get(s, s)} cProfile, TLS layer: calls/req, self us/req, "
                    "cumulative us/req"
                )
                for name, calls, tt, ct in entry["functions"][:12]:
                    lines.append(f"    {calls:7.2f} {tt:7.1f} {ct:7.1f}  {name}")
    return "\n".join(lines) + "\n"


# ====================================================================== main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition of 2 s loads")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per load")
    parser.add_argument(
        "--servers",
        default=None,
        help=f"comma-separated (default {','.join(SERVERS)}; --profile: the trio ones)",
    )
    parser.add_argument("--loads", default=",".join(LOADS), help="comma-separated")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=SPEC: also run TLSStream as 'tlsretry-NAME' with trio_tlsretry imported from "
        "the directory in SPEC and/or with KNOB=VALUE settings (comma-separated; see _worker.py)",
    )
    parser.add_argument("--profile", action="store_true", help="profile instead of measuring")
    parser.add_argument(
        "--passes", default="sample,strace,cprofile", help="with --profile: which passes"
    )
    parser.add_argument(
        "--keep-profiles", type=Path, default=None, help="with --profile: keep the raw files here"
    )
    parser.add_argument("--name", default="https_server", help="base name of the results files")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="do not measure: re-render the report of a saved (non-profile) run",
    )
    # The server process.
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--certdir", help=argparse.SUPPRESS)
    parser.add_argument("--knob", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--cprofile", help=argparse.SUPPRESS)
    parser.add_argument("--stats-file", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        serve_main(opts)
        return 0

    if opts.from_json:
        saved = json.loads(opts.from_json.read_text())["meta"]
        summary = summarise(saved["samples"], saved["servers"], saved["loads"])
        text = report(saved, summary)
        print(text)
        if not opts.no_save:
            opts.from_json.with_suffix(".txt").write_text(text)
            data = {"meta": saved, "summary": summary}
            opts.from_json.write_text(json.dumps(data, indent=1) + "\n")
            print(f"rewrote {opts.from_json} and its .txt")
        return 0
    opts.reps = opts.reps or (1 if opts.quick else 3)
    opts.seconds = opts.seconds or SECONDS[opts.quick]
    opts.variants = parse_variants(opts.variant)
    tools = tool_status()
    for need in ("hypercorn", "trustme"):
        if tools[need]:
            print(f"{need} is missing: {tools[need]}")
            return 1
    default_servers = ("trio", "tlsretry", "trio-plain") if opts.profile else SERVERS
    chosen = opts.servers.split(",") if opts.servers else default_servers
    unknown = [s for s in chosen if s and s not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {SERVERS}")
    servers = [s for s in chosen if s] + list(opts.variants)
    loads = [load for load in opts.loads.split(",") if load]
    if tools["uvloop"]:
        print(f"uvloop missing ({tools['uvloop']}): skipping the asyncio servers")
        servers = [s for s in servers if not s.startswith("uvloop")]
    if tools["h2load"]:
        print(f"h2load missing ({tools['h2load']}): skipping the h2 and h1 loads")
        loads = [load for load in loads if load == "new"]
    if tools["openssl"]:
        print(f"openssl missing ({tools['openssl']}): skipping the new-connection load")
        loads = [load for load in loads if load != "new"]
    if opts.profile and tools["py-spy"]:
        print(f"py-spy missing ({tools['py-spy']}): no TLS share of the CPU")
    opts.server_list = servers
    if not loads or not servers:
        print("nothing to run")
        return 1
    meta: dict[str, Any] = {
        "machine": machine_info(),
        "servers": servers,
        "loads": loads,
        "reps": opts.reps,
        "seconds": opts.seconds,
        "quick": opts.quick,
        "variants": opts.variants,
        "command": " ".join(["python", "benchmarks/https_server.py", *sys.argv[1:]]),
    }
    print(f"{meta['machine']['date']}, commit {meta['machine']['commit']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="https-bench-") as tmp:
        certdir = Path(tmp)
        make_certs(certdir)
        loadavg0 = os.getloadavg()
        if opts.profile:
            results = profile(opts, loads, certdir, tools)
            meta["loadavg"] = [loadavg0, os.getloadavg()]
            text = profile_report(meta, results)
            data = {"meta": meta, "profile": results}
            suffix = ".profile"
        else:
            samples, loadavg = measure(opts, servers, loads, certdir)
            meta["loadavg"] = loadavg
            summary = summarise(samples, servers, loads)
            meta["samples"] = samples
            text = report(meta, summary)
            data = {"meta": meta, "summary": summary}
            suffix = ""
    print()
    print(text)
    if not opts.no_save:
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / f"{opts.name}{suffix}.json").write_text(json.dumps(data, indent=1) + "\n")
        (opts.out / f"{opts.name}{suffix}.txt").write_text(text)
        print(f"saved {opts.out / (opts.name + suffix)}.json and .txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
