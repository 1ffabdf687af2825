"""What a caller should catch (docs/errors.rst)."""

from __future__ import annotations

import logging

import trio

from trio_tlsretry import TLSStream

log = logging.getLogger(__name__)


async def ask(stream: TLSStream, request: bytes) -> bytes | bytearray | None:
    """The first part of the answer to ``request``; ``None`` if the connection failed."""
    try:
        await stream.send_all(request)
        return await stream.receive_some()
    except trio.BrokenResourceError as exc:
        log.warning("connection failed: %r", exc.__cause__)
        return None
    finally:
        await stream.aclose()
