"""Shared bits of the command-line tools: one-line errors with exit code 2."""
from __future__ import annotations

import sys

EXIT_BAD_INPUT = 2


def fail(prog: str, message: str) -> int:
    """Print ``prog: error: message`` as one line on stderr and return exit code 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_BAD_INPUT
