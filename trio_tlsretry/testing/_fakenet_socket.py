"""Sockets of the fake TCP network.

The part of the fake network that Trio's TCP helpers see (``_fakenet.py``
tells how the parts fit). A :class:`FakeTCPSocket` keeps its own state
(addresses, shutdowns, listen queue) and asks two others for the rest: its
:class:`~._fakenet_pipe.ConnectionEnd` for bytes, and its network, through
the network's documented socket methods, for addresses and ports. Neither
touches the socket's fields.
"""

from __future__ import annotations

import errno
import operator
import socket as stdlib_socket
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar, overload

import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._fakenet_address import (
    AF_INET,
    IPPROTO_TCP,
    LOOPBACK,
    SOCK_STREAM,
    WILDCARD,
    ConnectAttempt,
    ConnectOutcome,
    SocketAddress,
    encode_name,
    normalise_ip,
)
from ._fakenet_pipe import ConnectionEnd, FakeTCPConnection, os_error

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

    from ._fakenet_network import FakeTCPNetwork

__all__ = ["FakeTCPSocket", "socketpair"]

_T = TypeVar("_T")
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
        self._end: ConnectionEnd | None = None
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

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def family(self) -> stdlib_socket.AddressFamily:
        return self._family

    @property
    def type(self) -> stdlib_socket.SocketKind:
        return SOCK_STREAM

    @property
    def proto(self) -> int:
        return IPPROTO_TCP

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
            raise os_error(errno.EBADF)

    def _connected_end(self) -> ConnectionEnd:
        self._check_open()
        if self._end is None:
            raise os_error(errno.ENOTCONN)
        return self._end

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
            return WILDCARD[self._family], port
        parsed = normalise_ip(host)
        if parsed is None:
            # Like a real Trio socket, a name is resolved (here: in the
            # network's table).
            found = self._network._lookup(encode_name(host), self._family)
            if not found:
                raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, "Name or service not known")
            return found[0], port
        family, ip = parsed
        if family != self._family:
            raise os_error(errno.EAFNOSUPPORT, f"{ip} on an {self._family.name} socket")
        return ip, port

    # ------------------------------------------------ the checkpoint helper

    async def _nonblocking_helper(
        self, direction: Literal["read", "write"], attempt: Callable[[], _T]
    ) -> _T:
        """Run ``attempt`` as one checkpoint that is cancel-atomic, as Trio's socket calls are.

        ``attempt`` is the non-blocking call: it returns, raises, or raises
        :exc:`BlockingIOError` to wait (:meth:`_wait`) for a change in
        ``direction`` and be tried again. A cancellation is taken before the
        first try or while waiting, never after a try that did something;
        a call that never waits still yields once, shielded, after it.
        """
        await checkpoint_if_cancelled()
        waited = False
        try:
            while True:
                try:
                    return attempt()
                except BlockingIOError:
                    pass
                waited = True
                await self._wait(direction)
        finally:
            if not waited:
                await cancel_shielded_checkpoint()

    async def _wait(self, direction: Literal["read", "write"]) -> None:
        """Wait for a change that may unblock an attempt; one task per direction.

        A listener reads connections from its backlog, a connected socket
        bytes from its end. Two tasks waiting to read (or to write) the same
        socket is a bug Trio reports for real sockets too.
        """
        if direction in self._waiting:
            verb = "reading from" if direction == "read" else "writing to"
            raise trio.BusyResourceError(f"another task is already {verb} this socket")
        self._waiting.add(direction)
        try:
            if direction == "read" and self._state == "listening":
                await self._accepting.park()
            elif direction == "read":
                await self._connected_end().wait_readable()
            else:
                await self._connected_end().wait_writable()
        finally:
            self._waiting.discard(direction)

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
            raise os_error(errno.ENOPROTOOPT)
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
        return self._sockaddr(self._local or (WILDCARD[self._family], 0))

    def getpeername(self) -> SocketAddress:
        self._check_open()
        if self._peer is None:
            raise os_error(errno.ENOTCONN)
        return self._sockaddr(self._peer)

    async def bind(self, address: object) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        if self._local is not None:
            raise os_error(errno.EINVAL, "already bound")
        self._bind(*self._parse_address(address))

    def _bind(self, ip: str, port: int) -> None:
        self._local = self._network._bind(self, self._family, ip, port)
        if self._state == "new":
            self._state = "bound"

    def _unbind(self) -> None:
        if self._local is not None:
            self._network._unbind(self, self._family, self._local)

    def listen(self, backlog: int = 128) -> None:
        self._check_open()
        if self._state == "connected":
            raise os_error(errno.EINVAL, "connected sockets cannot listen")
        if self._local is None:
            # Linux binds an unbound listening socket to a free port.
            self._bind(WILDCARD[self._family], 0)
        assert self._local is not None
        # The backlog is not enforced: connections wait until accepted.
        self._network._listen(self, self._family, self._local)
        self._state = "listening"

    # ---------------------------------------------------- connections

    async def accept(self) -> tuple[FakeTCPSocket, SocketAddress]:
        return await self._nonblocking_helper("read", self._accept_now)

    def _accept_now(self) -> tuple[FakeTCPSocket, SocketAddress]:
        self._check_open()
        if self._state != "listening":
            raise os_error(errno.EINVAL, "not listening")
        if not self._backlog:
            raise BlockingIOError
        return self._backlog.popleft()

    def _enqueue(self, server: FakeTCPSocket) -> None:
        """Put a new connection's server socket in this listener's backlog."""
        self._backlog.append((server, server.getpeername()))
        self._accepting.unpark_all()

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
            raise os_error(errno.EISCONN)
        if self._state == "listening":
            raise os_error(errno.EINVAL, "listening sockets cannot connect")
        ip, port = self._parse_address(address)
        network = self._network
        outcome: ConnectOutcome = "cancelled"
        try:
            if network._is_blackholed(ip, port):
                await trio.sleep(network.connect_timeout)
                outcome = "timed out"
                raise os_error(errno.ETIMEDOUT, f"no answer from {ip} port {port}")
            await trio.sleep(2 * network.latency)  # SYN, SYN-ACK
            if not network._has_address(ip):
                outcome = "unreachable"
                raise os_error(errno.EHOSTUNREACH, f"no host has the address {ip}")
            listener = network._listener_for(self._family, ip, port)
            if listener is None:
                outcome = "refused"
                raise os_error(errno.ECONNREFUSED, f"nothing listens on {ip} port {port}")
            self._check_open()  # closed by another task meanwhile
            if self._local is None or self._local[0] == WILDCARD[self._family]:
                source = self._local[1] if self._local is not None else 0
                self._unbind()
                self._bind(LOOPBACK[self._family], source)
            server, connection = self._pair((ip, port))
            listener._enqueue(server)
            outcome = "connected"
            if network.on_connect is not None:
                network.on_connect(connection)
        finally:
            network.attempts.append(ConnectAttempt(self._sockaddr((ip, port)), outcome))

    def _pair(self, server_address: tuple[str, int]) -> tuple[FakeTCPSocket, FakeTCPConnection]:
        """Connect this bound socket to a new socket at ``server_address``.

        Returns the new socket (the connection's server side) and the connection.
        """
        local = self._local
        assert local is not None
        server = FakeTCPSocket(self._network, self._family)
        connection = self._network._new_connection(
            self._sockaddr(local), self._sockaddr(server_address)
        )
        self._attach(connection._end("client"), local, server_address)
        server._attach(connection._end("server"), server_address, local)
        return server, connection

    def _attach(self, end: ConnectionEnd, local: tuple[str, int], peer: tuple[str, int]) -> None:
        self._state = "connected"
        self._end = end
        self._local = local
        self._peer = peer

    # --------------------------------------------------------- data

    async def send(self, data: Buffer, flags: int = 0, /) -> int:
        if flags:
            raise os_error(errno.EOPNOTSUPP, "send flags are not supported")
        view = memoryview(data).cast("B")
        return await self._nonblocking_helper("write", partial(self._send_now, view))

    def _send_now(self, view: memoryview) -> int:
        end = self._connected_end()
        if self._shut_wr:
            raise os_error(errno.EPIPE, "the write side was shut down")
        return end.send(view)

    async def recv(self, buflen: int, flags: int = 0, /) -> bytes:
        buflen = operator.index(buflen)  # TypeError for 1.5, as a real socket
        if buflen < 0:
            raise ValueError("negative buffersize in recv")
        if flags:
            raise os_error(errno.EOPNOTSUPP, "recv flags are not supported")
        return await self._nonblocking_helper("read", partial(self._recv_now, buflen))

    def _recv_now(self, buflen: int) -> bytes:
        end = self._connected_end()
        if self._shut_rd or buflen == 0:
            return b""
        return end.receive(buflen)

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
        end = self._connected_end()
        return self._shut_rd or end.readable()

    async def wait_writable(self) -> None:
        await self._nonblocking_helper("write", self._check_writable)

    def _check_writable(self) -> None:
        # Writable, or a send would fail at once: either way it would not block.
        end = self._connected_end()
        if not (self._shut_wr or end.writable()):
            raise BlockingIOError

    # ------------------------------------------------------ closing

    def shutdown(self, flag: int) -> None:
        end = self._connected_end()
        if flag not in (stdlib_socket.SHUT_RD, stdlib_socket.SHUT_WR, stdlib_socket.SHUT_RDWR):
            raise os_error(errno.EINVAL)
        if flag != stdlib_socket.SHUT_RD:
            self._shut_wr = True
            end.shutdown_write()
        if flag != stdlib_socket.SHUT_WR:
            self._shut_rd = True
            end.shutdown_read()

    def close(self) -> None:
        if self._state == "closed":
            return
        state, self._state = self._state, "closed"
        self._unbind()
        if state == "listening":
            # Connections nobody accepted are reset, as a kernel does.
            while self._backlog:
                server, _ = self._backlog.popleft()
                server._abort()
            self._accepting.unpark_all()
        elif self._end is not None:
            self._end.close()

    def _abort(self) -> None:
        """Reset the connection, then close (an unaccepted server socket)."""
        assert self._end is not None
        self._end.reset()
        self.close()


def socketpair(network: FakeTCPNetwork) -> tuple[FakeTCPSocket, FakeTCPSocket, FakeTCPConnection]:
    """Two connected IPv4 sockets on ``network``, client first, and their connection.

    The client is bound to a free loopback port; the server has the next
    free one without holding it, as only a listener's sockets do.
    """
    client = FakeTCPSocket(network, AF_INET)
    loopback = LOOPBACK[AF_INET]
    client._bind(loopback, 0)
    server, connection = client._pair((loopback, network._free_port(AF_INET, loopback)))
    return client, server, connection
