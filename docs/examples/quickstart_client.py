"""Fetch a page over HTTPS with a TLSStream (docs/quickstart.rst)."""

from __future__ import annotations

import ssl

import trio

from trio_tlsretry import TLSStream


async def fetch(host: str, port: int = 443, context: ssl.SSLContext | None = None) -> bytes:
    if context is None:
        context = ssl.create_default_context()  # the system's CAs, host names checked
    tcp_stream = await trio.open_tcp_stream(host, port)
    stream = TLSStream(tcp_stream, context, server_hostname=host, https_compatible=True)
    async with stream:
        request = b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n"
        await stream.send_all(request)
        response = bytearray()
        async for data in stream:
            response += data
        return bytes(response)


if __name__ == "__main__":
    print(trio.run(fetch, "example.org")[:100])
