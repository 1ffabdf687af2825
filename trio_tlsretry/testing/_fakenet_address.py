"""Addresses on the fake TCP network: hosts, socket addresses and connect records.

The smallest part of the fake network (``_fakenet.py`` tells how the parts
fit): constants and pure helpers that the socket and network parts share,
and the two public records, :class:`FakeHost` and :class:`ConnectAttempt`.
Imports no other part.
"""

from __future__ import annotations

import ipaddress
import socket as stdlib_socket
from dataclasses import dataclass
from typing import Literal

from .._stream import encode_server_hostname

__all__ = [
    "AF_INET",
    "AF_INET6",
    "IPPROTO_TCP",
    "LOOPBACK",
    "SOCK_STREAM",
    "WILDCARD",
    "ConnectAttempt",
    "ConnectOutcome",
    "FakeHost",
    "SocketAddress",
    "encode_name",
    "family_of",
    "normalise_ip",
]

AF_INET = stdlib_socket.AF_INET
AF_INET6 = stdlib_socket.AF_INET6
SOCK_STREAM = stdlib_socket.SOCK_STREAM
IPPROTO_TCP = stdlib_socket.IPPROTO_TCP

#: An IPv4 ``(host, port)`` or IPv6 ``(host, port, flowinfo, scope_id)`` address.
SocketAddress = tuple[str, int] | tuple[str, int, int, int]
#: How a ``connect`` ended (:attr:`ConnectAttempt.outcome`).
ConnectOutcome = Literal["connected", "refused", "unreachable", "timed out", "cancelled"]

#: The address that binds every address of a family, and the loopback one.
WILDCARD: dict[int, str] = {AF_INET: "0.0.0.0", AF_INET6: "::"}
LOOPBACK: dict[int, str] = {AF_INET: "127.0.0.1", AF_INET6: "::1"}


def normalise_ip(text: str) -> tuple[int, str] | None:
    """``(family, canonical text)`` of an IP literal, ``None`` for anything else."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return (AF_INET if address.version == 4 else AF_INET6), str(address)


def family_of(ip: str) -> int:
    """The family of a canonical address (IPv6 ones, and only they, contain a colon)."""
    return AF_INET6 if ":" in ip else AF_INET


def encode_name(name: str | bytes) -> str:
    """The form Trio hands a resolver: IDNA 2008 A-labels, lower case, no final dot."""
    if isinstance(name, bytes):
        name = name.decode("ascii")
    # The same IDNA 2008 (UTS 46) encoding Trio applies (its own helper for
    # it is public only in recent Trio releases).
    return encode_server_hostname(name).lower().rstrip(".")


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
