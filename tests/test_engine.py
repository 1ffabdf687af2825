"""Unit tests of the sans-IO engine: no Trio, no I/O, just two engines."""

from __future__ import annotations

import functools
import itertools
import ssl
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tlsretry._engine import TLSEngine
from trio_tlsretry._pinned import PinnedWrite, snapshot
from trio_tlsretry.testing import TLSContexts, make_tls_contexts


def shuttle(a: TLSEngine, b: TLSEngine) -> int:
    """Move all queued ciphertext a->b and b->a once; return bytes moved."""
    moved = 0
    for src, dst in ((a, b), (b, a)):
        while src.has_outgoing():
            head = src.outgoing_head()
            dst.receive_ciphertext(bytes(head))
            src.consume_outgoing(len(head))
            moved += len(head)
    return moved


def handshake(client: TLSEngine, server: TLSEngine) -> None:
    for _ in range(20):
        client.do_handshake()
        server.do_handshake()
        if (
            not shuttle(client, server)
            and client.stage.handshake_done
            and server.stage.handshake_done
        ):
            return
    raise RuntimeError("handshake did not complete")


@functools.cache
def cached_contexts(version: ssl.TLSVersion | None) -> TLSContexts:
    return make_tls_contexts(maximum_version=version)


def engine_pair(
    version: ssl.TLSVersion | None = None, write_chunk: int = 4096
) -> tuple[TLSEngine, TLSEngine]:
    contexts = cached_contexts(version)
    client = TLSEngine(
        contexts.client, server_side=False, server_hostname="example.org", write_chunk=write_chunk
    )
    server = TLSEngine(contexts.server, server_side=True, server_hostname=None)
    handshake(client, server)
    return client, server


def read_all(engine: TLSEngine) -> bytes:
    out = bytearray()
    while (piece := engine.read(1 << 20)) is not None and piece:
        out += piece
    return bytes(out)


class RecordingSSLObject:
    """Wraps a real SSLObject; records every write and fails chosen ones.

    ``fail_writes`` holds the 1-based numbers of write calls that raise
    SSLWantReadError without touching the real object, as OpenSSL does when
    a renegotiation needs the peer's data first.
    """

    def __init__(self, real: ssl.SSLObject, fail_writes: set[int]) -> None:
        self._real = real
        self.fail_writes = fail_writes
        self.calls: list[tuple[int, memoryview, int, bytes]] = []

    def write(self, data: memoryview) -> int:
        number = len(self.calls) + 1
        self.calls.append((id(data), data, len(data), bytes(data)))
        if number in self.fail_writes:
            raise ssl.SSLWantReadError("injected")
        return self._real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_snapshot_copies_mutable_buffers_once() -> None:
    original = bytes(range(256))
    assert snapshot(original) is original
    buffer = bytearray(original)
    copy = snapshot(buffer)
    buffer[0] = 99
    assert copy == original and type(copy) is bytes
    assert snapshot(memoryview(buffer)[1:3]) == original[1:3]


@pytest.mark.parametrize("bad", ["text", 5, None, 3.0, [1, 2]])
def test_snapshot_rejects_non_bytes(bad: object) -> None:
    with pytest.raises(TypeError):
        snapshot(bad)


def test_pinned_chunk_is_identical_until_accepted() -> None:
    pinned = PinnedWrite(b"src", b"x" * 10)
    first = pinned.next_chunk(4)
    assert pinned.next_chunk(4) is first
    assert pinned.next_chunk(99) is first  # a retry never re-slices
    pinned.accept_chunk()
    second = pinned.next_chunk(4)
    assert second is not first and bytes(second) == b"xxxx" and pinned.accepted == 4


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_every_retry_passes_the_identical_slice(version: ssl.TLSVersion) -> None:
    client, server = engine_pair(version, write_chunk=1000)
    recorder = RecordingSSLObject(client.ssl_object, fail_writes={1, 2, 4, 7, 8, 9})
    client.ssl_object = recorder  # type: ignore[misc]
    data = bytes(i % 251 for i in range(5500))
    client.pin(b"caller", data)
    accepted_chunks = 0
    while client.pinned is not None and client.pinned.unaccepted:
        if client.write_pinned_chunk():
            accepted_chunks += 1
        shuttle(client, server)
    assert accepted_chunks == 6
    # Group the write calls by offset: every failed call must be followed by
    # a call with the very same memoryview object, offset and length.
    previous = None
    for number, (_, view, length, content) in enumerate(recorder.calls, start=1):
        if previous is not None and previous[0] in recorder.fail_writes:
            assert view is previous[1], f"write {number} did not retry the same object"
            assert (length, content) == (previous[2], previous[3])
        previous = (number, view, length, content)
    assert client.write_retries == 6
    assert read_all(server) == data


