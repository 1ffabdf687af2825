"""The server process of ``connections.py``: holds connections in one state.

Started by ``connections.py``::

    python benchmarks/_conn_server.py --impl tlsretry --state idle --certdir DIR

It prints its port as the first JSON line, then answers commands (JSON lines
on stdin, see ``_harness``). Each implementation is served the way an
application would serve it:

``tlsretry``
    ``open_tls_over_tcp_listeners`` + ``trio.serve_listeners`` with each
    handler calling ``handshake_or_drop`` first: the composition
    ``serve_tls_over_tcp`` is made of, spelled out so that connections are
    visible before their handshake completes. The handshake timeout is
    ``HANDSHAKE_TIMEOUT`` (longer than any run) instead of the default 10 s,
    or the mid-handshake connections would be dropped while being counted,
    and there is no handshake limit (``max_handshakes=None``), or all but
    the first eight would wait for a turn instead of being mid-handshake.
``trio``
    ``trio.open_ssl_over_tcp_listeners`` + ``trio.serve_listeners`` (what
    ``trio.serve_ssl_over_tcp`` does), the handler calling ``do_handshake``.
``anyio``
    ``anyio.create_tcp_listener`` + ``serve``, the handler calling
    ``anyio.streams.tls.TLSStream.wrap`` (anyio on its Trio backend).

Every handler receives with the implementation's default size
(``receive_some()`` / ``receive()``) unless a state says otherwise.

Commands:

``status``
    Wait until every task is blocked, then report the phase of every
    handler, the kernel's queues on the server sockets (``SIOCINQ``,
    ``SIOCOUTQ``), the client ports whose echo is stuck in ``send_all``
    and, for TLSStream, the sums of ``statistics()``.
``baseline``
    ``gc.collect()``, ``malloc_trim(0)`` (so memory freed by the warm-up
    round does not cushion the connections measured next), then the RSS.
``measure``
    Wait until every task is blocked, ``gc.collect()``, then the RSS and the
    status. With ``--tracemalloc``, also the top allocation sites since the
    baseline.
``drop``
    Cancel every handler (ends the warm-up round) and wait until all are gone.
``go``
    Let the ``behind`` handlers waiting so far make their one receive;
    answer (with the status) once every task is blocked again.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import ctypes.util
import fcntl
import functools
import gc
import os
import sys
import termios
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

# Run as a script, so this directory is on sys.path.
from _conn_common import (
    ACCEPTED,
    BEHIND,
    HANDSHAKING,
    HEADER_SIZE,
    IDLE,
    RECEIVING,
    SENDING,
    STATES,
    TRANSFER_SIZE,
    WAITING,
)
from _harness import (
    HOST,
    TRIO_IMPLS,
    LineBuffer,
    raise_fd_limit,
    rss,
    server_context,
    write_message,
)

BACKLOG = 4096
HANDSHAKE_TIMEOUT = 3600.0
# The answer of the after_transfer state, allocated before the baseline.
PAYLOAD = b"\x3c" * TRANSFER_SIZE
SIOCINQ = termios.FIONREAD
SIOCOUTQ = termios.TIOCOUTQ
TLS_STATISTICS = (
    "pinned_bytes",
    "outgoing_ciphertext_bytes",
    "incoming_ciphertext_bytes",
    "buffered_plaintext_bytes",
    "ciphertext_bytes_received",
    "ciphertext_bytes_sent",
)


def socket_queue(fd: int, request: int) -> int:
    """Bytes in a socket's kernel receive (SIOCINQ) or send (SIOCOUTQ) queue."""
    value = array.array("i", [0])
    fcntl.ioctl(fd, request, value)
    return value[0]


def listening_port(listener: Any) -> int:
    """The port of a Trio SocketListener wrapped in a TLS listener."""
    return int(listener.transport_listener.socket.getsockname()[1])


def malloc_trim() -> None:
    """Give free heap memory back to the system (glibc; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


class Served:
    """One server connection: its stream, its socket and its handler's phase."""

    __slots__ = ("fd", "first_read", "peer_port", "phase", "receive", "scope", "send", "stream")

    def __init__(self, sock: Any) -> None:
        self.fd = sock.fileno()
        self.peer_port = sock.getpeername()[1]
        self.phase = ACCEPTED
        self.scope = trio.CancelScope()
        self.stream: Any = None
        self.receive: Callable[..., Awaitable[bytes | bytearray]]
        self.send: Callable[[bytes | bytearray], Awaitable[Any]]
        self.first_read = 0


