"""``python -m trio_tlsretry``: the command-line tool."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
