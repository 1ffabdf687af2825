"""The hang guard (``trio_tlsretry/testing/_hang.py``): a test that would wait
forever fails with :exc:`HangError` and a list of where its tasks wait.
(The ``hang_guard`` fixture is run as a user's suite would, in
``test_pytest_plugin.py``.)
"""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

import trio_tlsretry
from trio_tlsretry.testing import (
    FakeTCPNetwork,
    HangError,
    TLSContexts,
    describe_tasks,
    fail_on_hang,
)
from trio_tlsretry.testing._hang import DEFAULT_HANG_SECONDS


async def wait_for_a_reply(stream: trio.abc.ReceiveStream) -> bytes:
    return await stream.receive_some()


async def test_a_test_that_would_hang_fails_at_once_under_autojump(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, _server = trio.testing.memory_stream_pair()
    started = time.monotonic()
    with pytest.raises(HangError) as caught, fail_on_hang():
        await wait_for_a_reply(client)  # nobody ever sends
    assert time.monotonic() - started < 5
    # The virtual clock jumped to the limit: nothing else could run.
    assert trio.current_time() == DEFAULT_HANG_SECONDS
    message = str(caught.value)
    assert "nothing could run for 600 s of the autojump clock" in message
    # Where the test waited: the function and its source line.
    assert "in wait_for_a_reply: return await stream.receive_some()" in message
    assert __file__ in message


async def test_the_report_lists_every_blocked_task(autojump_clock: trio.testing.MockClock) -> None:
    _send_channel, receive_channel = trio.open_memory_channel[int](0)

    async def stuck_consumer() -> None:
        await receive_channel.receive()

    async def stuck_sleeper() -> None:
        await trio.sleep_forever()

    with pytest.raises(HangError) as caught, fail_on_hang(30, real_seconds=None):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck_consumer, name="consumer")
            nursery.start_soon(stuck_sleeper, name="sleeper")
    message = str(caught.value)
    assert "task consumer:" in message
    assert "in stuck_consumer: await receive_channel.receive()" in message
    assert "task sleeper:" in message
    assert "in stuck_sleeper: await trio.sleep_forever()" in message
    # Trio's own frames are left out.
    assert "/trio/_core/" not in message
    assert trio.current_time() == 30


async def test_a_test_that_finishes_is_left_alone(autojump_clock: trio.testing.MockClock) -> None:
    with fail_on_hang(10):
        await trio.sleep(9)
    # The watcher is gone: time passing after the block raises nothing.
    await trio.sleep(100)
    assert trio.current_time() == 109
    assert "fail_on_hang" not in describe_tasks()


async def test_other_errors_pass_through(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(KeyError), fail_on_hang():
        raise KeyError("not a hang")


async def test_the_real_time_limit_catches_a_clock_that_never_moves() -> None:
    # A MockClock that neither runs nor jumps: only the wall-clock limit ends
    # this wait.
    clock = trio.testing.MockClock()
    assert clock.rate == 0

    async def main() -> None:
        with fail_on_hang(10, real_seconds=0.05):
            await trio.sleep(1)

    # A run of its own, with its own clock.
    with pytest.raises(HangError, match=r"did not finish within 0\.05 s of real time"):
        await trio.to_thread.run_sync(lambda: trio.run(main, clock=clock))


async def test_without_autojump_the_message_says_so() -> None:
    async def main() -> None:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)

        async def jump() -> None:
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(11)

        with fail_on_hang(10, real_seconds=None):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(jump)
                await trio.sleep_forever()

    with pytest.raises(HangError, match=r"did not finish within 10 s of Trio's clock"):
        await trio.to_thread.run_sync(
            lambda: trio.run(main, clock=trio.testing.MockClock()),
        )


@pytest.mark.parametrize(("seconds", "real_seconds"), [(0, None), (-1, None), (1, 0)])
async def test_limits_must_be_positive(seconds: float, real_seconds: float | None) -> None:
    with pytest.raises(ValueError), fail_on_hang(seconds, real_seconds=real_seconds):
        pass  # pragma: no cover


async def test_a_client_without_a_timeout_against_a_silent_server(
    fake_tcp_network: FakeTCPNetwork,
    tls_contexts: TLSContexts,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The case from issue 25: the server accepts and never answers; the
    # client forgot its timeout. Without the guard this test hangs silently.
    fake_tcp_network.add_host("example.org", "192.0.2.10")

    async def silent(stream: trio_tlsretry.TLSStream[trio.SocketStream]) -> None:
        await trio.sleep_forever()

    async def fetch() -> bytes:
        stream = await trio_tlsretry.open_tls_over_tcp_stream(
            "example.org", 443, ssl_context=tls_contexts.client
        )
        await stream.send_all(b"hello\n")
        return await stream.receive_some()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio_tlsretry.serve_tls_over_tcp, silent, 443, tls_contexts.server)
        with pytest.raises(HangError) as caught, fail_on_hang():
            await fetch()
        nursery.cancel_scope.cancel()
    message = str(caught.value)
    assert "in fetch: return await stream.receive_some()" in message
    assert "in silent: await trio.sleep_forever()" in message
