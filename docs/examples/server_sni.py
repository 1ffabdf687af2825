"""Per-host certificates: the context's sni_callback picks one (docs/server.rst)."""

from __future__ import annotations

import ssl

import trio

from trio_tlsretry import TLSStream, serve_tls_over_tcp


def context_for(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def per_host_context(default: ssl.SSLContext, by_name: dict[str, ssl.SSLContext]) -> ssl.SSLContext:
    """``default``, made to switch to ``by_name[host]`` for a client asking for ``host``."""

    def pick(ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        # Called during the handshake, with the name the client sent (None
        # without SNI); the connection continues with the context set here.
        if server_name in by_name:
            ssl_object.context = by_name[server_name]

    default.sni_callback = pick
    return default


async def echo(stream: TLSStream[trio.SocketStream]) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


if __name__ == "__main__":
    context = per_host_context(
        context_for("cert.pem", "key.pem"),
        {
            "www.example.org": context_for("www.pem", "www-key.pem"),
            "api.example.org": context_for("api.pem", "api-key.pem"),
        },
    )
    trio.run(serve_tls_over_tcp, echo, 8443, context)
