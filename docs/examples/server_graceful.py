"""A server that stops gracefully on SIGTERM and renews its certificate on SIGHUP."""

from __future__ import annotations

import functools
import signal
import ssl
import sys

import trio

from trio_tlsretry import GracefulStop, TLSListener, TLSStream, serve_tls_over_tcp


async def echo(stream: TLSStream[trio.SocketStream]) -> None:
    # No closing here: when the handler ends (or is cancelled at the end of
    # the grace period) the server closes the stream, with close_notify.
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the client vanished (no close_notify, a reset) or broke the protocol


def load_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def renew(listeners: list[TLSListener[trio.SocketStream]], cert: str, key: str) -> bool:
    """Load the files into a new context and give it to the listeners; False if they fail."""
    try:
        context = load_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        print(f"keeping the old certificate: {exc}", file=sys.stderr)
        return False
    for listener in listeners:
        listener.ssl_context = context  # new handshakes only; open connections keep theirs
    return True


async def main(port: int, cert: str = "cert.pem", key: str = "key.pem", grace: float = 30) -> None:
    stop = GracefulStop()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def server(
                task_status: trio.TaskStatus[list[TLSListener[trio.SocketStream]]],
            ) -> None:
                serve = functools.partial(
                    serve_tls_over_tcp, graceful_stop=stop, task_status=task_status
                )
                await serve(echo, port, load_context(cert, key))
                nursery.cancel_scope.cancel()  # every connection has ended

            listeners = await nursery.start(server)
            port = listeners[0].transport_listener.socket.getsockname()[1]
            print(f"listening on port {port}", flush=True)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if renew(listeners, cert, key):
                        print("certificate renewed", flush=True)
                elif not stop.stop_requested:
                    stop.stop(grace)  # refuse new connections; cancel the rest after `grace`
                    await stop.wait_accepting_stopped()
                    print("stopping: new connections are refused", flush=True)
                else:
                    nursery.cancel_scope.cancel()  # a second SIGTERM: at once


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8443)
