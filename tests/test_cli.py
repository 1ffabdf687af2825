"""The ``trio-tlsretry`` command line: demo, serve, connect and their errors.

Every subprocess runs under a trio deadline and is killed on the way out.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from trio_tlsretry._cli import main
from trio_tlsretry.testing import make_tls_contexts

PYTHON = [sys.executable, "-m", "trio_tlsretry"]
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not on PATH")

#: Deadline for one subprocess conversation.
DEADLINE = 30


class Server:
    def __init__(self, process: trio.Process, port: int, banner: str, log: Path) -> None:
        self.process = process
        self.port = port
        self.banner = banner
        self.log = log

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def stop(process: trio.Process) -> None:
    """Kill ``process``, reap it and close its pipes."""
    process.kill()
    with trio.CancelScope(shield=True):
        await process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


@asynccontextmanager
async def serve(tmp_path: Path, *extra: str) -> AsyncIterator[Server]:
    """Run ``trio-tlsretry serve --port 0`` and wait until it listens."""
    log = tmp_path / "serve-stderr.txt"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*PYTHON, "serve", "--port", "0", "--host", "127.0.0.1", *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        banner = bytearray()
        with trio.fail_after(DEADLINE):
            while b"fingerprint" not in banner:
                chunk = await process.stdout.receive_some()
                assert chunk, f"serve exited early: {log.read_text()}"
                banner.extend(chunk)
        text = banner.decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        assert match, text
        yield Server(process, int(match.group(1)), text, log)
    finally:
        await stop(process)


async def run(
    *args: str, stdin: bytes = b"", deadline: float = DEADLINE
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(deadline):
        return await trio.run_process(
            list(args), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], pattern: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]


# ------------------------------------------------------------------ demo


async def test_demo_runs_and_reports() -> None:
    result = await run(*PYTHON, "demo", deadline=60)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode() + out
    assert "TLSv1.3" in out
    assert "pinned_bytes=" in out
    match = re.search(
        r"send_all timed out after ([\d,]+) bytes; retried; delivered exactly once", out
    )
    assert match, out
    assert 0 < int(match.group(1).replace(",", "")) < 32 * 1024 * 1024
    assert "received 33,554,432 bytes" in out


def test_demo_reports_a_mismatch(capsys: pytest.CaptureFixture[str]) -> None:
    # A message that fits in the socket buffers cannot block: the demo says
    # so instead of claiming success.
    assert main(["demo", "--size", "1000"]) == 1
    err = capsys.readouterr().err
    assert "demo failed: send_all finished although the server was not reading" in err


# ---------------------------------------------------------- serve/connect


async def test_serve_and_connect_echo(tmp_path: Path) -> None:
    payload = os.urandom(1 << 20)
    async with serve(tmp_path) as server:
        assert re.search(r"fingerprint ([0-9A-F]{2}:){31}[0-9A-F]{2}", server.banner)
        result = await run(*PYTHON, "connect", server.address, "--insecure", stdin=payload)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(payload).digest()
    assert "protocol  TLSv1.3" in err
    assert "trio-tlsretry throw-away" in err
    assert f"sent {len(payload)} bytes, received {len(payload)} bytes" in err


async def test_serve_discard_and_connect_with_cafile(tmp_path: Path) -> None:
    contexts = make_tls_contexts("127.0.0.1")
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    ca = tmp_path / "ca.pem"
    contexts.server_cert.cert_chain_pems[0].write_to_path(str(cert))
    contexts.server_cert.private_key_pem.write_to_path(str(key))
    contexts.ca.cert_pem.write_to_path(str(ca))
    async with serve(tmp_path, "--cert", str(cert), "--key", str(key), "--discard") as server:
        assert "(discard)" in server.banner
        result = await run(
            *PYTHON, "connect", server.address, "--cafile", str(ca), stdin=b"x" * 100_000
        )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert result.stdout == b""
    assert "sent 100000 bytes, received 0 bytes" in err


async def test_connect_reports_alpn(tmp_path: Path) -> None:
    contexts = make_tls_contexts("127.0.0.1")
    contexts.server.set_alpn_protocols(["h2", "demo/1"])
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    ca = tmp_path / "ca.pem"
    contexts.ca.cert_pem.write_to_path(str(ca))

    from trio_tlsretry._listener import TLSListener

    async with TLSListener(listener, contexts.server) as tls, trio.open_nursery() as nursery:

        async def one() -> None:
            stream = await tls.accept()
            async with stream:
                await stream.do_handshake()
                while await stream.receive_some():
                    pass

        nursery.start_soon(one)
        result = await run(
            *PYTHON, "connect", f"127.0.0.1:{port}", "--cafile", str(ca), "--alpn", "demo/1"
        )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "alpn      demo/1" in err
    assert "commonName" in err or "subject" in err


@needs_openssl
async def test_openssl_s_client_against_serve(tmp_path: Path) -> None:
    assert OPENSSL is not None
    payload = bytes(range(0x80, 0x100)) * 2048  # 256 KiB, no command letters
    async with serve(tmp_path) as server:
        client = await trio.lowlevel.open_process(
            [OPENSSL, "s_client", "-connect", server.address, "-quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert client.stdin is not None
            assert client.stdout is not None
            echoed = bytearray()
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.stdin.send_all, payload)
                    while len(echoed) < len(payload):
                        chunk = await client.stdout.receive_some()
                        assert chunk, "s_client exited early"
                        echoed.extend(chunk)
        finally:
            await stop(client)
    assert echoed == payload


# ---------------------------------------------------------------- errors


def test_connect_refused() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [*PYTHON, "connect", f"127.0.0.1:{port}"],
        capture_output=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert_one_line_error(result, r"error: cannot connect to 127\.0\.0\.1:\d+: Connection refused")


async def test_connect_verification_failure(tmp_path: Path) -> None:
    async with serve(tmp_path) as server:
        result = await run(*PYTHON, "connect", server.address)
    assert_one_line_error(
        result, r"error: TLS handshake with .* failed: certificate verification failed: "
    )


def test_connect_bad_cafile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["connect", "127.0.0.1:1", "--cafile", str(tmp_path / "missing.pem")]) == 1
    assert "cannot load CA file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert main(["connect", "127.0.0.1:1", "--cafile", str(garbage)]) == 1
    assert "cannot load CA file" in capsys.readouterr().err


def test_connect_bad_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["connect", "no-port-here"]) == 1
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_serve_bad_certificate(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    for args in (["--cert", str(bad)], ["--cert", str(tmp_path / "missing.pem")]):
        result = subprocess.run(
            [*PYTHON, "serve", "--port", "0", *args],
            capture_output=True,
            timeout=DEADLINE,
            check=False,
        )
        assert_one_line_error(result, r"error: cannot load certificate")


def test_serve_key_without_cert(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--key", "k.pem"]) == 1
    assert "--key needs --cert" in capsys.readouterr().err


def test_self_signed_certificate_is_usable() -> None:
    from trio_tlsretry._cli import _self_signed_certificate

    cert, key = _self_signed_certificate("example.test")
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in key
    der = ssl.PEM_cert_to_DER_cert(cert.decode())
    assert len(der) > 100


def test_serve_port_in_use() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*PYTHON, "serve", "--port", str(port), "--host", "127.0.0.1"],
            capture_output=True,
            timeout=DEADLINE,
            check=False,
        )
    assert_one_line_error(result, rf"error: cannot listen on port {port}: Address already in use")


def test_demo_without_trustme(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # makes ``import trustme`` fail
    assert main(["demo"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pip install 'trio-tlsretry[testing]'" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["serve"])  # --port is required
    assert info.value.code == 2
    assert "--port" in capsys.readouterr().err
