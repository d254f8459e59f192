"""igcv-search's framework overhead and search efficiency, measured on this machine.

    python benchmarks/bench_search.py overhead   --trials 6 --steps 24
    python benchmarks/bench_search.py efficiency --seeds 5 --data-dir .data

overhead: one search, one trial at a time, with a short proxy. Per trial: the proxy's
training + validation time (the trial's compute) against everything else -- sampling, cost and
budget checks, Ray scheduling and actor reuse, handing the data to the worker, building the
model, telling the study, rewriting the run directory's files. Target: < 5% at 10 s trials.

efficiency: search efficiency at equal evaluation cost (issue 11, item 5): random search, TPE
and evolution (``--scheduler none``) against the default ladder, ``--seeds`` sampler seeds each,
every pick re-trained at the fidelity benchmark's reference budget with fresh seeds, against
the width-scaled igcv3_d and mobilenet_v2 and the best of the pooled random searches (regret).
The protocol, the CSV and resume are in ``benchmarks/search_efficiency.py``.

Chosen configuration (the defaults): the ``mixed`` space, MACs band [64M, 80M] at 224x224 /
1000 classes (``--flops 80M --flops-min 64M``, the fidelity benchmark's band; the CIFAR-10 forms
the proxy trains have 15-21M MACs; a cheaper band does not work: not one of 4,000 uniform draws
of ``mixed`` falls in [40M, 50M], and igcv-search gives up after 2,000 draws per suggestion;
[64M, 80M] holds 4% of them). The proxy is the CPU default (2,700 images seen once, batch 32,
84 steps) scored on 5,000 validation images (the CPU default, the same for every method);
the ladder has 8 first-rung trials = 26 units, so the others get 26 trials. Measured on this
2-core VM (CPU time, 1 thread): one first-rung trial ~27 s, one reference training at 50M ~120 s
(~1.5x that at 80M); searches run 2 trials at a time. Expected: ~8-10 min per search (20
searches ~3 h) plus <= 49 reference re-trainings (40 picks, 4 baseline, 5 pool; a pick two
methods share is trained once) of ~2-3 min at 2 threads (~2 h): about 5 h on an otherwise idle
machine, about twice that beside another benchmark.
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
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from igcv_nas.cli.search import main as search_main
from igcv_nas.search.runstore import STUDY_NAME


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

    from igcv_nas.search.raytune import connect
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


def efficiency(a) -> None:
    import search_efficiency as se
    if a.report:
        se.report(Path(a.report))
        return
    try:
        se.run(a)
    except KeyboardInterrupt:
        print("\n# interrupted; start the same command again to continue (finished units are "
              "skipped, an interrupted search is resumed)", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead", help="framework overhead per trial, one trial at a time")
    o.add_argument("--space", default="igcv3")
    o.add_argument("--flops", default="300M")
    o.add_argument("--trials", type=int, default=6)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--epochs", type=int, default=1)
    o.add_argument("--steps", type=int, default=None)
    o.add_argument("--batch-size", type=int, default=32)
    o.add_argument("--train-fraction", type=float, default=0.03)
    o.add_argument("--val-size", type=int, default=1000)
    o.add_argument("--data-dir", default=None)
    o.add_argument("--keep", help="keep the run directories here")
    e = sub.add_parser("efficiency", help="samplers and the ladder at equal evaluation cost, "
                                          "picks re-trained at the reference budget")
    e.add_argument("--space", default="mixed")
    e.add_argument("--flops", default="80M", help="MACs budget at --target")
    e.add_argument("--flops-min", default="64M", help="floor of the MACs band")
    e.add_argument("--target", default="space")
    e.add_argument("--seeds", type=int, default=5, help="sampler seeds 0..N-1 per method")
    e.add_argument("--methods", default="random,tpe,evolution,ladder")
    e.add_argument("--ladder-trials", type=int, default=8,
                   help="first-rung trials of the ladder; the others get its cost in trials")
    e.add_argument("--ref-seeds", type=int, default=2, help="reference re-trainings per pick")
    e.add_argument("--pool-top", type=int, default=5, help="regret pool: top K of the random pool")
    e.add_argument("--epochs", type=int, default=None, help="proxy override (default: CPU default)")
    e.add_argument("--steps", type=int, default=None, help="proxy override")
    e.add_argument("--batch-size", type=int, default=None, help="proxy override")
    e.add_argument("--train-fraction", type=float, default=None, help="proxy override")
    e.add_argument("--val-size", type=int, default=None,
                   help="proxy validation images (default: the CPU default, 5,000)")
    e.add_argument("--cpus-per-trial", type=float, default=None)
    e.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                   help="threads of the reference re-trainings (in this process)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--csv", default=None,
                   help="default benchmarks/results/search_efficiency_<space>_<flops>[_quick].csv")
    e.add_argument("--runs-dir", default=None,
                   help="default benchmarks/results/runs/<csv stem> (keep it out of git)")
    e.add_argument("--quick", action="store_true",
                   help="SMOKE RUNS ONLY: the reference trains --reference-steps steps, scored on "
                        "1,000 test images; output and CSV are labelled as such")
    e.add_argument("--reference-steps", type=int, default=4)
    e.add_argument("--allow-other-machine", action="store_true")
    e.add_argument("--report", metavar="CSV", help="only print the table of that CSV")
    a = ap.parse_args()
    if a.what == "efficiency":
        efficiency(a)
        return
    print(f"# bench_search: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    workdir = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        overhead(a, workdir)
    finally:
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
