"""trio-websocket over wss:// through trio_tlsretry.TLSStream (docs/integrations.rst)."""

from __future__ import annotations

import ssl
import sys

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

import trio_tlsretry

#: trio-websocket refuses messages over 1 MiB unless told otherwise (both ends).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


async def echo(request: WebSocketRequest) -> None:
    """A ``serve_websocket`` handler: send every message back until the client closes."""
    connection = await request.accept()
    try:
        while True:
            await connection.send_message(await connection.get_message())
    except ConnectionClosed:
        pass  # connection.closed says who closed it, with which code and reason


async def serve(
    host: str | None,
    port: int,
    context: ssl.SSLContext,
    *,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve :func:`echo` over wss:// (``context`` holds the server's certificate)."""
    await serve_websocket(
        echo, host, port, context, max_message_size=MAX_MESSAGE_SIZE, task_status=task_status
    )


async def ask(url: str, message: str | bytes, context: ssl.SSLContext) -> str | bytes:
    """Open a wss:// connection, send ``message`` and return the first answer."""
    async with open_websocket_url(url, context, max_message_size=MAX_MESSAGE_SIZE) as connection:
        await connection.send_message(message)
        return await connection.get_message()


def main(url: str, message: str, cafile: str | None = None) -> None:
    # trio-websocket calls trio.open_ssl_over_tcp_stream for wss:// URLs (and
    # serve_websocket calls trio.open_ssl_over_tcp_listeners): from now on,
    # those are trio_tlsretry's.
    trio_tlsretry.inject_into_trio()
    context = ssl.create_default_context(cafile=cafile)
    print(trio.run(ask, url, message, context))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