class Server:
    def __init__(self, impl: str, state: str, certdir: Path, trace: bool) -> None:
        self.impl = impl
        self.state = state
        self.ctx = server_context(certdir)
        self.trace = trace
        self.connections: dict[int, Served] = {}
        self.go = trio.Event()
        self.emptied = trio.Event()
        self.baseline_rss = 0
        self.baseline_snapshot: tracemalloc.Snapshot | None = None

    # --------------------------------------------------------- handlers

    async def serve(self, conn: Served) -> None:
        """The state's application logic, after the handshake."""
        state = self.state
        if state == "idle":
            await self.receive_exactly(conn, 1)
            await conn.send(b"s")
            conn.phase = IDLE
            await conn.receive()
        elif state == "send_blocked":
            while True:
                conn.phase = RECEIVING
                data = await conn.receive()
                if not data:
                    return
                conn.phase = SENDING
                await conn.send(data)
                del data
        elif state == "behind":
            conn.phase = WAITING
            await self.go.wait()
            conn.first_read = len(await conn.receive(HEADER_SIZE))
            conn.phase = BEHIND
            await trio.sleep_forever()
        elif state == "after_transfer":
            got = 0
            while got < TRANSFER_SIZE:
                chunk = await conn.receive()
                if not chunk:
                    return
                got += len(chunk)
            del chunk
            await conn.send(PAYLOAD)
            conn.phase = IDLE
            await conn.receive()
        # "handshake": nothing; the client never completes it.

    async def receive_exactly(self, conn: Served, count: int) -> None:
        got = 0
        while got < count:
            data = await conn.receive(count - got)
            if not data:
                raise EOFError
            got += len(data)

    async def tracked(self, conn: Served, run: Callable[[], Awaitable[None]]) -> None:
        key = id(conn)
        self.connections[key] = conn
        try:
            with conn.scope:  # cancelled by the "drop" command
                await run()
        except Exception:
            # A client that went away (the warm-up round is aborted, and so
            # is every connection at the end) is not an error here.
            pass
        finally:
            del self.connections[key]
            if not self.connections:
                self.emptied.set()

    async def start_tlsretry(self, nursery: trio.Nursery) -> int:
        from trio_tlsretry import handshake_or_drop, open_tls_over_tcp_listeners

        listeners = await open_tls_over_tcp_listeners(
            0,
            self.ctx,
            host=HOST,
            backlog=BACKLOG,
            handshake_timeout=HANDSHAKE_TIMEOUT,
            max_handshakes=None,
        )

        async def handler(stream: Any) -> None:
            conn = Served(stream.transport_stream.socket)
            conn.stream = stream
            conn.receive = stream.receive_some
            conn.send = stream.send_all

            async def run() -> None:
                conn.phase = HANDSHAKING
                if await handshake_or_drop(stream, HANDSHAKE_TIMEOUT):
                    async with stream:
                        await self.serve(conn)

            await self.tracked(conn, run)

        nursery.start_soon(trio.serve_listeners, handler, listeners)
        return listening_port(listeners[0])

    async def start_trio(self, nursery: trio.Nursery) -> int:
        listeners = await trio.open_ssl_over_tcp_listeners(0, self.ctx, host=HOST, backlog=BACKLOG)

        async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
            conn = Served(stream.transport_stream.socket)
            conn.stream = stream
            conn.receive = stream.receive_some
            conn.send = stream.send_all

            async def run() -> None:
                async with stream:
                    conn.phase = HANDSHAKING
                    await stream.do_handshake()
                    await self.serve(conn)

            await self.tracked(conn, run)

        nursery.start_soon(trio.serve_listeners, handler, listeners)
        return listening_port(listeners[0])

    async def start_anyio(self, nursery: trio.Nursery) -> int:
        import anyio
        from anyio.abc import SocketAttribute
        from anyio.streams.tls import TLSStream

        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0, backlog=BACKLOG)

        async def handler(tcp: Any) -> None:
            conn = Served(tcp.extra(SocketAttribute.raw_socket))
            stream: Any = None

            async def receive(max_bytes: int | None = None) -> bytes | bytearray:
                # anyio raises EndOfStream where the others return b"".
                try:
                    data: bytes = await (
                        stream.receive() if max_bytes is None else stream.receive(max_bytes)
                    )
                except anyio.EndOfStream:
                    return b""
                return data

            async def run() -> None:
                nonlocal stream
                async with tcp:
                    conn.phase = HANDSHAKING
                    stream = await TLSStream.wrap(
                        tcp, server_side=True, ssl_context=self.ctx, standard_compatible=True
                    )
                    conn.stream = stream
                    conn.send = stream.send
                    conn.receive = receive
                    await self.serve(conn)

            await self.tracked(conn, run)

        nursery.start_soon(listener.serve, handler)
        return int(listener.extra(SocketAttribute.local_port))

    # --------------------------------------------------------- commands

    async def status(self) -> dict[str, Any]:
        with trio.fail_after(60):
            await trio.testing.wait_all_tasks_blocked()
        conns = list(self.connections.values())
        phases = Counter(conn.phase for conn in conns)
        inq = [socket_queue(c.fd, SIOCINQ) for c in conns]
        outq = [socket_queue(c.fd, SIOCOUTQ) for c in conns]
        answer: dict[str, Any] = {
            "connections": len(self.connections),
            "phases": dict(phases),
            "inq_total": sum(inq),
            "inq_nonzero": sum(1 for q in inq if q),
            "outq_total": sum(outq),
            "outq_nonzero": sum(1 for q in outq if q),
            "first_read_total": sum(c.first_read for c in conns),
            # Echoes stuck in send_all with unsent data in the kernel: their
            # clients need not send any more.
            "blocked_peers": [
                c.peer_port for c, q in zip(conns, outq, strict=True) if q and c.phase == SENDING
            ],
        }
        if self.impl == "tlsretry":
            stats = [c.stream.statistics() for c in conns if c.stream is not None]
            for name in TLS_STATISTICS:
                answer[name] = sum(getattr(s, name) for s in stats)
            answer["received_nonzero"] = sum(1 for s in stats if s.ciphertext_bytes_received)
            answer["send_pending_nonzero"] = sum(
                1 for s in stats if s.pinned_bytes or s.outgoing_ciphertext_bytes
            )
        return answer

    async def drop(self) -> dict[str, Any]:
        """Cancel every handler (they close their streams) and wait until all are gone."""
        for conn in list(self.connections.values()):
            conn.scope.cancel()
        if self.connections:
            self.emptied = trio.Event()
            with trio.fail_after(60):
                await self.emptied.wait()
        return {"connections": 0}

    def baseline(self) -> dict[str, Any]:
        gc.collect()
        malloc_trim()
        self.baseline_rss = rss()
        if self.trace:
            tracemalloc.start(12)
            self.baseline_snapshot = tracemalloc.take_snapshot()
        return {"rss": self.baseline_rss}

    async def measure(self) -> dict[str, Any]:
        answer = await self.status()
        gc.collect()
        answer["rss"] = rss()
        answer["rss_baseline"] = self.baseline_rss
        if self.trace and self.baseline_snapshot is not None:
            answer["tracemalloc"] = top_allocations(
                self.baseline_snapshot, tracemalloc.take_snapshot(), len(self.connections)
            )
        return answer

    async def run(self) -> None:
        commands = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        out = sys.stdout.fileno()
        async with trio.open_nursery() as nursery:
            start = getattr(self, f"start_{self.impl}")
            port = await start(nursery)
            write_message(out, {"port": port, "pid": os.getpid()})
            reader = AsyncLines(commands)
            while True:
                command = await reader.read_message()
                if command is None or command["cmd"] == "exit":
                    nursery.cancel_scope.cancel()
                    return
                try:
                    if command["cmd"] == "status":
                        answer = await self.status()
                    elif command["cmd"] == "baseline":
                        answer = self.baseline()
                    elif command["cmd"] == "measure":
                        answer = await self.measure()
                    elif command["cmd"] == "drop":
                        answer = await self.drop()
                    elif command["cmd"] == "go":
                        self.go.set()
                        self.go = trio.Event()
                        # Answer once the handlers have made their receive, so
                        # that the client's next push cannot race with it.
                        answer = await self.status()
                    else:
                        raise ValueError(f"unknown command {command!r}")
                except Exception as exc:  # reported to connections.py, which stops
                    answer = {"error": f"server: {exc!r}"}
                write_message(out, answer)


