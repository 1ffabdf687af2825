"""A fake TCP network for Trio tests: no sockets, no real time.

Trio lets a program replace how it makes sockets and resolves names
(:func:`trio.socket.set_custom_socket_factory` and
:func:`trio.socket.set_custom_hostname_resolver`); every
``trio.open_tcp_stream``, ``open_tcp_listeners`` and ``serve_tcp`` goes
through those two hooks. Trio itself ships only a UDP fake, so this module
models TCP: hosts with names and addresses, listening and connecting sockets,
and connections whose two directions are bounded byte pipes with a delivery
delay.

The model, in short (docs/testing.rst has the user's view):

* Every host lives on one machine, the network itself: a socket may bind to
  any host's address, and ``localhost`` (127.0.0.1, ::1) always exists.
  Unbound sockets connect from ``localhost``.
* A direction of a connection holds at most ``send_buffer`` bytes that the
  receiver has not read yet (in flight or waiting); ``send`` takes what fits
  and waits when nothing does. That is the back-pressure a kernel gives.
* A byte sent at time ``t`` can be read at ``t + latency`` (Trio's clock, so
  ``MockClock`` makes it instant in real time). ``connect`` takes one round
  trip.
* Sockets follow Trio's rules: every operation is a checkpoint and
  cancel-atomic (a cancelled ``send`` sent nothing, a cancelled ``recv``
  read nothing, a cancelled ``connect`` closes the socket).
* Like Linux: closing a socket whose received data is unread resets the
  connection; a peer that receives a reset first reads what arrived before
  it, then gets ``ECONNRESET``; sending to a closed peer is accepted once
  and then fails with ``EPIPE``.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import operator
import os
import socket as stdlib_socket
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias, overload

import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint_if_cancelled

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Buffer, Self

__all__ = [
    "ConnectAttempt",
    "ConnectionSide",
    "FakeHost",
    "FakeTCPConnection",
    "FakeTCPNetwork",
    "FakeTCPSocket",
]

AF_INET = stdlib_socket.AF_INET
AF_INET6 = stdlib_socket.AF_INET6
SOCK_STREAM = stdlib_socket.SOCK_STREAM

#: An IPv4 ``(host, port)`` or IPv6 ``(host, port, flowinfo, scope_id)`` address.
SocketAddress = tuple[str, int] | tuple[str, int, int, int]
#: One end of a :class:`FakeTCPConnection`: ``"client"`` (the socket that
#: connected) or ``"server"`` (the socket that accepted). Not the same thing
#: as :data:`~trio_tlsretry.testing.Direction` of the fault wrappers.
ConnectionSide = Literal["client", "server"]
# One getaddrinfo entry, as trio.abc.HostnameResolver declares it.
_AddrInfo: TypeAlias = (
    tuple[
        Literal[stdlib_socket.AddressFamily.AF_INET],
        stdlib_socket.SocketKind,
        int,
        str,
        tuple[str, int],
    ]
    | tuple[
        Literal[stdlib_socket.AddressFamily.AF_INET6],
        stdlib_socket.SocketKind,
        int,
        str,
        tuple[str, int, int, int] | tuple[int, bytes],
    ]
)

# Not real descriptors: far above any process's descriptor limit, so a
# descriptor call on one fails with EBADF instead of touching a real file.
_FAKE_FILENO_BASE = 1 << 30
_EPHEMERAL_PORTS = range(49152, 65536)
_WILDCARD: dict[int, str] = {AF_INET: "0.0.0.0", AF_INET6: "::"}
_LOOPBACK: dict[int, str] = {AF_INET: "127.0.0.1", AF_INET6: "::1"}
_IPPROTO_TCP = stdlib_socket.IPPROTO_TCP


def _error(code: int, detail: str = "") -> OSError:
    """The ``OSError`` subclass Python raises for ``code`` (e.g. ``ConnectionResetError``)."""
    message = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, message)


def _now() -> float:
    # Sockets may be closed outside trio.run (a test's teardown); a closing
    # socket only needs a time to order its EOF after its data.
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


def _normalise_ip(text: str) -> tuple[int, str] | None:
    """``(family, canonical text)`` of an IP literal, ``None`` for anything else."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return (AF_INET if address.version == 4 else AF_INET6), str(address)


def _family_of(ip: str) -> int:
    """The family of a canonical address (IPv6 ones, and only they, contain a colon)."""
    return AF_INET6 if ":" in ip else AF_INET


def _encode_name(name: str | bytes) -> str:
    """The form Trio hands a resolver: IDNA 2008 A-labels, lower case, no final dot."""
    if isinstance(name, str):
        name = trio.lowlevel.encode_hostname(name)
    return name.decode("ascii").lower().rstrip(".")


