"""An echo server and a client talking to it, in one program (docs/quickstart.rst)."""

from __future__ import annotations

import functools
import ssl

import trio
import trustme

from trio_tlsretry import TLSStream

# Throw-away certificates for a local demo. A real server loads its own:
#     server_context.load_cert_chain("cert.pem", "key.pem")
ca = trustme.CA()
server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("localhost").configure_cert(server_context)
client_context = ssl.create_default_context()
ca.configure_trust(client_context)


async def echo_handler(tcp_stream: trio.SocketStream) -> None:
    stream = TLSStream(tcp_stream, server_context, server_side=True)
    async with stream:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError as exc:
            print("connection failed:", exc)


async def client(port: int) -> None:
    tcp_stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream = TLSStream(tcp_stream, client_context, server_hostname="localhost")
    async with stream:
        await stream.send_all(b"hello")
        print("echoed:", await stream.receive_some())
        print("protocol:", stream.version())


async def main() -> None:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, echo_handler, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        await client(port)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
