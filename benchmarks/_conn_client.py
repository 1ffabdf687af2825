"""The client process of ``connections.py``: drives connections into a state.

Started by ``connections.py``::

    python benchmarks/_conn_client.py --state idle --port PORT --certdir DIR

Plain stdlib, one thread: non-blocking sockets, ``ssl.SSLObject`` over memory
BIOs, and a small generator scheduler over ``selectors``. It is deliberately
not any of the implementations being measured, and it lives in its own
process, so its memory never shows in the server's figures. Its socket
buffers are kept small (``CLIENT_SOCKET_BUFFER``) so that thousands of stalled
connections do not push the kernel into TCP memory pressure.

Commands arrive as JSON lines on stdin, answers leave as JSON lines on stdout
(see ``_harness``):

``{"cmd": "open", "count": K}``
    Open K more connections and take each one through the client's part of
    the state (below), K at most ``CONCURRENCY`` at a time.
``{"cmd": "push", "skip": [PORT, ...]}``
    One pass over the connections: send queued ciphertext until each socket
    reports ``EAGAIN``. For ``send_blocked``, encrypt more as it goes (at
    most ``PUSH_PASS_LIMIT`` per connection and pass, a bound the kernel's
    buffers never let it reach), and skip the connections (by local port)
    whose echo the server reports stuck: more data would only sit in kernel
    buffers, and thousands of connections would push the kernel into TCP
    memory pressure.
``{"cmd": "close"}``
    Abort every connection (RST, no TIME_WAIT) and forget it.

The client's part of each state:

``idle``: handshake, send one byte, read the one-byte answer (and with it the
TLS 1.3 session tickets), then nothing. ``handshake``: connect, send the
ClientHello, wait until the server's answer is readable, never read it.
``send_blocked``: handshake, then only ``push`` passes, never a read.
``behind``: handshake, encrypt a header and 1 MiB, deliver them by ``push``
passes. ``after_transfer``: handshake, send 1 MiB, read the 1 MiB answer.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import selectors
import socket
import ssl
import struct
import sys
import time
from collections import deque
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

# Run as a script, so this directory is on sys.path.
from _conn_common import (
    HEADER_SIZE,
    SEND_BLOCKED_CAP,
    STATES,
    TRANSFER_SIZE,
    UNREAD_SIZE,
)
from _harness import HOST, KiB, LineReader, client_context, raise_fd_limit, write_message

# SO_SNDBUF and SO_RCVBUF of every client socket (the kernel doubles them).
CLIENT_SOCKET_BUFFER = 32 * KiB
CONCURRENCY = 32
# Plaintext encrypted per step while a send_blocked client keeps sending.
STREAM_CHUNK = 64 * KiB
PUSH_PASS_LIMIT = 4096 * KiB
READ_SIZE = 64 * KiB

# What a step generator yields: the socket and the selector event to wait for.
Wait = tuple[socket.socket, int]
Step = Generator[Wait, None, None]
READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


class ClientConnection:
    """One TLS client connection over a non-blocking socket."""

    def __init__(self, ctx: ssl.SSLContext, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_SOCKET_BUFFER)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.port = port
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=HOST)
        #: Ciphertext the socket has not taken yet.
        self.pending = bytearray()
        #: Plaintext handed to the TLS object so far.
        self.plaintext_queued = 0
        #: Ciphertext the socket has taken so far.
        self.ciphertext_sent = 0
        #: Whether ``push`` keeps encrypting more (send_blocked) or only
        #: delivers what is queued.
        self.streaming = False
        #: The local port, which the server sees as the peer port.
        self.local_port = 0

    # ---------------------------------------------------------- steps

    def connect(self) -> Step:
        err = self.sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        yield self.sock, WRITE
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        self.local_port = self.sock.getsockname()[1]

    def flush(self) -> Step:
        self.pending += self.outgoing.read()
        while self.pending:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                yield self.sock, WRITE
                continue
            del self.pending[:sent]
            self.ciphertext_sent += sent

    def fill(self) -> Step:
        """One socket read into the incoming BIO."""
        while True:
            try:
                data = self.sock.recv(READ_SIZE)
            except BlockingIOError:
                yield self.sock, READ
                continue
            if not data:
                raise EOFError("the server closed the connection")
            self.incoming.write(data)
            return

    def handshake(self) -> Step:
        yield from self.connect()
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                yield from self.flush()
                yield from self.fill()
        yield from self.flush()

    def send(self, data: bytes) -> Step:
        self.tls.write(data)
        self.plaintext_queued += len(data)
        yield from self.flush()

    def receive_exactly(self, count: int) -> Step:
        got = 0
        while got < count:
            try:
                got += len(self.tls.read(count - got))
            except ssl.SSLWantReadError:
                yield from self.fill()

    def queue(self, data: bytes) -> None:
        """Encrypt ``data`` now; ``push`` passes deliver it."""
        self.tls.write(data)
        self.plaintext_queued += len(data)
        self.pending += self.outgoing.read()

    # ------------------------------------------------------- no waiting

    def push(self) -> tuple[int, bool]:
        """Send until the socket is full: (ciphertext bytes sent, blocked)."""
        sent_now = 0
        while True:
            if self.streaming and sent_now >= PUSH_PASS_LIMIT:
                return sent_now, False
            if not self.pending:
                if not self.streaming:
                    return sent_now, False
                if self.plaintext_queued >= SEND_BLOCKED_CAP:
                    raise RuntimeError(
                        f"the server took {SEND_BLOCKED_CAP} bytes without its echo blocking"
                    )
                self.queue(b"\xe5" * STREAM_CHUNK)
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                return sent_now, True
            del self.pending[:sent]
            self.ciphertext_sent += sent
            sent_now += sent

    def readable(self) -> bool:
        """Does the kernel hold bytes from the server we have not read?"""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False

    def abort(self) -> None:
        # SO_LINGER 0: close with a RST, leaving no TIME_WAIT behind.
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def client_steps(state: str, conn: ClientConnection) -> Step:
    """The client's part of ``state`` for one connection."""
    if state == "handshake":
        yield from conn.connect()
        try:
            conn.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        yield from conn.flush()  # the ClientHello
        yield conn.sock, READ  # the server's flight arrived; left unread
        return
    yield from conn.handshake()
    if state == "idle":
        yield from conn.send(b"i")
        yield from conn.receive_exactly(1)
    elif state == "send_blocked":
        conn.streaming = True
    elif state == "behind":
        conn.queue(b"h" * HEADER_SIZE + b"\xb7" * UNREAD_SIZE)
    elif state == "after_transfer":
        yield from conn.send(b"\x3c" * TRANSFER_SIZE)
        yield from conn.receive_exactly(TRANSFER_SIZE)
    else:
        raise ValueError(state)