def test_small_write_fast_path_retries_the_same_buffer() -> None:
    # write_small fails with WANT_READ having taken nothing: the engine pins
    # the same bytes, and the retry must pass that very buffer, whole.
    client, server = engine_pair(ssl.TLSVersion.TLSv1_2)
    recorder = RecordingSSLObject(client.ssl_object, fail_writes={1, 2})
    client.ssl_object = recorder  # type: ignore[misc]
    data = b"a small message"
    offered: list[memoryview] = []
    client.write_small(data, data, lambda head: offered.append(head) or len(head))
    assert offered == [] and not client.has_outgoing()
    pinned = client.pinned
    assert pinned is not None and client.is_pinned(data)
    assert not client.write_pinned_chunk()
    assert client.write_pinned_chunk()
    (_, first, _, _), (_, second, _, _), (_, third, _, _) = recorder.calls
    assert first is data
    for retry in (second, third):
        assert isinstance(retry, memoryview) and retry.obj is data and retry.nbytes == len(data)
    assert third is second
    assert pinned.accepted == len(data) and client.write_retries == 2
    shuttle(client, server)
    assert read_all(server) == data


def test_small_write_fast_path_pins_what_the_transport_did_not_take() -> None:
    client, server = engine_pair()
    data = b"x" * 3000
    heads: list[bytes] = []

    def take_100(head: memoryview) -> int:
        heads.append(bytes(head))
        return 100  # the transport took only 100 bytes

    client.write_small(b"caller", data, take_100)
    pinned = client.pinned
    assert pinned is not None and client.is_pinned(b"caller")
    assert (pinned.accepted, pinned.delivered, pinned.unaccepted) == (3000, 0, 0)
    rest = client.outgoing_head()
    assert bytes(rest) == heads[0][100:]
    client.consume_outgoing(len(rest))
    assert pinned.delivered == 3000 and not client.has_outgoing()
    server.receive_ciphertext(heads[0])
    assert read_all(server) == data


def test_small_write_fast_path_pins_nothing_when_all_went_out() -> None:
    client, server = engine_pair()
    data = b"x" * 3000
    heads: list[bytes] = []
    client.write_small(b"caller", data, lambda head: heads.append(bytes(head)) or len(head))
    assert client.pinned is None and not client.has_outgoing()
    server.receive_ciphertext(heads[0])
    assert read_all(server) == data


def test_small_write_fast_path_pins_a_write_whose_send_failed() -> None:
    client, _ = engine_pair()

    def fail(head: memoryview) -> int:
        raise trio.BrokenResourceError("reset")

    with pytest.raises(trio.BrokenResourceError):
        client.write_small(b"caller", b"x" * 100, fail)
    assert client.is_pinned(b"caller") and client.has_outgoing()


def test_buffered_ciphertext_is_bounded_by_one_chunk() -> None:
    client, server = engine_pair(write_chunk=16384)
    data = b"z" * (4 * 1024 * 1024)
    client.pin(data, data)
    received = 0
    while client.pinned is not None and client.pinned.unaccepted:
        assert client.write_pinned_chunk()
        shuttle(client, server)
        received += len(read_all(server))
    assert received == len(data)
    # One 16 KiB record's ciphertext plus its header and tag.
    assert client.max_outgoing_ciphertext_bytes <= 16384 + 64


def test_deferred_session_tickets_only_until_something_else_is_queued() -> None:
    contexts = make_tls_contexts(maximum_version=ssl.TLSVersion.TLSv1_3)
    client = TLSEngine(contexts.client, server_side=False, server_hostname="example.org")
    server = TLSEngine(contexts.server, server_side=True, server_hostname=None)
    client.do_handshake()
    shuttle(client, server)
    server.do_handshake()
    shuttle(client, server)
    assert client.do_handshake()
    shuttle(client, server)
    assert server.do_handshake()
    # Only the NewSessionTicket messages are queued: they may wait.
    assert server.has_outgoing() and not server.must_flush_before_receiving()
    server.pin(b"m", b"hello")
    assert server.write_pinned_chunk()
    assert server.must_flush_before_receiving()
    shuttle(client, server)
    assert read_all(client) == b"hello"


