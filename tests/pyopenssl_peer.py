"""A TLS 1.2 peer built on pyOpenSSL (its own bundled OpenSSL) that can
renegotiate while application data flows both ways.

It runs over any trio stream with memory BIOs, like TLSStream itself, but is
an independent implementation: its handshake and record processing are
OpenSSL's, driven by pyOpenSSL's API rather than ours.
"""

from __future__ import annotations

import ssl

import trio
import trustme
from OpenSSL import SSL


def server_context(ca: trustme.CA, hostname: str = "example.org") -> SSL.Context:
    cert = ca.issue_cert(hostname)
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file  # noqa: B018 - attribute exists on every version
    with cert.private_key_and_cert_chain_pem.tempfile() as path:
        ctx.use_certificate_chain_file(path)
        ctx.use_privatekey_file(path)
    return ctx


class PyOpenSSLPeer:
    """Server end of a TLS 1.2 connection over ``transport``.

    ``run()`` receives everything the client sends into :attr:`received`
    while sending :attr:`to_send`; once ``renegotiate_after`` bytes have been
    received it starts a renegotiation (``renegotiations`` times, spaced by
    the same amount).
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        ctx: SSL.Context,
        *,
        to_send: bytes,
        expect: int,
        renegotiate_after: int,
        renegotiations: int = 1,
        send_chunk: int = 16384,
    ) -> None:
        self.transport = transport
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_accept_state()
        self.to_send = to_send
        self.expect = expect
        self.renegotiate_after = renegotiate_after
        self.renegotiations_left = renegotiations
        self.send_chunk = send_chunk
        self.received = bytearray()
        self.renegotiations_started = 0
        self._send_lock = trio.Lock()
        self._data_arrived = trio.Event()
        self._peer_closed = False

    async def _flush(self, *, unless_busy: bool = False) -> None:
        # With ``unless_busy`` (the receiver), skip when the sender holds the
        # lock: its flush loop drains everything queued, and waiting for it
        # could deadlock over a transport whose sends wait for the reader.
        if unless_busy and self._send_lock.locked():
            return
        async with self._send_lock:
            while True:
                try:
                    data = self.conn.bio_read(1 << 20)
                except SSL.WantReadError:
                    return
                if not data:
                    return
                await self.transport.send_all(data)

    def _signal(self) -> None:
        self._data_arrived.set()
        self._data_arrived = trio.Event()

    async def _handshake(self) -> None:
        while True:
            try:
                self.conn.do_handshake()
            except SSL.WantReadError:
                await self._flush()
                data = await self.transport.receive_some(1 << 16)
                if not data:
                    raise trio.BrokenResourceError("EOF during handshake") from None
                self.conn.bio_write(data)
                continue
            await self._flush()
            return

    async def _receiver(self) -> None:
        while len(self.received) < self.expect or self.conn.renegotiate_pending():
            data = await self.transport.receive_some(1 << 16)
            if not data:
                raise trio.BrokenResourceError("client closed the transport early")
            self.conn.bio_write(data)
            while True:
                try:
                    piece = self.conn.recv(1 << 16)
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:
                    self._peer_closed = True
                    break
                self.received += piece
            if (
                self.renegotiations_left
                and len(self.received) >= self.renegotiate_after * (self.renegotiations_started + 1)
                and not self.conn.renegotiate_pending()
            ):
                self.renegotiations_left -= 1
                self.renegotiations_started += 1
                self.conn.renegotiate()
                try:
                    self.conn.do_handshake()
                except SSL.WantReadError:
                    pass
            self._signal()
            await self._flush(unless_busy=True)

    async def _sender(self) -> None:
        view = memoryview(self.to_send)
        offset = 0
        while offset < len(view):
            piece = bytes(view[offset : offset + self.send_chunk])
            while True:
                # Take the event before trying: data that arrives while we
                # flush must still wake us.
                arrived = self._data_arrived
                try:
                    sent = self.conn.send(piece)
                except SSL.WantReadError:
                    await self._flush()
                    await arrived.wait()
                    continue
                break
            offset += sent
            await self._flush()

    async def run(self) -> None:
        """Handshake, exchange data (renegotiating), then send close_notify.

        The receiver keeps going until every renegotiation it started has
        completed, so the client must keep reading until it sees our
        close_notify (``receive_some`` returning ``b""``).
        """
        await self._handshake()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receiver)
            nursery.start_soon(self._sender)
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass
        await self._flush()

    def total_renegotiations(self) -> int:
        return int(self.conn.total_renegotiations())


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class ManualPeer:
    """A pyOpenSSL TLS 1.2 server that the test drives one step at a time.

    For tests that need the peer to do nothing at a chosen moment (not read,
    not answer) and then act: :meth:`pump` reads once and answers whatever
    OpenSSL wants to send; application data goes to :attr:`received`.
    """

    def __init__(self, transport: trio.abc.Stream, ctx: SSL.Context) -> None:
        self.transport = transport
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_accept_state()
        self.received = bytearray()

    async def flush(self) -> None:
        while True:
            try:
                data = self.conn.bio_read(1 << 20)
            except SSL.WantReadError:
                return
            await self.transport.send_all(data)

    async def handshake(self) -> None:
        while True:
            try:
                self.conn.do_handshake()
            except SSL.WantReadError:
                await self.flush()
                self.conn.bio_write(await self.transport.receive_some())
                continue
            await self.flush()
            return

    async def request_renegotiation(self) -> None:
        """Send a HelloRequest; the renegotiation completes through pump()."""
        assert self.conn.renegotiate()
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            pass
        await self.flush()

    async def pump(self) -> None:
        """One transport read, processed; then send what OpenSSL queued."""
        self.conn.bio_write(await self.transport.receive_some())
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            pass
        while True:
            try:
                self.received.extend(self.conn.recv(1 << 16))
            except SSL.WantReadError:
                break
        await self.flush()
