"""An ``openssl`` command-line peer for the interop tests: a subprocess whose
output is collected, killed on the way out whatever happened."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
import trio

from trio_tlsretry import TLSStream

#: An upper bound for any single wait on a subprocess or a thread: a guard
#: against a hung peer, never an assertion about speed.
PEER_TIMEOUT = 20.0

_F = TypeVar("_F", bound=Callable[..., object])


def needs_openssl(test: _F) -> _F:
    """Mark a test that runs the ``openssl`` binary; skip it if there is none."""
    skip = pytest.mark.skipif(
        shutil.which("openssl") is None, reason="the openssl command-line tool is not installed"
    )
    return pytest.mark.openssl(skip(test))  # type: ignore[no-any-return]


class OpenSSLTool:
    """An ``openssl`` subprocess whose stdout and stderr are collected as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._changed = trio.Event()
        self._open_pipes = 2
        self._stdout_unread = False
        self._stdout_read_first = 0
        self._stdout_resumed = trio.Event()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _collect(self, stream: trio.abc.ReceiveStream, into: bytearray) -> None:
        while True:
            size = 65536
            if into is self.stdout:
                while self._stdout_unread and len(into) >= self._stdout_read_first:
                    await self._stdout_resumed.wait()
                if self._stdout_unread:
                    size = min(size, self._stdout_read_first - len(into))
            chunk = await stream.receive_some(size)
            if not chunk:
                break
            into += chunk
            self._wake()
        self._open_pipes -= 1
        # A waiter must learn that no more output can come, not sleep on.
        self._wake()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; it is checked again after each
        piece of output. Raise AssertionError, with the end of both outputs,
        if openssl closed stdout and stderr with ``condition()`` still false.
        """
        while not condition():
            # Both pipes at EOF, rather than the exit status: output written
            # just before exiting may not have been collected yet.
            if self._open_pipes == 0:
                raise AssertionError(
                    f"openssl exited; stdout ends {self.trace()[-1500:]!r}, "
                    f"stderr ends {bytes(self.stderr[-1500:])!r}"
                )
            await self._changed.wait()

    async def wait_for_stdout(self, pattern: bytes) -> re.Match[bytes]:
        """The first match of ``pattern`` in stdout, once there is one."""
        await self.wait_for(lambda: re.search(pattern, self.stdout) is not None)
        match = re.search(pattern, self.stdout)
        assert match is not None
        return match

    def trace(self, since: int = 0) -> str:
        """Stdout from byte ``since`` on, as text: one character a byte, so
        that offsets into it are offsets into :attr:`stdout`."""
        return bytes(self.stdout[since:]).decode("latin-1")

    def stderr_trace(self, since: int = 0) -> str:
        """Stderr from byte ``since`` on, as text, like :meth:`trace`."""
        return bytes(self.stderr[since:]).decode("latin-1")

    @asynccontextmanager
    async def stdout_unread(self, after: int = 0) -> AsyncIterator[None]:
        """Leave openssl's stdout unread inside the block, once ``after``
        bytes of it have been collected.

        Once the pipe is full openssl cannot write what it receives, so it
        stops reading its socket and its peer's sends stall: a way to hold a
        transfer in mid-flight. Stderr is still collected. The chunk being
        received when the block starts is still collected.
        """
        assert not self._stdout_unread, "stdout_unread() does not nest"
        self._stdout_read_first = after
        self._stdout_unread = True
        try:
            yield
        finally:
            self._stdout_unread = False
            self._stdout_resumed.set()
            self._stdout_resumed = trio.Event()

    async def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(data)

    async def wait(self) -> int:
        with trio.fail_after(PEER_TIMEOUT):
            return await self.process.wait()


@asynccontextmanager
async def openssl(*args: str) -> AsyncIterator[OpenSSLTool]:
    """Run ``openssl *args``; kill it on the way out, whatever happened."""
    process = await trio.lowlevel.open_process(
        ["openssl", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    tool = OpenSSLTool(process)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(tool._collect, process.stdout, tool.stdout)
            nursery.start_soon(tool._collect, process.stderr, tool.stderr)
            try:
                yield tool
            finally:
                # Ends the collectors too: the pipes reach EOF.
                process.kill()
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
            if process.stdin is not None:
                await process.stdin.aclose()


@asynccontextmanager
async def server_stream_for_s_client(
    server_context: ssl.SSLContext, *s_client_args: str
) -> AsyncIterator[tuple[TLSStream, OpenSSLTool]]:
    """Our server ``TLSStream``, handshake done, with ``openssl s_client`` as its peer.

    ``s_client`` connects to a fresh listener on 127.0.0.1 (``-connect`` is
    added here); ``s_client_args`` are the rest of its options.
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with openssl("s_client", "-connect", f"127.0.0.1:{port}", *s_client_args) as tool:
        with trio.fail_after(PEER_TIMEOUT):
            transport = await listeners[0].accept()
        await listeners[0].aclose()
        server = TLSStream(transport, server_context, server_side=True)
        await server.do_handshake()
        yield server, tool
