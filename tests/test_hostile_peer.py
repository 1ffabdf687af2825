"""A hostile or broken peer never makes TLSStream hang, truncate silently,
buffer without bound or fail with anything but a documented exception.

Most tests here drive a *server* ``TLSStream`` directly: the peer is a
synchronous ``ssl.SSLObject`` client over memory BIOs (:class:`ScriptedPeer`),
so one hypothesis example costs a handshake and a few memory copies and a
normal run can afford thousands. Once the honest part of the conversation is
over, the peer feeds the server a *script*: a list of byte chunks, one per
transport read, followed by EOF.

Every operation runs under :func:`bounded`, which fails the test if the
operation yields more than a fixed number of times (a livelock) or blocks
while nothing else can run (a hang). No clock is involved.

Set ``TRIO_TLSRETRY_FUZZ_EXAMPLES`` to run every hypothesis test here with
that many examples (the normal run uses 2,100 in total).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import outcome
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamtools import contexts_for, handshake

from trio_tlsretry import StreamState, TLSStream
from trio_tlsretry._engine import DEFAULT_WRITE_CHUNK
from trio_tlsretry.testing import (
    TLSContexts,
    exact_progress_stream_pair,
    tls_memory_stream_pair,
)

T = TypeVar("T")

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [TLS12, TLS13]

#: ``TLSStream`` asks its transport for at most this much per read.
TRANSPORT_READ = 256 * 1024
#: Outgoing ciphertext a receive may leave queued: deferred TLS 1.3 session
#: tickets (two of them, a few hundred bytes each).
DEFERRED_TICKETS_MAX = 4096
#: The most outgoing ciphertext a send may buffer: one write chunk, its
#: record overhead (under 64 bytes per 16 KiB record) and deferred tickets.
ONE_CHUNK_CIPHERTEXT = (
    DEFAULT_WRITE_CHUNK + (DEFAULT_WRITE_CHUNK // 16384 + 1) * 64 + DEFERRED_TICKETS_MAX
)


def examples(default: int) -> int:
    """Per-test example count; ``TRIO_TLSRETRY_FUZZ_EXAMPLES`` overrides it."""
    override = os.environ.get("TRIO_TLSRETRY_FUZZ_EXAMPLES")
    return int(override) if override else default


def fuzz_settings(default: int) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def exact_pair(version: ssl.TLSVersion, capacity: int) -> tuple[TLSStream, TLSStream]:
    """A client/server pair over the exact-progress memory transport of ``capacity`` bytes."""
    contexts = contexts_for(version)
    return tls_memory_stream_pair(
        client_context=contexts.client,
        server_context=contexts.server,
        exact_progress=True,
        capacity=capacity,
    )


# ---------------------------------------------------------------------------
# Bounded execution.
# (Specific to these tests; candidates for trio_tlsretry.testing later.)


class Livelock(AssertionError):
    pass


class Hang(AssertionError):
    pass


class _Steps(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task, limit: int, scope: trio.CancelScope) -> None:
        self.task = task
        self.limit = limit
        self.scope = scope
        self.steps = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1
            if self.steps == self.limit:
                self.scope.cancel()


async def bounded(operation: Callable[[], Awaitable[T]], max_steps: int = 200) -> T:
    """Run ``operation()``; fail if it yields ``max_steps`` times or blocks for good.

    "Blocks for good" means: the operation is waiting and every other task is
    blocked too (``wait_all_tasks_blocked``). With memory transports and no
    clock, nothing can ever wake it, so that is a hang, found without time.
    """
    task = trio.lowlevel.current_task()
    hung = False
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:

            async def watchdog() -> None:
                nonlocal hung
                await trio.testing.wait_all_tasks_blocked()
                hung = True
                scope.cancel()

            nursery.start_soon(watchdog)
            steps = _Steps(task, max_steps, scope)
            trio.lowlevel.add_instrument(steps)
            try:
                result = await outcome.acapture(operation)
            finally:
                trio.lowlevel.remove_instrument(steps)
                nursery.cancel_scope.cancel()
    if hung:
        raise Hang("the operation blocked with nothing left that could wake it")
    if steps.steps >= max_steps:
        raise Livelock(f"the operation yielded {max_steps} times without finishing")
    return result.unwrap()


# ---------------------------------------------------------------------------
# The scripted peer.
# (A synchronous peer that replays captured records; the fuzz tests drive it
# byte by byte, which no transport wrapper in trio_tlsretry.testing does.)


class ScriptedPeer:
    """A synchronous TLS client (``SSLObject`` + memory BIOs) behind a memory transport.

    While ``script`` is ``None`` the client plays the handshake honestly:
    every transport read of the server first hands the server's output to the
    client and then delivers whatever the client answered. Once ``script`` is
    a list, each transport read delivers its next chunk, and EOF after the
    last one (unless ``eof_at_end`` is false: then the read blocks).
    """

    def __init__(self, contexts: TLSContexts, *, hostname: str = "example.org") -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.client = contexts.client.wrap_bio(
            self.incoming, self.outgoing, server_hostname=hostname
        )
        self.send_stream = trio.testing.MemorySendStream()
        self.receive_stream = trio.testing.MemoryReceiveStream(receive_some_hook=self._on_read)
        self.transport = trio.StapledStream(self.send_stream, self.receive_stream)
        self.script: list[bytes] | None = None
        self.eof_at_end = True
        self.reads = 0
        #: Called with each flight the honest client produces; returns what is
        #: actually delivered (lets a test tamper with a handshake flight).
        self.tamper: Callable[[int, bytes], bytes | None] | None = None
        self._flights = 0
        self.handshake_error: ssl.SSLError | None = None

    def sent_by_server(self) -> bytes:
        try:
            return bytes(self.send_stream.get_data_nowait())
        except trio.WouldBlock:
            return b""

    def pump_client(self) -> bytes:
        """Feed the server's output to the client; return the client's answer."""
        data = self.sent_by_server()
        if data:
            self.incoming.write(data)
        if self.handshake_error is None:
            try:
                self.client.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                self.handshake_error = exc
        return self.outgoing.read()

    async def _on_read(self) -> None:
        self.reads += 1
        if self.script is None:
            answer = self.pump_client()
            if answer:
                self._flights += 1
                if self.tamper is not None:
                    tampered = self.tamper(self._flights, answer)
                    if tampered is None:
                        self.receive_stream.put_eof()
                        return
                    answer = tampered
                if answer:
                    self.receive_stream.put_data(answer)
                    return
            if self.script is None:
                return
        if self.script:
            self.receive_stream.put_data(self.script.pop(0))
        elif self.eof_at_end:
            self.receive_stream.put_eof()

    def encrypt(self, plaintext: bytes) -> bytes:
        """One client application-data record (for ``len(plaintext) <= 16384``)."""
        self.client.write(plaintext)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        try:
            self.client.unwrap()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()


async def handshaken(version: ssl.TLSVersion, **kwargs: object) -> tuple[ScriptedPeer, TLSStream]:
    contexts = contexts_for(version)
    peer = ScriptedPeer(contexts)
    server = TLSStream(peer.transport, contexts.server, server_side=True, **kwargs)  # type: ignore[arg-type]
    await bounded(server.do_handshake)
    peer.pump_client()  # the TLS 1.2 client still needs the server's Finished
    assert peer.client.version() == server.version()
    return peer, server


def assert_bounded_buffers(stream: TLSStream, fed: int) -> None:
    stats = stream.statistics()
    assert stats.incoming_ciphertext_bytes <= min(fed, TRANSPORT_READ)
    assert stats.outgoing_ciphertext_bytes <= DEFERRED_TICKETS_MAX
    assert stats.buffered_plaintext_bytes == 0  # nothing is decrypted ahead on receive


def split(data: bytes, sizes: list[int], max_chunks: int = 64) -> list[bytes]:
    """Cut ``data`` into chunks of the given sizes (cycled); the last takes the rest.

    Sizes are raised so there are at most about ``max_chunks`` chunks, which
    keeps one example fast (byte-at-a-time delivery of whole conversations is
    tested separately).
    """
    floor = -(-len(data) // max_chunks)
    sizes = [max(size, floor) for size in sizes]
    chunks = []
    position = 0
    index = 0
    while position < len(data):
        size = sizes[index % len(sizes)] if sizes else len(data)
        chunks.append(data[position : position + size])
        position += size
        index += 1
    return chunks


def intact_prefix(wire: bytes, fed: bytes) -> int:
    """How many leading bytes of ``wire`` reach the receiver unchanged in ``fed``."""
    n = min(len(wire), len(fed))
    return next((i for i in range(n) if wire[i] != fed[i]), n)


@dataclass
class Received:
    data: bytes
    eof: bool
    error: trio.BrokenResourceError | None


async def drain(stream: TLSStream, max_bytes: int, fed_chunks: int, fed: int) -> Received:
    """``receive_some`` until ``b""`` or ``BrokenResourceError``, every call bounded."""
    data = bytearray()
    # Each call may read one chunk (2 checkpoints in the memory transport,
    # a few in TLSStream); a generous fixed budget still catches a livelock.
    budget = 40 + 8 * fed_chunks
    for _ in range(fed + fed_chunks + 10):
        try:
            piece = await bounded(lambda: stream.receive_some(max_bytes), budget)
        except trio.BrokenResourceError as exc:
            assert stream.statistics().state is StreamState.BROKEN
            return Received(bytes(data), False, exc)
        assert_bounded_buffers(stream, fed)
        assert len(piece) <= max_bytes
        if not piece:
            return Received(bytes(data), True, None)
        data += piece
    raise AssertionError("receive_some kept returning data that was never sent")


def assert_tls_cause(exc: BaseException) -> None:
    """The documented cause of a TLS failure is an ``ssl.SSLError``."""
    assert isinstance(exc, trio.BrokenResourceError)
    assert isinstance(exc.__cause__, ssl.SSLError), repr(exc.__cause__)


# ---------------------------------------------------------------------------
# Strategies.

versions = st.sampled_from(VERSIONS)
payloads = st.lists(st.binary(min_size=1, max_size=1000), min_size=1, max_size=3)
chunk_sizes = st.one_of(
    st.just([]),  # the whole script in one read
    st.just([1]),  # a byte at a time
    st.lists(st.integers(1, 600), min_size=1, max_size=5),
)


def alert_record(level: int, description: int) -> bytes:
    """An unencrypted alert record, as a peer might send at any time."""
    return bytes([21, 3, 3, 0, 2, level, description])


alerts = st.builds(
    alert_record, st.sampled_from([1, 2, 0, 255]), st.sampled_from([0, 10, 20, 40, 90, 255])
)


def record_header(content_type: int, length: int) -> bytes:
    return bytes([content_type, 3, 3, length >> 8, length & 0xFF])


# Malformed record headers: oversized, wrong type, absurd version.
malformed_records = st.one_of(
    st.builds(
        lambda t, n, body: record_header(t, n) + body,
        st.sampled_from([20, 21, 22, 23, 24, 0, 255]),
        st.integers(0, 0xFFFF),
        st.binary(max_size=64),
    ),
    st.builds(
        lambda v, body: bytes([23]) + v + body, st.binary(min_size=2, max_size=2), st.binary()
    ),
)
garbage = st.one_of(st.binary(min_size=1, max_size=300), alerts, malformed_records)


# ---------------------------------------------------------------------------
# 1a. Before and during the handshake.


@fuzz_settings(500)
@given(
    version=versions,
    mutation=st.sampled_from(["cut", "flip", "insert", "prefix", "random", "alert"]),
    sizes=chunk_sizes,
    data=st.data(),
)
async def test_garbage_before_the_handshake(
    version: ssl.TLSVersion, mutation: str, sizes: list[int], data: st.DataObject
) -> None:
    """A ClientHello cut, corrupted or replaced: the handshake fails cleanly."""
    contexts = contexts_for(version)
    peer = ScriptedPeer(contexts)
    hello = peer.pump_client()
    if mutation == "cut":
        wire = hello[: data.draw(st.integers(0, len(hello) - 1), label="cut")]
    elif mutation == "flip":
        i = data.draw(st.integers(0, len(hello) - 1), label="at")
        wire = hello[:i] + bytes([hello[i] ^ data.draw(st.integers(1, 255))]) + hello[i + 1 :]
    elif mutation == "insert":
        i = data.draw(st.integers(0, len(hello)), label="at")
        wire = hello[:i] + data.draw(garbage, label="garbage") + hello[i:]
    elif mutation == "prefix":
        wire = data.draw(garbage, label="garbage") + hello
    elif mutation == "random":
        wire = data.draw(st.binary(max_size=2000), label="random")
    else:
        wire = data.draw(alerts, label="alert") + hello
    peer.script = split(wire, sizes)
    server = TLSStream(peer.transport, contexts.server, server_side=True)

    # Whatever survives of the hello, the script ends in EOF before a client
    # Finished could arrive: the handshake can only fail.
    with pytest.raises(trio.BrokenResourceError) as info:
        await bounded(server.do_handshake, 40 + 8 * len(peer.script))
    cause = info.value.__cause__
    assert isinstance(cause, ssl.SSLError), repr(cause)
    stats = server.statistics()
    assert stats.state is StreamState.BROKEN
    assert stats.incoming_ciphertext_bytes <= len(wire)
    assert stats.plaintext_bytes_sent == stats.plaintext_bytes_received == 0
    # Broken for good, for every operation, without touching the transport.
    reads = peer.reads
    with pytest.raises(trio.BrokenResourceError):
        await bounded(server.receive_some)
    with pytest.raises(trio.BrokenResourceError):
        await bounded(lambda: server.send_all(b"secret"))
    assert peer.reads == reads
    await bounded(server.aclose)
    assert server.statistics().state is StreamState.CLOSED


@fuzz_settings(400)
@given(
    version=versions,
    flight_index=st.integers(1, 2),
    mutation=st.sampled_from(["cut", "flip", "insert", "replace", "eof"]),
    data=st.data(),
)
async def test_garbage_during_the_handshake(
    version: ssl.TLSVersion, flight_index: int, mutation: str, data: st.DataObject
) -> None:
    """The client's flights tampered with mid-handshake: a clean failure or no effect."""
    contexts = contexts_for(version)
    peer = ScriptedPeer(contexts)

    def tamper(flight: int, answer: bytes) -> bytes | None:
        if flight != flight_index:
            return answer
        peer.script = []  # after this flight, only EOF
        if mutation == "eof":
            return None
        if mutation == "replace":
            return data.draw(garbage, label="garbage")
        if mutation == "cut":
            return answer[: data.draw(st.integers(0, len(answer) - 1), label="cut")]
        i = data.draw(st.integers(0, len(answer) - 1), label="at")
        if mutation == "flip":
            return (
                answer[:i] + bytes([answer[i] ^ data.draw(st.integers(1, 255))]) + answer[i + 1 :]
            )
        return answer[:i] + data.draw(garbage, label="garbage") + answer[i:]

    peer.tamper = tamper
    server = TLSStream(peer.transport, contexts.server, server_side=True)
    try:
        await bounded(server.do_handshake, 100)
    except trio.BrokenResourceError as exc:
        assert_tls_cause(exc)
    else:
        # The change was harmless (a byte OpenSSL ignores, e.g. in a TLS 1.3
        # compatibility ChangeCipherSpec record). The stream then meets EOF
        # without close_notify: an error, never b"".
        with pytest.raises(trio.BrokenResourceError) as info:
            await bounded(server.receive_some, 100)
        assert_tls_cause(info.value)
    assert server.statistics().state is StreamState.BROKEN
    assert server.statistics().plaintext_bytes_received == 0


