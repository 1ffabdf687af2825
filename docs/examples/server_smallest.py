"""The smallest TLS echo server (docs/server.rst)."""

from __future__ import annotations

import ssl

import trio

from trio_tlsretry import TLSStream, serve_tls_over_tcp


async def echo(stream: TLSStream[trio.SocketStream]) -> None:
    try:
        async with stream:
            async for data in stream:
                await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the client vanished (no close_notify, a reset) or broke the protocol


if __name__ == "__main__":
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain("cert.pem", "key.pem")
    trio.run(serve_tls_over_tcp, echo, 8443, context)
