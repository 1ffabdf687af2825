"""The benchmark harness: what every benchmark script and process shares.

* **Implementations** (``IMPLS``): the one registry of the TLS streams the
  benchmarks compare, with their labels, chart colours, event loops and, for
  the two with the ``trio.SSLStream`` constructor, their stream classes.
* **Processes** (``Child``, ``run_child``): every benchmark process is started
  and spoken to the same way, with one JSON object per line: commands on its
  stdin (``write_message``), answers, results and the port a server listens
  on, on its stdout (``LineReader``; ``LineBuffer`` for an async reader).
* **Memory** (``rss``): one reader of ``/proc/PID/status`` for every RSS
  figure (``VmRSS``, and ``VmHWM`` for peaks).
* **Settings** (``Knobs``): the library settings ``--knob NAME=VALUE`` sets in
  a benchmark process, passed to it as arguments.
* **Setup**: certificates and TLS contexts, the file-descriptor limit, and the
  machine and versions a report names.

Only the standard library is imported here, and only what a benchmark process
needs at module level (the rest where it is used: a process's imports shape
its heap, which some measurements notice); each implementation's own modules
are imported where they are used.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
# The certificate's IP address entry: every implementation connects to it and
# verifies it (no name resolution, no SNI, for all of them alike).
SERVER_NAME = HOST
KiB = 1024
MiB = 1024 * KiB

# ------------------------------------------------------- implementations


@dataclass(frozen=True)
class Impl:
    """One TLS implementation the benchmarks compare."""

    #: Its name on the command lines and in the JSON results.
    name: str
    #: Its name in run.py's and idle_memory.py's reports.
    label: str
    #: Its name in the narrower tables (connections.py, cancellation_table.py).
    short: str
    #: The event loop it runs on: "trio", "anyio" (on Trio) or "asyncio";
    #: "" for the blocking reference.
    loop: str
    #: Its bar colour in run.py's chart.
    color: str

    def stream_class(self) -> Any:
        """The stream class, for the two with ``trio.SSLStream``'s constructor."""
        if self.name == "tlsretry":
            from trio_tlsretry import TLSStream

            return TLSStream
        if self.name == "trio":
            import trio

            return trio.SSLStream
        raise ValueError(f"{self.name} has no trio.SSLStream-like stream class")

    def run(self, main: Callable[[], Awaitable[Any]], instruments: list[Any]) -> Any:
        """Run ``main`` on this implementation's event loop (with Trio instruments)."""
        if self.loop == "trio":
            import trio

            return trio.run(main, instruments=instruments)
        if self.loop == "anyio":
            import anyio

            return anyio.run(main, backend="trio", backend_options={"instruments": instruments})
        import asyncio

        return asyncio.run(main())  # type: ignore[arg-type]


IMPLS: dict[str, Impl] = {
    impl.name: impl
    for impl in (
        Impl("tlsretry", "trio_tlsretry.TLSStream", "TLSStream", "trio", "#2a7ab0"),
        Impl("trio", "trio.SSLStream", "trio.SSLStream", "trio", "#e08a2c"),
        Impl("anyio", "anyio TLSStream (trio)", "anyio TLSStream", "anyio", "#6aa84f"),
        Impl("asyncio", "asyncio streams", "asyncio streams", "asyncio", "#9e63b5"),
        Impl("blocking", "blocking ssl.SSLSocket (ref.)", "blocking ssl.SSLSocket", "", "#9a9a9a"),
    )
}
#: Ours, and the baseline every ratio is taken against.
OURS = "tlsretry"
BASELINE = "trio"
#: The implementations a Trio process can serve (connections.py's servers).
TRIO_IMPLS = tuple(name for name, impl in IMPLS.items() if impl.loop in ("trio", "anyio"))
#: The implementations with ``trio.SSLStream``'s constructor (in-process benchmarks).
STREAM_IMPLS = (OURS, BASELINE)


# -------------------------------------------------------------- processes


def write_message(fd: int, message: dict[str, Any]) -> None:
    """Write one JSON object as one line to ``fd`` (a pipe)."""
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]


