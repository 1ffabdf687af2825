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

The parts, each in its own module, lowest first; each talks to the others
only through the small documented methods named here, never through their
fields:

* ``_fakenet_address``: constants and helpers for addresses and names, and
  the records :class:`FakeHost` and :class:`ConnectAttempt`.
* ``_fakenet_pipe``: a connection's two byte pipes; the public
  :class:`FakeTCPConnection` (record and fault controls); and the
  ``ConnectionEnd`` that one socket holds (``FakeTCPConnection._end``), whose
  non-blocking ``send``/``receive`` raise :exc:`BlockingIOError` where a
  kernel would.
* ``_fakenet_socket``: :class:`FakeTCPSocket`. Every blocking call is its
  ``_nonblocking_helper`` around one of those non-blocking calls, which makes
  it one cancel-atomic checkpoint, as Trio's own ``_nonblocking_helper`` does
  for real sockets.
* ``_fakenet_network``: :class:`FakeTCPNetwork` (hosts, ports, the record of
  connections and attempts, the socket factory and resolver); its sockets
  bind, listen, look up and connect through its methods under "the sockets'
  interface".
"""

from __future__ import annotations

from ._fakenet_address import ConnectAttempt, FakeHost
from ._fakenet_network import FakeTCPNetwork
from ._fakenet_pipe import ConnectionSide, FakeTCPConnection
from ._fakenet_socket import FakeTCPSocket

__all__ = [
    "ConnectAttempt",
    "ConnectionSide",
    "FakeHost",
    "FakeTCPConnection",
    "FakeTCPNetwork",
    "FakeTCPSocket",
]
