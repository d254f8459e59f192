"""``igcv-search --flops 300M [options]``: search a space of IGC networks under budgets.

Optuna proposes architectures, Ray Tune trains the proxy of each in parallel (local Ray on this
machine, or an existing cluster with --address), and the run directory records everything
(resume with --resume RUN_DIR). Bad input: one line on stderr, exit code 2, nothing written.

This module only parses and prints: every rule (checks, defaults, resume, LUT, data, the run
lock) is :func:`igcv_nas.search.session.prepare_search` and
:meth:`igcv_nas.search.session.PreparedSearch.run`.
"""
from __future__ import annotations

import os
import sys

from ..arch.cost import human
from ..search.settings import (FLOPS_MIN_FRACTION, LATENCY_PREDICTORS, OBJECTIVES, PROXY_MODES,
                               SAMPLERS, SCHEDULERS, TRAINING_SCORES, ZERO_COST_METRICS,
                               SearchError)
from ..search.session import DEFAULT_SPACE, PreparedSearch, budget_label, prepare_search
# their home before igcv_nas.search.session (imported from here by older code)
from ..search.session import check_local_resources, check_reachable, startup_lines  # noqa: F401
from ..arch.space import available_spaces
from ..units import parse_count, parse_duration
from ._common import (EXIT_INTERRUPTED, EXIT_NO_RESULT, EXIT_TERMINATED, OneLineParser,
                      run_cli)

PROG = "igcv-search"


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    b = ap.add_argument_group("budgets (counted at --target, enforced before any training)")
    b.add_argument("--flops", help="MACs budget: 300M, 0.3G or 300000000 (FLOPs = 2 x MACs; "
                                  "default none)")
    b.add_argument("--flops-min", help=f"floor of the MACs band: nothing cheaper is trained "
                                       f"(default {FLOPS_MIN_FRACTION:g} x --flops; 0: no floor)")
    b.add_argument("--params", help="parameter budget: 3.5M (default none)")
    b.add_argument("--latency", help="latency budget on --device, e.g. 15ms (predicted by the "
                                       "LUT; default none)")
    b.add_argument("--device", default=None, help="latency device: cpu or cuda (default cpu)")
    b.add_argument("--lut", default=None, help="latency lookup table file (built there if missing; "
                                                 "default: built as RUN_DIR/latency_lut.json)")
    b.add_argument("--latency-predictor", choices=LATENCY_PREDICTORS,
                   help="lut (default: sum of measured pieces, measuring new ones) or learned "
                        "(kernel-level regressor from the LUT; measures nothing)")
    s = ap.add_argument_group("search")
    s.add_argument("--space", help=f"space name ({', '.join(available_spaces())}) or a YAML file "
                                   f"(default {DEFAULT_SPACE}, which contains IGCV3-D)")
    s.add_argument("--target", help="where budgets are counted: space (its own target; 224x224, "
                                    "1000 classes for the shipped spaces), imagenet, cifar10, "
                                    "cifar100 or RES:CLASSES (default space)")
    s.add_argument("--trials", type=int, help="architectures to evaluate (default 20)")
    s.add_argument("--time-budget", help="stop after this long, e.g. 2h (default none)")
    s.add_argument("--objective", choices=OBJECTIVES, help="accuracy (default) or pareto "
                                                           "(accuracy vs MACs)")
    s.add_argument("--sampler", choices=SAMPLERS, help="tpe (default; multivariate), evolution "
                                                       "(regularized evolution), nsga2 or random")
    s.add_argument("--seed", type=int, help="sampler seed, 0..2^31-1 (default 0; a resumed attempt "
                                            "k uses seed + 7919 (k-1))")
    p = ap.add_argument_group("proxy evaluation")
    p.add_argument("--dataset", help="cifar10 (default), cifar100 or an image-folder path")
    p.add_argument("--data-dir", help="where the data set is (default $IGCV_DATA_DIR or "
                                      "~/.cache/igcv-nas/data; CIFAR is downloaded there if "
                                      "missing)")
    p.add_argument("--proxy", choices=PROXY_MODES, help="training (default), zero-cost or both")
    p.add_argument("--zero-cost-metric", choices=ZERO_COST_METRICS,
                   help="the score of --proxy zero-cost (default synflow)")
    p.add_argument("--epochs", type=int, help="proxy epochs (default: the device budget)")
    p.add_argument("--steps", type=int,
                   help="proxy training steps instead of epochs (default: the device budget's "
                        "epochs)")
    p.add_argument("--batch-size", type=int,
                   help="proxy batch size (default: the device budget: 32 on a CPU, 512 on CUDA)")
    p.add_argument("--lr", type=float,
                   help="proxy peak learning rate (default: the device budget: 0.05 on a CPU, "
                        "0.4 on CUDA)")
    p.add_argument("--train-fraction", type=float,
                   help="fraction of the training split used (default: the device budget: 0.06 "
                        "on a CPU, 1 on CUDA)")
    p.add_argument("--val-size", type=int, help="held-out validation images scored (default 5,000)")
    p.add_argument("--scheduler", choices=SCHEDULERS,
                   help="ladder (default: the best quarter trained 3x longer, the finalists "
                        "re-trained with 2 fresh seeds), asha (early stopping by epoch), none")
    p.add_argument("--no-asha", action="store_true", help="the same as --scheduler none")
    p.add_argument("--score", choices=tuple(TRAINING_SCORES),
                   help="training score ranked by: val_acc (default), val_loss, tse (sum of "
                        "training losses); lower is better for the last two")
    r = ap.add_argument_group("resources")
    r.add_argument("--cpus-per-trial", type=float,
                   help="CPUs per trial (default 1; on a GPU cluster the CPU share of the "
                        "smallest GPU node)")
    r.add_argument("--gpus-per-trial", type=float, help="default 1 when the cluster has GPUs")
    r.add_argument("--max-concurrent", type=int, help="default: as many as the resources allow")
    r.add_argument("--address", help="join a Ray cluster: HOST:PORT of its head (ray start "
                                     "--head), auto (the cluster this machine's `ray start` "
                                     "joined) or local (a new private instance); default "
                                     "$RAY_ADDRESS when set (as under `ray job submit`), else "
                                     "local")
    r.add_argument("--storage-path", help="Ray Tune storage for trial checkpoints: a folder "
                                          "every node sees (NFS) or a URI such as "
                                          "s3://bucket/prefix (endpoint and keys from the AWS_* "
                                          "variables); default RUN_DIR/ray")
    r.add_argument("--max-failures", type=int, help="retries of a trial whose worker dies "
                                                    "(from its checkpoint; default 2)")
    st = ap.add_argument_group("study (one search, many drivers)")
    st.add_argument("--storage", metavar="URL",
                    help="the Optuna study's storage, shared by every driver given the same URL "
                         "and --study-name: postgresql://USER@HOST/DB, mysql://..., "
                         "sqlite:///ABS/PATH.db (RDB) or grpc://HOST:PORT (Optuna's gRPC "
                         "storage proxy); no password in the URL (it is recorded in run.json: "
                         "use PGPASSWORD or ~/.pgpass); default RUN_DIR/study.journal (one "
                         "driver); implies --scheduler asha")
    st.add_argument("--study-name", help="the study's name in --storage (default igcv-search)")
    o = ap.add_argument_group("run directory")
    o.add_argument("--run-dir", help="default runs/<time>-<space>-<budget>")
    o.add_argument("--resume", metavar="RUN_DIR", help="continue the search recorded there "
                                                             "(default: a new search)")
    o.add_argument("--force", action="store_true",
                   help="with --resume: accept a changed space, budget or proxy")
    o.add_argument("--quiet", action="store_true", help="log lines instead of a live display")
    return ap


