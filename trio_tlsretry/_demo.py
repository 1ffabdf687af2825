"""``trio-tlsretry demo``: a timed-out ``send_all`` retried with the same stream.

A TLS echo server and a client run in one process over 127.0.0.1, with a
certificate from a throw-away CA. After a short echo, the server stops
reading; the client's large ``send_all`` fills the socket buffers and blocks;
its ``move_on_after`` expires. With :class:`trio.SSLStream` the stream would
now be broken. Here the client shows the stream's statistics, lets the server
read again and calls ``send_all`` with the very same object, which resumes at
the byte where it stopped. The server checks that it received the message
exactly once (length and SHA-256).
"""

from __future__ import annotations

import functools
import hashlib
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ._stream import TLSStream
from ._tcp import open_tls_over_tcp_stream, serve_tls_over_tcp

__all__ = ["DemoError", "run_demo"]

GREETING = b"hello over TLS\n"
_HEADER = struct.Struct("!Q")


class DemoError(Exception):
    """Something the demo checks did not hold."""


@dataclass
class _ServerLog:
    #: Set by the client once its send_all has timed out: the server may read.
    gate: trio.Event = field(default_factory=trio.Event)
    received: int = 0
    digest: str = ""
    extra_after_message: int = 0
    done: trio.Event = field(default_factory=trio.Event)


async def _receive_exactly(
    stream: TLSStream[trio.SocketStream], count: int, sink: Callable[[bytes], None]
) -> int:
    got = 0
    while got < count:
        data = await stream.receive_some(min(count - got, 1 << 20))
        if not data:
            break
        sink(bytes(data))
        got += len(data)
    return got


def _make_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def _serve(stream: TLSStream[trio.SocketStream], log: _ServerLog) -> None:
    async with stream:
        # Phase 1: echo the greeting.
        echoed = bytearray()
        await _receive_exactly(stream, len(GREETING), echoed.extend)
        await stream.send_all(echoed)
        # Phase 2: learn the message length, then stop reading until the
        # client's send_all has timed out.
        header = bytearray()
        await _receive_exactly(stream, _HEADER.size, header.extend)
        (length,) = _HEADER.unpack(header)
        await log.gate.wait()
        digest = hashlib.sha256()
        log.received = await _receive_exactly(stream, length, digest.update)
        log.digest = digest.hexdigest()
        verdict = f"{log.received} {log.digest}\n".encode()
        await stream.send_all(verdict)
        # Anything after the message would be a duplicate.
        while True:
            extra = await stream.receive_some()
            if not extra:
                break
            log.extra_after_message += len(extra)
        log.done.set()


def _leaves(exc: BaseException) -> list[BaseException]:
    inner: tuple[BaseException, ...] | None = getattr(exc, "exceptions", None)
    if inner is None:
        return [exc]
    return [leaf for sub in inner for leaf in _leaves(sub)]


async def run_demo(
    *,
    size: int = 32 * 1024 * 1024,
    send_timeout: float = 0.5,
    out: Callable[[str], None] = print,
) -> None:
    """Run the demo, reporting through ``out``; raise :class:`DemoError` on a mismatch.

    Other failures (``OSError``, ``trio.BrokenResourceError``,
    ``trio.TooSlowError``) propagate unwrapped when they are the only error.
    """
    try:
        await _run_demo(size=size, send_timeout=send_timeout, out=out)
    except Exception as exc:
        leaves = _leaves(exc)
        if len(leaves) == 1 and leaves[0] is not exc:
            raise leaves[0] from None
        raise


async def _run_demo(
    *,
    size: int = 32 * 1024 * 1024,
    send_timeout: float = 0.5,
    out: Callable[[str], None] = print,
) -> None:
    server_context, client_context = _make_contexts()
    log = _ServerLog()
    message = hashlib.shake_256(b"trio-tlsretry demo").digest(size)
    expected_digest = hashlib.sha256(message).hexdigest()

    async def handler(stream: TLSStream[trio.SocketStream]) -> None:
        await _serve(stream, log)

    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_tls_over_tcp, host="127.0.0.1")
        listeners = await nursery.start(serve, handler, 0, server_context)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        out(f"server      listening on 127.0.0.1:{port} (certificate from a throw-away CA)")

        stream = await open_tls_over_tcp_stream("127.0.0.1", port, ssl_context=client_context)
        async with stream:
            await stream.do_handshake()
            cipher = stream.cipher()
            out(f"tls         {stream.version()}, {cipher[0] if cipher else '?'}")

            await stream.send_all(GREETING)
            echoed = bytearray()
            await _receive_exactly(stream, len(GREETING), echoed.extend)
            if bytes(echoed) != GREETING:
                raise DemoError(f"echo mismatch: sent {GREETING!r}, got {bytes(echoed)!r}")
            out(f"echo        {len(GREETING)} bytes sent and echoed back byte-exact")

            await stream.send_all(_HEADER.pack(len(message)))
            out(f"send_all    {len(message):,} bytes while the server is not reading ...")
            before = stream.statistics()
            started = time.monotonic()
            with trio.move_on_after(send_timeout) as scope:
                await stream.send_all(message)
            if not scope.cancelled_caught:
                raise DemoError(
                    "send_all finished although the server was not reading; "
                    "the socket buffers are larger than the message"
                )
            stats = stream.statistics()
            # Plaintext the TLS engine encrypted before the timeout, and the
            # part of its ciphertext the socket accepted; the rest is queued.
            delivered = stats.plaintext_bytes_sent - before.plaintext_bytes_sent
            to_socket = stats.ciphertext_bytes_sent - before.ciphertext_bytes_sent
            out(
                f"timeout     send_all cancelled after {time.monotonic() - started:.2f} s: "
                f"{delivered:,} of {len(message):,} bytes encrypted, {to_socket:,} bytes "
                f"of ciphertext handed to the socket, "
                f"{stats.outgoing_ciphertext_bytes:,} queued"
            )
            out(
                f"statistics  state={stats.state.value} pinned_bytes={stats.pinned_bytes:,} "
                f"outgoing_ciphertext_bytes={stats.outgoing_ciphertext_bytes:,} "
                f"plaintext_bytes_sent={stats.plaintext_bytes_sent:,}"
            )
            if stats.state.value != "open" or stats.pinned_bytes == 0:
                raise DemoError(f"unexpected state after the timeout: {stats}")

            log.gate.set()
            await stream.send_all(message)  # the very same object: resumes
            out(
                f"retry       send_all(msg) resumed: the queued ciphertext first, "
                f"then plaintext from byte {delivered:,}; completed"
            )

            verdict = bytearray()
            while not verdict.endswith(b"\n"):
                data = await stream.receive_some()
                if not data:
                    raise DemoError("the server closed before sending its verdict")
                verdict.extend(data)
            await stream.send_eof()
            with trio.fail_after(10):
                await log.done.wait()

        nursery.cancel_scope.cancel()

    count, digest = verdict.decode().split()
    out(f"server      received {int(count):,} bytes, SHA-256 {digest[:16]}...")
    if int(count) != len(message) or digest != expected_digest:
        raise DemoError(
            f"server received {count} bytes with SHA-256 {digest}; "
            f"expected {len(message)} bytes with SHA-256 {expected_digest}"
        )
    if log.extra_after_message:
        raise DemoError(f"server received {log.extra_after_message} bytes after the message")
    out(
        f"result      send_all timed out after {delivered:,} bytes; retried; delivered exactly once"
    )
