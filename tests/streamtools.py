"""Small helpers shared by the test modules (imported as ``streamtools``)."""

from __future__ import annotations

import functools
import importlib.util
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import trio
import trio.testing

from trio_tlsretry import TLSListener, TLSStream
from trio_tlsretry.testing import (
    DEFAULT_HOSTNAME,
    TLSContexts,
    exact_progress_stream_pair,
    make_tls_contexts,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found]

#: Where the documentation's example programs are.
DOCS_EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"

#: The kinds :func:`transport_pair` makes.
TRANSPORT_KINDS = ("memory", "lockstep", "exact", "socket")


@functools.cache
def contexts_for(
    version: ssl.TLSVersion | None = None, *, hostname: str = DEFAULT_HOSTNAME
) -> TLSContexts:
    """Contexts capped at ``version`` (``None``: no cap) for a server named
    ``hostname``, made once per run.

    Shared by every test that asks for the same ones: a test that changes
    its contexts (ALPN, verification, ...) makes its own with
    ``make_tls_contexts``.
    """
    return make_tls_contexts(hostname, maximum_version=version)


def port_of(listeners: Sequence[trio.SocketListener | TLSListener[Any]]) -> int:
    """The port the first of ``listeners`` (over TCP) listens on."""
    listener = listeners[0]
    if isinstance(listener, TLSListener):
        listener = listener.transport_listener
    assert isinstance(listener, trio.SocketListener)
    port: int = listener.socket.getsockname()[1]
    return port


def transport_pair(
    kind: str, *, capacity: int = 64 * 1024, socket_buffer: int | None = None
) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """Two connected transports of one of the :data:`TRANSPORT_KINDS`.

    ``memory`` and ``lockstep`` are trio's memory pairs, ``exact`` is an
    exact-progress pair buffering ``capacity`` bytes each way, ``socket`` a
    socketpair; ``socket_buffer`` sets its kernel send and receive buffers,
    small ones making sends block and complete partially.
    """
    if kind == "memory":
        return trio.testing.memory_stream_pair()
    if kind == "lockstep":
        return trio.testing.lockstep_stream_pair()
    if kind == "exact":
        return exact_progress_stream_pair(capacity)
    if kind != "socket":
        raise ValueError(f"unknown transport kind {kind!r}")
    a, b = trio.socket.socketpair()
    if socket_buffer is not None:
        for sock in (a, b):
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, socket_buffer)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, socket_buffer)
    return trio.SocketStream(a), trio.SocketStream(b)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` that are not groups (``[exc]`` for a plain one)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def payload(size: int) -> bytes:
    """``size`` bytes of a pattern that repeats only every 251 bytes."""
    return bytes(i * 7 % 251 for i in range(size))


async def handshake(*streams: TLSStream) -> None:
    """Run the handshakes of ``streams`` concurrently (both ends of a pair)."""
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(stream.do_handshake)


@asynccontextmanager
async def handshaken_socket_pair(
    contexts: TLSContexts,
) -> AsyncIterator[tuple[TLSStream[trio.SocketStream], TLSStream[trio.SocketStream]]]:
    """A handshaken ``(client, server)`` pair over a real socketpair, closed on exit."""
    a, b = trio.socket.socketpair()
    client = TLSStream(trio.SocketStream(a), contexts.client, server_hostname=contexts.hostname)
    server = TLSStream(trio.SocketStream(b), contexts.server, server_side=True)
    async with client, server:
        await handshake(client, server)
        yield client, server


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """Exactly ``size`` bytes, never reading past them; fails on an early EOF."""
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        assert chunk, f"EOF after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


async def echo(stream: trio.abc.Stream, message: bytes, *, deadline: float = 30) -> None:
    """Send ``message`` and check that the peer (an echo server) sends it back."""
    with trio.fail_after(deadline):
        await stream.send_all(message)
        assert await receive_exactly(stream, len(message)) == message


async def receive_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything until the peer's EOF (``b""``)."""
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    return bytes(received)


def run_python(
    code: str, *, cwd: Path | None = None, block_trustme: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter of this environment; its output as text.

    ``block_trustme`` makes ``import trustme`` fail there, as in an
    environment without the ``testing`` extra.
    """
    prelude = "import sys; sys.modules['trustme'] = None\n" if block_trustme else ""
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def load_docs_example(name: str) -> ModuleType:
    """Import ``docs/examples/<name>.py`` (its ``__main__`` block does not run)."""
    path = DOCS_EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