@dataclass(frozen=True)
class FakeHost:
    """A named machine on a :class:`FakeTCPNetwork` (made by :meth:`FakeTCPNetwork.add_host`).

    Attributes:
      name: the name as Trio's resolver sees it (IDNA 2008 A-labels, lower
        case): ``"faß.example"`` is ``"xn--fa-hia.example"``.
      addresses: its IP addresses, in the order :func:`trio.socket.getaddrinfo`
        returns them.
    """

    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class ConnectAttempt:
    """One ``connect`` on the network (:attr:`FakeTCPNetwork.attempts` lists them as they end).

    Attributes:
      destination: the address connected to: ``(host, port)`` for IPv4,
        ``(host, port, flowinfo, scope_id)`` for IPv6.
      outcome: how it ended: ``"connected"``, ``"refused"`` (nothing
        listening), ``"unreachable"`` (no host has the address),
        ``"timed out"`` (blackholed) or ``"cancelled"``.
    """

    destination: SocketAddress
    outcome: Literal["connected", "refused", "unreachable", "timed out", "cancelled"]


class _Pipe:
    """One direction of a connection: bytes on their way, then maybe an end.

    ``segments`` are the unread bytes, each with the time it arrives; the end
    (``"eof"`` or ``"reset"``) arrives after all of them.
    """

    def __init__(self, capacity: int, latency: float) -> None:
        self.capacity = capacity
        self.latency = latency
        self.segments: deque[tuple[float, bytearray]] = deque()
        self.queued = 0
        self.sent = bytearray()
        self.end: Literal["eof", "reset"] | None = None
        self.end_arrival = math.inf
        self.reader_closed = False
        self.writer_error: int | None = None
        self.swallowing = False  # past an injected EOF: bytes are taken and dropped
        self.eof_at: int | None = None
        self.reset_at: int | None = None
        self.changed = ParkingLot()

    def wake(self) -> None:
        self.changed.unpark_all()

    def _arrival(self) -> float:
        arrival = _now() + self.latency
        if self.segments:
            # A lowered latency must not let later bytes overtake earlier ones.
            arrival = max(arrival, self.segments[-1][0])
        return arrival

    def room(self) -> int:
        return self.capacity - self.queued

    def push(self, data: memoryview) -> None:
        self.segments.append((self._arrival(), bytearray(data)))
        self.queued += len(data)
        self.sent += data
        self.wake()

    def finish(self, kind: Literal["eof", "reset"]) -> None:
        """End this direction after the bytes already in it (a first end stays)."""
        if self.end is None:
            self.end = kind
            self.end_arrival = self._arrival()
            self.wake()

    def discard(self) -> None:
        self.segments.clear()
        self.queued = 0
        self.wake()

    def take(self, max_bytes: int) -> bytes | None:
        """Read what has arrived: data, ``b""`` at EOF, ``None`` if nothing yet.

        Raises ``ConnectionResetError`` once a reset has arrived and every byte
        before it was read.
        """
        now = _now()
        out = bytearray()
        segments = self.segments
        while segments and segments[0][0] <= now and len(out) < max_bytes:
            chunk = segments[0][1]
            size = min(max_bytes - len(out), len(chunk))
            out += chunk[:size]
            del chunk[:size]
            if not chunk:
                segments.popleft()
        if out:
            self.queued -= len(out)
            self.wake()
            return bytes(out)
        if not segments and self.end is not None and self.end_arrival <= now:
            if self.end == "eof":
                return b""
            raise _error(errno.ECONNRESET)
        return None

    def next_arrival(self) -> float:
        return self.segments[0][0] if self.segments else self.end_arrival

    def limit(self) -> int | None:
        """How many more bytes may be sent before an injected fault triggers."""
        total = len(self.sent)
        limits = [at - total for at in (self.eof_at, self.reset_at) if at is not None]
        return min(limits) if limits else None


