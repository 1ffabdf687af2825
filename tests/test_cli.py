"""The ``trio-tlsretry`` command line: demo, serve, connect and their errors.

Every subprocess runs under a trio deadline and is killed on the way out.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_tlsretry import TLSListener, TLSStream, open_tls_over_tcp_stream
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


def assert_error_line(result: subprocess.CompletedProcess[bytes], line: str) -> None:
    """stderr is exactly ``line``, the exit status 1."""
    err = result.stderr.decode()
    assert (result.returncode, err) == (1, line + "\n")


def run_sync(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``trio-tlsretry *args``, with no input, from a synchronous test."""
    return subprocess.run(
        [*PYTHON, *args],
        capture_output=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def read_lines(stream: trio.abc.ReceiveStream, count: int) -> list[str]:
    """The first ``count`` lines from ``stream`` (which says nothing more meanwhile)."""
    text = bytearray()
    with trio.fail_after(DEADLINE):
        while text.count(b"\n") < count:
            chunk = await stream.receive_some()
            assert chunk, f"stream ended after {bytes(text)!r}"
            text.extend(chunk)
    return text.decode().splitlines()


async def interrupt(process: trio.Process) -> int:
    """Send ``process`` SIGINT (Ctrl-C); return its exit status."""
    process.send_signal(signal.SIGINT)
    with trio.fail_after(DEADLINE):
        return await process.wait()


# ------------------------------------------------------------------ demo


DOCS = Path(__file__).resolve().parent.parent / "docs"


def documented_demo_output() -> list[str]:
    """The sample output of ``demo`` in docs/cli.rst, one line each."""
    text = (DOCS / "cli.rst").read_text()
    # The literal block that follows the "Sample output ...::" paragraph.
    block = text.split("\nSample output", 1)[1].split("::\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("   "):
            break
        lines.append(line[3:])
    return lines


#: A number as the demo prints it (1,234 or 0.50), or a hex digest prefix.
NUMBER = r"[0-9a-f]{16}|\d+(?:[.,]\d+)*"


def varying_numbers(line: str) -> str:
    """A pattern for ``line`` in which the numbers and digests may differ."""
    return f"(?:{NUMBER})".join(re.escape(part) for part in re.split(NUMBER, line))


async def test_demo_runs_and_reports() -> None:
    result = await run(*PYTHON, "demo", deadline=60)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode() + out
    # docs/cli.rst shows the same lines, numbers aside.
    documented = documented_demo_output()
    assert len(documented) == len(out.splitlines()) == 10, out
    for sample, line in zip(documented, out.splitlines(), strict=True):
        assert re.fullmatch(varying_numbers(sample), line), (sample, line)
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


async def test_serve_names_the_alert_that_ended_a_connection() -> None:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    process = await trio.lowlevel.open_process(
        [*PYTHON, "serve", "--port", "0", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        banner = "\n".join(await read_lines(process.stdout, 2))
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        stream = await open_tls_over_tcp_stream(
            "127.0.0.1", int(match.group(1)), ssl_context=insecure
        )
        async with stream:
            await stream.send_all(b"ping")
            with trio.fail_after(DEADLINE):
                assert await stream.receive_some() == b"ping"
            # A record no key produced: the server must answer bad_record_mac.
            await stream.transport_stream.send_all(b"\x17\x03\x03\x00\x40" + bytes(64))
            with pytest.raises(trio.BrokenResourceError) as info:
                await stream.receive_some()
            assert isinstance(info.value.__cause__, ssl.SSLError)
            assert info.value.__cause__.reason == "SSLV3_ALERT_BAD_RECORD_MAC"
        lines = await read_lines(process.stderr, 2)
        assert re.fullmatch(
            r"\[1\] 127\.0\.0\.1:\d+: 4 bytes, closed: sent alert bad_record_mac", lines[1]
        ), lines
    finally:
        await stop(process)


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
    result = run_sync("connect", f"127.0.0.1:{port}")
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
        result = run_sync("serve", "--port", "0", *args)
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
        result = run_sync("serve", "--port", str(port), "--host", "127.0.0.1")
    assert_one_line_error(
        result, rf"error: cannot listen on 127\.0\.0\.1 port {port}: Address already in use"
    )


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


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_serve_port_out_of_range(port: str) -> None:
    # Not wrapped modulo 65536 by the socket layer, not "Unknown error -8".
    result = run_sync("serve", "--port", port, "--host", "127.0.0.1")
    assert_error_line(
        result, f"trio-tlsretry: error: port out of range: {port} (must be 0 to 65535)"
    )


def test_connect_port_out_of_range() -> None:
    result = run_sync("connect", "127.0.0.1:99999")
    assert_error_line(result, "trio-tlsretry: error: port out of range: 99999 (must be 1 to 65535)")


def resolver_says(host: str) -> str:
    """What getaddrinfo says about ``host``, a name that cannot resolve."""
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo(host, 443)
    assert info.value.strerror
    return info.value.strerror


# Names under .invalid never resolve (RFC 2606 section 2), without asking
# the network.
@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--port", "0", "--host", "nosuchhost.invalid"],
        ["connect", "nosuchhost.invalid:443"],
    ],
    ids=["serve", "connect"],
)
def test_unresolvable_host(command: list[str]) -> None:
    result = run_sync(*command)
    reason = resolver_says("nosuchhost.invalid")
    assert_error_line(
        result, f"trio-tlsretry: error: cannot resolve host name nosuchhost.invalid: {reason}"
    )


def test_serve_on_an_address_of_another_machine() -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): reserved for documentation, so not
    # an address of this machine; bind fails locally, nothing is sent.
    with socket.socket() as probe:
        try:
            probe.bind(("192.0.2.1", 0))
        except OSError as exc:
            reason = os.strerror(exc.errno or 0)
        else:
            pytest.skip("this machine has the address 192.0.2.1")
    result = run_sync("serve", "--port", "0", "--host", "192.0.2.1")
    assert_error_line(result, f"trio-tlsretry: error: cannot listen on 192.0.2.1 port 0: {reason}")


def test_serve_cert_that_is_not_pem(tmp_path: Path) -> None:
    text = tmp_path / "README.md"
    text.write_text("# Not a certificate\n")
    result = run_sync("serve", "--port", "0", "--cert", str(text))
    assert_error_line(
        result,
        f"trio-tlsretry: error: cannot load certificate {str(text)!r}: "
        "the file holds no PEM certificate",
    )


def test_serve_key_that_is_not_pem(tmp_path: Path) -> None:
    contexts = make_tls_contexts("127.0.0.1")
    cert = tmp_path / "cert.pem"
    contexts.server_cert.cert_chain_pems[0].write_to_path(str(cert))
    result = run_sync("serve", "--port", "0", "--cert", str(cert), "--key", str(cert))
    assert_error_line(
        result,
        f"trio-tlsretry: error: cannot load key {str(cert)!r}: the file holds no PEM private key",
    )


def test_serve_key_of_another_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    other_key = tmp_path / "other-key.pem"
    make_tls_contexts("127.0.0.1").server_cert.cert_chain_pems[0].write_to_path(str(cert))
    make_tls_contexts("127.0.0.1").server_cert.private_key_pem.write_to_path(str(other_key))
    result = run_sync("serve", "--port", "0", "--cert", str(cert), "--key", str(other_key))
    assert_error_line(
        result,
        f"trio-tlsretry: error: cannot load certificate {str(cert)!r} / key {str(other_key)!r}: "
        "the private key does not belong to the certificate",
    )


def test_connect_insecure_with_cafile_is_refused(tmp_path: Path) -> None:
    result = run_sync("connect", "127.0.0.1:1", "--insecure", "--cafile", str(tmp_path / "ca.pem"))
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.splitlines()[-1] == (
        "trio-tlsretry connect: error: argument --cafile: not allowed with argument --insecure"
    )


def test_connect_help_describes_the_address() -> None:
    result = run_sync("connect", "--help")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert re.search(r"^  HOST:PORT +the server to connect to; HOST is", out, re.MULTILINE), out


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_throwaway_key_file_is_owner_only() -> None:
    from trio_tlsretry._cli import _load_throwaway_certificate, _self_signed_certificate

    modes: dict[str, int] = {}

    class RecordingContext(ssl.SSLContext):
        """Notes the mode of each file it is asked to load, while it exists."""

        def load_cert_chain(self, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
            modes["cert"] = stat.S_IMODE(os.stat(certfile).st_mode)
            modes["key"] = stat.S_IMODE(os.stat(keyfile).st_mode)
            super().load_cert_chain(certfile, keyfile)

    cert, key = _self_signed_certificate(None)
    context = RecordingContext(ssl.PROTOCOL_TLS_SERVER)
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        _load_throwaway_certificate(context, cert, key)
    finally:
        os.umask(old_umask)
    assert modes == {"cert": 0o600, "key": 0o600}


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_private_file_is_never_reused(tmp_path: Path) -> None:
    from trio_tlsretry._cli import _write_private_file

    planted = tmp_path / "key.pem"
    planted.symlink_to(tmp_path / "elsewhere.pem")
    with pytest.raises(FileExistsError):
        _write_private_file(str(planted), b"secret")
    assert not (tmp_path / "elsewhere.pem").exists()


# ------------------------------------------------------------------ Ctrl-C


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a subprocess")
async def test_serve_interrupted(tmp_path: Path) -> None:
    # Ctrl-C starts a graceful stop, which, with nothing open, ends at once.
    # (The second signal and the grace period: test_server_cli.py.)
    async with serve(tmp_path) as server:
        status = await interrupt(server.process)
    assert status == 0
    assert server.log.read_text() == (
        "trio-tlsretry: SIGINT: stopping: no new connections; 0 open, given up to 10 s "
        "to finish (SIGINT or SIGTERM again: stop at once)\n"
        "trio-tlsretry: stopped\n"
    )


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a subprocess")
async def test_serve_interrupted_closes_connections_with_close_notify(tmp_path: Path) -> None:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    async with serve(tmp_path, "--grace", "0") as server:
        stream = await open_tls_over_tcp_stream("127.0.0.1", server.port, ssl_context=insecure)
        async with stream:
            await stream.send_all(b"ping")
            with trio.fail_after(DEADLINE):
                assert await stream.receive_some() == b"ping"  # the handler is running
            status = await interrupt(server.process)
            # b"" is close_notify; a dropped connection raises BrokenResourceError.
            assert await stream.receive_some() == b""
    assert status == 0
    lines = server.log.read_text().splitlines()
    assert len(lines) == 4, lines
    assert re.fullmatch(r"\[1\] 127\.0\.0\.1:\d+: TLSv1\.3 \S+", lines[0])
    # No grace: the connection is closed at once, before or after the
    # announcement (which counts it as open or not).
    announced, closed = sorted(lines[1:3], key=lambda line: "bytes" in line)
    assert re.fullmatch(
        r"trio-tlsretry: SIGINT: stopping: no new connections; [01] open, given up to 0 s "
        r"to finish \(SIGINT or SIGTERM again: stop at once\)",
        announced,
    )
    assert re.fullmatch(r"\[1\] 127\.0\.0\.1:\d+: 4 bytes, closed \(server stopping\)", closed)
    assert lines[3] == "trio-tlsretry: stopped"


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a subprocess")
async def test_connect_interrupted_closes_with_close_notify(tmp_path: Path) -> None:
    contexts = make_tls_contexts("127.0.0.1")
    ca = tmp_path / "ca.pem"
    contexts.ca.cert_pem.write_to_path(str(ca))
    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = tcp.socket.getsockname()[1]
    async with TLSListener(tcp, contexts.server) as listener:
        client = await trio.lowlevel.open_process(
            [*PYTHON, "connect", f"127.0.0.1:{port}", "--cafile", str(ca)],
            stdin=subprocess.PIPE,  # left open: the client is waiting for input
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert client.stderr is not None
            with trio.fail_after(DEADLINE):
                server_side: TLSStream[trio.SocketStream] = await listener.accept()
                await server_side.do_handshake()
            async with server_side:
                banner = await read_lines(client.stderr, 5)  # connected to ... subject ...
                status = await interrupt(client)
                with trio.fail_after(DEADLINE):
                    # b"" is close_notify; a dropped connection raises BrokenResourceError.
                    assert await server_side.receive_some() == b""
            rest = bytearray()
            with trio.fail_after(DEADLINE):
                while chunk := await client.stderr.receive_some():
                    rest.extend(chunk)
        finally:
            await stop(client)
    assert status == 130
    assert banner[0] == f"connected to 127.0.0.1:{port}"
    assert rest.decode() == "trio-tlsretry: interrupted\n"
