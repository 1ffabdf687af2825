"""Shared helpers of the integration tests (``tests/test_integration_*.py``).

Those tests run real third-party Trio software (hypercorn, httpx/httpcore,
trio-websocket) over :class:`~trio_tlsretry.TLSStream`, which gets inside them
through :func:`trio_tlsretry.inject_into_trio`. Imported as ``integration_tools``.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.trio import serve
from streamtools import load_docs_example

import trio_tlsretry
from trio_tlsretry import StreamState, TLSListener, TLSStream
from trio_tlsretry.testing import TLSContexts

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
HOST = "127.0.0.1"
#: Every wait on the network in the integration tests is bounded by this (seconds).
WAIT = 20

TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
TLS_VERSION_IDS = ["TLSv1.2", "TLSv1.3"]


def version_name(version: ssl.TLSVersion) -> str:
    """What ``version()`` of a stream says for a connection of ``version``."""
    return {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


hypercorn_recipe = load_docs_example("integration_hypercorn")


class TLSStreamCensus:
    """Every :class:`TLSStream` constructed while a test runs, in order.

    Third-party code never hands its streams out, so this is how a test proves
    that the connections it made went through ``TLSStream``: if injection
    silently failed, the libraries would build ``trio.SSLStream``\\ s and
    the census would stay empty.
    """

    def __init__(self) -> None:
        self.streams: list[TLSStream[Any]] = []
        self._closed = trio.Event()

    def _saw_close(self) -> None:
        self._closed.set()
        self._closed = trio.Event()

    async def wait_all_closed(self, *, server_side: bool) -> None:
        """Until every stream of one side has been closed (``aclose`` returned).

        Call it from the trio run the streams live in.
        """
        while not all(
            stream.statistics().state is StreamState.CLOSED
            for stream in self.side(server_side=server_side)
        ):
            await self._closed.wait()

    def side(self, *, server_side: bool) -> list[TLSStream[Any]]:
        return [stream for stream in self.streams if stream.server_side == server_side]

    def plaintext_received(self, *, server_side: bool) -> int:
        """Plaintext that the streams of one side have delivered to their user."""
        return sum(
            stream.statistics().plaintext_bytes_received
            for stream in self.side(server_side=server_side)
        )

    def plaintext_sent(self, *, server_side: bool) -> int:
        """Plaintext that the streams of one side have accepted for sending."""
        return sum(
            stream.statistics().plaintext_bytes_sent
            for stream in self.side(server_side=server_side)
        )


def tlsstream_census(monkeypatch: pytest.MonkeyPatch) -> Iterator[TLSStreamCensus]:
    """Fixture body: trio's TLS names are this library's for one test, and counted.

    Use as ``census = pytest.fixture(tlsstream_census)`` in a test module.
    The injection is undone after the test whatever its outcome, so no other
    test module sees an injected ``trio``.
    """
    census = TLSStreamCensus()
    construct = TLSStream.__init__

    def counted_init(self: TLSStream[Any], *args: Any, **kwargs: Any) -> None:
        construct(self, *args, **kwargs)
        census.streams.append(self)

    close = TLSStream.aclose

    async def observed_aclose(self: TLSStream[Any]) -> None:
        try:
            await close(self)
        finally:
            census._saw_close()

    monkeypatch.setattr(TLSStream, "__init__", counted_init)
    monkeypatch.setattr(TLSStream, "aclose", observed_aclose)
    assert not trio_tlsretry.injected_into_trio(), "an earlier test left trio injected"
    trio_tlsretry.inject_into_trio()
    try:
        assert trio.SSLStream is TLSStream
        assert trio.SSLListener is TLSListener
        yield census
    finally:
        trio_tlsretry.extract_from_trio()
    assert trio.SSLStream is not TLSStream


def contexts_for(maximum_version: ssl.TLSVersion | None = None) -> TLSContexts:
    """Certificates valid for 127.0.0.1; both contexts capped at ``maximum_version``."""
    return TLSContexts(HOST, maximum_version=maximum_version)


def client_context(
    contexts: TLSContexts, version: ssl.TLSVersion, alpn: list[str] | None = None
) -> ssl.SSLContext:
    """A client context trusting ``contexts.ca`` that speaks exactly ``version``."""
    context = ssl.create_default_context()
    contexts.ca.configure_trust(context)
    context.minimum_version = context.maximum_version = version
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def write_certificates(contexts: TLSContexts, directory: Path) -> tuple[str, str, str]:
    """The server's certificate chain, its key and the CA, as PEM files: their paths."""
    certfile, keyfile, cafile = (directory / name for name in ("cert.pem", "key.pem", "ca.pem"))
    certfile.write_bytes(b"".join(pem.bytes() for pem in contexts.server_cert.cert_chain_pems))
    contexts.server_cert.private_key_pem.write_to_path(str(keyfile))
    contexts.ca.cert_pem.write_to_path(str(cafile))
    return str(certfile), str(keyfile), str(cafile)


@dataclass(frozen=True)
class HTTPSServer:
    """A hypercorn server on loopback, as the tests see it."""

    url: str
    port: int
    contexts: TLSContexts
    cafile: str


@contextlib.asynccontextmanager
async def hypercorn_serving(
    app: Any, directory: Path, contexts: TLSContexts | None = None, **settings: Any
) -> AsyncIterator[HTTPSServer]:
    """hypercorn's trio worker serving ``app`` over HTTPS on 127.0.0.1.

    Configured by the recipe's ``https_config``, then ``settings`` (hypercorn
    ``Config`` attributes, e.g. ``alpn_protocols``). On the way out the server is
    shut down through its ``shutdown_trigger`` and must stop cleanly; an
    exception that ends the server early (as ``send_eof`` once raised) fails
    the test even if every request it was given succeeded.
    """
    if contexts is None:
        contexts = contexts_for()
    certfile, keyfile, cafile = write_certificates(contexts, directory)
    config = hypercorn_recipe.https_config(f"{HOST}:0", certfile, keyfile)
    # hypercorn closes a connection whose client went away while it was idle
    # only when its keep-alive timer runs out (5 s by default).
    config.keep_alive_timeout = 0.5
    for name, value in settings.items():
        setattr(config, name, value)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            (url,) = await nursery.start(
                functools.partial(serve, app, config, shutdown_trigger=shutdown.wait)
            )
        try:
            yield HTTPSServer(url, int(url.rsplit(":", 1)[1]), contexts, cafile)
        finally:
            shutdown.set()