def _budgets(args) -> dict:
    out = {}
    if args.flops is not None:
        out["macs"] = parse_count(args.flops, "--flops")
    if args.flops_min is not None:
        out["macs_min"] = 0 if args.flops_min.strip() == "0" else parse_count(args.flops_min,
                                                                              "--flops-min")
    if args.params is not None:
        out["params"] = parse_count(args.params, "--params")
    if args.latency is not None:
        if str(args.latency).strip().replace(".", "", 1).isdigit():
            raise SearchError(f"--latency {args.latency!r} has no unit; accepted: a duration "
                              f"with its unit, e.g. {args.latency}ms or {args.latency}s")
        out["latency_ms"] = parse_duration(args.latency, "--latency") * 1000.0
    if args.device is not None:
        if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
            raise SearchError(f"--device {args.device!r}; accepted: cpu, cuda, cuda:N")
        out["latency_device"] = args.device
    if args.lut is not None:
        out["lut"] = os.path.abspath(args.lut)
    if args.latency_predictor is not None:
        out["latency_predictor"] = args.latency_predictor
    return out


def _explicit(args) -> dict:
    """Settings given on the command line (None = not given)."""
    d = {"space": args.space, "target": args.target, "dataset": args.dataset,
         "data_dir": os.path.abspath(args.data_dir) if args.data_dir else None,
         "trials": args.trials, "objective": args.objective, "proxy": args.proxy,
         "zero_cost_metric": args.zero_cost_metric, "sampler": args.sampler, "seed": args.seed,
         "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
         "max_concurrent": args.max_concurrent, "address": args.address,
         "max_failures": args.max_failures, "storage": args.storage,
         "study_name": args.study_name,
         "storage_path": (args.storage_path if args.storage_path is None or "://" in
                          args.storage_path else os.path.abspath(args.storage_path))}
    if args.time_budget is not None:
        d["time_budget_s"] = parse_duration(args.time_budget, "--time-budget")
    if args.no_asha:
        d["scheduler"] = "none"
    if args.scheduler is not None:
        d["scheduler"] = args.scheduler
    if args.score is not None:
        d["score_by"] = args.score
    d.update(_budgets(args))
    return {k: v for k, v in d.items() if v is not None}


