"""igcv-search's framework overhead and search efficiency, measured on this machine.

    python benchmarks/bench_search.py overhead   --trials 6 --steps 24
    python benchmarks/bench_search.py efficiency --trials 12 --flops 300M

overhead: one search, one trial at a time, with a short proxy. Per trial: the proxy's
training + validation time (the trial's compute) against everything else -- sampling, cost and
budget checks, Ray scheduling and actor reuse, handing the data to the worker, building the
model, telling the study, rewriting the run directory's files. Target: < 5% at 10 s trials.

efficiency: the same proxy and the same number of evaluated trials for TPE, NSGA-II and random
search on the default space under a MACs budget, against the hand-designed baselines
(igcv3_d and mobilenet_v2 width-scaled to the same MACs) scored by the same proxy.
Target: the search beats the best width-scaled baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from igcv_nas.cli.search import main as search_main
from igcv_nas.cost import count, human
from igcv_nas.data import load_splits
from igcv_nas.proxy import evaluate
from igcv_nas.runstore import STUDY_NAME
from igcv_nas.search import Settings
from igcv_nas.space import to_cifar
from igcv_nas.units import parse_count
from igcv_nas.zoo import scale_to_macs


def _proxy_args(a) -> list[str]:
    out = ["--batch-size", str(a.batch_size), "--val-size", str(a.val_size),
           "--train-fraction", str(a.train_fraction)]
    out += ["--steps", str(a.steps)] if a.steps else ["--epochs", str(a.epochs)]
    return out


def _search(a, workdir: Path, name: str, extra: list[str]) -> tuple[Path, float]:
    d = workdir / name
    t0 = time.perf_counter()
    rc = search_main(["--space", a.space, "--flops", a.flops, "--trials", str(a.trials),
                      "--seed", str(a.seed), "--quiet", "--no-asha", "--run-dir", str(d),
                      *(["--data-dir", a.data_dir] if a.data_dir else []), *_proxy_args(a), *extra])
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"igcv-search exited with {rc}")
    return d, wall


def overhead(a, workdir: Path) -> None:
    import ray

    from igcv_nas.search import connect
    t0 = time.perf_counter()
    connect(None)
    ray_start = time.perf_counter() - t0
    d, wall = _search(a, workdir, "overhead", ["--max-concurrent", "1", "--cpus-per-trial",
                                                str(os.cpu_count())])
    df = pd.read_csv(d / "trials.csv")
    ev = df[df.status == "complete"].set_index("number")
    meta = json.loads((d / "run.json").read_text())
    # full-precision times from the study: with one trial at a time, trial i's cycle runs from
    # the previous trial's tell to its own (sampling, scheduling, training, reporting, telling)
    st = optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(
        JournalFileBackend(str(d / "study.journal"))))
    done = sorted((t for t in st.trials if t.number in ev.index), key=lambda t: t.datetime_complete)
    cycles = [(b.number, (b.datetime_complete - a.datetime_complete).total_seconds())
              for a, b in zip(done, done[1:])]
    compute = statistics.median(ev.loc[n, "train_seconds"] for n, _ in cycles)
    in_worker = statistics.median(ev.loc[n, "wall_seconds"] - ev.loc[n, "train_seconds"]
                                  for n, _ in cycles)
    total = statistics.median(c - ev.loc[n, "train_seconds"] for n, c in cycles)
    first = (done[0].datetime_complete - done[0].datetime_start).total_seconds()
    print(f"# overhead: {len(ev)} trials one at a time, {os.cpu_count()} threads per trial; "
          f"medians over trials 2..{len(ev)}; Ray start {ray_start:.1f} s and the first trial "
          f"(worker start, {first - ev.loc[done[0].number, 'train_seconds']:.1f} s outside "
          f"training) are one-off costs per search, not counted")
    print(f"{'per trial (median)':<46}{'seconds':>9}{'share of compute':>18}")
    rows = [("proxy compute (training + validation)", compute),
            ("in the worker, outside training (build, ckpt)", in_worker),
            ("driver + Ray (sample, schedule, tell, write)", total - in_worker),
            ("overhead total", total)]
    for label, v in rows:
        print(f"{label:<46}{v:>9.2f}{v / compute:>17.1%}")
    print(f"# search wall {meta['elapsed_s']:.1f} s (igcv-search end to end incl. data load: "
          f"{wall:.1f} s); {df[df.status == 'over-budget'].shape[0]} over-budget samples skipped")
    ray.shutdown()


def efficiency(a, workdir: Path) -> None:
    budget = parse_count(a.flops, "--flops")
    results = []
    for sampler in ("tpe", "nsga2", "random"):
        d, wall = _search(a, workdir, sampler, ["--sampler", sampler])
        df = pd.read_csv(d / "trials.csv")
        ev = df[df.status == "complete"]
        b = ev.loc[ev.val_acc.idxmax()]
        results.append((f"search: {sampler}", b.val_acc, int(b.macs), len(ev), wall))
        print(f"# {sampler}: {len(ev)} trials in {wall:.0f} s, best {b.val_acc:.4f}", flush=True)
    settings = Settings(budget=None)
    proxy = settings.proxy_budget()
    over = {"batch_size": a.batch_size, "train_fraction": a.train_fraction}
    over.update({"steps": a.steps} if a.steps else {"epochs": a.epochs})
    proxy = replace(proxy, train=replace(proxy.train, **over), val_size=a.val_size)
    splits = load_splits("cifar10", a.data_dir, val_size=5000, seed=0)
    torch.set_num_threads(os.cpu_count())
    for name in ("igcv3_d", "mobilenet_v2"):
        w, spec = scale_to_macs(name, budget)
        t0 = time.perf_counter()
        r = evaluate(to_cifar(spec, 10), splits, proxy)
        results.append((f"baseline: {name} x{w}", r["val_acc"], count(spec).macs, 1,
                        time.perf_counter() - t0))
    print(f"# efficiency: space {a.space}, budget {a.flops} MACs at 224x224, {a.trials} trials "
          f"per sampler, same proxy (CIFAR-10 variant, {a.epochs if not a.steps else a.steps} "
          f"{'epochs' if not a.steps else 'steps'}, {a.train_fraction:.3f} of the training "
          f"split, batch {a.batch_size}, {a.val_size} validation images), seed {a.seed}")
    base = max(r[1] for r in results if r[0].startswith("baseline"))
    print(f"{'method':<32}{'best val acc':>13}{'MACs':>10}{'trials':>8}{'wall s':>8}{'vs best baseline':>18}")
    for label, acc, macs, n, wall in results:
        print(f"{label:<32}{acc:>13.4f}{human(macs):>10}{n:>8}{wall:>8.0f}{acc - base:>+18.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("overhead", "efficiency"))
    ap.add_argument("--space", default="igcv3")
    ap.add_argument("--flops", default="300M")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-fraction", type=float, default=0.03)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--keep", help="keep the run directories here")
    a = ap.parse_args()
    print(f"# bench_search: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    workdir = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        (overhead if a.what == "overhead" else efficiency)(a, workdir)
    finally:
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