# ---------------------------------------------------------------------------
# 1b. After the handshake: valid records cut, corrupted, interleaved with garbage.


@fuzz_settings(1200)
@given(
    version=versions,
    plaintexts=payloads,
    close=st.booleans(),
    tail=st.binary(max_size=200),
    mutation=st.sampled_from(["none", "cut", "flip", "insert"]),
    sizes=chunk_sizes,
    max_bytes=st.integers(1, 5000),
    https_compatible=st.booleans(),
    data=st.data(),
)
async def test_records_cut_corrupted_or_interleaved(
    version: ssl.TLSVersion,
    plaintexts: list[bytes],
    close: bool,
    tail: bytes,
    mutation: str,
    sizes: list[int],
    max_bytes: int,
    https_compatible: bool,
    data: st.DataObject,
) -> None:
    """Exactly the records before the damage arrive, then a documented outcome.

    The oracle: OpenSSL releases a record's plaintext only once the whole
    record is authenticated, so the receiver must get the plaintext of every
    record that ends before the damaged offset, byte for byte, and then
    ``BrokenResourceError`` -- or ``b""`` if an intact close_notify came first
    (data after it is ignored), or with ``https_compatible`` when the damage
    looks like an EOF.
    """
    peer, server = await handshaken(version, https_compatible=https_compatible)
    wire = b""
    record_ends: list[tuple[int, int]] = []  # (end offset, plaintext so far)
    total = 0
    for plaintext in plaintexts:
        wire += peer.encrypt(plaintext)
        total += len(plaintext)
        record_ends.append((len(wire), total))
    close_end = None
    if close:
        wire += peer.close_notify()
        close_end = len(wire)
        wire += tail

    damage = len(wire)
    if mutation == "cut":
        damage = data.draw(st.integers(0, len(wire)), label="cut")
        fed = wire[:damage]
    elif mutation == "flip":
        damage = data.draw(st.integers(0, len(wire) - 1), label="at")
        flip = data.draw(st.integers(1, 255), label="xor")
        fed = wire[:damage] + bytes([wire[damage] ^ flip]) + wire[damage + 1 :]
    elif mutation == "insert":
        damage = data.draw(st.integers(0, len(wire)), label="at")
        fed = wire[:damage] + data.draw(garbage, label="garbage") + wire[damage:]
    else:
        fed = wire
    # An inserted byte equal to the one it pushes along damages nothing there
    # (in CI a 1-in-256 tag byte matched the inserted one): the damage starts
    # where ``fed`` first differs from ``wire``.
    damage = intact_prefix(wire, fed)
    peer.script = split(fed, sizes)
    expected = b"".join(plaintexts)[: max([0] + [n for end, n in record_ends if end <= damage])]

    got = await drain(server, max_bytes, len(peer.script), len(fed))

    assert got.data == expected, "records before the damage must arrive intact and in full"
    if close_end is not None and close_end <= damage:
        # A clean close: all data, then b"" for ever; the tail is ignored.
        assert got.eof, got.error
        assert got.data == b"".join(plaintexts)
        assert await bounded(server.receive_some) == b""
        return
    if mutation in ("none", "cut") and https_compatible:
        # EOF without close_notify is a clean EOF in HTTPS-compatible mode.
        assert got.eof, got.error
        return
    if got.eof:
        # Only HTTPS-compatible mode may read damage as EOF (a corrupted
        # length that makes a record run past the end of the data).
        assert https_compatible
        assert mutation in ("flip", "insert")
        return
    assert got.error is not None
    assert_tls_cause(got.error)


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_byte_inserted_before_its_own_copy_leaves_the_record_intact(
    version: ssl.TLSVersion,
) -> None:
    """The case CI met at random, made deterministic: inserting a record's last
    byte again in front of itself leaves that record whole, so its plaintext
    arrives; the duplicate then starts the next record and breaks it."""
    peer, server = await handshaken(version)
    first, second = peer.encrypt(b"kept"), peer.encrypt(b"lost")
    wire = first + second
    last = first[-1:]
    fed = wire[: len(first) - 1] + last + wire[len(first) - 1 :]
    # Past ``first``, ``fed`` is ``second`` pushed along by ``last``: it still
    # agrees with ``wire`` for as many bytes as ``second`` starts with copies
    # of ``last`` (one when the session keys make the tag end in 0x17, the
    # content type that starts ``second``; none otherwise).
    copies = len(second) - len(second.lstrip(last))
    assert copies < len(second)
    assert intact_prefix(wire, fed) == len(first) + copies
    peer.script = [fed]
    got = await drain(server, 100, 1, len(fed))
    assert got.data == b"kept"
    assert got.error is not None
    assert_tls_cause(got.error)


