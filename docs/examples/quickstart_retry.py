"""Finishing a send_all that a timeout interrupted (docs/quickstart.rst)."""

from __future__ import annotations

import logging

import trio

from trio_tlsretry import TLSStream

log = logging.getLogger(__name__)


async def send_patiently(
    stream: TLSStream, message: bytes, *, stall_timeout: float = 5, attempts: int = 3
) -> None:
    """Send ``message`` whole, or close the stream after ``attempts`` stalls."""
    for _ in range(attempts):
        with trio.move_on_after(stall_timeout):
            await stream.send_all(message)  # a retry resumes where the last one stopped
            return
        # stall_timeout seconds passed and the peer is still not reading.
        log.warning("send stalled, %d bytes to go", stream.statistics().pinned_bytes)
    # Not aclose(): it would try to send the rest first, to a peer that does not read.
    await trio.aclose_forcefully(stream)
    raise TimeoutError(f"the peer read nothing for {attempts * stall_timeout} seconds")
