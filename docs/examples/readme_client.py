"""The README's usage example (also shown in docs/quickstart.rst)."""

from __future__ import annotations

import ssl

import trio

import trio_tlsretry


async def fetch(host: str, port: int = 443, context: ssl.SSLContext | None = None) -> bytes:
    context = context or ssl.create_default_context()
    # https_compatible: many HTTPS servers close without TLS's close_notify.
    stream = await trio_tlsretry.open_tls_over_tcp_stream(
        host, port, ssl_context=context, https_compatible=True
    )
    try:
        request = b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n"
        for _attempt in range(3):  # a retry resumes where the last one stopped
            with trio.move_on_after(5):
                await stream.send_all(request)  # the same object every time
                break
        else:
            raise TimeoutError(f"{host} did not take the request in 15 s")
        response = bytearray()
        while data := await stream.receive_some():
            response += data
        return bytes(response)
    finally:
        with trio.move_on_after(5):  # a cancelled aclose still closes
            await stream.aclose()


if __name__ == "__main__":
    try:
        print(trio.run(fetch, "example.org")[:100])
    except trio.BrokenResourceError as exc:  # TLS or the connection failed
        print("failed:", repr(exc.__cause__))  # why: an ssl.SSLError, or the transport's error
    except OSError as exc:  # no TCP connection, or the TimeoutError above
        print("failed:", exc)
