"""What ``connections.py``, its server and its client processes share.

The states, the server-side phases that prove a connection reached its
state, and the sizes. The processes are started, and spoken to, with
``_harness``'s JSON lines; the implementations are ``_harness.TRIO_IMPLS``.
"""

from __future__ import annotations

# Run as a script (or imported by one), so this directory is on sys.path.
from _harness import MiB

# The connection states, in table order, and their labels.
STATES = ("idle", "handshake", "send_blocked", "behind", "after_transfer")
STATE_LABELS = {
    "idle": "idle after the handshake",
    "handshake": "mid-handshake (ClientHello sent)",
    "send_blocked": "sender blocked (echo, peer never reads)",
    "behind": "receiver behind (1 MiB unread)",
    "after_transfer": "idle after a 1 MiB transfer each way",
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
