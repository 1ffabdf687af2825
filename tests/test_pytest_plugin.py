"""The pytest plugin (``trio_tlsretry/_pytest_plugin.py``) and the fixtures it
installs (``trio_tlsretry/testing/_fixtures.py``), run as a user's suite would:
a nested pytest in a project of its own, with and without trustme.
"""

from __future__ import annotations

import subprocess
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from streamtools import run_python


def plugin_entry_point() -> str:
    (point,) = [ep for ep in entry_points(group="pytest11") if ep.name == "trio_tlsretry"]
    return point.value


def run_pytest(directory: Path, *, block_trustme: bool = False) -> subprocess.CompletedProcess[str]:
    (directory / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    return run_python(
        "import sys, pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:randomly']))\n",
        cwd=directory,
        block_trustme=block_trustme,
    )


def test_plugin_is_registered() -> None:
    assert plugin_entry_point().startswith("trio_tlsretry.")


def test_plugin_entry_point_is_outside_the_testing_package() -> None:
    # trio_tlsretry.testing refuses to import without trustme; the plugin
    # must not, or every pytest run in the environment would fail.
    assert not plugin_entry_point().startswith("trio_tlsretry.testing.")


FIXTURE_USER = """
    import ssl
    import trio
    import trustme
    from trio_tlsretry import TLSStream

    from trio_tlsretry.testing import ExactProgressMemoryStream

    def test_contexts(tls_ca, tls_server_context, tls_client_context, tls_contexts):
        assert isinstance(tls_ca, trustme.CA)
        assert tls_contexts.ca is tls_ca
        assert tls_server_context is tls_contexts.server
        assert tls_client_context is tls_contexts.client
        assert isinstance(tls_server_context, ssl.SSLContext)

    async def test_pair(tls_stream_pair):
        client, server = tls_stream_pair
        assert isinstance(client, TLSStream) and isinstance(server, TLSStream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"hi")
            assert await server.receive_some() == b"hi"

    async def test_exact_pair(tls_exact_stream_pair):
        client, server = tls_exact_stream_pair
        assert isinstance(client.transport_stream, ExactProgressMemoryStream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"hi")
            assert await server.receive_some() == b"hi"
"""


def test_plugin_fixtures_load_through_the_entry_point(tmp_path: Path) -> None:
    # A project with no conftest: the fixtures can only come from the
    # installed pytest11 entry point.
    (tmp_path / "test_user.py").write_text(textwrap.dedent(FIXTURE_USER))
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


FAKE_NETWORK_USER = """
    import trio
    from trio_tlsretry.testing import FakeTCPNetwork

    async def test_network(fake_tcp_network):
        assert isinstance(fake_tcp_network, FakeTCPNetwork)
        fake_tcp_network.add_host("example.org", "192.0.2.10")
        (listener,) = await trio.open_tcp_listeners(443, host="example.org")
        stream = await trio.open_tcp_stream("example.org", 443)
        await stream.aclose()
        await listener.aclose()
        assert len(fake_tcp_network.connections) == 1
"""


def test_the_fake_tcp_network_fixture_comes_from_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(FAKE_NETWORK_USER))
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


HANG_USER = """
    import trio

    async def wait_for_the_reply(stream):
        return await stream.receive_some()

    async def test_forgot_the_timeout(hang_guard, autojump_clock, tls_exact_stream_pair):
        client, server = tls_exact_stream_pair
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive_some)
            await wait_for_the_reply(client)

    async def test_finishes(hang_guard, autojump_clock):
        await trio.sleep(599)
"""


def test_the_hang_guard_fixture_fails_a_hanging_test_with_a_report(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(HANG_USER))
    result = run_pytest(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    assert "HangError: nothing could run for 600 s of the autojump clock" in result.stdout
    assert "in wait_for_the_reply: return await stream.receive_some()" in result.stdout


def test_plugin_does_not_break_unrelated_suites_without_trustme(tmp_path: Path) -> None:
    (tmp_path / "test_unrelated.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    result = run_pytest(tmp_path, block_trustme=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_plugin_fixtures_without_trustme_fail_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "def test_needs_tls(tls_stream_pair):\n    pass\n\ndef test_plain():\n    pass\n"
    )
    result = run_pytest(tmp_path, block_trustme=True)
    assert result.returncode == 1
    assert "1 passed" in result.stdout
    assert "pip install 'trio-tlsretry[testing]'" in result.stdout