# ---------------------------------------------------------------------------
# 1b'. Exhaustive cuts: every offset, not a sample.


@pytest.mark.parametrize("version", VERSIONS)
async def test_client_hello_cut_at_every_offset(version: ssl.TLSVersion) -> None:
    contexts = contexts_for(version)
    hello = ScriptedPeer(contexts).pump_client()
    for k in range(len(hello)):
        peer = ScriptedPeer(contexts)
        peer.script = [hello[:k]] if k else []
        server = TLSStream(peer.transport, contexts.server, server_side=True)
        with pytest.raises(trio.BrokenResourceError) as info:
            await bounded(server.do_handshake, 50)
        assert isinstance(info.value.__cause__, ssl.SSLEOFError), (k, info.value.__cause__)


@pytest.mark.parametrize(
    "version, https_compatible", [(TLS12, False), (TLS13, False), (TLS13, True)]
)
async def test_records_cut_at_every_offset(version: ssl.TLSVersion, https_compatible: bool) -> None:
    """Two records and a close_notify, cut after each byte in turn, then EOF."""
    first, second = b"first record", b"second, longer record " * 3
    for k in range(10_000):
        peer, server = await handshaken(version, https_compatible=https_compatible)
        wire = peer.encrypt(first)
        first_end = len(wire)
        wire += peer.encrypt(second)
        second_end = len(wire)
        wire += peer.close_notify()
        if k > len(wire):
            break
        peer.script = [wire[:k]] if k else []
        expected = first if k >= first_end else b""
        if k >= second_end:
            expected += second
        got = await drain(server, 100_000, 1, k)
        assert got.data == expected, k
        if k == len(wire) or https_compatible:
            assert got.eof, (k, got.error)
        else:
            assert got.error is not None, k
            assert isinstance(got.error.__cause__, ssl.SSLEOFError), (k, got.error.__cause__)


