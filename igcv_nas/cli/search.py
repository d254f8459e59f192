"""``igcv-search --flops 300M [options]``: search a space of IGC networks under budgets.

Optuna proposes architectures, Ray Tune trains the proxy of each in parallel (local Ray on this
machine, or an existing cluster with --address), and the run directory records everything
(resume with --resume RUN_DIR). Bad input: one line on stderr, exit code 2, nothing written.
"""
from __future__ import annotations

import os
import platform
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..cost import human
from ..errors import IGCVError
from ..fileio import write_bytes
from ..latency import LatencyError
from ..data import load_splits, resolve_data_dir
from ..runstore import RunDir, RunError
from ..search import (FLOPS_MIN_FRACTION, LATENCY_PREDICTORS, OBJECTIVES, PROXY_MODES,
                      RESUME_MUTABLE, SAMPLERS, SCHEDULERS, TRAINING_SCORES, ZERO_COST_METRICS,
                      SearchError, Settings, check_budgets, check_target, engine_record,
                      run_search)
from ..space import available_spaces, load_space
from ..units import parse_count, parse_duration
from ._common import OneLineParser, fail, run_cli

PROG = "igcv-search"
DEFAULT_SPACE = "igcv3"  # contains IGCV3-D


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    b = ap.add_argument_group("budgets (counted at --target, enforced before any training)")
    b.add_argument("--flops", help="MACs budget: 300M, 0.3G or 300000000 (FLOPs = 2 x MACs)")
    b.add_argument("--flops-min", help=f"floor of the MACs band: nothing cheaper is trained "
                                       f"(default {FLOPS_MIN_FRACTION:g} x --flops; 0: no floor)")
    b.add_argument("--params", help="parameter budget: 3.5M")
    b.add_argument("--latency", help="latency budget on --device, e.g. 15ms (predicted by the LUT)")
    b.add_argument("--device", default=None, help="latency device: cpu or cuda (default cpu)")
    b.add_argument("--lut", default=None, help="latency lookup table file (built there if missing)")
    b.add_argument("--latency-predictor", choices=LATENCY_PREDICTORS,
                   help="lut (default: sum of measured pieces, measuring new ones) or learned "
                        "(kernel-level regressor from the LUT; measures nothing)")
    s = ap.add_argument_group("search")
    s.add_argument("--space", help=f"space name ({', '.join(available_spaces())}) or a YAML file "
                                   f"(default {DEFAULT_SPACE}, which contains IGCV3-D)")
    s.add_argument("--target", help="where budgets are counted: space (its own target; 224x224, "
                                    "1000 classes for the shipped spaces), imagenet, cifar10, "
                                    "cifar100 or RES:CLASSES")
    s.add_argument("--trials", type=int, help="architectures to evaluate (default 20)")
    s.add_argument("--time-budget", help="stop after this long, e.g. 2h")
    s.add_argument("--objective", choices=OBJECTIVES, help="accuracy (default) or pareto "
                                                           "(accuracy vs MACs)")
    s.add_argument("--sampler", choices=SAMPLERS, help="tpe (default; multivariate), evolution "
                                                       "(regularized evolution), nsga2 or random")
    s.add_argument("--seed", type=int)
    p = ap.add_argument_group("proxy evaluation")
    p.add_argument("--dataset", help="cifar10 (default), cifar100 or an image-folder path")
    p.add_argument("--data-dir", help="where the data set is (default $IGCV_DATA_DIR or "
                                      "~/.cache/igcv-nas/data; CIFAR is downloaded there if "
                                      "missing)")
    p.add_argument("--proxy", choices=PROXY_MODES, help="training (default), zero-cost or both")
    p.add_argument("--zero-cost-metric", choices=ZERO_COST_METRICS,
                   help="the score of --proxy zero-cost (default synflow)")
    p.add_argument("--epochs", type=int, help="proxy epochs (default: the device budget)")
    p.add_argument("--steps", type=int, help="proxy training steps instead of epochs")
    p.add_argument("--batch-size", type=int, help="proxy batch size")
    p.add_argument("--lr", type=float, help="proxy peak learning rate")
    p.add_argument("--train-fraction", type=float, help="fraction of the training split used")
    p.add_argument("--val-size", type=int, help="validation images scored per epoch")
    p.add_argument("--scheduler", choices=SCHEDULERS,
                   help="ladder (default: the best quarter trained 3x longer, the finalists "
                        "re-trained with 2 fresh seeds), asha (early stopping by epoch), none")
    p.add_argument("--no-asha", action="store_true", help="the same as --scheduler none")
    p.add_argument("--score", choices=tuple(TRAINING_SCORES),
                   help="training score ranked by: val_acc (default), val_loss, tse (sum of "
                        "training losses); lower is better for the last two")
    r = ap.add_argument_group("resources")
    r.add_argument("--cpus-per-trial", type=float)
    r.add_argument("--gpus-per-trial", type=float, help="default 1 when the cluster has GPUs")
    r.add_argument("--max-concurrent", type=int, help="default: as many as the resources allow")
    r.add_argument("--address", help="an existing Ray cluster (ray start --head ...)")
    r.add_argument("--max-failures", type=int, help="retries of a trial whose worker dies "
                                                    "(from its checkpoint; default 2)")
    o = ap.add_argument_group("run directory")
    o.add_argument("--run-dir", help="default runs/<time>-<space>-<budget>")
    o.add_argument("--resume", metavar="RUN_DIR", help="continue the search recorded there")
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
         "max_failures": args.max_failures}
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


