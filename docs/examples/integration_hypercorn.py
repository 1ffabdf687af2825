"""hypercorn serving HTTPS over trio_tlsretry.TLSStream (docs/integrations.rst)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

import trio_tlsretry

Message = dict[str, Any]


async def echo_app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """An ASGI application that answers each request with the request's body."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body: list[bytes] = []
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the client went away before the request was complete
        body.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    length = sum(map(len, body))
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % length)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for chunk in body:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def https_config(bind: str, certfile: str, keyfile: str) -> Config:
    config = Config()
    config.bind = [bind]  # "host:port"; port 0 picks a free one
    config.certfile = certfile
    config.keyfile = keyfile
    # hypercorn offers HTTP/2 and HTTP/1.1 by ALPN (config.alpn_protocols).
    return config


async def serve_until_signalled(config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then let open requests finish."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def shutdown_trigger() -> None:
            async for _ in signals:
                return

        await serve(echo_app, config, shutdown_trigger=shutdown_trigger)


def main(bind: str) -> None:
    # hypercorn's trio worker builds trio.SSLListener(..., https_compatible=True)
    # when it starts serving: from now on, that is a TLSListener.
    trio_tlsretry.inject_into_trio()
    trio.run(serve_until_signalled, https_config(bind, "cert.pem", "key.pem"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0:8443")