class FakeTCPConnection:
    """An established connection: the observer's record and the fault controls.

    Made by the network when a ``connect`` succeeds (or by
    :meth:`FakeTCPNetwork.socketpair`), before any byte flows, and passed to
    :attr:`FakeTCPNetwork.on_connect`. The *client* is the side that
    connected, the *server* the side that accepted.

    Attributes:
      client_address: the client's address (``getsockname()`` of the
        connecting socket).
      server_address: the address connected to (``getpeername()`` of the
        client).
      was_reset: whether the connection was reset (by a fault, or by a close
        with unread data).
      client_closed: whether the client's socket was closed.
      server_closed: whether the server's socket was closed (also when a
        listener closed before accepting it).
    """

    def __init__(
        self,
        client_address: SocketAddress,
        server_address: SocketAddress,
        send_buffer: int,
        latency: float,
    ) -> None:
        self.client_address = client_address
        self.server_address = server_address
        self._to_server = _Pipe(send_buffer, latency)
        self._to_client = _Pipe(send_buffer, latency)
        self.was_reset = False
        self.client_closed = False
        self.server_closed = False

    def __repr__(self) -> str:
        return (
            f"<FakeTCPConnection {self.client_address} -> {self.server_address}: "
            f"client sent {len(self._to_server.sent)}, server sent {len(self._to_client.sent)}"
            f"{', reset' if self.was_reset else ''}>"
        )

    @property
    def client_sent(self) -> bytes:
        """Every byte the client's socket accepted for sending, in order.

        Bytes swallowed after an injected EOF, or sent to a closed server, are
        included: this is what the client *sent*, not what arrived.
        """
        return bytes(self._to_server.sent)

    @property
    def server_sent(self) -> bytes:
        """Every byte the server's socket accepted for sending, in order."""
        return bytes(self._to_client.sent)

    @property
    def latency(self) -> float:
        """Seconds from a ``send`` until the peer can read those bytes (both ways)."""
        return self._to_server.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        _check_latency(seconds)
        for pipe in self._pipes():
            pipe.latency = seconds

    @property
    def send_buffer(self) -> int:
        """Unread bytes each direction holds before ``send`` waits."""
        return self._to_server.capacity

    @send_buffer.setter
    def send_buffer(self, size: int) -> None:
        _check_send_buffer(size)
        for pipe in self._pipes():
            pipe.capacity = size
            pipe.wake()

    def _pipes(self) -> tuple[_Pipe, _Pipe]:
        return self._to_server, self._to_client

    def _pipe_from(self, sender: ConnectionSide) -> _Pipe:
        if sender == "client":
            return self._to_server
        if sender == "server":
            return self._to_client
        raise ValueError(f"sender must be 'client' or 'server', not {sender!r}")

    def reset(self) -> None:
        """Reset the connection now.

        Each side still reads the bytes that were on their way to it, then
        ``recv`` raises ``ConnectionResetError``; every later ``send`` raises
        it at once.
        """
        self.was_reset = True
        for pipe in self._pipes():
            pipe.finish("reset")  # an EOF that came first stays an EOF
            if pipe.writer_error is None:
                pipe.writer_error = errno.ECONNRESET
            pipe.wake()

    def reset_after(self, sender: ConnectionSide, nbytes: int) -> None:
        """Reset the connection once ``sender`` has sent ``nbytes`` bytes in all.

        The send that reaches the count takes only the bytes up to it; the
        peer reads them and then gets the reset. If ``sender`` already sent
        that much, the reset happens now.

        Args:
          sender: ``"client"`` (the side that connected) or ``"server"`` (the
            side that accepted).
          nbytes: how many bytes ``sender`` sends before the reset.
        """
        pipe = self._pipe_from(sender)
        _check_count(nbytes)
        pipe.reset_at = nbytes
        if len(pipe.sent) >= nbytes:
            self.reset()

    def eof_after(self, sender: ConnectionSide, nbytes: int) -> None:
        """The peer of ``sender`` sees EOF after ``nbytes`` bytes of it.

        Models a connection cut short in one direction: ``sender``'s later
        bytes are taken and dropped (its sends keep succeeding, and
        :attr:`client_sent`/:attr:`server_sent` still record them).

        Args:
          sender: ``"client"`` (the side that connected) or ``"server"`` (the
            side that accepted).
          nbytes: how many bytes of ``sender`` the peer reads before EOF.
        """
        pipe = self._pipe_from(sender)
        _check_count(nbytes)
        pipe.eof_at = nbytes
        if len(pipe.sent) >= nbytes:
            _cut(pipe)


def _cut(pipe: _Pipe) -> None:
    pipe.finish("eof")
    pipe.swallowing = True


def _check_count(nbytes: int) -> None:
    if nbytes < 0:
        raise ValueError("nbytes must be >= 0")


def _check_latency(seconds: float) -> None:
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(f"latency must be a finite number of seconds >= 0, not {seconds!r}")


def _check_send_buffer(size: int) -> None:
    if size < 1:
        raise ValueError(f"send_buffer must be >= 1, not {size!r}")


_SocketState = Literal["new", "bound", "listening", "connected", "closed"]