# ---------------------------------------------------------------------------
# 1c. Targeted cases, checked exactly.


@pytest.mark.parametrize("version", VERSIONS)
async def test_oversized_record_fails_at_its_header(version: ssl.TLSVersion) -> None:
    """A header announcing 64 KiB is refused before its body is awaited or buffered."""
    peer, server = await handshaken(version)
    # The header alone, with no EOF after it: if the engine waited for the
    # body, this would hang (and ``bounded`` would say so).
    peer.script = [record_header(23, 0xFFFF)]
    peer.eof_at_end = False
    with pytest.raises(trio.BrokenResourceError) as info:
        await bounded(server.receive_some)
    assert_tls_cause(info.value)


@pytest.mark.parametrize("version", VERSIONS)
async def test_truncated_record_waits_then_fails_at_eof(version: ssl.TLSVersion) -> None:
    """Half a record and no EOF: receive_some waits (cancellably) for the rest."""
    peer, server = await handshaken(version)
    record = peer.encrypt(b"hello")
    peer.script = [record[:-3]]
    peer.eof_at_end = False
    with pytest.raises(Hang):
        await bounded(server.receive_some)  # blocked on the transport, as it should be
    assert server.statistics().state is StreamState.OPEN  # the cancellation cost nothing
    peer.script = [record[-3:]]
    assert await bounded(server.receive_some) == b"hello"
    peer.script = [peer.encrypt(b"world")[:7]]
    peer.eof_at_end = True
    with pytest.raises(trio.BrokenResourceError) as info:
        await bounded(server.receive_some)
    assert isinstance(info.value.__cause__, ssl.SSLEOFError)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("description", [0, 10, 20, 40, 48, 80, 90])
