"""TLS 1.3 half-close: no more requests, but keep reading (docs/beyond.rst)."""

from __future__ import annotations

from trio_tlsretry import TLSStream


async def request_then_read_all(stream: TLSStream, request: bytes) -> bytes:
    await stream.send_all(request)
    await stream.send_eof()  # close_notify: "no more requests"
    response = bytearray()
    while data := await stream.receive_some():
        response += data  # the peer may still answer at length
    await stream.aclose()
    return bytes(response)