class LineBuffer:
    """JSON lines out of the bytes of a pipe, however they were split."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk

    def pop(self) -> dict[str, Any] | None:
        """The next whole message, or None until its line is complete."""
        if b"\n" not in self.buffer:
            return None
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        return message


class LineReader:
    """JSON lines from a pipe file descriptor, each read bounded by a timeout.

    A message with an ``"error"`` key is raised as a ``RuntimeError``.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lines = LineBuffer()

    def read_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (message := self.lines.pop()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("the process closed its end of the pipe")
            self.lines.feed(chunk)
        if "error" in message:
            raise RuntimeError(message["error"])
        return message


class Child:
    """A benchmark process (``python benchmarks/SCRIPT ARGS``) spoken to with JSON lines.

    With ``capture_stderr`` its standard error goes to a temporary file, whose
    last line a failure reports; otherwise it is this process's.
    """

    def __init__(
        self, name: str, script: str, args: list[str], *, capture_stderr: bool = False
    ) -> None:
        import tempfile

        self.name = name
        self.stderr = tempfile.TemporaryFile() if capture_stderr else None  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.reader = LineReader(self.process.stdout.fileno())

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self, timeout: float) -> dict[str, Any]:
        """The next message; an ``"error"`` message, a timeout or an exit raise RuntimeError."""
        try:
            return self.reader.read_message(timeout)
        except (TimeoutError, EOFError) as exc:
            raise RuntimeError(f"{self.name}: {exc}") from exc

    def request(self, command: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        assert self.process.stdin is not None
        write_message(self.process.stdin.fileno(), command)
        return self.read(timeout)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """SIGSTOP the process for the duration of the block."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Ask a process that reads commands to exit; kill it if it does not."""
        assert self.process.stdin is not None
        try:
            write_message(self.process.stdin.fileno(), {"cmd": "exit"})
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def terminate(self) -> None:
        """SIGTERM a process that reads no commands (a server) and wait for it."""
        self.process.terminate()
        self.process.wait()
        self.close()

    def kill(self) -> None:
        """SIGKILL the process and the processes it started (a worker's server)."""
        for pid in [*descendants(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.close()

    def close(self) -> None:
        """Close the pipes and the standard error file (the process has ended)."""
        for file in (self.process.stdin, self.process.stdout, self.stderr):
            with contextlib.suppress(OSError):
                if file is not None:
                    file.close()

    def failure(self) -> str:
        """How the process ended: its exit status and its last line of standard error."""
        code = self.process.wait()
        tail = "no output"
        if self.stderr is not None:
            self.stderr.seek(0)
            lines = self.stderr.read().decode(errors="replace").strip().splitlines()
            tail = lines[-1] if lines else tail
        return f"exit {code}: {tail}"


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from ``/proc``)."""
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in map(int, f.read().split()):
                    found += [child, *descendants(child)]
    return found


def run_child(name: str, script: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run a process that prints one JSON result line and exits; its result.

    Raises ``RuntimeError`` naming the exit status and the last line of
    standard error if it fails, or saying so if it gives no result within
    ``timeout`` (it is killed then).
    """
    child = Child(name, script, args, capture_stderr=True)
    try:
        try:
            result = child.read(timeout)
        except RuntimeError as exc:
            if isinstance(exc.__cause__, TimeoutError):
                child.kill()
                raise RuntimeError(f"timed out after {timeout:.0f} s") from None
            raise RuntimeError(child.failure()) from None
        if child.process.wait() != 0:
            raise RuntimeError(child.failure())
        return result
    finally:
        child.close()


# ----------------------------------------------------------------- memory


def rss(pid: int | str = "self", field: str = "VmRSS") -> int:
    """A memory field of ``/proc/PID/status`` in bytes (``VmRSS``, or ``VmHWM``: the peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


# --------------------------------------------------------------- settings


@dataclass(frozen=True)
class Knobs:
    """The trio_tlsretry settings that ``--knob NAME=VALUE`` sets in a process.

    ``BUSY_POLL_US`` is set through the public ``TLSStream.busy_poll`` on each
    stream the process makes or is handed (before the client's handshake;
    after the server's, which ``serve_tls_over_tcp`` does before it hands a
    stream over). The library has no public setting for the others: they
    are module settings, read when used, and ``apply_to_process`` sets them.
    A process that never holds its streams (``https_server.py``'s server,
    through ``_worker.apply_knobs``) sets ``BUSY_POLL_US`` as the default of
    new streams instead, a module setting too.
    """

    values: dict[str, int]

    #: Name -> (module, attribute) for the settings without a public setter.
    MODULE_SETTINGS = {
        "WRITE_CHUNK": ("_engine", "DEFAULT_WRITE_CHUNK"),
        "TRANSPORT_RECEIVE_SIZE": ("_stream", "TRANSPORT_RECEIVE_SIZE"),
        "DEFAULT_RECEIVE_SIZE": ("_stream", "DEFAULT_RECEIVE_SIZE"),
    }
    STREAM_SETTINGS = ("BUSY_POLL_US",)
    DEFAULT_BUSY_POLL = ("_busy_poll", "DEFAULT_BUSY_POLL")

    @classmethod
    def parse(cls, items: list[str]) -> Knobs:
        values = {}
        for item in items:
            name, _, raw = item.partition("=")
            if name not in cls.MODULE_SETTINGS and name not in cls.STREAM_SETTINGS:
                raise SystemExit(f"unknown knob {name!r}")
            values[name] = int(raw, 0)
        return cls(values)

    def args(self) -> list[str]:
        """The command-line arguments that pass these settings to another process."""
        return [word for name, v in self.values.items() for word in ("--knob", f"{name}={v}")]

    def apply_to_process(self, *, default_busy_poll: bool = False) -> None:
        """Set the module settings (and with ``default_busy_poll``, ``BUSY_POLL_US``'s)."""
        settings = {
            name: (self.MODULE_SETTINGS[name], value)
            for name, value in self.values.items()
            if name in self.MODULE_SETTINGS
        }
        if default_busy_poll and "BUSY_POLL_US" in self.values:
            # Microseconds here, seconds there.
            settings["BUSY_POLL_US"] = (self.DEFAULT_BUSY_POLL, self.values["BUSY_POLL_US"] / 1e6)
        if not settings:
            return
        import importlib

        for (name, attribute), value in settings.values():
            module = importlib.import_module(f"trio_tlsretry.{name}")
            if not hasattr(module, attribute):
                raise SystemExit(f"trio_tlsretry.{name} has no setting {attribute}")
            setattr(module, attribute, value)

    def apply_to_stream(self, stream: Any) -> None:
        if "BUSY_POLL_US" in self.values:
            stream.busy_poll = self.values["BUSY_POLL_US"] / 1e6


# ------------------------------------------------------------------ setup


def make_certs(directory: Path) -> None:
    """A CA (``ca.pem``) and a server certificate for localhost and 127.0.0.1 (``server.pem``)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))


def client_context(certdir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certdir / "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def server_context(certdir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(certdir / "server.pem")
    return ctx


def raise_fd_limit(needed: int | None = None) -> None:
    """Raise the soft file-descriptor limit to ``needed`` (None: to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed is None:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"needs {needed} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def versions() -> dict[str, str]:
    """Python, OpenSSL and the packages compared ("not installed" where missing)."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION}
    for name in ("trio", "anyio", "trio_tlsretry"):
        try:
            found[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo ("unknown" elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine_info() -> dict[str, Any]:
    import datetime as dt
    import platform

    cpu = cpu_model()
    found = versions()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": found.pop("python"),
        "openssl": found.pop("openssl"),
        "versions": {k: v for k, v in found.items() if v != "not installed"},
        "loadavg": os.getloadavg(),
    }


# ------------------------------------------- connections of run.py's cases


@dataclass
class Conn:
    """The three operations a case or a server handler needs, bound as directly as possible."""

    send: Callable[[bytes], Awaitable[Any]]
    recv: Callable[[int], Awaitable[bytes]]
    close: Callable[[], Awaitable[None]]
    stream: Any


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


class StepCounter:
    """A Trio instrument counting task steps (scheduler passes) while enabled."""

    def __init__(self) -> None:
        self.enabled = False
        self.steps = 0

    def before_task_step(self, task: object) -> None:
        if self.enabled:
            self.steps += 1