class FakeTCPSocket(trio.socket.SocketType):
    """A TCP socket of a :class:`FakeTCPNetwork` (made by ``trio.socket.socket()``).

    Implements what Trio's TCP helpers use: ``bind``, ``listen``,
    ``accept``, ``connect``, ``send``, ``recv``, ``recv_into``,
    ``shutdown``, ``close``, ``getsockname``, ``getpeername``,
    ``getsockopt``/``setsockopt`` (options are stored and read back;
    ``SO_ACCEPTCONN``, ``SO_TYPE`` and ``SO_ERROR`` are answered),
    ``wait_writable``, ``is_readable`` and ``did_shutdown_SHUT_WR``.
    ``fileno()`` is a number no real descriptor has (``-1`` once closed).
    Flags to ``send``/``recv`` are not supported.
    """

    def __init__(self, network: FakeTCPNetwork, family: int) -> None:
        super().__init__()
        self._network = network
        self._family = stdlib_socket.AddressFamily(family)
        self._fileno = network._allocate_fileno()
        self._state: _SocketState = "new"
        self._local: tuple[str, int] | None = None
        self._peer: tuple[str, int] | None = None
        self._connection: FakeTCPConnection | None = None
        self._outgoing: _Pipe | None = None
        self._incoming: _Pipe | None = None
        self._shut_wr = False
        self._shut_rd = False
        self._options: dict[tuple[int, int], int | bytes] = {}
        self._backlog: deque[tuple[FakeTCPSocket, SocketAddress]] = deque()
        self._accepting = ParkingLot()
        self._waiting: set[Literal["read", "write"]] = set()

    # ------------------------------------------------------------ plumbing

    def __repr__(self) -> str:
        return (
            f"<FakeTCPSocket {self._family.name} {self._state}"
            f" local={self._local} peer={self._peer}>"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def family(self) -> stdlib_socket.AddressFamily:
        return self._family

    @property
    def type(self) -> stdlib_socket.SocketKind:
        return SOCK_STREAM

    @property
    def proto(self) -> int:
        return _IPPROTO_TCP

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return self._shut_wr

    def fileno(self) -> int:
        return -1 if self._state == "closed" else self._fileno

    def get_inheritable(self) -> bool:
        return False

    def set_inheritable(self, inheritable: bool) -> None:
        pass

    def _sockaddr(self, address: tuple[str, int]) -> SocketAddress:
        host, port = address
        return (host, port) if self._family == AF_INET else (host, port, 0, 0)

    def _check_open(self) -> None:
        if self._state == "closed":
            raise _error(errno.EBADF)

    def _connected_pipes(self) -> tuple[_Pipe, _Pipe]:
        self._check_open()
        if self._outgoing is None or self._incoming is None:
            raise _error(errno.ENOTCONN)
        return self._outgoing, self._incoming

    def _parse_address(self, address: object) -> tuple[str, int]:
        """``(canonical ip, port)`` of a numeric address of this socket's family."""
        size = 2 if self._family == AF_INET else (2, 3, 4)
        if (
            not isinstance(address, tuple)
            or len(address) not in (size if isinstance(size, tuple) else (size,))
            or not isinstance(address[0], str)
            or not isinstance(address[1], int)
        ):
            raise TypeError(f"expected a {self._family.name} address tuple, not {address!r}")
        host, port = address[0], address[1]
        if not 0 <= port <= 65535:
            raise OverflowError("port must be 0-65535.")
        if host == "":
            return _WILDCARD[self._family], port
        parsed = _normalise_ip(host)
        if parsed is None:
            # Like a real Trio socket, a name is resolved (here: in the
            # network's table).
            found = self._network._lookup(_encode_name(host), self._family)
            if not found:
                raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, "Name or service not known")
            return found[0], port
        family, ip = parsed
        if family != self._family:
            raise _error(errno.EAFNOSUPPORT, f"{ip} on an {self._family.name} socket")
        return ip, port

    # ---------------------------------------------------------- options

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        self._check_open()
        value: int | bytes
        if (level, optname) == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ACCEPTCONN):
            value = int(self._state == "listening")
        elif (level, optname) == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_TYPE):
            value = int(SOCK_STREAM)
        elif (level, optname) == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ERROR):
            value = 0
        elif (level, optname) in self._options:
            value = self._options[level, optname]
        else:
            raise _error(errno.ENOPROTOOPT)
        if buflen is None:
            return value if isinstance(value, int) else int.from_bytes(value, "little")
        return value if isinstance(value, bytes) else value.to_bytes(4, "little")[:buflen]

    @overload
    def setsockopt(self, level: int, optname: int, value: int | Buffer) -> None: ...

    @overload
    def setsockopt(self, level: int, optname: int, value: None, optlen: int) -> None: ...

    def setsockopt(
        self, level: int, optname: int, value: int | Buffer | None, optlen: int | None = None
    ) -> None:
        self._check_open()
        if value is None:
            self._options[level, optname] = bytes(optlen or 0)
        elif isinstance(value, int):
            self._options[level, optname] = int(value)
        else:
            self._options[level, optname] = bytes(value)

    # ------------------------------------------------------ addresses

    def getsockname(self) -> SocketAddress:
        self._check_open()
        return self._sockaddr(self._local or (_WILDCARD[self._family], 0))

    def getpeername(self) -> SocketAddress:
        self._check_open()
        if self._peer is None:
            raise _error(errno.ENOTCONN)
        return self._sockaddr(self._peer)

    async def bind(self, address: object) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        if self._local is not None:
            raise _error(errno.EINVAL, "already bound")
        ip, port = self._parse_address(address)
        self._network._bind(self, ip, port)

    def listen(self, backlog: int = 128) -> None:
        self._check_open()
        if self._state == "connected":
            raise _error(errno.EINVAL, "connected sockets cannot listen")
        if self._local is None:
            # Linux binds an unbound listening socket to a free port.
            self._network._bind(self, _WILDCARD[self._family], 0)
        # The backlog is not enforced: connections wait until accepted.
        self._state = "listening"

    # ---------------------------------------------------- connections

    async def accept(self) -> tuple[FakeTCPSocket, SocketAddress]:
        await checkpoint_if_cancelled()
        waited = False
        try:
            while True:
                self._check_open()
                if self._state != "listening":
                    raise _error(errno.EINVAL, "not listening")
                if self._backlog:
                    return self._backlog.popleft()
                waited = True
                await self._wait("read", self._accepting)
        finally:
            if not waited:
                await cancel_shielded_checkpoint()

    async def connect(self, address: object) -> None:
        try:
            await self._connect(address)
        except trio.Cancelled:
            # As Trio does: a cancelled connect leaves the socket unusable.
            self.close()
            raise

    async def _connect(self, address: object) -> None:
        self._check_open()
        if self._state == "connected":
            raise _error(errno.EISCONN)
        if self._state == "listening":
            raise _error(errno.EINVAL, "listening sockets cannot connect")
        ip, port = self._parse_address(address)
        network = self._network
        destination = self._sockaddr((ip, port))
        outcome: Literal["connected", "refused", "unreachable", "timed out", "cancelled"]
        outcome = "cancelled"
        try:
            if network._is_blackholed(ip, port):
                await trio.sleep(network.connect_timeout)
                outcome = "timed out"
                raise _error(errno.ETIMEDOUT, f"no answer from {ip} port {port}")
            await trio.sleep(2 * network.latency)  # SYN, SYN-ACK
            if not network._has_address(ip):
                outcome = "unreachable"
                raise _error(errno.EHOSTUNREACH, f"no host has the address {ip}")
            listener = network._listener_for(self._family, ip, port)
            if listener is None:
                outcome = "refused"
                raise _error(errno.ECONNREFUSED, f"nothing listens on {ip} port {port}")
            self._check_open()  # closed by another task meanwhile
            if self._local is None or self._local[0] == _WILDCARD[self._family]:
                source = self._local[1] if self._local is not None else 0
                if self._local is not None:
                    network._unbind(self)
                network._bind(self, _LOOPBACK[self._family], source)
            assert self._local is not None
            server = FakeTCPSocket(network, self._family)
            connection = network._connect(self, server, (ip, port))
            listener._backlog.append((server, server.getpeername()))
            listener._accepting.unpark_all()
            outcome = "connected"
            if network.on_connect is not None:
                network.on_connect(connection)
        finally:
            network.attempts.append(ConnectAttempt(destination, outcome))

    def _attach(
        self,
        connection: FakeTCPConnection,
        local: tuple[str, int],
        peer: tuple[str, int],
        outgoing: _Pipe,
        incoming: _Pipe,
    ) -> None:
        self._state = "connected"
        self._connection = connection
        self._local = local
        self._peer = peer
        self._outgoing = outgoing
        self._incoming = incoming

    # --------------------------------------------------------- data

    async def send(self, data: Buffer, flags: int = 0, /) -> int:
        if flags:
            raise _error(errno.EOPNOTSUPP, "send flags are not supported")
        view = memoryview(data).cast("B")
        await checkpoint_if_cancelled()
        waited = False
        try:
            while True:
                outgoing, _ = self._connected_pipes()
                if self._shut_wr:
                    raise _error(errno.EPIPE, "the write side was shut down")
                if outgoing.writer_error is not None:
                    raise _error(outgoing.writer_error)
                if outgoing.reader_closed or outgoing.swallowing:
                    outgoing.sent += view
                    if outgoing.reader_closed:
                        # The peer's kernel answers these bytes with a reset.
                        outgoing.writer_error = errno.EPIPE
                    return len(view)
                if not view:
                    return 0
                room = outgoing.room()
                if room > 0:
                    size = min(room, len(view))
                    limit = outgoing.limit()
                    if limit is not None:
                        size = min(size, limit)
                    outgoing.push(view[:size])
                    self._fault_reached(outgoing)
                    return size
                waited = True
                await self._wait("write", outgoing.changed)
        finally:
            if not waited:
                await cancel_shielded_checkpoint()

    async def _wait(
        self, direction: Literal["read", "write"], lot: ParkingLot, deadline: float = math.inf
    ) -> None:
        """Wait until ``lot`` is woken or ``deadline`` passes; one task per direction.

        Two tasks waiting to read (or to write) the same socket is a bug Trio
        reports for real sockets too.
        """
        if direction in self._waiting:
            verb = "reading from" if direction == "read" else "writing to"
            raise trio.BusyResourceError(f"another task is already {verb} this socket")
        self._waiting.add(direction)
        try:
            with trio.move_on_at(deadline):
                await lot.park()
        finally:
            self._waiting.discard(direction)

    def _fault_reached(self, pipe: _Pipe) -> None:
        total = len(pipe.sent)
        if pipe.eof_at is not None and total >= pipe.eof_at:
            _cut(pipe)
        if pipe.reset_at is not None and total >= pipe.reset_at:
            assert self._connection is not None
            self._connection.reset()

    async def recv(self, buflen: int, flags: int = 0, /) -> bytes:
        buflen = operator.index(buflen)  # TypeError for 1.5, as a real socket
        if buflen < 0:
            raise ValueError("negative buffersize in recv")
        if flags:
            raise _error(errno.EOPNOTSUPP, "recv flags are not supported")
        await checkpoint_if_cancelled()
        waited = False
        try:
            while True:
                _, incoming = self._connected_pipes()
                if self._shut_rd or buflen == 0:
                    return b""
                data = incoming.take(buflen)
                if data is not None:
                    return data
                waited = True
                await self._wait("read", incoming.changed, incoming.next_arrival())
        finally:
            if not waited:
                await cancel_shielded_checkpoint()

    async def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        nbytes = operator.index(nbytes)
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes > len(view):
            raise ValueError("buffer too small for requested bytes")
        data = await self.recv(nbytes or len(view), flags)
        view[: len(data)] = data
        return len(data)

    def is_readable(self) -> bool:
        if self._state == "listening":
            return bool(self._backlog)
        _, incoming = self._connected_pipes()
        if self._shut_rd:
            return True
        return incoming.next_arrival() <= _now()

    async def wait_writable(self) -> None:
        await checkpoint_if_cancelled()
        waited = False
        try:
            while True:
                outgoing, _ = self._connected_pipes()
                if (
                    self._shut_wr
                    or outgoing.writer_error is not None
                    or outgoing.reader_closed
                    or outgoing.swallowing
                    or outgoing.room() > 0
                ):
                    # Writable, or a send would fail at once: either way
                    # it would not block.
                    return
                waited = True
                await self._wait("write", outgoing.changed)
        finally:
            if not waited:
                await cancel_shielded_checkpoint()

    # ------------------------------------------------------ closing

    def shutdown(self, flag: int) -> None:
        outgoing, incoming = self._connected_pipes()
        if flag not in (stdlib_socket.SHUT_RD, stdlib_socket.SHUT_WR, stdlib_socket.SHUT_RDWR):
            raise _error(errno.EINVAL)
        if flag != stdlib_socket.SHUT_RD:
            self._shut_wr = True
            outgoing.finish("eof")
        if flag != stdlib_socket.SHUT_WR:
            self._shut_rd = True
            incoming.wake()

    def close(self) -> None:
        if self._state == "closed":
            return
        state, self._state = self._state, "closed"
        self._network._unbind(self)
        if state == "listening":
            # Connections nobody accepted are reset, as a kernel does.
            while self._backlog:
                server, _ = self._backlog.popleft()
                assert server._connection is not None
                server._connection.reset()
                server.close()
            self._accepting.unpark_all()
            return
        outgoing, incoming, connection = self._outgoing, self._incoming, self._connection
        if outgoing is None or incoming is None or connection is None:
            return
        if outgoing is connection._to_server:
            connection.client_closed = True
        else:
            connection.server_closed = True
        if incoming.queued and incoming.end != "reset":
            # Unread data: the kernel sends a reset instead of a FIN.
            connection.reset()
        else:
            outgoing.finish("eof")
        incoming.reader_closed = True
        incoming.discard()
        outgoing.wake()


