"""``lingering_close``: close after the peer has stopped sending, within bounds."""

from __future__ import annotations

import math
from typing import Any, Final

import trio

from ._stream import TLSStream

__all__ = ["DEFAULT_LINGER_BYTES", "DEFAULT_LINGER_SECONDS", "lingering_close"]

#: Seconds :func:`lingering_close` waits, at most, for the peer to stop sending.
DEFAULT_LINGER_SECONDS: Final = 2.0
#: Bytes of plaintext :func:`lingering_close` reads and drops, at most.
DEFAULT_LINGER_BYTES: Final = 16 * 1024 * 1024


async def lingering_close(
    stream: TLSStream[Any],
    *,
    seconds: float = DEFAULT_LINGER_SECONDS,
    max_bytes: int = DEFAULT_LINGER_BYTES,
) -> None:
    """Send ``close_notify``, read and drop what the peer still sends, then close.

    For a server that answers before it has read the whole request (an
    error for an upload that is too large, say) and closes: a plain
    :meth:`~TLSStream.aclose` closes a socket the peer is still sending to,
    the kernel answers the next bytes that arrive with a reset, and the
    peer's kernel then discards our answer before the peer has read it.
    Here the stream first sends ``close_notify`` (:meth:`~TLSStream.send_eof`)
    and keeps reading until the peer's ``close_notify`` or EOF, ``seconds``
    seconds or ``max_bytes`` of dropped data, whichever comes first, as
    nginx's lingering close does; then it closes. Errors on the way
    (a peer that resets, a TLS failure) only end the wait; the stream is
    closed in every case. A cancellation of the caller's scope closes the
    stream forcefully and propagates.

    The wait costs the peer's time, not CPU; but a peer that neither sends
    nor closes (an idle connection in a client's pool) holds it for the
    whole ``seconds``. :doc:`/closing` has the measurements behind the
    defaults.

    Raises:
      ValueError: ``seconds`` is negative or NaN, or ``max_bytes`` is less
        than 1.
    """
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"seconds must be >= 0, not {seconds!r}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, not {max_bytes!r}")
    try:
        with trio.move_on_after(seconds):
            await stream.send_eof()
            left = max_bytes
            while left > 0 and (data := await stream.receive_some(min(left, 65536))):
                left -= len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
        pass
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    await stream.aclose()