@pytest.mark.parametrize(
    "version, last", [(ssl.TLSVersion.TLSv1_2, "server"), (ssl.TLSVersion.TLSv1_3, "client")]
)
def test_handshake_bytes_unsent_counts_only_the_last_flight(
    version: ssl.TLSVersion, last: str
) -> None:
    """The side whose handshake ends with a flight (TLS 1.2: the server's
    Finished; TLS 1.3: the client's) counts that flight, and only it."""
    contexts = cached_contexts(version)
    client = TLSEngine(contexts.client, server_side=False, server_hostname="example.org")
    server = TLSEngine(contexts.server, server_side=True, server_hostname=None)
    engine = client if last == "client" else server
    while not engine.do_handshake():
        assert engine.handshake_bytes_unsent == 0  # counted only once it is done
        (server if engine is client else client).do_handshake()
        shuttle(client, server)
    flight = engine.outgoing_ciphertext_bytes
    assert flight > 0
    assert engine.handshake_bytes_unsent == flight
    engine.consume_outgoing(len(engine.outgoing_head()) - 1)
    assert engine.handshake_bytes_unsent == 1
    # Application data queued behind it never counts.
    engine.pin(b"m", b"x" * 1000)
    assert engine.write_pinned_chunk()
    assert engine.handshake_bytes_unsent == 1
    engine.consume_outgoing(1)
    assert engine.handshake_bytes_unsent == 0
    assert engine.has_outgoing()


def test_read_reports_close_notify_after_pending_plaintext() -> None:
    client, server = engine_pair()
    client.pin(b"m", b"last words")
    assert client.write_pinned_chunk()
    client.start_shutdown()
    shuttle(client, server)
    assert server.read(100) == b"last words"
    assert server.read(100) == b""
    assert server.read(100) == b""


def test_transport_eof_without_close_notify_is_an_error() -> None:
    _, server = engine_pair()
    server.receive_ciphertext(b"")
    with pytest.raises(ssl.SSLEOFError):
        server.read(100)


def test_consume_outgoing_rejects_impossible_progress() -> None:
    client, _ = engine_pair()
    client.pin(b"m", b"abc")
    client.write_pinned_chunk()
    head = client.outgoing_head()
    with pytest.raises(ValueError):
        client.consume_outgoing(len(head) + 1)
    with pytest.raises(ValueError):
        client.consume_outgoing(-1)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@given(
    messages=st.lists(st.integers(1, 40_000), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 20_000), max_size=40),
    read_sizes=st.lists(st.integers(1, 30_000), min_size=1, max_size=10),
)
@settings(deadline=None)
def test_nothing_to_decrypt_is_never_wrong(
    version: ssl.TLSVersion, messages: list[int], cuts: list[int], read_sizes: list[int]
) -> None:
    # ``read`` skips SSLObject.read when nothing_to_decrypt() says it would
    # raise SSLWantReadError. Check that claim against the real SSLObject at
    # every point of a stream cut at random places (mid-header, mid-record,
    # several records at once), read in random sizes, ending in close_notify.
    client, server = engine_pair(version)
    expected = b"".join(bytes([n % 251]) * n for n in messages)
    for n in messages:
        server.ssl_object.write(bytes([n % 251]) * n)
    server.start_shutdown()
    wire = bytes(server.outgoing_head())
    server.consume_outgoing(len(wire))
    received = bytearray()
    sizes = itertools.cycle(read_sizes)
    offset = 0
    cut_points = iter(cuts)
    closed = False
    while not closed:
        step = next(cut_points, 1 << 30)
        chunk = wire[offset : offset + step]
        offset += len(chunk)
        if chunk:
            client.receive_ciphertext(bytes(chunk))
        while True:
            predicted_block = client.nothing_to_decrypt()
            try:
                piece = client.ssl_object.read(next(sizes))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            assert not predicted_block, "nothing_to_decrypt() said no, SSLObject.read returned data"
            if not piece:
                closed = True
                break
            received += piece
        if offset >= len(wire) and not closed:
            pytest.fail("the whole stream was fed without reaching close_notify")
    assert received == expected


def test_a_write_chunk_below_one_byte_is_refused() -> None:
    contexts = ssl.create_default_context()
    with pytest.raises(ValueError, match="write_chunk"):
        TLSEngine(contexts, server_side=False, server_hostname="example.org", write_chunk=0)