async def test_plaintext_alert_after_the_handshake(
    version: ssl.TLSVersion, description: int
) -> None:
    """An unencrypted alert (even a "close_notify") after the handshake is an attack, not EOF."""
    peer, server = await handshaken(version)
    peer.script = [peer.encrypt(b"before"), alert_record(2, description), peer.encrypt(b"after")]
    assert await bounded(server.receive_some) == b"before"
    with pytest.raises(trio.BrokenResourceError) as info:
        await bounded(server.receive_some)
    assert_tls_cause(info.value)


@pytest.mark.parametrize("description", [0, 10, 40, 70])
async def test_alert_instead_of_a_client_hello(description: int) -> None:
    contexts = contexts_for(TLS13)
    peer = ScriptedPeer(contexts)
    peer.script = [alert_record(2, description)]
    peer.eof_at_end = False  # the alert alone must end the handshake
    server = TLSStream(peer.transport, contexts.server, server_side=True)
    with pytest.raises(trio.BrokenResourceError) as info:
        await bounded(server.do_handshake)
    assert_tls_cause(info.value)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("same_read", [True, False])
async def test_close_notify_then_more_data(version: ssl.TLSVersion, same_read: bool) -> None:
    """After close_notify: ``b""`` for ever, and ``unwrap`` hands back every later byte."""
    peer, server = await handshaken(version)
    tail = b"PLAIN-TEXT-AFTER-TLS" * 10
    goodbye = peer.encrypt(b"bye") + peer.close_notify()
    peer.script = [goodbye + tail] if same_read else [goodbye, tail]
    assert await bounded(server.receive_some) == b"bye"
    assert await bounded(server.receive_some) == b""
    assert await bounded(server.receive_some) == b""
    transport, trailing = await bounded(server.unwrap)
    assert transport is peer.transport
    rest = b"".join(peer.script)
    assert bytes(trailing) + rest == tail
    assert server.statistics().state is StreamState.CLOSED


