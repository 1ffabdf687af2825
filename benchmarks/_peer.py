"""The benchmark server, in its own process, for any implementation.

Started by ``_worker.py`` (the client)::

    python benchmarks/_peer.py --impl trio --mode sink --certdir DIR

By default the server runs the *same* implementation as the client, because
that is how the library is deployed and because some costs (for example a
receiver that returns to the scheduler once per 16 KiB TLS record) only show
on the receiving side. ``--impl blocking`` is the stdlib ``ssl.SSLSocket``
server, one thread per connection (one at a time for the handshake case); it
is the blocking reference's server and the fixed peer of ``run.py
--fixed-peer``.

Modes (``--mode``):

``sink``
    Read an 8-byte big-endian length ``n``, read ``n`` bytes of plaintext,
    answer one byte ``b"k"``; repeat until the client closes.
``echo``
    Send back whatever arrives, until the client closes.
``hs``
    For each connection: handshake, read one byte, send one byte, read until
    the client closes.

Every receive asks for up to ``RECV_BUFFER`` (256 KiB) bytes. The listening
port is written on stdout (one JSON line, see ``_harness``) as soon as the
socket listens. ``--knob NAME=VALUE`` sets a trio_tlsretry setting, as in
``_worker.py``. ``--profile FILE`` (event-loop servers only) runs a CPU-time
``cProfile`` from the first connection on and writes it, with ``FILE.json``
holding the Trio task steps and the bytes received, each time a connection
ends.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# Run as a script, so this directory is on sys.path.
from _harness import (
    HOST,
    IMPLS,
    Conn,
    Knobs,
    StepCounter,
    asyncio_conn,
    raise_fd_limit,
    server_context,
    write_message,
)

RECV_BUFFER = 256 * 1024


def announce(port: int) -> None:
    write_message(sys.stdout.fileno(), {"port": port, "pid": os.getpid()})


# ------------------------------------------------- blocking ssl.SSLSocket


def _recv_exact(sock: ssl.SSLSocket, view: memoryview, n: int) -> bool:
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n])
        if not k:
            return False
        got += k
    return True


def serve_sink(sock: ssl.SSLSocket) -> None:
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    header = bytearray(8)
    while _recv_exact(sock, memoryview(header), 8):
        (remaining,) = struct.unpack("!Q", header)
        while remaining:
            k = sock.recv_into(view, min(remaining, RECV_BUFFER))
            if not k:
                return
            remaining -= k
        sock.sendall(b"k")


def serve_echo(sock: ssl.SSLSocket) -> None:
    while True:
        data = sock.recv(RECV_BUFFER)
        if not data:
            return
        sock.sendall(data)


def serve_one_handshake(sock: ssl.SSLSocket) -> None:
    if sock.recv(1):
        sock.sendall(b"y")
    while sock.recv(RECV_BUFFER):
        pass


def _handle(raw: socket.socket, ctx: ssl.SSLContext, serve) -> None:  # type: ignore[no-untyped-def]
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        with ctx.wrap_socket(raw, server_side=True) as sock:
            serve(sock)
            # The client's close_notify arrived: answer it (anyio waits for it).
            sock.unwrap()
    except (OSError, ssl.SSLError):
        pass
    finally:
        raw.close()


def run_blocking(ctx: ssl.SSLContext, mode: str) -> None:
    threading.stack_size(256 * 1024)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(2048)
    announce(listener.getsockname()[1])
    serve = {"sink": serve_sink, "echo": serve_echo, "hs": serve_one_handshake}[mode]
    while True:
        raw, _addr = listener.accept()
        if mode == "hs":
            # One at a time: the client opens connections one after another.
            _handle(raw, ctx, serve)
        else:
            threading.Thread(target=_handle, args=(raw, ctx, serve), daemon=True).start()


# ------------------------------------------------------ event-loop servers
#
# The same three modes written once over ``Conn`` (send, recv, close), where
# ``recv`` returns b"" at the client's close_notify.


class Stats:
    """Optional profiling of the server: cProfile, Trio task steps, bytes."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.steps = StepCounter() if path else None
        self.received = 0
        self.prof: Any = None

    def start(self) -> None:
        """Start at the first connection, after imports and the listener setup."""
        if self.path and self.prof is None:
            import cProfile

            self.steps.enabled = True  # type: ignore[union-attr]
            self.prof = cProfile.Profile(time.process_time)
            self.prof.enable()

    def instruments(self) -> list[Any]:
        return [self.steps] if self.steps is not None else []

    def dump(self) -> None:
        if self.prof is None:
            return
        self.prof.disable()
        self.prof.dump_stats(self.path)
        info = {"task_steps": self.steps.steps, "bytes_received": self.received}  # type: ignore[union-attr]
        Path(f"{self.path}.json").write_text(json.dumps(info))
        self.prof.enable()


