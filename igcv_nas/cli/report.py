"""``igcv-report RUN_DIR [--out DIR] [--top K]``: plots and a report of a search run.

Writes pareto_macs.png (score vs MACs with the Pareto front), pareto_latency.png (when the run
has latencies), progress.png (best score so far), trials.csv, report.md and report.html into
--out (default RUN_DIR/report). Works on a finished, interrupted or still running search. Bad
input: one line on stderr, exit code 2, nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..report import render, write_files
from ..errors import IGCVError
from ._common import OneLineParser, fail, run_cli

PROG = "igcv-report"


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    ap.add_argument("run_dir", metavar="RUN_DIR", help="an igcv-search run directory")
    ap.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/report)")
    ap.add_argument("--top", type=int, default=10, metavar="K",
                    help="architectures in the top table (default 10)")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.top < 1:
        return fail(PROG, f"--top {args.top}; accepted: an integer >= 1")
    out = Path(args.out) if args.out else Path(args.run_dir) / "report"
    if out.exists() and not out.is_dir():
        return fail(PROG, f"--out {out} exists and is not a folder")
    try:
        files = render(args.run_dir, args.top)  # every check, all rendering, before any write
    except IGCVError as e:
        return fail(PROG, str(e))
    try:
        paths = write_files(files, out)
    except OSError as e:
        return fail(PROG, f"cannot write the report into {out}: {e}")
    print(f"{PROG}: wrote {', '.join(p.name for p in paths)} to {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
