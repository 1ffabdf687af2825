"""What ``connections.py``, its server and its client processes share.

The states, the server-side phases that prove a connection reached its
state, the sizes, and the one-JSON-object-per-line control protocol spoken
over each child's stdin and stdout.
"""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any

HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB

# The connection states, in table order, and their labels.
STATES = ("idle", "handshake", "send_blocked", "behind", "after_transfer")
STATE_LABELS = {
    "idle": "idle after the handshake",
    "handshake": "mid-handshake (ClientHello sent)",
    "send_blocked": "sender blocked (echo, peer never reads)",
    "behind": "receiver behind (1 MiB unread)",
    "after_transfer": "idle after a 1 MiB transfer each way",
}

# Server implementations, in column order, and their labels.
IMPLS = ("tlsretry", "trio", "anyio")
IMPL_LABELS = {
    "tlsretry": "TLSStream",
    "trio": "trio.SSLStream",
    "anyio": "anyio TLSStream",
}

# Where a server handler is. A state is reached when every connection's
# handler is in the state's final phase (and the socket counters agree).
ACCEPTED = "accepted"
HANDSHAKING = "handshaking"
RECEIVING = "receiving"
SENDING = "sending"
WAITING = "waiting"
BEHIND = "behind"
IDLE = "idle"
FINAL_PHASE = {
    "idle": IDLE,
    "handshake": HANDSHAKING,
    "send_blocked": SENDING,
    "behind": BEHIND,
    "after_transfer": IDLE,
}

# "receiver behind": the client sends a HEADER_SIZE header and then
# UNREAD_SIZE bytes; the server application reads the header with one
# receive_some(HEADER_SIZE) and nothing after it.
HEADER_SIZE = 64
UNREAD_SIZE = 1 * MiB
# "after_transfer": the client sends TRANSFER_SIZE bytes, the server reads
# them all and answers with TRANSFER_SIZE bytes in one send_all.
TRANSFER_SIZE = 1 * MiB
# "send_blocked": a client gives up (and the run fails) if the server has
# taken this much from it without its echo blocking.
SEND_BLOCKED_CAP = 64 * MiB


def rss_bytes() -> int:
    """This process's resident set size, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def write_message(fd: int, message: dict[str, Any]) -> None:
    """Write one JSON object as one line to ``fd`` (a pipe)."""
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]


class LineReader:
    """Lines from a pipe file descriptor, each read bounded by a timeout."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def read_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("the process closed its end of the pipe")
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RuntimeError(message["error"])
        return message