@pytest.mark.parametrize("version", VERSIONS)
async def test_eof_without_close_notify_is_an_error_unless_https_compatible(
    version: ssl.TLSVersion,
) -> None:
    peer, server = await handshaken(version)
    peer.script = [peer.encrypt(b"data")]
    assert await bounded(server.receive_some) == b"data"
    with pytest.raises(trio.BrokenResourceError) as info:
        await bounded(server.receive_some)
    assert isinstance(info.value.__cause__, ssl.SSLEOFError)

    peer, server = await handshaken(version, https_compatible=True)
    peer.script = [peer.encrypt(b"data")]
    assert await bounded(server.receive_some) == b"data"
    assert await bounded(server.receive_some) == b""
    assert await bounded(server.receive_some) == b""


# ---------------------------------------------------------------------------
# 2. Slow and stuck peers.


@pytest.mark.parametrize("version", VERSIONS)
async def test_peer_that_never_reads(version: ssl.TLSVersion) -> None:
    """send_all blocks, is cancellable, and resumes when retried with the same object."""
    client, server = exact_pair(version, 1000)
    await handshake(client, server)
    message = bytes(range(256)) * 2000  # 512 000 bytes
    for _ in range(5):
        # Nobody reads: the send stalls once the transport's buffer is full.
        with pytest.raises(Hang):
            await bounded(lambda: client.send_all(message), 10_000)
        stats = client.statistics()
        assert stats.state is StreamState.OPEN
        assert 0 < stats.pinned_bytes <= len(message)
        assert stats.outgoing_ciphertext_bytes <= ONE_CHUNK_CIPHERTEXT
    received = bytearray()

    async def reader() -> None:
        while len(received) < len(message):
            received.extend(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await client.send_all(message)  # the same object: resume, don't resend
    assert bytes(received) == message
    assert client.statistics().plaintext_bytes_sent == len(message)
    assert client.statistics().write_retries == 0


@pytest.mark.parametrize("version", VERSIONS)
async def test_peer_that_dribbles_one_byte_at_a_time(version: ssl.TLSVersion) -> None:
    """One byte per transport read, handshake included: everything arrives, no spin."""
    contexts = contexts_for(version)
    peer = ScriptedPeer(contexts)

    def one_byte_at_a_time(flight: int, answer: bytes) -> bytes:
        # Deliver the first byte now, the rest one per later read.
        peer.script = None
        pending.extend(answer[1:])
        return answer[:1]

    pending = bytearray()
    original = peer._on_read

    async def dribble() -> None:
        if pending:
            peer.reads += 1
            peer.receive_stream.put_data(bytes(pending[:1]))
            del pending[:1]
            return
        await original()

    peer.tamper = one_byte_at_a_time
    peer.receive_stream.receive_some_hook = dribble
    server = TLSStream(peer.transport, contexts.server, server_side=True)
    await bounded(server.do_handshake, 20_000)
    peer.pump_client()
    message = bytes(range(256)) * 8
    wire = peer.encrypt(message) + peer.close_notify()
    peer.tamper = None
    pending.extend(wire)
    received = bytearray()
    while True:
        # A read per byte, a handful of checkpoints per read.
        piece = await bounded(server.receive_some, 10 * len(wire))
        if not piece:
            break
        received += piece
    assert bytes(received) == message
    assert server.statistics().incoming_ciphertext_bytes == 0


@pytest.mark.parametrize("version", VERSIONS)
async def test_flooding_peer_is_not_read_until_asked(version: ssl.TLSVersion) -> None:
    """A peer sends 4 MiB while we do not read: nothing is pulled into memory."""
    client, server = exact_pair(version, 64 * 1024)
    await handshake(client, server)
    flood = b"F" * (4 * 1024 * 1024)

    async def flooder() -> None:
        await client.send_all(flood)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flooder)
        await trio.testing.wait_all_tasks_blocked()
        # The flooder is stuck on the transport's 64 KiB; the server holds
        # nothing because nobody asked it to read.
        stats = server.statistics()
        assert stats.incoming_ciphertext_bytes == 0
        assert stats.buffered_plaintext_bytes == 0
        assert stats.ciphertext_bytes_received < 64 * 1024
        assert client.statistics().outgoing_ciphertext_bytes <= ONE_CHUNK_CIPHERTEXT
        # While the flood is pending, our own sends still go through (the
        # server-to-client direction is independent) and buffer nothing.
        await server.send_all(b"hello")
        assert server.statistics().buffered_plaintext_bytes == 0
        got = 0
        peak = 0
        while got < len(flood):
            piece = await server.receive_some(100_000)
            got += len(piece)
            stats = server.statistics()
            peak = max(peak, stats.incoming_ciphertext_bytes + stats.buffered_plaintext_bytes)
        assert peak <= TRANSPORT_READ
    assert await client.receive_some() == b"hello"