def _budget_overrides(args) -> dict:
    return {k: v for k, v in (("epochs", args.epochs), ("steps", args.steps),
                              ("batch_size", args.batch_size), ("lr", args.lr),
                              ("train_fraction", args.train_fraction)) if v is not None}


def _proxy_budget(settings: Settings, args) -> dict | None:
    over = _budget_overrides(args)
    if not over and args.val_size is None:
        return settings.budget
    b = settings.proxy_budget()
    try:
        train = replace(b.train, **over)
        b = replace(b, train=train, **({"val_size": args.val_size} if args.val_size else {}))
    except IGCVError as e:
        raise SearchError(f"proxy budget: {e}") from None
    return b.to_dict()


def _label(settings: Settings) -> str:
    parts = []
    for key, pre in (("macs", ""), ("params", "p"), ("latency_ms", "lat")):
        v = getattr(settings, key)
        if v is not None:
            parts.append(f"{pre}{v:g}ms" if key == "latency_ms" else
                         pre + human(v).replace(".00", ""))
    return "-".join(parts) or "nobudget"


def _versions() -> dict:
    import optuna
    import ray
    import torch
    return {"igcv_nas": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "ray": ray.__version__, "python": platform.python_version()}


def _resume_settings(run: RunDir, given: dict, force: bool) -> Settings:
    stored = run.meta.get("settings")
    if not isinstance(stored, dict):
        raise RunError(f"{run.path}/run.json has no search settings; it is not a search run")
    changed = [k for k, v in given.items()
               if k not in RESUME_MUTABLE and k != "space" and stored.get(k) != v]
    if changed and not force:
        k = changed[0]
        raise RunError(f"--resume {run.path}: {k} was {stored.get(k)!r}, now {given[k]!r}; "
                       f"only {', '.join(RESUME_MUTABLE)} may change (or pass --force)")
    try:
        return Settings.from_dict({**stored, **given, "space": stored["space"]})
    except (TypeError, KeyError) as e:
        raise RunError(f"{run.path}/run.json: the recorded settings cannot be read ({e})") from None


def _load_space_for(run: RunDir | None, given: dict, force: bool):
    if run is None:
        return load_space(given.get("space", DEFAULT_SPACE))
    space = load_space(run.space_file)
    if "space" in given:
        other = load_space(given["space"])
        if other.sha256 != space.sha256:
            if not force:
                raise RunError(f"--space {given['space']!r} differs from the space of "
                               f"{run.path} (sha256 {space.sha256[:12]} vs {other.sha256[:12]}); "
                               f"pass --force to continue with the new one")
            return other
    return space


