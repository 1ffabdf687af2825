"""A server that stops on SIGTERM and lets open connections finish (docs/server.rst)."""

from __future__ import annotations

import functools
import signal
import ssl
import sys

import trio

from trio_tlsretry import TLSStream, serve_tls_over_tcp


async def handler(stream: TLSStream[trio.SocketStream]) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the client vanished (no close_notify, a reset) or broke the protocol
    finally:
        # Runs on cancellation too. The shield lets close_notify go out;
        # the deadline stops a peer that does not read from holding us up.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 2):
            await stream.aclose()


async def serve_until(
    shutdown_requested: trio.Event,
    context: ssl.SSLContext,
    port: int = 8443,
    *,
    host: str | None = None,
    grace_period: float = 30,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as handlers:  # outlives the listener
        async with trio.open_nursery() as accept_loop:
            serve = functools.partial(
                serve_tls_over_tcp, host=host, handshake_timeout=5, handler_nursery=handlers
            )
            listeners = await accept_loop.start(serve, handler, port, context)
            task_status.started(listeners[0].transport_listener.socket.getsockname()[1])
            await shutdown_requested.wait()
            accept_loop.cancel_scope.cancel()  # stop accepting
        # Leaving ``handlers`` waits for the open connections to finish;
        # after the grace period they are cancelled.
        handlers.cancel_scope.deadline = trio.current_time() + grace_period


async def main(port: int) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain("cert.pem", "key.pem")
    shutdown_requested = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_until, shutdown_requested, context, port)
            print(f"listening on port {port}; send SIGTERM to stop")
            async for _ in signals:
                shutdown_requested.set()
                break


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8443)
