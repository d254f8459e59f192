"""igcv-export SOURCE [--trial N | --top K | --pareto] [--format json,pt,torchscript,onnx] --out OUT

Export discovered architectures as verified artifacts. SOURCE is a run directory of igcv-search
(default: its best trial), a spec JSON file or a zoo network name. Each architecture goes to
OUT/<trial>-<arch id>/ (OUT/<arch id>/ for a spec), with verify.json beside the artifacts. The
weights are the initialisation (untrained; a search keeps no trained weights) unless --weights
gives trained ones: train with igcv-train SPEC --out T, then igcv-export T/spec.json --weights
T/weights.pt --out OUT. An export that fails leaves no directory behind. Exit code 1 when a
verification fails, 2 on bad input.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from ..export import FILES, FORMATS, ExportError, export
from ..errors import IGCVError, InputError
from ..runstore import BEST_JSON, PARETO_JSON, RunDir, RunError
from ..spec import load
from ._common import OneLineParser, fail, resolve_spec, valid_spec, run_cli

PROG = "igcv-export"


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    ap.add_argument("source", help="run directory, spec JSON file or zoo network name")
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--trial", type=int, help="this trial of the run")
    sel.add_argument("--top", type=int, help="the K best complete trials of the run")
    sel.add_argument("--pareto", action="store_true",
                     help="the run's Pareto front (accuracy vs MACs)")
    ap.add_argument("--format", default=",".join(FORMATS),
                    help=f"comma-separated subset of {','.join(FORMATS)} (default all)")
    ap.add_argument("--variant", choices=("target", "proxy"), default="target",
                    help="target: the spec budgets were counted on (default); proxy: the data "
                         "set's variant the proxy trained")
    ap.add_argument("--weights", help="trained weights for a single export: igcv-train's "
                                      "weights.pt (or its checkpoint.pt, or a plain state_dict); "
                                      "default: the initialisation, untrained")
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
        raise InputError(f"--format {text!r}; accepted: a comma-separated subset of "
                         f"{','.join(FORMATS)}")
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
            raise InputError(f"--top {args.top}; accepted: an integer >= 1")
        rows = done.sort_values([score, "macs"], ascending=[False, True]).head(args.top)
    elif args.pareto:
        nums = [r["number"] for r in json.loads((run.path / PARETO_JSON).read_text())]
        rows = df[df.number.isin(nums)]
    else:
        best_file = run.path / BEST_JSON
        best = json.loads(best_file.read_text()) if best_file.is_file() else None
        if best is None:
            raise RunError(f"{run.path} has no complete trial to export yet")
        rows = df[df.number == best["number"]]
    if rows.empty:
        raise RunError(f"{run.path}: nothing to export for this selection")
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]


ACCEPTED_WEIGHTS = ("igcv-train's weights.pt or checkpoint.pt, an igcv-export weights.pt or a "
                    "plain state_dict")


def _load_weights(path: str) -> tuple[dict, bool]:
    """``(state_dict, trained)`` of a weights file; ValueError (one line) when it is none."""
    import pickle

    import torch
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"--weights {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"--weights {path}: a folder, not a file; accepted: "
                         f"{ACCEPTED_WEIGHTS}") from None
    except Exception as e:  # noqa: BLE001 - whatever unpickling a foreign file raises
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e):
            e = ValueError("it holds objects other than tensors and plain containers")
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise InputError(f"--weights {path}: not a torch weights file (torch.load: "
                         f"{type(e).__name__}: {first[:160]}); "
                         f"accepted: {ACCEPTED_WEIGHTS}") from None
    trained = True
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        trained = blob.get("trained", True) is not False  # an untrained igcv-export weights.pt
        blob = blob["state_dict"]
    elif isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        blob = blob["model"]
    tensors = isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values())
    if not (tensors and blob):
        raise InputError(f"--weights {path}: holds no state_dict; accepted: {ACCEPTED_WEIGHTS}")
    return blob, trained


def _check_fits(state: dict, spec, path: str) -> None:
    """ValueError naming the first mismatch when ``state`` is not weights of ``spec``."""
    from ..build import build_model
    try:
        build_model(spec).load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = lines[1] if len(lines) > 1 else lines[0]
        raise InputError(f"--weights {path}: not weights of arch {spec.arch_id} "
                         f"({why[:200]})") from None


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
                f = (run.spec_file(n) if args.variant == "target"
                     else run.trial_dir(n) / "proxy_spec.json")
                prov = {"run": str(run.path), "trial": n, "variant": args.variant,
                        "scores": {k: row[k] for k in row
                                   if k in ("val_acc", "best_val_acc", "epochs")
                                   or str(k).startswith("zc_")},
                        "trial_row": {k: row[k] for k in ("status", "macs", "params", "latency_ms",
                                                          "measured_latency_ms", "node")},
                        "space": meta.get("space"), "settings": meta.get("settings"),
                        "search_versions": meta.get("versions")}
                jobs.append((f"{n:05d}-{row['arch_id']}", load(f), prov))
        else:
            selectors = (args.trial, args.top, args.pareto or None)
            if any(v is not None and v is not False for v in selectors):
                raise InputError("--trial/--top/--pareto select trials of a run directory, "
                                 f"and {args.source} is not one")
            spec = valid_spec(resolve_spec(args.source), args.source)
            jobs.append((spec.arch_id, spec, {"source": str(args.source)}))
        state, trained = None, False
        if args.weights:
            if len(jobs) != 1:
                raise InputError("--weights applies to a single export; "
                                 f"this selection has {len(jobs)}")
            state, trained = _load_weights(args.weights)
            _check_fits(state, jobs[0][1], args.weights)
        out_root = Path(args.out)
        if out_root.exists() and not out_root.is_dir():
            raise InputError(f"--out {out_root} exists and is not a folder")
    except (IGCVError, OSError) as e:
        return fail(PROG, str(e))
    created_root = not out_root.exists()
    failed, untrained = 0, []
    try:
        for name, spec, prov in jobs:
            out = out_root / name
            try:
                rep = export(spec, out, formats, state, prov, deploy_mode=args.deploy,
                             weights_source=args.weights,
                             trained=trained if state is not None else None)
            except ExportError as e:
                failed += 1
                print(f"{PROG}: {' '.join(str(e).split())}", file=sys.stderr)
                continue
            w = rep["weights"]
            what = f"weights {'trained' if w['trained'] else 'UNTRAINED'}: {w['source']}"
            print(f"{out}: {what}; checks: {_check_words(rep)}", flush=True)
            if not w["trained"]:
                spec_json = out / FILES["json"] if "json" in formats else Path(args.source)
                untrained.append((spec_json, name))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the export in progress was removed", file=sys.stderr)
        return 130
    finally:
        if created_root and out_root.is_dir() and not any(out_root.iterdir()):
            out_root.rmdir()  # nothing was exported: leave no empty folder either
    if untrained:
        n = len(untrained)
        which = "this export holds" if n == 1 else f"these {n} exports hold"
        print(f"{PROG}: WARNING: {which} the initialisation, NOT trained weights: its outputs "
              "are meaningless (the checks only show that every artifact computes the same "
              "function). Train and export trained weights with:", file=sys.stderr)
        for ln in _train_hint(untrained, args.out):
            print(ln, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
