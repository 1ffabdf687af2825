"""A fault transport cutting the connection mid-message (docs/testing.rst);
save as tests/test_faults.py."""

import pytest
import trio
import trio.testing
from greeting import receive_line

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import FailingStream, TLSContexts, tls_stream_pair_over


async def handshake(client: TLSStream, server: TLSStream) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)


async def test_connection_reset_mid_message(tls_contexts: TLSContexts) -> None:
    left, right = trio.testing.memory_stream_pair()
    network = FailingStream(left)  # the client's end of the network
    client, server = tls_stream_pair_over(
        network, right, client_context=tls_contexts.client, server_context=tls_contexts.server
    )
    await handshake(client, server)
    # Reset the connection 5000 bytes into the reply, a long line of 100 kB.
    network.fail_after_received = network.bytes_received + 5000
    await server.send_all(b"x" * 100_000 + b"\n")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await receive_line(client)
    # TLSStream's BrokenResourceError <- FailingStream's <- ConnectionResetError
    transport_error = caught.value.__cause__
    assert isinstance(transport_error, trio.BrokenResourceError)
    assert isinstance(transport_error.__cause__, ConnectionResetError)
