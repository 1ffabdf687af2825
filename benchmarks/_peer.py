"""The fixed peer: a blocking stdlib ``ssl.SSLSocket`` server in its own process.

Every benchmark measures the *client* process. The server side is always this
program, whatever implementation the client uses, so that the number reported
for an implementation is its own cost and not the sum of two stacks. Blocking
``SSLSocket`` calls run almost entirely in C (OpenSSL plus one syscall), which
makes this peer faster than any of the event-loop implementations measured.

Modes (``--mode``):

``sink``
    Read an 8-byte big-endian length ``n``, read ``n`` bytes of plaintext,
    answer one byte ``b"k"``; repeat until the client closes.
``echo``
    Send back whatever arrives, until the client closes.
``hs``
    Serve connections one after the other: handshake, read one byte, send one
    byte, read until the client closes.

The listening port is printed on stdout as soon as the socket listens.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import socket
import ssl
import struct
import sys
import threading
from pathlib import Path

RECV_BUFFER = 256 * 1024


def server_context(certdir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(certdir / "server.pem")
    return ctx


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["sink", "echo", "hs"], required=True)
    parser.add_argument("--certdir", type=Path, required=True)
    args = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    threading.stack_size(256 * 1024)

    ctx = server_context(args.certdir)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    sys.stdout.write(f"{listener.getsockname()[1]}\n")
    sys.stdout.flush()

    serve = {"sink": serve_sink, "echo": serve_echo, "hs": serve_one_handshake}[args.mode]
    while True:
        raw, _addr = listener.accept()
        if args.mode == "hs":
            # One at a time: the client opens connections one after another.
            _handle(raw, ctx, serve)
        else:
            threading.Thread(target=_handle, args=(raw, ctx, serve), daemon=True).start()


if __name__ == "__main__":
    main()
