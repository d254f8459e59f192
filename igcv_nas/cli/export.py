"""igcv-export SOURCE [--trial N | --top K | --pareto] [--format json,pt,torchscript,onnx] --out OUT

Export discovered architectures as verified artifacts. SOURCE is a run directory of igcv-search
(default: its best trial), a spec JSON file or a zoo network name. Each architecture goes to
OUT/<trial>-<arch id>/ (OUT/<arch id>/ for a spec), with verify.json beside the artifacts. The
weights are the initialisation (untrained; a search keeps no trained weights) unless --weights
gives trained ones: train with igcv-train SPEC --out T, then igcv-export T/spec.json --weights
T/weights.pt --out OUT. An export that fails leaves no directory behind. Re-exporting into an
existing OUT/<name>/ replaces only the files an export wrote there (listed in its spec.json) and
leaves every other file alone; it refuses, before writing anything, when such a file has the name
of one it would write. Exit code 1 when a verification fails, 2 on bad input.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import IGCVError
from ..artifacts.export import DEPLOY_MODES, FORMATS, VARIANTS, ExportResult, prepare_export
from ._common import EXIT_INTERRUPTED, OneLineParser, fail, run_cli

PROG = "igcv-export"


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    ap.add_argument("source", help="run directory, spec JSON file or zoo network name")
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--trial", type=int,
                     help="this trial of the run (default: the run's best trial)")
    sel.add_argument("--top", type=int,
                     help="the K best distinct architectures of the run (with the ladder: ranked "
                          "by their most-trained score, the confirmed winner first; default: "
                          "the best only)")
    sel.add_argument("--pareto", action="store_true",
                     help="the run's Pareto front (accuracy vs MACs)")
    ap.add_argument("--format", default=",".join(FORMATS),
                    help=f"comma-separated subset of {','.join(FORMATS)} (default all)")
    ap.add_argument("--variant", choices=VARIANTS, default=VARIANTS[0],
                    help="target: the spec budgets were counted on (default); proxy: the data "
                         "set's variant the proxy trained")
    ap.add_argument("--weights", help="trained weights for a single export: igcv-train's "
                                      "weights.pt (or its checkpoint.pt, or a plain state_dict); "
                                      "default: the initialisation, untrained")
    ap.add_argument("--deploy", choices=DEPLOY_MODES, default=DEPLOY_MODES[0],
                    help="TorchScript/ONNX in the deployment form: fold = BN folded; auto = "
                         "also collapse each 1x1 group-conv chain where that is faster on this "
                         "CPU; all = collapse every chain (default none: as built)")
    ap.add_argument("--out", required=True, help="output directory")
    return ap


def _check_words(rep: dict) -> str:
    return ", ".join(f"{c['check']} " + ("ok" if c["ok"] else f"skipped ({c['skipped']})")
                     for c in rep["checks"])


def _train_hint(specs: list[tuple[Path, str]], out: str) -> list[str]:
    """The commands that train the exported architectures and export the trained weights."""
    lines = []
    for spec_json, name in specs:
        t = Path("trained") / name
        lines += [f"  igcv-train {shlex.quote(str(spec_json))} --epochs 200 --out "
                  f"{shlex.quote(str(t))}",
                  f"  igcv-export {shlex.quote(str(t / 'spec.json'))} --weights "
                  f"{shlex.quote(str(t / 'weights.pt'))} --out {shlex.quote(out)}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


def _main(argv: list[str] | None) -> int:
    """Parse -> :func:`igcv_nas.artifacts.export.prepare_export` -> run -> print."""
    args = _parser().parse_args(argv)
    try:
        prep = prepare_export(args.source, args.out, trial=args.trial, top=args.top,
                              pareto=args.pareto, formats=args.format, variant=args.variant,
                              weights=args.weights or None, deploy=args.deploy)
    except (IGCVError, OSError) as e:
        return fail(PROG, str(e))

    def show(res: ExportResult) -> None:
        if res.error is not None:
            print(f"{PROG}: {' '.join(str(res.error).split())}", file=sys.stderr)
            return
        w = res.report["weights"]
        what = f"weights {'trained' if w['trained'] else 'UNTRAINED'}: {w['source']}"
        print(f"{res.out}: {what}; checks: {_check_words(res.report)}", flush=True)

    try:
        results = prep.run(show)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the export in progress was removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    untrained = [(r.spec_json, r.name) for r in results if r.ok and not r.trained]
    if untrained:
        n = len(untrained)
        which = "this export holds" if n == 1 else f"these {n} exports hold"
        print(f"{PROG}: WARNING: {which} the initialisation, NOT trained weights: its outputs "
              "are meaningless (the checks only show that every artifact computes the same "
              "function). Train and export trained weights with:", file=sys.stderr)
        for ln in _train_hint(untrained, args.out):
            print(ln, file=sys.stderr)
    return 1 if any(not r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
