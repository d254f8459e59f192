"""Shared bits of the command-line tools: one-line errors with exit code 2."""
from __future__ import annotations

import argparse
import sys

from ..arch.sources import resolve_spec, valid_spec  # noqa: F401 - the commands' spec readers

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_NO_RESULT = 3  # the command ran, and nothing it was to produce came out (every trial failed)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


def run_cli(prog: str, fn, argv: list[str] | None) -> int:
    """Run a command's body: an :class:`igcv_nas.errors.IGCVError` (bad input) or an OSError
    (a file the OS refused) that reaches here is one line and exit 2; any other exception is a
    bug: one line saying so and exit 1, with the traceback when ``--debug`` is given. A Ctrl-C
    that the command did not handle itself is one line and exit 130."""
    from ..errors import IGCVError
    args = sys.argv[1:] if argv is None else argv
    try:
        return fn(argv)
    except IGCVError as e:
        return fail(prog, str(e))
    except OSError as e:
        return fail(prog, f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
    except KeyboardInterrupt:  # Ctrl-C where the command has no more to say (e.g. preparing)
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one place that reports bugs
        if "--debug" in args:
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {' '.join(str(e).split())} (a bug "
              f"in igcv-nas, not in your input; rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def fail(prog: str, message: str) -> int:
    """Print ``prog: error: message`` as one line on stderr and return exit code 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2 like every other;
    every command takes ``--debug`` (a traceback instead of the one-line internal error)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.add_argument("--debug", action="store_true",
                          help="on an internal error, show the traceback")

    def error(self, message: str):  # type: ignore[override]
        sys.exit(fail(self.prog.split()[0], message))  # "igcv-latency build-lut" -> the tool
