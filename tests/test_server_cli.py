"""``trio-tlsretry serve``: graceful stop, a second signal, certificate reload (SIGHUP).

Real loopback, the server in a subprocess, every wait under a trio deadline.
The library behaviour under them is tested deterministically in
test_server_graceful.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme
from streamtools import echo

from trio_tlsretry import TLSStream, open_tls_over_tcp_stream

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals to a subprocess")

PYTHON = [sys.executable, "-m", "trio_tlsretry"]
OPENSSL = shutil.which("openssl")
DEADLINE = 30
HOST = "127.0.0.1"


class Server:
    """A running ``serve`` whose stderr is read line by line."""

    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []
        self._buffer = bytearray()

    async def line_matching(self, pattern: str) -> str:
        """The next stderr line that matches ``pattern`` (earlier ones are kept in ``lines``)."""
        assert self.process.stderr is not None
        with trio.fail_after(DEADLINE):
            while True:
                while b"\n" in self._buffer:
                    raw, _, rest = self._buffer.partition(b"\n")
                    self._buffer = bytearray(rest)
                    line = raw.decode()
                    self.lines.append(line)
                    if re.search(pattern, line):
                        return line
                chunk = await self.process.stderr.receive_some()
                assert chunk, f"stderr ended; lines so far: {self.lines}"
                self._buffer += chunk

    async def rest_of_stderr(self) -> list[str]:
        assert self.process.stderr is not None
        with trio.fail_after(DEADLINE):
            while chunk := await self.process.stderr.receive_some():
                self._buffer += chunk
        tail = self._buffer.decode().splitlines()
        self._buffer.clear()
        self.lines.extend(tail)
        return tail

    async def exit_status(self) -> int:
        with trio.fail_after(DEADLINE):
            return await self.process.wait()


@asynccontextmanager
async def serve(*extra: str) -> AsyncIterator[Server]:
    process = await trio.lowlevel.open_process(
        [*PYTHON, "serve", "--port", "0", "--host", HOST, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = bytearray()
        with trio.fail_after(DEADLINE):
            while b"fingerprint" not in banner:
                chunk = await process.stdout.receive_some()
                assert chunk, "serve exited early"
                banner += chunk
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner.decode())
        assert match, banner
        yield Server(process, int(match.group(1)))
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def connect(port: int, context: ssl.SSLContext | None = None) -> TLSStream[trio.SocketStream]:
    with trio.fail_after(DEADLINE):
        stream = await open_tls_over_tcp_stream(
            HOST, port, ssl_context=context or insecure_context()
        )
        await stream.do_handshake()
    return stream


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


# ------------------------------------------------------------ graceful stop


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_transfer_in_progress_finishes_and_new_connections_are_refused(
    signum: signal.Signals,
) -> None:
    size = 8 * 1024 * 1024
    payload = bytes(range(251)) * (size // 251 + 1)
    payload = payload[:size]
    async with serve("--grace", "60") as server:
        stream = await connect(server.port)
        received = bytearray()
        signalled = trio.Event()

        async def send() -> None:
            await stream.send_all(payload)

        async def receive() -> None:
            while len(received) < size:
                received.extend(await stream.receive_some())
                if len(received) >= size // 8 and not signalled.is_set():
                    # In the middle of the echo: the signal arrives.
                    server.process.send_signal(signum)
                    signalled.set()

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(receive)
                line = await server.line_matching("stopping")
                assert line == (
                    f"trio-tlsretry: {signum.name}: stopping: no new connections; 1 open, "
                    "given up to 60 s to finish (SIGINT or SIGTERM again: stop at once)"
                )
                # The listener is closed before the line is written.
                with pytest.raises(ConnectionRefusedError):
                    await open_tls_over_tcp_stream(HOST, server.port)
        assert received == payload  # all of it, byte-exact
        # The client is done: the server's handler ends, and the stream is
        # closed with close_notify, a clean end of stream.
        await stream.send_eof()
        with trio.fail_after(DEADLINE):
            assert await stream.receive_some() == b""
        await stream.aclose()
        assert await server.exit_status() == 0
        tail = await server.rest_of_stderr()
    assert re.fullmatch(rf"\[1\] 127\.0\.0\.1:\d+: {size} bytes, closed", server.lines[-2])
    assert tail[-1] == "trio-tlsretry: stopped"


async def test_an_idle_connection_is_closed_with_close_notify_when_the_grace_period_ends() -> None:
    async with serve("--grace", "0.5") as server:
        stream = await connect(server.port)
        await echo(stream, b"ping")
        server.process.send_signal(signal.SIGTERM)
        await server.line_matching("stopping")
        with trio.fail_after(DEADLINE):
            # b"" is close_notify; a dropped connection raises BrokenResourceError.
            assert await stream.receive_some() == b""
        await stream.aclose()
        assert await server.exit_status() == 0
        await server.rest_of_stderr()
    assert re.fullmatch(
        r"\[1\] 127\.0\.0\.1:\d+: 4 bytes, closed \(server stopping\)", server.lines[-2]
    )
    assert server.lines[-1] == "trio-tlsretry: stopped"


async def test_without_connections_the_first_signal_ends_the_server() -> None:
    async with serve() as server:
        server.process.send_signal(signal.SIGINT)
        assert await server.exit_status() == 0
        tail = await server.rest_of_stderr()
    assert tail[-1] == "trio-tlsretry: stopped"
    assert "0 open" in tail[0]


@pytest.mark.parametrize(
    ("second", "status", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
async def test_a_second_signal_stops_at_once(
    second: signal.Signals, status: int, word: str
) -> None:
    async with serve("--grace", "600") as server:
        stream = await connect(server.port)
        await echo(stream, b"ping")
        server.process.send_signal(signal.SIGTERM)
        await server.line_matching("stopping")
        server.process.send_signal(second)
        assert await server.exit_status() == status
        # Still a polite close.
        with trio.fail_after(DEADLINE):
            assert await stream.receive_some() == b""
        await stream.aclose()
        tail = await server.rest_of_stderr()
    assert tail[-1] == f"trio-tlsretry: {word}"
    assert any(line.endswith("4 bytes, closed (server stopping)") for line in tail)


@pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not on PATH")
async def test_openssl_s_client_sees_a_clean_close_at_the_end_of_the_grace_period() -> None:
    assert OPENSSL is not None
    async with serve("--grace", "0.5") as server:
        client = await trio.lowlevel.open_process(
            [OPENSSL, "s_client", "-connect", f"{HOST}:{server.port}", "-quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert client.stdin is not None and client.stdout is not None
            await client.stdin.send_all(b"\x80hello\n")
            got = bytearray()
            with trio.fail_after(DEADLINE):
                while b"hello\n" not in got:
                    got += await client.stdout.receive_some()
            server.process.send_signal(signal.SIGTERM)
            # s_client ends by itself when the server closes: it read the
            # close_notify (or the end of the connection).
            with trio.fail_after(DEADLINE):
                while await client.stdout.receive_some():
                    pass
                await client.wait()
            assert await server.exit_status() == 0
            await server.rest_of_stderr()
        finally:
            client.kill()
            with trio.CancelScope(shield=True):
                await client.wait()
                for pipe in (client.stdin, client.stdout, client.stderr):
                    if pipe is not None:
                        await pipe.aclose()
    # The server's log: the connection ended at the deadline, not broken.
    assert any(re.search(r"7 bytes, closed \(server stopping\)$", line) for line in server.lines)


# ------------------------------------------------------------ reload


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def write_leaf(ca: trustme.CA, directory: Path) -> tuple[Path, Path, str]:
    """A new certificate (and key) for 127.0.0.1 in ``directory``: (cert, key, fingerprint)."""
    leaf = ca.issue_cert(HOST)
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return cert, key, fingerprint(der)


async def peer_fingerprint(port: int, ca: trustme.CA) -> str:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    stream = await connect(port, context)
    der = stream.getpeercert(binary_form=True)
    await stream.aclose()
    assert der is not None
    return fingerprint(der)


async def test_sighup_reloads_the_certificate_open_connections_keep_going(
    tmp_path: Path, ca: trustme.CA
) -> None:
    cert, key, first = write_leaf(ca, tmp_path)
    async with serve("--cert", str(cert), "--key", str(key)) as server:
        assert await peer_fingerprint(server.port, ca) == first
        old = await connect(server.port)
        await echo(old, b"before")
        _, _, second = write_leaf(ca, tmp_path)  # the files are renewed in place
        assert second != first
        server.process.send_signal(signal.SIGHUP)
        line = await server.line_matching("SIGHUP")
        assert line == (
            f"trio-tlsretry: SIGHUP: reloaded certificate {str(cert)!r}, "
            f"SHA-256 fingerprint {second}"
        )
        assert await peer_fingerprint(server.port, ca) == second
        await echo(old, b"after")  # the open connection is not disturbed
        await old.aclose()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("garbage-cert", r"cannot load certificate '[^']+': the file holds no PEM certificate"),
        ("missing-key", r"cannot load key '[^']+': No such file or directory"),
        ("other-key", r"cannot load certificate '[^']+' / key '[^']+': the private key does not"),
    ],
)
async def test_a_bad_file_on_sighup_keeps_the_old_certificate(
    tmp_path: Path, ca: trustme.CA, damage: str, message: str
) -> None:
    cert, key, first = write_leaf(ca, tmp_path)
    async with serve("--cert", str(cert), "--key", str(key)) as server:
        if damage == "garbage-cert":
            cert.write_text("not a certificate\n")
        elif damage == "missing-key":
            key.unlink()
        else:
            other = tmp_path / "other"
            other.mkdir()
            _, other_key, _ = write_leaf(ca, other)
            key.write_bytes(other_key.read_bytes())
        server.process.send_signal(signal.SIGHUP)
        line = await server.line_matching("SIGHUP")
        assert re.fullmatch(
            rf"trio-tlsretry: SIGHUP: {message}.*; keeping the old certificate", line
        ), line
        assert await peer_fingerprint(server.port, ca) == first


async def test_sighup_without_cert_says_there_is_nothing_to_reload() -> None:
    async with serve() as server:
        server.process.send_signal(signal.SIGHUP)
        line = await server.line_matching("SIGHUP")
        assert line == (
            "trio-tlsretry: SIGHUP: nothing to reload (no --cert given); "
            "keeping the throw-away certificate"
        )
        stream = await connect(server.port)
        await echo(stream, b"still serving")
        await stream.aclose()


@pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not on PATH")
async def test_openssl_s_client_sees_the_reloaded_certificate(
    tmp_path: Path, ca: trustme.CA
) -> None:
    assert OPENSSL is not None
    cert, key, _ = write_leaf(ca, tmp_path)
    async with serve("--cert", str(cert), "--key", str(key)) as server:
        _, _, second = write_leaf(ca, tmp_path)
        server.process.send_signal(signal.SIGHUP)
        await server.line_matching("SIGHUP: reloaded")
        with trio.fail_after(DEADLINE):
            shown = await trio.run_process(
                [OPENSSL, "s_client", "-connect", f"{HOST}:{server.port}", "-showcerts"],
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        pem = re.search(
            rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", shown.stdout, re.DOTALL
        )
        assert pem, shown.stdout
        der = ssl.PEM_cert_to_DER_cert(pem.group().decode())
        assert fingerprint(der) == second


# ------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-handshakes", "-1"], "--max-handshakes must be 0 (no limit) or more, not -1"),
        (["--grace", "-2"], "--grace must be 0 or more seconds, not -2"),
        (["--grace", "nan"], "--grace must be 0 or more seconds, not nan"),
    ],
)
def test_bad_serve_options(args: list[str], message: str) -> None:
    result = subprocess.run(
        [*PYTHON, "serve", "--port", "0", *args],
        capture_output=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert (result.returncode, result.stderr.decode()) == (1, f"trio-tlsretry: error: {message}\n")


def test_serve_help_documents_the_new_flags() -> None:
    result = subprocess.run(
        [*PYTHON, "serve", "--help"], capture_output=True, timeout=DEADLINE, check=True
    )
    text = " ".join(result.stdout.decode().split())
    assert "--max-handshakes N handshakes in progress at once" in text
    assert "0: no limit" in text
    assert "--grace SECONDS after the first SIGINT or SIGTERM" in text
    assert "--prompt-session-tickets send TLS 1.3 session tickets right after the handshake" in text
    assert "see docs/closing.rst" in text


@pytest.mark.parametrize("flag", [[], ["--prompt-session-tickets"], ["--max-handshakes", "0"]])
async def test_serve_runs_with_the_new_flags(flag: list[str]) -> None:
    async with serve(*flag) as server:
        stream = await connect(server.port)
        await echo(stream, b"hello")
        await stream.aclose()