def _latency_lut(settings: Settings, space, run_path: Path | None):
    """The LUT used to predict latency (loaded, or built and calibrated on space samples)."""
    if settings.latency_ms is None:
        return None, None
    import optuna

    from ..latency import LUT, build_lut
    from ..search import at_target
    from ..latency import resolve_device
    path = Path(settings.lut) if settings.lut else run_path / "latency_lut.json"
    if path.is_file():
        lut = LUT.load(path)
        if lut.device != str(resolve_device(settings.latency_device)):
            raise SearchError(f"--lut {path} was measured on {lut.device}, not on "
                              f"--device {settings.latency_device}; give a LUT of that device "
                              f"or a new file name to build one")
        print(f"{PROG}: using latency LUT {path} ({len(lut)} entries, {lut.device})", flush=True)
        return lut, path
    print(f"{PROG}: building a latency LUT on {settings.latency_device} at {path} "
          f"(12 sampled networks, calibrated on 8) ...", flush=True)
    sampler = optuna.samplers.RandomSampler(seed=settings.seed)
    study = optuna.create_study(sampler=sampler)
    specs = [at_target(space.sample(study.ask()), settings.target) for _ in range(12)]
    t0 = time.perf_counter()
    lut = build_lut(specs, settings.latency_device, threads=1, calibrate=8,
                    progress=lambda i, n: print(f"{PROG}: latency LUT: measured {i}/{n} networks "
                                                f"({time.perf_counter() - t0:.0f} s)", flush=True))
    return lut, path


def main(argv: list[str] | None = None) -> int:
    held: list[RunDir] = []  # a run directory whose lock this call took: released on every exit
    try:
        return run_cli(PROG, lambda a: _main(a, held), argv)
    finally:
        for run in held:
            run.unlock()