class _SocketFactory(trio.abc.SocketFactory):
    def __init__(self, network: FakeTCPNetwork) -> None:
        self._network = network

    def socket(
        self,
        family: stdlib_socket.AddressFamily | int = AF_INET,
        type: stdlib_socket.SocketKind | int = SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        return self._network._socket(family, type, proto)


class _Resolver(trio.abc.HostnameResolver):
    def __init__(self, network: FakeTCPNetwork) -> None:
        self._network = network

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[_AddrInfo]:
        await trio.lowlevel.checkpoint()
        return self._network._getaddrinfo(host, port, family, type, proto, flags)

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        return self._network._getnameinfo(sockaddr, flags)


class FakeTCPNetwork:
    """A TCP network in memory, for one :func:`trio.run` (one test).

    Add hosts, :meth:`install` the network, and Trio's TCP functions
    (``trio.open_tcp_stream``, ``open_tcp_listeners``, ``serve_tcp``, and
    with them :func:`~trio_tlsretry.open_tls_over_tcp_stream` and
    :func:`~trio_tlsretry.serve_tls_over_tcp`) use it instead of the
    operating system::

        network = FakeTCPNetwork()
        network.add_host("example.org", "192.0.2.10", "2001:db8::10")
        with network:  # inside trio.run
            ...

    Connecting to an address that nothing listens on is refused
    (``ConnectionRefusedError``), to an address no host has is
    unreachable, to a :meth:`blackhole` gets no answer. Numeric host names
    are handled by Trio without asking the network; ``localhost`` (127.0.0.1
    and ::1) always exists. IPv4 and IPv6 are separate (as with
    ``IPV6_V6ONLY``, which Trio's listeners set).

    Args:
      latency: the default one-way delay of new connections, in seconds of
        Trio's clock; ``connect`` waits one round trip.
      send_buffer: the default number of unread bytes each direction of a new
        connection holds before ``send`` waits.
      connect_timeout: how long a ``connect`` to a blackholed address waits
        before ``TimeoutError`` (Linux gives up after about 127 s).

    Attributes:
      latency: the default one-way delay of connections made from now on.
      send_buffer: the default buffer size of connections made from now on.
      connect_timeout: as the argument.
      on_connect: called with each new :class:`FakeTCPConnection` before any
        byte flows on it and before ``connect`` returns: set faults, latency
        or buffer sizes there.
      connections: every connection made, in order.
      attempts: every ``connect``, as :class:`ConnectAttempt`, in the order
        they ended.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        send_buffer: int = 64 * 1024,
        connect_timeout: float = 127.0,
    ) -> None:
        _check_latency(latency)
        _check_send_buffer(send_buffer)
        _check_latency(connect_timeout)
        self.latency = latency
        self.send_buffer = send_buffer
        self.connect_timeout = connect_timeout
        self.on_connect: Callable[[FakeTCPConnection], object] | None = None
        self.connections: list[FakeTCPConnection] = []
        self.attempts: list[ConnectAttempt] = []
        self._hosts: dict[str, FakeHost] = {}
        self._host_of: dict[str, FakeHost] = {}
        self._blackholes: set[tuple[str, int | None]] = set()
        self._bound: dict[tuple[int, str, int], FakeTCPSocket] = {}
        self._port_users: Counter[tuple[int, int]] = Counter()
        self._next_port = 0
        self._filenos = 0
        self._previous: (
            tuple[trio.abc.SocketFactory | None, trio.abc.HostnameResolver | None] | None
        ) = None
        self.add_host("localhost", "127.0.0.1", "::1")

    def __repr__(self) -> str:
        return f"<FakeTCPNetwork hosts={sorted(self._hosts)} connections={len(self.connections)}>"

    # ------------------------------------------------------- set-up

    def add_host(self, name: str, *addresses: str) -> FakeHost:
        """Add a host: ``name`` resolves to ``addresses``, in that order.

        ``name`` may be an internationalised name (``"bücher.example"``):
        it is stored in the IDNA 2008 form Trio's resolver looks up. The
        addresses are IPv4 or IPv6 literals; documentation ranges
        (192.0.2.0/24, 2001:db8::/32) keep tests clear of real networks.

        Raises:
          ValueError: no address, an address that is not an IP literal, or a
            name or address that another host already has.
        """
        key = _encode_name(name)
        if key in self._hosts:
            raise ValueError(f"there is already a host named {name!r}")
        if not addresses:
            raise ValueError("a host needs at least one address")
        canonical: list[str] = []
        for address in addresses:
            parsed = _normalise_ip(address)
            if parsed is None:
                raise ValueError(f"{address!r} is not an IP address")
            ip = parsed[1]
            if ip in self._host_of or ip in canonical:
                raise ValueError(f"the address {ip} already belongs to a host")
            canonical.append(ip)
        host = FakeHost(key, tuple(canonical))
        self._hosts[key] = host
        for ip in canonical:
            self._host_of[ip] = host
        return host

    @property
    def hosts(self) -> list[FakeHost]:
        """The hosts, ``localhost`` first."""
        return list(self._hosts.values())

    def blackhole(self, address: str, port: int | None = None) -> None:
        """Drop connection attempts to ``address`` (on ``port``, or on any port).

        A ``connect`` there waits until cancelled, or fails with
        ``TimeoutError`` (``ETIMEDOUT``) after :attr:`connect_timeout`: a
        firewall that drops packets, or a host that is down.
        """
        parsed = _normalise_ip(address)
        if parsed is None:
            raise ValueError(f"{address!r} is not an IP address")
        self._blackholes.add((parsed[1], port))

    def install(self) -> None:
        """Make this network Trio's socket factory and resolver for the current run.

        Call it inside :func:`trio.run` (Trio keeps the hooks per run);
        :meth:`uninstall` restores the previous ones. ``with network:`` does
        both.

        Raises:
          RuntimeError: already installed, or called outside ``trio.run``.
        """
        if self._previous is not None:
            raise RuntimeError("this FakeTCPNetwork is already installed")
        factory = trio.socket.set_custom_socket_factory(_SocketFactory(self))
        try:
            resolver = trio.socket.set_custom_hostname_resolver(_Resolver(self))
        except BaseException:
            trio.socket.set_custom_socket_factory(factory)
            raise
        self._previous = (factory, resolver)

    def uninstall(self) -> None:
        """Restore the socket factory and resolver :meth:`install` replaced.

        Sockets already made keep working. Does nothing if not installed.
        """
        if self._previous is None:
            return
        factory, resolver = self._previous
        self._previous = None
        trio.socket.set_custom_socket_factory(factory)
        trio.socket.set_custom_hostname_resolver(resolver)

    def __enter__(self) -> Self:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.uninstall()

    def socketpair(self) -> tuple[FakeTCPSocket, FakeTCPSocket]:
        """Two connected sockets, like :func:`trio.socket.socketpair` (no install needed).

        The first is the connection's client, the second its server; the
        :class:`FakeTCPConnection` is the last of :attr:`connections` (and
        was passed to :attr:`on_connect`). Wrap them in
        :class:`trio.SocketStream` for a stream pair::

            a, b = network.socketpair()
            left, right = trio.SocketStream(a), trio.SocketStream(b)
        """
        client = FakeTCPSocket(self, AF_INET)
        server = FakeTCPSocket(self, AF_INET)
        self._bind(client, _LOOPBACK[AF_INET], 0)
        self._bind(server, _LOOPBACK[AF_INET], 0)
        server_address = server._local
        assert server_address is not None
        self._unbind(server)
        connection = self._connect(client, server, server_address)
        if self.on_connect is not None:
            self.on_connect(connection)
        return client, server

    # --------------------------------------------- used by the sockets

    def _allocate_fileno(self) -> int:
        self._filenos += 1
        return _FAKE_FILENO_BASE + self._filenos

    def _socket(self, family: int, type: int, proto: int) -> FakeTCPSocket:
        if family not in (AF_INET, AF_INET6):
            raise _error(errno.EAFNOSUPPORT, "the fake network has IPv4 and IPv6 only")
        # Trio's flags (SOCK_NONBLOCK, SOCK_CLOEXEC) may be or-ed into the type.
        if type & 0xF != SOCK_STREAM:
            raise _error(errno.EPROTONOSUPPORT, "the fake network has TCP only")
        if proto not in (0, _IPPROTO_TCP):
            raise _error(errno.EPROTONOSUPPORT, "the fake network has TCP only")
        return FakeTCPSocket(self, family)

    def _lookup(self, name: str, family: int) -> list[str]:
        """The addresses of host ``name`` of ``family`` (0: all), in order."""
        host = self._hosts.get(name)
        if host is None:
            return []
        return [ip for ip in host.addresses if family in (0, _family_of(ip))]

    def _has_address(self, ip: str) -> bool:
        return ip in self._host_of

    def _is_blackholed(self, ip: str, port: int) -> bool:
        return (ip, port) in self._blackholes or (ip, None) in self._blackholes

    def _in_use(self, family: int, ip: str, port: int) -> bool:
        """Whether binding ``ip``:``port`` would clash (a wildcard clashes with any address)."""
        wildcard = _WILDCARD[family]
        if ip == wildcard:
            return self._port_users[family, port] > 0
        return (family, ip, port) in self._bound or (family, wildcard, port) in self._bound

    def _bind(self, sock: FakeTCPSocket, ip: str, port: int) -> None:
        family = sock.family
        if ip != _WILDCARD[family] and not self._has_address(ip):
            raise _error(errno.EADDRNOTAVAIL, f"no host has the address {ip}")
        if port == 0:
            port = self._free_port(family, ip)
        elif self._in_use(family, ip, port):
            raise _error(errno.EADDRINUSE, f"{ip} port {port}")
        self._bound[family, ip, port] = sock
        self._port_users[family, port] += 1
        sock._local = (ip, port)
        if sock._state == "new":
            sock._state = "bound"

    def _free_port(self, family: int, ip: str) -> int:
        ports = _EPHEMERAL_PORTS
        for _ in ports:
            port = ports[self._next_port % len(ports)]
            self._next_port += 1
            if not self._in_use(family, ip, port):
                return port
        raise _error(errno.EADDRINUSE, "no free port left")

    def _unbind(self, sock: FakeTCPSocket) -> None:
        if sock._local is not None:
            key = (int(sock.family), sock._local[0], sock._local[1])
            if self._bound.get(key) is sock:
                del self._bound[key]
                self._port_users[key[0], key[2]] -= 1

    def _listener_for(self, family: int, ip: str, port: int) -> FakeTCPSocket | None:
        for address in (ip, _WILDCARD[family]):
            sock = self._bound.get((family, address, port))
            if sock is not None and sock._state == "listening":
                return sock
        return None

    def _connect(
        self, client: FakeTCPSocket, server: FakeTCPSocket, server_address: tuple[str, int]
    ) -> FakeTCPConnection:
        assert client._local is not None
        connection = FakeTCPConnection(
            client._sockaddr(client._local),
            client._sockaddr(server_address),
            self.send_buffer,
            self.latency,
        )
        to_server, to_client = connection._pipes()
        client._attach(connection, client._local, server_address, to_server, to_client)
        server._attach(connection, server_address, client._local, to_client, to_server)
        self.connections.append(connection)
        return connection

    def _getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int,
        type: int,
        proto: int,
        flags: int,
    ) -> list[_AddrInfo]:
        if isinstance(port, bytes):
            port = port.decode("ascii", "replace")
        if port is None:
            number = 0
        elif isinstance(port, int):
            number = port
        elif port.isdigit():
            number = int(port)
        else:
            raise stdlib_socket.gaierror(stdlib_socket.EAI_SERVICE, f"unknown service {port!r}")
        if family not in (0, AF_INET, AF_INET6):
            raise stdlib_socket.gaierror(stdlib_socket.EAI_FAMILY, "ai_family not supported")
        name = ""
        if host is None:
            table = _WILDCARD if flags & stdlib_socket.AI_PASSIVE else _LOOPBACK
            ips = [table[f] for f in (AF_INET6, AF_INET) if family in (0, f)]
        else:
            name = _encode_name(host)
            parsed = _normalise_ip(name)
            if parsed is not None:
                ips = [parsed[1]] if family in (0, parsed[0]) else []
            elif flags & stdlib_socket.AI_NUMERICHOST:
                ips = []
            else:
                ips = self._lookup(name, family)
        if not ips:
            raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, "Name or service not known")
        kind = stdlib_socket.SocketKind(type or SOCK_STREAM)
        protocol = proto or (_IPPROTO_TCP if kind == SOCK_STREAM else 0)
        canonical = name if flags & stdlib_socket.AI_CANONNAME else ""
        entries: list[_AddrInfo] = []
        for ip in ips:
            if _family_of(ip) == AF_INET6:
                entries.append(
                    (stdlib_socket.AF_INET6, kind, protocol, canonical, (ip, number, 0, 0))
                )
            else:
                entries.append((stdlib_socket.AF_INET, kind, protocol, canonical, (ip, number)))
            canonical = ""
        return entries

    def _getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        parsed = _normalise_ip(sockaddr[0])
        if parsed is None:
            raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, "Name or service not known")
        ip = parsed[1]
        host = self._host_of.get(ip)
        if host is None or flags & stdlib_socket.NI_NUMERICHOST:
            if flags & stdlib_socket.NI_NAMEREQD:
                raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, "Name or service not known")
            return ip, str(sockaddr[1])
        return host.name, str(sockaddr[1])
