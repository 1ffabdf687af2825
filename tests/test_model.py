"""Model-based test: random programs of sends, receives, cancellations and
retries on both ends of a TLS connection, checked against a model of the
byte streams each side must receive.

Hypothesis generates the program; each step runs with a cancellation at a
random checkpoint (``cancel_at_checkpoint``) and, for steps that block
before that checkpoint, a deadline on Trio's mock clock. Everything runs over
the in-memory exact-progress transport, so each example is deterministic.
The model: a ``send_all`` that started (its data was pinned) must be
delivered exactly once, in order, before anything sent after it; a
cancelled ``receive_some`` loses nothing.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_tlsretry import StreamState, TLSStream
from trio_tlsretry.testing import (
    cancel_at_checkpoint,
    exact_progress_stream_pair,
    make_tls_contexts,
    tls_stream_pair_over,
)

EXAMPLES = int(os.environ.get("TRIO_TLSRETRY_MODEL_EXAMPLES", "200"))
CONTEXTS = {
    version: make_tls_contexts(maximum_version=version)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
}

sides = st.sampled_from([0, 1])
checkpoints = st.integers(min_value=0, max_value=30)
steps = st.one_of(
    # At least 2 bytes: CPython shares one object for every 1-byte bytes
    # value, and send_all tells a retry from a new message by identity.
    st.tuples(st.just("send"), sides, st.integers(2, 40_000), checkpoints),
    st.tuples(st.just("retry"), sides, st.just(0), checkpoints),
    st.tuples(st.just("receive"), sides, st.integers(1, 70_000), checkpoints),
)


@dataclass
class End:
    """One end of the connection and what the model expects of it."""

    stream: TLSStream
    #: Everything this end has committed to send, in order.
    expected_out: bytearray = field(default_factory=bytearray)
    #: Everything this end has received.
    received: bytearray = field(default_factory=bytearray)
    #: The object of a cancelled send_all whose remainder is still pinned.
    pinned: bytes | None = None


class Program:
    def __init__(self, version: ssl.TLSVersion, capacity: int) -> None:
        contexts = CONTEXTS[version]
        a, b = exact_progress_stream_pair(capacity)
        client, server = tls_stream_pair_over(
            a, b, client_context=contexts.client, server_context=contexts.server
        )
        self.ends = [End(client), End(server)]
        self.messages = 0

    def message(self, size: int) -> bytes:
        self.messages += 1
        stamp = self.messages.to_bytes(2, "big")
        return (stamp * (size // 2 + 1))[:size]

    async def send(self, side: int, size: int, k: int) -> None:
        end = self.ends[side]
        message = self.message(size)
        outcome = None
        with trio.move_on_after(1):
            outcome = await cancel_at_checkpoint(k, lambda: end.stream.send_all(message))
        completed = outcome is not None and outcome.completed
        engine_pinned = end.stream._engine.pinned
        started = completed or (engine_pinned is not None and engine_pinned.source is message)
        if end.pinned is not None and (started or engine_pinned is None):
            end.pinned = None  # the earlier remainder went out first
        if started:
            end.expected_out += message
            if not completed:
                end.pinned = message

    async def retry(self, side: int, k: int) -> None:
        end = self.ends[side]
        if end.pinned is None:
            return
        message = end.pinned
        with trio.move_on_after(1):
            outcome = await cancel_at_checkpoint(k, lambda: end.stream.send_all(message))
            if outcome.completed:
                end.pinned = None

    async def receive(self, side: int, max_bytes: int, k: int) -> None:
        end = self.ends[side]
        with trio.move_on_after(1):
            outcome = await cancel_at_checkpoint(k, lambda: end.stream.receive_some(max_bytes))
            if outcome.completed:
                assert outcome.result, "no EOF was sent"
                assert len(outcome.result) <= max_bytes
                end.received += outcome.result

    def check(self) -> None:
        for side, end in enumerate(self.ends):
            assert end.stream.statistics().state is StreamState.OPEN
            sent_by_peer = self.ends[1 - side].expected_out
            # Never more, never other bytes, than the peer committed to send.
            assert sent_by_peer.startswith(end.received)

    async def finish(self) -> None:
        """Deliver every pinned remainder, then receive everything."""

        async def flush(end: End) -> None:
            if end.pinned is not None:
                await end.stream.send_all(end.pinned)
                end.pinned = None

        async def drain(side: int) -> None:
            end = self.ends[side]
            expected = self.ends[1 - side].expected_out
            while len(end.received) < len(expected):
                end.received += await end.stream.receive_some()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for side, end in enumerate(self.ends):
                    nursery.start_soon(flush, end)
                    nursery.start_soon(drain, side)
        for side, end in enumerate(self.ends):
            assert end.received == self.ends[1 - side].expected_out
            assert end.stream.statistics().pinned_bytes == 0

    async def run(self, program: list[tuple[str, int, int, int]]) -> None:
        for op, side, size, k in program:
            if op == "send":
                await self.send(side, size, k)
            elif op == "retry":
                await self.retry(side, k)
            else:
                await self.receive(side, size, k)
            self.check()
        await self.finish()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    program=st.lists(steps, max_size=30),
    version=st.sampled_from(sorted(CONTEXTS)),
    capacity=st.sampled_from([512, 4096, 65536]),
)
def test_random_programs_match_the_model(
    program: list[tuple[str, int, int, int]], version: ssl.TLSVersion, capacity: int
) -> None:
    trio.run(
        Program(version, capacity).run,
        program,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
