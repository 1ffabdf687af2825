"""The pinned write: one immutable snapshot of a caller's ``send_all`` data.

OpenSSL requires a write that failed with ``SSL_ERROR_WANT_READ`` to be retried
with the same arguments. Over memory BIOs it does not check (a retry with other
bytes is silently accepted), so this object is what enforces the rule: the
engine only ever offers :attr:`PinnedWrite.chunk` to ``SSLObject.write``, and
that attribute keeps naming the *same* ``memoryview`` object until the engine
has accepted it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PinnedWrite", "snapshot"]


def snapshot(data: object) -> bytes:
    """Return an immutable copy of the bytes-like ``data``.

    ``bytes`` is returned as is (it cannot change); anything else that exports
    the buffer protocol is copied exactly once. ``str``, ``int`` and other
    non-buffer objects raise :exc:`TypeError` (``bytes(5)`` would silently make
    five zero bytes, so ``bytes()`` is not used for the check).
    """
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        raise TypeError("send_all() needs a bytes-like object, not str; encode it first")
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"send_all() needs a bytes-like object, not {type(data).__name__}"
        ) from None
    with view:
        return view.tobytes()


class PinnedWrite:
    """The plaintext of one ``send_all`` call and how far it has got.

    Attributes:
      source: the object the caller passed, kept only for an identity check
        (``data is pinned.source``) that tells a retry from a new message.
      data: the immutable snapshot whose slices are fed to the TLS engine.
      accepted: bytes of :attr:`data` the engine has encrypted.
      delivered: bytes of :attr:`data` whose ciphertext has been handed to the
        transport in full. ``delivered <= accepted``.
      chunk: the slice currently offered to ``SSLObject.write``; ``None`` when
        no write is outstanding. Once set it is never replaced until accepted.
    """

    __slots__ = ("_view", "accepted", "chunk", "data", "delivered", "source")

    def __init__(self, source: object, data: bytes) -> None:
        self.source: Final = source
        self.data: Final = data
        self._view = memoryview(data)
        self.accepted = 0
        self.delivered = 0
        self.chunk: memoryview | None = None

    @property
    def unaccepted(self) -> int:
        """Plaintext bytes the engine has not encrypted yet."""
        return len(self.data) - self.accepted

    @property
    def undelivered(self) -> int:
        """Plaintext bytes whose ciphertext has not fully reached the transport."""
        return len(self.data) - self.delivered

    def next_chunk(self, limit: int) -> memoryview:
        """The slice to offer to the engine: the outstanding one if any.

        A fresh slice of at most ``limit`` bytes is cut only when no earlier
        slice is outstanding, so a retry always passes the identical object.
        """
        if self.chunk is None:
            self.chunk = self._view[self.accepted : self.accepted + limit]
        return self.chunk

    def accept_chunk(self) -> None:
        """The engine encrypted the whole outstanding chunk."""
        chunk = self.chunk
        if chunk is None:  # pragma: no cover - internal misuse
            raise RuntimeError("accept_chunk() without an outstanding chunk")
        self.accepted += len(chunk)
        self.chunk = None

    def mark_delivered(self) -> None:
        """All ciphertext for the accepted plaintext has reached the transport."""
        self.delivered = self.accepted

    def release(self) -> None:
        """Drop the buffer export so ``data`` can be freed promptly."""
        self.chunk = None
        self._view.release()