def _main(argv: list[str] | None, held: list[RunDir]) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    run: RunDir | None = None
    try:
        given = _explicit(args)
        if args.resume:
            if args.run_dir:
                raise SearchError("give either --resume RUN_DIR or --run-dir, not both")
            run = RunDir.open(args.resume)
            run.lock()  # before anything else: a live search on it is refused at once
            held.append(run)
            run.check_resumable()
            settings = _resume_settings(run, given, args.force)
        else:
            settings = Settings.from_dict({"space": DEFAULT_SPACE, **given})
        check_local_resources(settings)  # every setting is checked before Ray starts
        if settings.address:
            check_reachable(settings.address)
        space = _load_space_for(run, given, args.force)
        check_target(space, settings.target)
        if not args.resume:
            _proxy_budget(settings, args)  # bad overrides fail here, before any work
            if args.run_dir:
                RunDir.check_new(args.run_dir)
        elif _budget_overrides(args) or args.val_size is not None:
            new = _proxy_budget(settings, args)
            if new != settings.budget and not args.force:
                raise RunError(f"--resume {run.path}: the proxy budget differs from the run's; "
                               f"pass --force to change it")
            settings = replace(settings, budget=new)
        settings = check_budgets(settings, space)
        lut = lut_path = None
        if settings.latency_ms is not None and settings.lut:  # a given LUT is checked up front
            lut, lut_path = _latency_lut(settings, space, None)
        splits = load_splits(settings.dataset, resolve_data_dir(settings.data_dir),
                             val_size=5000, seed=0, download_ok=True)
    except (IGCVError, LatencyError) as e:
        return fail(PROG, str(e))

    from ..raytune import connect
    try:
        resources = connect(settings.address, quiet=True)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted while Ray was starting; nothing was searched", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - any connection failure is the user's address
        where = f" at {settings.address}" if settings.address else ""
        return fail(PROG, f"cannot start or reach Ray{where}: {e}")
    signal.signal(signal.SIGTERM, _terminate)  # after ray.init, which installs its own
    gpus = resources.get("GPU", 0)
    if args.gpus_per_trial is None and not args.resume and gpus > 0:
        settings = replace(settings, gpus_per_trial=1.0)
    if args.cpus_per_trial is None and not args.resume and settings.gpus_per_trial > 0:
        per_gpu = max(1.0, resources.get("CPU", 1) // max(1, gpus))
        settings = replace(settings, cpus_per_trial=per_gpu)
    if not args.resume:  # the device default (now that GPUs are known) with any overrides
        settings = replace(settings, budget=None)
        settings = replace(settings, budget=_proxy_budget(settings, args)
                           or settings.proxy_budget().to_dict())

    n_test = len(splits.test)
    search_splits = replace(splits, test=splits.test.subset(splits.test.y[:0].astype(int)))
    try:
        if run is None:
            name = (args.run_dir or os.path.join(
                "runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{space.name}-{_label(settings)}"))
            meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": [PROG] + list(
                sys.argv[1:] if argv is None else argv), "settings": settings.to_dict(),
                "space": {"name": space.name, "source": space.source, "sha256": space.sha256},
                "seed": settings.seed, "versions": _versions(), "status": "created",
                "data": {"dataset": settings.dataset, "train": len(splits.train),
                         "val": len(splits.val), "test_held_out": n_test,
                         "classes": splits.num_classes}, "attempts": [], "elapsed_s": 0.0}
            run = RunDir.create(name, meta, space.raw)
            run.lock()
            held.append(run)
        else:
            run.update_meta(settings=settings.to_dict())
            if "space" in given:
                write_bytes(run.space_file, space.raw)
    except (RunError, OSError) as e:
        return fail(PROG, str(e))

    from ..progress import Progress, results_tables
    try:
        if lut is None:
            lut, lut_path = _latency_lut(settings, space, run.path)
    except (IGCVError, LatencyError) as e:
        return fail(PROG, str(e))
    print(f"{PROG}: run directory {run.path}", flush=True)
    for line in startup_lines(settings, space, splits):
        print(f"{PROG}: {line}", flush=True)
    prog = Progress(f"{space.name} {_label(settings)} -> {run.path.name}", quiet=args.quiet)
    try:
        out = run_search(run, settings, space, search_splits, prog.update, lut, quiet=True)
    except SearchError as e:
        prog.close()
        return fail(PROG, str(e))
    except KeyboardInterrupt:  # outside Ray's loop (start-up, writing results)
        prog.close()
        run.update_meta(status="interrupted")
        how = "terminated (SIGTERM)" if _TERMINATED else "interrupted"
        print(f"{PROG}: {how}; continue with: {PROG} --resume {run.path}")
        return 143 if _TERMINATED else 130
    finally:
        prog.close()
        if lut is not None and lut_path is not None:
            lut.save(lut_path)
    results_tables(out.rows, out.pareto, settings.score)
    sm = out.summary
    if sm.message:
        print(f"{PROG}: {sm.message}")
    if out.interrupted:
        how = "terminated (SIGTERM)" if _TERMINATED else "interrupted"
        print(f"{PROG}: {how}; continue with: {PROG} --resume {run.path}")
        return 143 if _TERMINATED else 130
    print(f"{PROG}: {sm.done} trials evaluated ({sm.complete} complete, {sm.pruned} pruned, "
          f"{sm.failed} failed; {sm.over_budget} over budget, {sm.below_band} below the band and "
          f"{sm.duplicates} duplicates never trained); best in {run.path / 'best.json'}; table "
          f"in {run.path / 'trials.csv'}")
    print(f"{PROG}: {best_line(out.best, settings.score)}")
    return 0


_TERMINATED = False


def _terminate(signum, frame) -> None:
    """SIGTERM is handled like Ctrl-C: trainings stop, the run is marked interrupted, exit 143."""
    global _TERMINATED
    _TERMINATED = True
    raise KeyboardInterrupt


