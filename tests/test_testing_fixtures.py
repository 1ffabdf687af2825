"""The ``tls_exact_stream_pair`` fixture (``trio_tlsretry/testing/_fixtures.py``)
can test cancellation and retries, which the default ``tls_stream_pair``
cannot: what the warning of docs/testing.rst says, pinned.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio
import trio.testing

from trio_tlsretry import TLSStream
from trio_tlsretry.testing import ExactProgressMemoryStream
from trio_tlsretry.testing._fixtures import EXACT_PAIR_CAPACITY

MESSAGE = bytes(range(256)) * 4096  # 1 MiB
DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.rst"


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "unexpected EOF"
        data += chunk
    return bytes(data)


async def send_with_a_timeout(client: TLSStream, server: TLSStream) -> bool:
    """The issue's program: a 1 MiB send_all under a timeout, the server only shaking hands."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        with trio.move_on_after(5) as scope:
            await client.send_all(MESSAGE)
    return scope.cancelled_caught


async def test_the_exact_pair_blocks_cancels_and_resumes(
    tls_exact_stream_pair: tuple[TLSStream, TLSStream],
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = tls_exact_stream_pair
    assert isinstance(client.transport_stream, ExactProgressMemoryStream)
    assert client.transport_stream.capacity == EXACT_PAIR_CAPACITY == 16 * 1024
    assert await send_with_a_timeout(client, server)
    # Part of the message went out, not all of it.
    assert 0 < client.transport_stream.bytes_sent < len(MESSAGE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, MESSAGE)
        assert await receive_exactly(server, len(MESSAGE)) == MESSAGE
    assert client.statistics().pinned_bytes == 0


async def test_the_default_pair_never_blocks_so_a_timeout_never_fires(
    tls_stream_pair: tuple[TLSStream, TLSStream],
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = tls_stream_pair
    assert not await send_with_a_timeout(client, server)
    assert await receive_exactly(server, len(MESSAGE)) == MESSAGE


def test_the_docs_list_the_exact_pair_first_with_the_warning_beside_the_list() -> None:
    page = DOCS.read_text(encoding="utf-8")
    fixtures = page[page.index(".. _testing-fixtures:") :]
    fixtures = fixtures[: fixtures.index("\nStream pairs\n")]
    entries = [line for line in fixtures.splitlines() if re.fullmatch(r"``\w+``", line)]
    assert entries[0] == "``tls_exact_stream_pair``"
    assert set(entries) >= {
        "``tls_stream_pair``",
        "``tls_contexts``",
        "``fake_tcp_network``",
        "``hang_guard``",
    }
    assert fixtures.index(".. warning::") < fixtures.index("``tls_exact_stream_pair``")
    assert "16 KiB" in fixtures
