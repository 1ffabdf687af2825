"""The fake TCP network itself: hosts, ports, and Trio's two hooks.

The part of the fake network that a test holds (``_fakenet.py`` tells how
the parts fit): :class:`FakeTCPNetwork` keeps the hosts, the blackholes, the
bound ports and the record of connections and attempts; its socket factory
and resolver are what :meth:`FakeTCPNetwork.install` hands Trio. Its sockets
ask it for addresses and ports through the methods under "the sockets'
interface", and it never touches a socket's fields.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeAlias

import trio

from ._fakenet_address import (
    AF_INET,
    AF_INET6,
    IPPROTO_TCP,
    LOOPBACK,
    SOCK_STREAM,
    WILDCARD,
    ConnectAttempt,
    FakeHost,
    SocketAddress,
    encode_name,
    family_of,
    normalise_ip,
)
from ._fakenet_pipe import FakeTCPConnection, check_latency, check_send_buffer, os_error
from ._fakenet_socket import FakeTCPSocket, socketpair

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FakeTCPNetwork"]

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
_NAME_UNKNOWN = (stdlib_socket.EAI_NONAME, "Name or service not known")

# Not real descriptors: far above any process's descriptor limit, so a
# descriptor call on one fails with EBADF instead of touching a real file.
_FAKE_FILENO_BASE = 1 << 30
_EPHEMERAL_PORTS = range(49152, 65536)


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
        check_latency(latency)
        check_send_buffer(send_buffer)
        check_latency(connect_timeout)
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
        self._listeners: dict[tuple[int, str, int], FakeTCPSocket] = {}
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
        key = encode_name(name)
        if key in self._hosts:
            raise ValueError(f"there is already a host named {name!r}")
        if not addresses:
            raise ValueError("a host needs at least one address")
        canonical: list[str] = []
        for address in addresses:
            parsed = normalise_ip(address)
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
        parsed = normalise_ip(address)
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

    def __exit__(self, *exc_info: object) -> None:
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
        client, server, connection = socketpair(self)
        if self.on_connect is not None:
            self.on_connect(connection)
        return client, server

    # ------------------------------------------------ the sockets' interface
    #
    # Called by this network's sockets and resolver, never by a test. None
    # of them reads or writes a socket's fields: a socket is only a key here.

    def _allocate_fileno(self) -> int:
        """A number for a new socket's ``fileno()`` that no real descriptor has."""
        self._filenos += 1
        return _FAKE_FILENO_BASE + self._filenos

    def _lookup(self, name: str, family: int) -> list[str]:
        """The addresses of host ``name`` (encoded) of ``family`` (0: all), in order."""
        host = self._hosts.get(name)
        if host is None:
            return []
        return [ip for ip in host.addresses if family in (0, family_of(ip))]

    def _host_with(self, ip: str) -> FakeHost | None:
        """The host that has the canonical address ``ip``, if any."""
        return self._host_of.get(ip)

    def _has_address(self, ip: str) -> bool:
        """Whether a host has the canonical address ``ip``."""
        return ip in self._host_of

    def _is_blackholed(self, ip: str, port: int) -> bool:
        """Whether :meth:`blackhole` drops connections to ``ip``:``port``."""
        return (ip, port) in self._blackholes or (ip, None) in self._blackholes

    def _bind(self, sock: FakeTCPSocket, family: int, ip: str, port: int) -> tuple[str, int]:
        """Bind ``sock`` to ``ip``:``port`` (port 0: a free one) and return the address.

        Raises ``EADDRNOTAVAIL`` for an address no host has and
        ``EADDRINUSE`` for one that is taken.
        """
        if ip != WILDCARD[family] and not self._has_address(ip):
            raise os_error(errno.EADDRNOTAVAIL, f"no host has the address {ip}")
        if port == 0:
            port = self._free_port(family, ip)
        elif self._in_use(family, ip, port):
            raise os_error(errno.EADDRINUSE, f"{ip} port {port}")
        self._bound[family, ip, port] = sock
        self._port_users[family, port] += 1
        return ip, port

    def _unbind(self, sock: FakeTCPSocket, family: int, address: tuple[str, int]) -> None:
        """Free ``address`` if ``sock`` holds it (it may have been given it without binding)."""
        key = _key(family, address)
        if self._bound.get(key) is sock:
            del self._bound[key]
            self._port_users[key[0], key[2]] -= 1
        if self._listeners.get(key) is sock:
            del self._listeners[key]

    def _listen(self, sock: FakeTCPSocket, family: int, address: tuple[str, int]) -> None:
        """Make ``sock``, bound to ``address``, the listener there until it unbinds."""
        self._listeners[_key(family, address)] = sock

    def _listener_for(self, family: int, ip: str, port: int) -> FakeTCPSocket | None:
        """The socket listening on ``ip``:``port`` or on the wildcard address and ``port``."""
        for address in (ip, WILDCARD[family]):
            sock = self._listeners.get((family, address, port))
            if sock is not None:
                return sock
        return None

    def _free_port(self, family: int, ip: str) -> int:
        """The next ephemeral port that binding ``ip`` may take (nothing is bound)."""
        ports = _EPHEMERAL_PORTS
        for _ in ports:
            port = ports[self._next_port % len(ports)]
            self._next_port += 1
            if not self._in_use(family, ip, port):
                return port
        raise os_error(errno.EADDRINUSE, "no free port left")

    def _in_use(self, family: int, ip: str, port: int) -> bool:
        """Whether binding ``ip``:``port`` would clash (a wildcard clashes with any address)."""
        wildcard = WILDCARD[family]
        if ip == wildcard:
            return self._port_users[family, port] > 0
        return (family, ip, port) in self._bound or (family, wildcard, port) in self._bound

    def _new_connection(
        self, client_address: SocketAddress, server_address: SocketAddress
    ) -> FakeTCPConnection:
        """A connection with this network's defaults, added to :attr:`connections`."""
        connection = FakeTCPConnection(
            client_address, server_address, self.send_buffer, self.latency
        )
        self.connections.append(connection)
        return connection