class AsyncLines:
    """JSON lines from a Trio stream (the control pipe)."""

    def __init__(self, stream: trio.lowlevel.FdStream) -> None:
        self.stream = stream
        self.lines = LineBuffer()

    async def read_message(self) -> dict[str, Any] | None:
        while (message := self.lines.pop()) is None:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.lines.feed(chunk)
        return message


def top_allocations(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, count: int, limit: int = 12
) -> dict[str, Any]:
    """The allocation sites that grew most since the baseline, per connection."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    ]
    before = before.filter_traces(ignore)
    after = after.filter_traces(ignore)
    diffs = after.compare_to(before, "traceback")
    total = sum(d.size_diff for d in diffs)
    sites = []
    for diff in diffs[:limit]:
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in diff.traceback]
        sites.append(
            {
                "bytes_per_connection": diff.size_diff / max(count, 1),
                "blocks_per_connection": diff.count_diff / max(count, 1),
                # Innermost frame first.
                "where": " < ".join(reversed(frames[-5:])),
            }
        )
    return {"traced_bytes_per_connection": total / max(count, 1), "sites": sites}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=TRIO_IMPLS, required=True)
    parser.add_argument("--state", choices=STATES, required=True)
    parser.add_argument("--certdir", type=Path, required=True)
    parser.add_argument("--max-connections", type=int, required=True)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    raise_fd_limit(args.max_connections + 100)
    server = Server(args.impl, args.state, args.certdir, args.tracemalloc)
    trio.run(functools.partial(Server.run, server))


if __name__ == "__main__":
    main()
