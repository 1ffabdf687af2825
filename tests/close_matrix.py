"""The close matrix: an upload followed by a close, over real loopback TCP.

Shared by ``test_closing.py`` (which asserts every cell) and runnable as a
script that tallies each cell for ``TLSStream`` and for ``trio.SSLStream`` in
the same position, side by side::

    python tests/close_matrix.py [--runs 20]

A *cell* is one client, one upload size and one way of ending, against one
server. The server reads until the end of the stream and reports how many
bytes arrived and how the stream ended:

* ``"eof"``: ``receive_some`` returned ``b""`` (the peer's ``close_notify``);
* ``"no close_notify"``: ``BrokenResourceError`` caused by the transport's EOF
  without a ``close_notify`` (the documented ending of an abortive close);
* ``"reset"``: ``BrokenResourceError`` caused by a TCP reset: what Linux does
  when a socket is closed with unread bytes in it (RFC 2525 section 2.17),
  and the peer's kernel then discards what it had not handed over yet;
* anything else is named by its exception.

Why sizes like 200,000 and 8,000,003 bytes: they are not multiples of a TLS
record, and they are large enough that the server is still reading when the
client closes.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from streamtools import contexts_for, payload

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import TLSContexts

TLS13 = ssl.TLSVersion.TLSv1_3
SIZES = (100, 200_000, 8_000_003)
HOST = "127.0.0.1"
#: What the server leaves unread until the client has closed: small enough to
#: fit in the sockets' buffers, so the client's send_all completes.
TAIL = 65536
#: A guard against a hung cell, never a statement about speed.
CELL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Outcome:
    """What the server saw: bytes that arrived, and how the stream ended."""

    received: int
    ending: str


def ending_of(exc: BaseException) -> str:
    """Name how a server's receive ended from the exception's cause chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionResetError) or "Connection reset" in str(seen):
            return "reset"
        if isinstance(seen, ssl.SSLEOFError) or "UNEXPECTED_EOF" in str(seen):
            return "no close_notify"
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


async def read_upload(
    stream: trio.abc.Stream, size: int, client_closed: trio.Event | None = None
) -> Outcome:
    """Read until the end; then close our side (a ``close_notify`` if open).

    With ``client_closed``, the last ``TAIL`` bytes are read only once the
    client has closed its socket: whatever the client's close does to bytes
    the server has not read yet then always shows (a reset destroys them),
    instead of depending on which process runs first.
    """
    received = 0
    try:
        await stream.do_handshake()  # type: ignore[attr-defined]
        if client_closed is not None:
            while received < size - TAIL and (data := await stream.receive_some(65536)):
                received += len(data)
            await client_closed.wait()
        while data := await stream.receive_some(65536):
            received += len(data)
    except trio.BrokenResourceError as exc:
        ending = ending_of(exc)
    else:
        ending = "eof"
    try:
        await stream.aclose()
    except trio.BrokenResourceError:
        pass
    return Outcome(received, ending)


# ------------------------------------------------------------------ clients
#
# Each client connects to 127.0.0.1:port, uploads ``data`` and ends in one
# way. ``aclose``: a graceful close (``close_notify``, then close). ``send_eof``:
# ``close_notify``, wait for the server's, close (``unwrap`` where there is
# no ``send_eof``). ``abort``: close without ``close_notify``.

Client = Callable[[int, bytes, str, TLSContexts], Awaitable[None]]


async def tlsstream_client(port: int, data: bytes, ending: str, contexts: TLSContexts) -> None:
    transport = await trio.open_tcp_stream(HOST, port)
    stream = TLSStream(
        transport,
        contexts.client,
        server_hostname=contexts.hostname,
        https_compatible=ending == "abort",
    )
    await stream.send_all(data)
    if ending == "send_eof":
        await stream.send_eof()
        assert await stream.receive_some() == b""
    await stream.aclose()