class _SocketFactory(trio.abc.SocketFactory):
    def __init__(self, network: FakeTCPNetwork) -> None:
        self._network = network

    def socket(
        self,
        family: stdlib_socket.AddressFamily | int = AF_INET,
        type: stdlib_socket.SocketKind | int = SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        if family not in (AF_INET, AF_INET6):
            raise os_error(errno.EAFNOSUPPORT, "the fake network has IPv4 and IPv6 only")
        # Trio's flags (SOCK_NONBLOCK, SOCK_CLOEXEC) may be or-ed into the type.
        if type & 0xF != SOCK_STREAM:
            raise os_error(errno.EPROTONOSUPPORT, "the fake network has TCP only")
        if proto not in (0, IPPROTO_TCP):
            raise os_error(errno.EPROTONOSUPPORT, "the fake network has TCP only")
        return FakeTCPSocket(self._network, family)


class _Resolver(trio.abc.HostnameResolver):
    """Names and addresses as the network's hosts have them."""

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
        number = _port_number(port)
        if family not in (0, AF_INET, AF_INET6):
            raise stdlib_socket.gaierror(stdlib_socket.EAI_FAMILY, "ai_family not supported")
        name = "" if host is None else encode_name(host)
        ips = self._addresses(host is None, name, family, flags)
        if not ips:
            raise stdlib_socket.gaierror(*_NAME_UNKNOWN)
        kind = stdlib_socket.SocketKind(type or SOCK_STREAM)
        protocol = proto or (IPPROTO_TCP if kind == SOCK_STREAM else 0)
        canonical = name if flags & stdlib_socket.AI_CANONNAME else ""
        entries: list[_AddrInfo] = []
        for ip in ips:
            if family_of(ip) == AF_INET6:
                entries.append(
                    (stdlib_socket.AF_INET6, kind, protocol, canonical, (ip, number, 0, 0))
                )
            else:
                entries.append((stdlib_socket.AF_INET, kind, protocol, canonical, (ip, number)))
            canonical = ""
        return entries

    def _addresses(self, no_host: bool, name: str, family: int, flags: int) -> list[str]:
        """The addresses ``getaddrinfo`` answers for ``name`` (encoded), in order."""
        if no_host:
            table = WILDCARD if flags & stdlib_socket.AI_PASSIVE else LOOPBACK
            return [table[f] for f in (AF_INET6, AF_INET) if family in (0, f)]
        parsed = normalise_ip(name)
        if parsed is not None:
            return [parsed[1]] if family in (0, parsed[0]) else []
        if flags & stdlib_socket.AI_NUMERICHOST:
            return []
        return self._network._lookup(name, family)

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        parsed = normalise_ip(sockaddr[0])
        if parsed is None:
            raise stdlib_socket.gaierror(*_NAME_UNKNOWN)
        ip = parsed[1]
        host = self._network._host_with(ip)
        if host is None or flags & stdlib_socket.NI_NUMERICHOST:
            if flags & stdlib_socket.NI_NAMEREQD:
                raise stdlib_socket.gaierror(*_NAME_UNKNOWN)
            return ip, str(sockaddr[1])
        return host.name, str(sockaddr[1])


def _key(family: int, address: tuple[str, int]) -> tuple[int, str, int]:
    return int(family), address[0], address[1]


def _port_number(port: bytes | str | int | None) -> int:
    """The port ``getaddrinfo`` was given, as a number (service names are unknown)."""
    if isinstance(port, bytes):
        port = port.decode("ascii", "replace")
    if port is None:
        return 0
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    raise stdlib_socket.gaierror(stdlib_socket.EAI_SERVICE, f"unknown service {port!r}")