def _proxy_overrides(args) -> dict:
    return {k: v for k, v in (("epochs", args.epochs), ("steps", args.steps),
                              ("batch_size", args.batch_size), ("lr", args.lr),
                              ("train_fraction", args.train_fraction),
                              ("val_size", args.val_size)) if v is not None}


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


def _main(argv: list[str] | None) -> int:
    """Parse -> :func:`igcv_nas.search.session.prepare_search` -> run -> print."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    given = _explicit(args)
    command = [PROG] + list(sys.argv[1:] if argv is None else argv)
    with prepare_search(given, resume=args.resume, run_dir=args.run_dir, force=args.force,
                        proxy_budget=_proxy_overrides(args), command=command, log=_say) as prep:
        return _run(prep, args)


def _run(prep: PreparedSearch, args) -> int:
    from ..search.progress import Progress, results_tables
    shown: list[Progress] = []

    def on_start(p: PreparedSearch) -> None:
        _say(f"run directory {p.run_dir.path}")
        for line in p.describe():
            _say(line)
        shown.append(Progress(f"{p.space.name} {budget_label(p.settings)} -> "
                              f"{p.run_dir.path.name}", quiet=args.quiet))

    def close() -> None:
        for prog in shown:
            prog.close()

    def lost(message: str) -> None:  # the Ray head is gone; the process ends after this
        close()
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)

    try:
        out = prep.run(lambda sm: shown and shown[0].update(sm), on_start, quiet=True,
                       on_lost=lost)
    except KeyboardInterrupt:
        close()
        if prep.phase == "connecting":
            how = "terminated (SIGTERM)" if prep.terminated else "interrupted"
            print(f"{PROG}: {how} while Ray was starting; nothing was searched",
                  file=sys.stderr)
            return EXIT_TERMINATED if prep.terminated else EXIT_INTERRUPTED
        if prep.phase in ("searching", "done"):
            return _interrupted(prep)
        then = ("nothing was written" if prep.run_dir is None  # a new run, no directory yet
                else f"continue with: {PROG} --resume {prep.run_dir.path}")
        print(f"{PROG}: interrupted before the search started; {then}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        close()
    settings, run = prep.settings, prep.run_dir
    results_tables(out.rows, out.pareto, settings.score)
    sm = out.summary
    if sm.message:
        print(f"{PROG}: {sm.message}")
    if out.interrupted:
        return _interrupted(prep)
    print(f"{PROG}: {sm.done} trials evaluated ({sm.complete} complete, {sm.pruned} pruned, "
          f"{sm.failed} failed; {sm.over_budget} over budget, {sm.below_band} below the band and "
          f"{sm.duplicates} duplicates never trained); best in {run.path / 'best.json'}; table "
          f"in {run.path / 'trials.csv'}")
    print(f"{PROG}: {best_line(out.best, settings.score)}")
    if sm.done and not sm.complete and sm.failed == sm.done:
        first = next((r.get("reason") for r in out.rows
                      if r.get("status") == "failed" and r.get("reason")), "no reason recorded")
        print(f"{PROG}: error: every evaluated architecture failed ({sm.failed} of {sm.done}); "
              f"the first: {' '.join(str(first).split())}", file=sys.stderr)
        return EXIT_NO_RESULT
    return 0


def _interrupted(prep: PreparedSearch) -> int:
    how = "terminated (SIGTERM)" if prep.terminated else "interrupted"
    print(f"{PROG}: {how}; continue with: {PROG} --resume {prep.run_dir.path}")
    return EXIT_TERMINATED if prep.terminated else EXIT_INTERRUPTED


def best_line(best: dict | None, score: str) -> str:
    if not best:
        return "no architecture completed"
    if best.get("confirmed"):
        w = best["confirmation"]["winner"]
        spread = f" +/- {w['std']:.4f} (std)" if w["std"] is not None else ""
        return (f"confirmed best: trial {best['number']} ({human(best['macs'])} MACs), {score} "
                f"{w['mean']:.4f}{spread} over {len(w['runs'])} fresh seeds "
                f"({', '.join(f'{v:.4f}' for v in w['runs'])}); first-rung score "
                f"{best.get(score, float('nan')):.4f}")
    return (f"best (not confirmed: {best.get('note', 'single score')}): trial {best['number']} "
            f"({human(best['macs'])} MACs), {score} {best[score]:.4f}")


if __name__ == "__main__":
    sys.exit(main())