async def _recv_exact_async(conn: Conn, n: int) -> bytes | None:
    data = await conn.recv(n)
    while len(data) < n:
        if not data:
            return None
        more = await conn.recv(n - len(data))
        if not more:
            return None
        data += more
    return data


async def handle_sink(conn: Conn, stats: Stats) -> None:
    recv, send = conn.recv, conn.send
    while (header := await _recv_exact_async(conn, 8)) is not None:
        (remaining,) = struct.unpack("!Q", header)
        total = remaining
        while remaining:
            data = await recv(min(remaining, RECV_BUFFER))
            if not data:
                return
            remaining -= len(data)
        stats.received += total
        await send(b"k")


async def handle_echo(conn: Conn, stats: Stats) -> None:
    recv, send = conn.recv, conn.send
    while True:
        data = await recv(RECV_BUFFER)
        if not data:
            return
        stats.received += len(data)
        await send(data)


async def handle_hs(conn: Conn, stats: Stats) -> None:
    if await conn.recv(1):
        await conn.send(b"y")
    while await conn.recv(RECV_BUFFER):
        pass


Handler = Callable[[Conn, Stats], Awaitable[None]]
HANDLERS: dict[str, Handler] = {
    "sink": handle_sink,
    "echo": handle_echo,
    "hs": handle_hs,
}


class EventLoopServer:
    """The three modes over each library's own "serve TLS over TCP" helper."""

    def __init__(self, impl: str, ctx: ssl.SSLContext, mode: str, stats: Stats, knobs: Knobs):
        self.impl = impl
        self.ctx = ctx
        self.handler = HANDLERS[mode]
        self.stats = stats
        self.knobs = knobs

    async def serve_conn(self, make: Callable[[], Awaitable[Conn]]) -> None:
        """Set up one connection, serve it, close it; connection errors are ignored."""
        conn = None
        self.stats.start()
        try:
            conn = await make()
            await self.handler(conn, self.stats)
        except Exception:
            pass  # a client that went away is not the server's problem
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            self.stats.dump()

    def run(self) -> None:
        main = getattr(self, f"main_{IMPLS[self.impl].loop}")
        IMPLS[self.impl].run(main, self.stats.instruments())

    async def main_trio(self) -> None:
        import trio

        async def on_stream(stream: Any) -> None:  # TCP_NODELAY is set by Trio
            async def make() -> Conn:
                if self.impl == "tlsretry":
                    self.knobs.apply_to_stream(stream)
                # A no-op for trio_tlsretry, whose server hands over streams
                # whose handshake is done; trio's handshakes here.
                await stream.do_handshake()
                return Conn(stream.send_all, stream.receive_some, stream.aclose, stream)

            await self.serve_conn(make)

        if self.impl == "tlsretry":
            from trio_tlsretry import serve_tls_over_tcp as serve
        else:
            serve = trio.serve_ssl_over_tcp  # type: ignore[assignment]
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(serve, on_stream, 0, self.ctx, host=HOST, backlog=2048)
            )
            announce(listeners[0].transport_listener.socket.getsockname()[1])

    async def main_anyio(self) -> None:
        import anyio
        from anyio.abc import SocketAttribute
        from anyio.streams.tls import TLSStream as AnyioTLSStream

        async def on_tcp(tcp: Any) -> None:
            async def make() -> Conn:
                stream = await AnyioTLSStream.wrap(
                    tcp, server_side=True, ssl_context=self.ctx, standard_compatible=True
                )
                receive = stream.receive

                async def recv(n: int) -> bytes:
                    # anyio raises EndOfStream where the other APIs return b"".
                    try:
                        return await receive(n)
                    except anyio.EndOfStream:
                        return b""

                return Conn(stream.send, recv, stream.aclose, stream)

            await self.serve_conn(make)

        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0, backlog=2048)
        announce(listener.extra(SocketAttribute.local_port))
        await listener.serve(on_tcp)

    async def main_asyncio(self) -> None:
        import asyncio

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The TLS handshake is done before asyncio calls this.
            async def make() -> Conn:
                return asyncio_conn(reader, writer)

            await self.serve_conn(make)

        server = await asyncio.start_server(on_conn, HOST, 0, ssl=self.ctx, backlog=2048)
        announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=IMPLS, default="blocking")
    parser.add_argument("--mode", choices=sorted(HANDLERS), required=True)
    parser.add_argument("--certdir", type=Path, required=True)
    parser.add_argument("--knob", action="append", default=[])
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()

    raise_fd_limit()
    knobs = Knobs.parse(args.knob)
    knobs.apply_to_process()
    ctx = server_context(args.certdir)
    if args.impl == "blocking":
        run_blocking(ctx, args.mode)
        return
    EventLoopServer(args.impl, ctx, args.mode, Stats(args.profile), knobs).run()


if __name__ == "__main__":
    main()
