"""The server examples of docs/server.rst (docs/examples/server_graceful.py, server_sni.py).

``server_graceful.py`` runs as a user runs it, in a subprocess over real
loopback, with ``cert.pem`` and ``key.pem`` in its directory;
``server_sni.py``'s functions are imported and served over loopback.
"""

from __future__ import annotations

import functools
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trustme
from streamtools import DOCS_EXAMPLES, echo, load_docs_example

from trio_tlsretry import TLSStream, serve_tls_over_tcp
from trio_tlsretry.testing import make_tls_contexts

DEADLINE = 30
HOST = "127.0.0.1"

server_sni = load_docs_example("server_sni")


async def open_client(
    port: int, context: ssl.SSLContext, name: str
) -> TLSStream[trio.SocketStream]:
    with trio.fail_after(DEADLINE):
        tcp = await trio.open_tcp_stream(HOST, port)
        stream = TLSStream(tcp, context, server_hostname=name)
        await stream.do_handshake()
    return stream


def write_leaf(ca: trustme.CA, directory: Path) -> bytes:
    leaf = ca.issue_cert("localhost", HOST)
    leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "key.pem"))
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


class Lines:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def next(self) -> str:
        with trio.fail_after(DEADLINE):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some()
                assert chunk, f"ended after {bytes(self.buffer)!r}"
                self.buffer += chunk
        line, _, rest = self.buffer.partition(b"\n")
        self.buffer = bytearray(rest)
        return line.decode()


@pytest.mark.skipif(os.name != "posix", reason="signals to a subprocess")
async def test_server_graceful_renews_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    first = write_leaf(ca, tmp_path)
    process = await trio.lowlevel.open_process(
        [sys.executable, str(DOCS_EXAMPLES / "server_graceful.py"), "0"],
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        out, err = Lines(process.stdout), Lines(process.stderr)
        port = int((await out.next()).removeprefix("listening on port "))
        old = await open_client(port, client_context, "localhost")
        assert old.getpeercert(binary_form=True) == first
        await echo(old, b"before")

        second = write_leaf(ca, tmp_path)
        process.send_signal(signal.SIGHUP)
        assert await out.next() == "certificate renewed"
        new = await open_client(port, client_context, "localhost")
        assert new.getpeercert(binary_form=True) == second
        await echo(old, b"old connection, old certificate")
        await new.aclose()

        (tmp_path / "key.pem").write_text("not a key\n")
        process.send_signal(signal.SIGHUP)
        assert (await err.next()).startswith("keeping the old certificate: ")
        kept = await open_client(port, client_context, "localhost")
        assert kept.getpeercert(binary_form=True) == second
        await kept.aclose()

        process.send_signal(signal.SIGTERM)
        assert await out.next() == "stopping: new connections are refused"
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, port)
        await echo(old, b"still served during the grace period")
        await old.send_eof()
        with trio.fail_after(DEADLINE):
            assert await old.receive_some() == b""  # closed by the server, close_notify
            assert await process.wait() == 0  # the last connection ended: it exits
        await old.aclose()
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


async def test_server_sni_presents_each_host_its_certificate() -> None:
    default = make_tls_contexts("default.example")
    www = make_tls_contexts("www.example.org")
    api = make_tls_contexts("api.example.org")
    context = server_sni.per_host_context(
        default.server, {"www.example.org": www.server, "api.example.org": api.server}
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(serve_tls_over_tcp, host=HOST), server_sni.echo, 0, context
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        for name, contexts in [
            ("www.example.org", www),
            ("api.example.org", api),
            ("default.example", default),
        ]:
            # Each client trusts only its own host's CA: verification proves
            # which certificate the server chose.
            stream = await open_client(port, contexts.client, name)
            await echo(stream, name.encode())
            await stream.aclose()
        # A name the server has no certificate for gets the default one,
        # which a client of www.example.org rejects.
        with pytest.raises(trio.BrokenResourceError) as info:
            await open_client(port, www.client, "other.example.org")
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        nursery.cancel_scope.cancel()
