"""How ciphertext moves over each kind of transport (``trio_tlsretry/_transport.py``):
``ExactProgressStream``'s ``send_all``, which sockets take the descriptor path,
and a TLSStream over a real socketpair on both paths' edges.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from streamtools import contexts_for, handshake, receive_exactly

from trio_tlsretry import ExactProgressStream, TLSStream
from trio_tlsretry._transport import _OSSocketIO, is_os_socket
from trio_tlsretry.testing import FakeTCPNetwork


class TakesThree(ExactProgressStream):
    """Accepts at most three bytes per ``send_some``; records what it was given."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    async def send_some(self, data: bytes | bytearray | memoryview) -> int:
        await trio.lowlevel.checkpoint()
        self.calls.append(bytes(data))
        return min(3, len(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_exact_progress_send_all_sends_the_rest_until_done() -> None:
    stream = TakesThree()
    await stream.send_all(bytearray(b"abcdefgh"))
    assert stream.calls == [b"abcdefgh", b"defgh", b"gh"]


async def test_exact_progress_send_all_of_nothing_is_a_checkpoint_only() -> None:
    stream = TakesThree()
    with trio.testing.assert_checkpoints():
        await stream.send_all(b"")
    assert stream.calls == []


def test_only_trios_own_os_socket_class_takes_the_descriptor_path() -> None:
    # The rule needs a real socket to tell Trio's own class.
    a, b = trio.socket.socketpair()
    with a, b:
        assert is_os_socket(a)

        class Instrumented(type(a)):  # type: ignore[misc]
            """A wrapper a custom socket factory might return: its methods may differ."""

        instrumented = Instrumented(socket.socket())
        with instrumented:
            assert isinstance(instrumented, trio.socket.SocketType)
            assert not is_os_socket(instrumented)
    fake, other = FakeTCPNetwork().socketpair()
    assert not is_os_socket(fake)
    fake.close()
    other.close()


async def socket_tls_pair() -> tuple[TLSStream, TLSStream]:
    contexts = contexts_for()
    sock_a, sock_b = trio.socket.socketpair()
    client = TLSStream(
        trio.SocketStream(sock_a), contexts.client, server_hostname=contexts.hostname
    )
    server = TLSStream(trio.SocketStream(sock_b), contexts.server, server_side=True)
    await handshake(client, server)
    return client, server


async def test_socket_fast_paths_and_a_socket_closed_behind_the_streams_back() -> None:
    client, server = await socket_tls_pair()
    # Over a real socket the stream must have chosen the descriptor path
    # (sends and reads on the file descriptor, no scheduler trip per call).
    assert type(client._transport_io) is _OSSocketIO
    for size in (1, 100, 70_000):
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, payload)
            assert await receive_exactly(server, len(payload)) == payload
    # The socket closed behind the stream's back: a clear error, not a
    # read or write on a stale file descriptor.
    client.transport_stream.socket.close()  # type: ignore[attr-defined]
    with pytest.raises(trio.BrokenResourceError) as info:
        await client.send_all(b"after close")
    assert isinstance(info.value.__cause__, trio.ClosedResourceError)
    await client.aclose()
    await server.aclose()