ADDRESS_TIMEOUT_S = 5.0  # an --address that does not answer within this is refused


def check_reachable(address: str) -> None:
    """Refuse an --address whose host:port does not accept a connection within
    :data:`ADDRESS_TIMEOUT_S` (ray.init would otherwise wait a long time)."""
    import socket
    host, _, port = address.rpartition(":")
    if address in ("auto", "local"):
        return
    if not host or not port.isdigit():
        raise SearchError(f"--address {address!r}; accepted: HOST:PORT of a Ray head "
                          f"(ray start --head --port 6379), auto or local")
    try:
        socket.create_connection((host.removeprefix("ray://"), int(port)),
                                 timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as e:
        raise SearchError(f"--address {address}: no Ray head answers there within "
                          f"{ADDRESS_TIMEOUT_S:g} s ({e.strerror or e})") from None


def check_local_resources(settings: Settings) -> None:
    """Without --address the search starts its own Ray instance on this machine: a trial's
    CPUs and GPUs must exist here (checked before Ray starts)."""
    if settings.address:
        return
    cpus = os.cpu_count() or 1
    if settings.cpus_per_trial > cpus:
        raise SearchError(f"--cpus-per-trial {settings.cpus_per_trial:g}; this machine has "
                          f"{cpus} CPUs")
    if settings.gpus_per_trial > 0:
        import torch
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if settings.gpus_per_trial > n:
            raise SearchError(f"--gpus-per-trial {settings.gpus_per_trial:g}; this machine has "
                              f"{n} CUDA GPUs (use --address for a cluster with GPUs)")


def startup_lines(settings: Settings, space, splits) -> list[str]:
    """What the search will actually do, in words (proxy images, epochs, ladder, ASHA)."""
    from ..train import plan
    b = settings.proxy_budget(space.name)
    _, steps, epochs = plan(len(splits.train), b.train)
    e = engine_record(settings, b, len(splits.train), epochs, steps)
    band = f", MACs band floor {human(e['flops_min'])}" if e["flops_min"] else ""
    out = [f"space {space.name} ({space.sha256[:12]}), budgets at target {settings.target}: "
           f"{_label(settings)}{band}; sampler {settings.sampler}"]
    if settings.proxy == "zero-cost":
        out.append(f"proxy: zero-cost score {settings.score} of the untrained {settings.dataset} "
                   f"variant on one batch of {b.zc_batch} training images; nothing is trained")
    else:
        out.append(f"proxy: trains the {settings.dataset} variant (32x32: stem stride 1, stage 2 "
                   f"not downsampling, {splits.num_classes} classes) on {e['proxy_images']:,} of "
                   f"{len(splits.train):,} training images, {epochs} epoch(s), {steps} steps of "
                   f"batch {b.train.batch_size}, no dropout; scored once by {settings.score} on "
                   f"{min(e['val_images'], len(splits.val)):,} held-out validation images; seeds "
                   f"init {b.train.seed}, data {b.train.data_seed} for every candidate; the test "
                   f"split is not used")
        if e["ladder"]:
            r1, r2 = e["ladder"]
            out.append(f"ladder: the best {r1['keep']} trained again on {r1['factor']}x the "
                       f"images, the best {r2['keep']} of those re-trained with "
                       f"{len(r2['seeds'])} fresh seeds each; the reported best is the confirmed "
                       f"one (about {e['ladder_cost_units']:g} first-rung trainings in all)")
        out.append("early stopping: ASHA on (reduction factor 3, grace period past the warm-up)"
                   if e["asha"] else "early stopping: none (ASHA off)")
        if settings.proxy == "both":
            out.append(f"zero-cost beside training: {', '.join(b.zero_cost)}" if b.mode == "both"
                       else f"zero-cost beside training: none (no zero-cost proxy ranked "
                            f"positively in the fidelity benchmark for space {space.name}; "
                            f"README 'Fidelity')")
    return out


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