@pytest.mark.parametrize("capacity", [1, 7, 4096])
async def test_exact_progress_pair_tiny_capacity_roundtrip(capacity: int) -> None:
    """A transport that moves a few bytes per send: everything arrives, checkpoints bounded."""
    client, server = exact_pair(TLS13, capacity)
    message = bytes(range(256)) * 40
    received = bytearray()

    async def reader() -> None:
        while len(received) < len(message):
            received.extend(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await client.send_all(message)
    assert bytes(received) == message


async def test_flood_while_send_all_waits_for_a_renegotiation_is_bounded() -> None:
    """A TLS 1.2 peer asks to renegotiate, then floods data instead of handshaking.

    While the renegotiation is pending our ``send_all`` must read (the engine
    wants the peer's handshake messages), and every application record it
    meets is buffered for ``receive_some``. The buffer stops at
    ``PLAINTEXT_BUFFER_LIMIT`` (plus at most one transport read and one
    record): then ``send_all`` waits for the receiver instead of reading on.
    """
    pytest.importorskip("OpenSSL")
    import trustme
    from OpenSSL import SSL
    from pyopenssl_peer import client_context, server_context

    from trio_tlsretry._engine import PLAINTEXT_BUFFER_LIMIT

    ca = trustme.CA()
    client_transport, server_transport = exact_progress_stream_pair(64 * 1024)
    client = TLSStream(client_transport, client_context(ca), server_hostname="example.org")
    conn = SSL.Connection(server_context(ca), None)
    conn.set_accept_state()

    async def flush() -> None:
        while True:
            try:
                data = conn.bio_read(1 << 20)
            except SSL.WantReadError:
                return
            if not data:
                return
            await server_transport.send_all(data)

    async def server_handshake() -> None:
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                await flush()
                conn.bio_write(await server_transport.receive_some())
        await flush()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_handshake)
        await bounded(client.do_handshake, 1000)
    conn.renegotiate()
    try:
        conn.do_handshake()  # queues the HelloRequest
    except SSL.WantReadError:
        pass
    await flush()
    flooded = 0

    async def flooder() -> None:
        nonlocal flooded
        while True:  # never reads, never answers the renegotiation
            conn.send(b"F" * 16384)
            flooded += 16384
            await flush()

    limit = PLAINTEXT_BUFFER_LIMIT + TRANSPORT_READ + 16384
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flooder)
        received = len(await bounded(lambda: client.receive_some(10)))  # meets the HelloRequest
        nursery.start_soon(client.send_all, b"x" * 10_000_000)
        await trio.testing.wait_all_tasks_blocked()
        # Everyone is stuck: the flooder on the transport, send_all on the
        # full plaintext buffer. Nothing grew past the limit.
        stats = client.statistics()
        assert stats.write_retries > 0  # send_all really was waiting on the engine
        assert PLAINTEXT_BUFFER_LIMIT <= stats.buffered_plaintext_bytes <= limit
        assert stats.incoming_ciphertext_bytes <= TRANSPORT_READ
        assert stats.outgoing_ciphertext_bytes <= ONE_CHUNK_CIPHERTEXT
        peak = 0
        while received < 8 * PLAINTEXT_BUFFER_LIMIT:
            received += len(await client.receive_some())
            stats = client.statistics()
            peak = max(peak, stats.buffered_plaintext_bytes + stats.incoming_ciphertext_bytes)
        assert peak <= limit
        assert received <= flooded  # every byte was sent by the peer, none invented
        nursery.cancel_scope.cancel()