def run_steps(steps: Iterable[Step], concurrency: int, timeout: float) -> int:
    """Run step generators to completion, ``concurrency`` at a time, within ``timeout``.

    Returns how many finished (all of them, or it raises).
    """
    waiting = iter(steps)
    ready: deque[Step] = deque()
    running = finished = 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        while True:
            while running < concurrency:
                step = next(waiting, None)
                if step is None:
                    break
                running += 1
                ready.append(step)
            while ready:
                step = ready.popleft()
                try:
                    sock, event = next(step)
                except StopIteration:
                    running -= 1
                    finished += 1
                    continue
                selector.register(sock, event, step)
            if running == 0:
                return finished
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{running} connections did not finish within {timeout:.0f} s")
            for key, _events in selector.select(min(remaining, 1.0)):
                selector.unregister(key.fileobj)
                ready.append(key.data)
            # New steps join only once running ones finished (top of loop).


class Client:
    def __init__(self, state: str, port: int, certdir: Path) -> None:
        self.state = state
        self.port = port
        self.ctx = client_context(certdir)
        self.connections: list[ClientConnection] = []

    def open(self, count: int, timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        fresh = [ClientConnection(self.ctx, self.port) for _ in range(count)]
        self.connections += fresh
        finished = run_steps((client_steps(self.state, c) for c in fresh), CONCURRENCY, timeout)
        if finished != count:
            raise RuntimeError(f"{finished} of {count} connections finished their steps")
        answer: dict[str, Any] = {"open": len(self.connections)}
        answer["seconds"] = time.monotonic() - started
        if self.state == "handshake":
            answer["readable"] = sum(c.readable() for c in self.connections)
        return answer

    def push(self, skip: set[int]) -> dict[str, Any]:
        pushed = blocked = held = 0
        for conn in self.connections:
            if conn.local_port in skip:
                held += 1
                continue
            sent, stalled = conn.push()
            pushed += sent
            blocked += stalled
        return {
            "pushed": pushed,
            "blocked": blocked,
            "held": held,
            "ciphertext_sent": sum(c.ciphertext_sent for c in self.connections),
            "plaintext_queued": sum(c.plaintext_queued for c in self.connections),
            "unsent": sum(len(c.pending) for c in self.connections),
        }

    def close(self) -> dict[str, Any]:
        for conn in self.connections:
            conn.abort()
        self.connections.clear()
        return {"open": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", choices=STATES, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certdir", type=Path, required=True)
    parser.add_argument("--max-connections", type=int, required=True)
    args = parser.parse_args()
    raise_fd_limit(args.max_connections + 100)
    client = Client(args.state, args.port, args.certdir)
    commands = LineReader(sys.stdin.fileno())
    try:
        serve_commands(client, commands, sys.stdout.fileno())
    finally:
        client.close()


def serve_commands(client: Client, commands: LineReader, out: int) -> None:
    while True:
        try:
            command = commands.read_message(timeout=3600)
        except EOFError:
            return
        try:
            if command["cmd"] == "open":
                answer = client.open(command["count"], command["timeout"])
            elif command["cmd"] == "push":
                answer = client.push(set(command.get("skip", ())))
            elif command["cmd"] == "close":
                answer = client.close()
            elif command["cmd"] == "exit":
                return
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception as exc:  # reported to connections.py, which stops
            answer = {"error": f"client: {exc!r}"}
        write_message(out, answer)


if __name__ == "__main__":
    main()
