"""``igcv-export SOURCE [--trial N | --top K | --pareto] [--format json,pt,torchscript,onnx] --out DIR``

Export discovered architectures as verified artifacts. SOURCE is a run directory of
``igcv-search`` (default: its best trial), a spec JSON file or a zoo network name. Each
architecture goes to ``DIR/<trial>-<arch id>/`` (``DIR/<arch id>/`` for a spec), with
``verify.json`` beside the artifacts; exit code 1 when a verification fails, 2 on bad input.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..export import FORMATS, ExportError, export
from ..runstore import BEST_JSON, PARETO_JSON, RunDir, RunError
from ..spec import SpecError, load
from ._common import OneLineParser, fail, resolve_spec, valid_spec

PROG = "igcv-export"


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    ap.add_argument("source", help="run directory, spec JSON file or zoo network name")
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--trial", type=int, help="this trial of the run")
    sel.add_argument("--top", type=int, help="the K best complete trials of the run")
    sel.add_argument("--pareto", action="store_true", help="the run's Pareto front (accuracy vs MACs)")
    ap.add_argument("--format", default=",".join(FORMATS),
                    help=f"comma-separated subset of {','.join(FORMATS)} (default all)")
    ap.add_argument("--variant", choices=("target", "proxy"), default="target",
                    help="target: the spec budgets were counted on (default); proxy: the data "
                         "set's variant the proxy trained")
    ap.add_argument("--weights", help="trained weights for a single export (igcv-train output: "
                                      "a state_dict or a checkpoint with 'model')")
    ap.add_argument("--deploy", choices=("none", "fold", "auto", "all"), default="none",
                    help="TorchScript/ONNX in the deployment form: fold = BN folded; auto = "
                         "also collapse each 1x1 group-conv chain where that is faster on this "
                         "CPU; all = collapse every chain (default none: as built)")
    ap.add_argument("--out", required=True, help="output directory")
    return ap


def _formats(text: str) -> tuple[str, ...]:
    fs = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in fs if f not in FORMATS]
    if bad or not fs:
        raise ValueError(f"--format {text!r}; accepted: a comma-separated subset of {','.join(FORMATS)}")
    return fs


def _run_selection(run: RunDir, args) -> list[dict]:
    import pandas as pd

    from ..report import score_column
    from ..runstore import load_trials
    df = load_trials(run.path)
    score = score_column(run.meta)
    done = df[df.status == "complete"]
    if args.trial is not None:
        row = df[df.number == args.trial]
        if row.empty or not run.spec_file(args.trial).is_file():
            evaluated = ", ".join(str(n) for n in done.number) or "none"
            raise RunError(f"--trial {args.trial}: not an evaluated trial of {run.path} "
                           f"(complete trials: {evaluated})")
        rows = row
    elif args.top is not None:
        if args.top < 1:
            raise ValueError(f"--top {args.top}; accepted: an integer >= 1")
        rows = done.sort_values([score, "macs"], ascending=[False, True]).head(args.top)
    elif args.pareto:
        nums = [r["number"] for r in json.loads((run.path / PARETO_JSON).read_text())]
        rows = df[df.number.isin(nums)]
    else:
        best = json.loads((run.path / BEST_JSON).read_text()) if (run.path / BEST_JSON).is_file() else None
        if best is None:
            raise RunError(f"{run.path} has no complete trial to export yet")
        rows = df[df.number == best["number"]]
    if rows.empty:
        raise RunError(f"{run.path}: nothing to export for this selection")
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]


def _load_weights(path: str):
    import torch
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and "state_dict" in blob:
        return blob["state_dict"]
    if isinstance(blob, dict) and "model" in blob:
        return blob["model"]
    return blob


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        formats = _formats(args.format)
        src = Path(args.source)
        jobs: list[tuple[str, object, dict]] = []
        if src.is_dir():
            run = RunDir.open(src)
            meta = run.meta
            for row in _run_selection(run, args):
                n = int(row["number"])
                f = run.spec_file(n) if args.variant == "target" else run.trial_dir(n) / "proxy_spec.json"
                prov = {"run": str(run.path), "trial": n, "variant": args.variant,
                        "scores": {k: row[k] for k in row if k in ("val_acc", "best_val_acc", "epochs")
                                   or str(k).startswith("zc_")},
                        "trial_row": {k: row[k] for k in ("status", "macs", "params", "latency_ms",
                                                          "measured_latency_ms", "node")},
                        "space": meta.get("space"), "settings": meta.get("settings"),
                        "search_versions": meta.get("versions")}
                jobs.append((f"{n:05d}-{row['arch_id']}", load(f), prov))
        else:
            if any(v is not None and v is not False for v in (args.trial, args.top, args.pareto or None)):
                raise ValueError("--trial/--top/--pareto select trials of a run directory, "
                                 f"and {args.source} is not one")
            spec = valid_spec(resolve_spec(args.source), args.source)
            jobs.append((spec.arch_id, spec, {"source": str(args.source)}))
        state = None
        if args.weights:
            if len(jobs) != 1:
                raise ValueError(f"--weights applies to a single export; this selection has {len(jobs)}")
            state = _load_weights(args.weights)
    except (RunError, SpecError, ValueError, OSError) as e:
        return fail(PROG, str(e))
    failed = 0
    for name, spec, prov in jobs:
        out = Path(args.out) / name
        try:
            rep = export(spec, out, formats, state, prov, deploy_mode=args.deploy)
            print(f"{out}: " + ", ".join(f"{c['check']} ok" for c in rep["checks"]))
        except ExportError as e:
            failed += 1
            print(f"{PROG}: {' '.join(str(e).split())}", file=sys.stderr)
        except RuntimeError as e:  # e.g. weights of another architecture
            return fail(PROG, f"{name}: {str(e).splitlines()[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
