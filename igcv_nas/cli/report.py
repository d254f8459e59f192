"""``igcv-report RUN_DIR [--out DIR] [--top K]``: plots and a report of a search run.

Writes pareto_macs.png (score vs MACs with the Pareto front), pareto_latency.png (when the run
has latencies), progress.png (best score so far), trials.csv, report.md and report.html into
--out (default RUN_DIR/report). Works on a finished, interrupted or still running search. Bad
input: one line on stderr, exit code 2, nothing written.
"""
from __future__ import annotations

import sys

from ..artifacts.report import DEFAULT_TOP, write_report
from ._common import OneLineParser, run_cli

PROG = "igcv-report"


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    ap.add_argument("run_dir", metavar="RUN_DIR", help="an igcv-search run directory")
    ap.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/report)")
    ap.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="K",
                    help="architectures in the top table (default 10)")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


def _main(argv: list[str] | None) -> int:
    """Parse -> :func:`igcv_nas.artifacts.report.write_report` -> print."""
    args = _parser().parse_args(argv)
    paths = write_report(args.run_dir, args.out, args.top)
    print(f"{PROG}: wrote {', '.join(p.name for p in paths)} to {paths[0].parent.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