async def sslstream_client(port: int, data: bytes, ending: str, contexts: TLSContexts) -> None:
    transport = await trio.open_tcp_stream(HOST, port)
    stream = trio.SSLStream(
        transport,
        contexts.client,
        server_hostname=contexts.hostname,
        https_compatible=ending == "abort",
    )
    await stream.send_all(data)
    if ending == "send_eof":
        raw, _ = await stream.unwrap()
        await raw.aclose()
    else:
        await stream.aclose()


async def sslsocket_client(port: int, data: bytes, ending: str, contexts: TLSContexts) -> None:
    import socket

    def run() -> None:
        with socket.create_connection((HOST, port)) as raw:
            sock = contexts.client.wrap_socket(raw, server_hostname=contexts.hostname)
            sock.sendall(data)
            if ending == "send_eof":
                sock.unwrap()  # sends close_notify, then reads until the server's
            sock.close()

    await trio.to_thread.run_sync(run)


#: Which endings each client can do.
CLIENTS: dict[str, tuple[Client, tuple[str, ...]]] = {
    "TLSStream": (tlsstream_client, ("aclose", "send_eof", "abort")),
    "trio.SSLStream": (sslstream_client, ("aclose", "send_eof", "abort")),
    "ssl.SSLSocket": (sslsocket_client, ("send_eof", "abort")),
}


# ------------------------------------------------------------------ servers


def make_server(
    kind: str, contexts: TLSContexts, prompt_tickets: bool
) -> Callable[[trio.SocketStream], trio.abc.Stream]:
    """How the server side wraps an accepted socket."""
    if kind == "TLSStream":
        return lambda transport: TLSStream(
            transport,
            contexts.server,
            server_side=True,
            prompt_session_tickets=prompt_tickets,
        )
    if prompt_tickets:
        raise ValueError("trio.SSLStream has no prompt tickets")
    return lambda transport: trio.SSLStream(transport, contexts.server, server_side=True)


async def run_cell(
    client: Client,
    data: bytes,
    ending: str,
    *,
    server: str = "TLSStream",
    prompt_tickets: bool = False,
) -> Outcome:
    """One connection of one cell: the server's outcome."""
    contexts = contexts_for(TLS13)
    wrap = make_server(server, contexts, prompt_tickets)
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    outcome: Outcome | None = None
    # A client that waits for the server's close_notify cannot close first.
    client_closed = None if ending == "send_eof" else trio.Event()

    async def upload() -> None:
        try:
            await client(port, data, ending, contexts)
        finally:
            if client_closed is not None:
                client_closed.set()

    with trio.fail_after(CELL_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            transport = await listeners[0].accept()
            await listeners[0].aclose()
            outcome = await read_upload(wrap(transport), len(data), client_closed)
    assert outcome is not None
    return outcome


async def tally(runs: int) -> None:
    """Print every cell for a TLSStream and a trio.SSLStream server."""
    servers = [("TLSStream", False), ("TLSStream", True), ("trio.SSLStream", False)]
    print(f"{runs} runs a cell; 'whole' counts runs where every byte arrived and b'' ended it")
    for name, (client, endings) in CLIENTS.items():
        for ending in endings:
            for size in SIZES:
                data = payload(size)
                row = []
                for server, prompt in servers:
                    counts: Counter[str] = Counter()
                    for _ in range(runs):
                        try:
                            outcome = await run_cell(
                                client, data, ending, server=server, prompt_tickets=prompt
                            )
                        except Exception as exc:  # the client failed: say how
                            counts[f"client {type(exc).__name__}"] += 1
                            continue
                        whole = outcome.received == size
                        counts[("whole " if whole else "short ") + outcome.ending] += 1
                    label = server + (" (prompt tickets)" if prompt else "")
                    row.append(f"{label}: {dict(counts)}")
                print(f"{name:15} {ending:9} {size:>9,}  " + " | ".join(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    trio.run(tally, args.runs)


if __name__ == "__main__":
    main()
